"""The affine-combining autoencoder (ACAE, docs/METHOD.md §3; Sárándi et al., WACV 2023) as pure functions.

A pose X (J, 3) becomes L latent points Z = W_encᵀ X (L, 3) and back, X̂ = W_decᵀ Z (J, 3). Both weight matrices
are column-normalised, W = W′ / (1ᵀ W′), so every latent is an affine combination of joints and every joint an
affine combination of latents: encoding and decoding commute with any rotation and translation of the pose.

Chirality. With `chiral` the joints are split into [left | right | centre] (left joint i paired with its mirror
joint flip_index[i]) and the latents into [left | right | centre] (left latent k paired with right latent k), and
both matrices have the block structure

            latents:  left  right  centre
  left joints      [[  S,    Q,     X  ],
  right joints      [  Q,    S,     X  ],
  centre joints     [  C,    C,     Z  ]]

(W_enc is (J, L) as written; W_dec is (L, J) with the same pattern over [left | right | centre] latent rows and
joint columns). Each block is its own parameter, shared where it appears twice, so the column sums of paired
columns are equal and the structure survives the normalisation. Then the encoding of a mirrored pose (x → −x,
left and right joints swapped) is the mirrored encoding (x → −x, left and right latents swapped), and so is the
reconstruction. Without `chiral` W′_enc (J, L) and W′_dec (L, J) are unconstrained.

Loss (`loss`): the L1 reconstruction error of the image projection made metric, plus the sparsity term
λ (mean|W_enc| + mean|W_dec|) of the normalised matrices. The projection error of joint j with true camera-frame
position (x, y, z) and reconstruction (x̂, ŷ, ẑ) is |x̂/ẑ − x/z| · z (and the same for y): the normalised-image
error scaled to the joint's true depth, i.e. how far from the true joint (laterally, in mm) the reconstructed
joint's camera ray passes at the true depth. It equals the pixel error times z / focal length for any pinhole
camera, so no intrinsics are needed. Depth is supervised only through the projection (the pseudo-ground truth's
depth is its least reliable part). The term is taken in metres, the unit of the MeTRAbs losses: with λ = 0.6 the
sparsity term then trades off against errors of a few cm (every non-negative column-normalised (J, L) matrix has
mean|W| = 1/J; each unit of negative weight mass in a column adds 2/(J L)), whereas in mm it would be 1000 times
weaker and vanish. Reconstructed depths are floored at `MIN_DEPTH_MM`; true joints nearer than that, and joints
masked out by `valid`, do not count.

Params are a dict of arrays: {'encoder': {'S', 'Q', 'X', 'C', 'Z'}, 'decoder': {...}} (chiral) or
{'encoder': {'W'}, 'decoder': {'W'}}; `AcaeLayout` holds the static joint / latent structure.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.skeletons import get_format3d

# Reconstructed depths are floored here before projecting (and true joints nearer than this are ignored).
MIN_DEPTH_MM = 100.0
BLOCKS = ('S', 'Q', 'X', 'C', 'Z')


@dataclasses.dataclass(frozen=True, eq=False)
class AcaeLayout:
  """The static structure of an ACAE.

  Attributes:
    num_joints: J.
    num_latents: L (left + right + centre latents when chiral).
    num_centre_latents: L_c (chiral only; the rest split evenly into left and right latents).
    chiral: whether the weights have the chiral block structure.
    flip_index: int32 (J,): the joint each joint becomes under a horizontal flip.
    left: int32 (P,) left joints in joint order; right: int32 (P,) their mirror joints flip_index[left].
    centre: int32 (C,) joints a flip maps to themselves.
  """

  num_joints: int
  num_latents: int
  num_centre_latents: int
  chiral: bool
  flip_index: np.ndarray
  left: np.ndarray
  right: np.ndarray
  centre: np.ndarray

  @property
  def num_sided_latents(self) -> int:
    """Latents per side (left = right) when chiral, else 0."""
    return (self.num_latents - self.num_centre_latents) // 2 if self.chiral else 0

  @property
  def joint_order(self) -> np.ndarray:
    """int32 (J,): the joints in block order [left | right | centre]."""
    return np.concatenate([self.left, self.right, self.centre]).astype(np.int32)

  @property
  def latent_flip_index(self) -> np.ndarray:
    """int32 (L,): the latent each latent becomes under a horizontal flip (chiral: left k ↔ right k, centre
    fixed); the identity without chirality (its latents have no sides)."""
    if not self.chiral:
      return np.arange(self.num_latents, dtype=np.int32)
    sided = self.num_sided_latents
    return np.concatenate(
      [np.arange(sided, 2 * sided), np.arange(sided), np.arange(2 * sided, self.num_latents)]
    ).astype(np.int32)

  @property
  def latent_sides(self) -> tuple[str, ...]:
    """Per latent 'left' | 'right' | 'center' (all 'center' without chirality)."""
    if not self.chiral:
      return ('center',) * self.num_latents
    sided = self.num_sided_latents
    return ('left',) * sided + ('right',) * sided + ('center',) * self.num_centre_latents


def make_layout(
  sides: Sequence[str], flip_index, num_latents: int = 48, num_centre_latents: int = 8, chiral: bool = True
) -> AcaeLayout:
  """The layout of an ACAE over joints with `sides` (J,) 'left' | 'right' | 'center' and `flip_index` (J,) (a
  3D format's, or several formats' concatenated with offsets). Raises ValueError for sides and flip that do not
  match, or latent counts the chiral structure cannot split (L - L_c must be even and >= 0)."""
  sides = tuple(sides)
  flip = np.asarray(flip_index, np.int32).reshape(-1)
  count = len(sides)
  if flip.shape != (count,) or sorted(flip.tolist()) != list(range(count)):
    raise ValueError(f'flip_index must be a permutation of the {count} joints')
  opposite = {'left': 'right', 'right': 'left', 'center': 'center'}
  if any(s not in opposite or sides[int(flip[j])] != opposite[s] for j, s in enumerate(sides)):
    raise ValueError('flip_index must swap left and right joints and keep centre joints')
  if num_latents < 1:
    raise ValueError(f'num_latents must be >= 1, got {num_latents}')
  if chiral and not (0 <= num_centre_latents <= num_latents and (num_latents - num_centre_latents) % 2 == 0):
    raise ValueError(
      f'a chiral ACAE needs 0 <= num_centre_latents <= num_latents with an even difference (left and right '
      f'latents pair up), got num_latents={num_latents}, num_centre_latents={num_centre_latents}'
    )
  left = np.asarray([j for j, s in enumerate(sides) if s == 'left'], np.int32)
  centre = np.asarray([j for j, s in enumerate(sides) if s == 'center'], np.int32)
  return AcaeLayout(
    num_joints=count,
    num_latents=int(num_latents),
    num_centre_latents=int(num_centre_latents) if chiral else 0,
    chiral=bool(chiral),
    flip_index=flip,
    left=left,
    right=flip[left],
    centre=centre,
  )


def format_joints(format_names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
  """(suffixed joint names (J,), sides (J,), flip_index int32 (J,)) of 3D formats `format_names` concatenated in
  this order (the shared MeTRAbs head's joints for `tasks.metrabs.head_formats`)."""
  names, sides, flips = [], [], []
  for name in format_names:
    fmt = get_format3d(name)
    flips.append(np.asarray(fmt.flip_index, np.int32) + len(names))
    names.extend(fmt.suffixed_names)
    sides.extend(fmt.sides)
  flip = np.concatenate(flips) if flips else np.zeros(0, np.int32)
  return tuple(names), tuple(sides), flip


def _block_shapes(layout: AcaeLayout) -> dict[str, dict[str, tuple[int, int]]]:
  pairs, centre = len(layout.left), len(layout.centre)
  sided, middle = layout.num_sided_latents, layout.num_centre_latents
  encoder = {
    'S': (pairs, sided),
    'Q': (pairs, sided),
    'X': (pairs, middle),
    'C': (centre, sided),
    'Z': (centre, middle),
  }
  decoder = {
    'S': (sided, pairs),
    'Q': (sided, pairs),
    'X': (sided, centre),
    'C': (middle, pairs),
    'Z': (middle, centre),
  }
  return {'encoder': encoder, 'decoder': decoder}


def init_params(layout: AcaeLayout, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Unnormalised weights W′ drawn uniformly from [0, 1) (NumPy, `seed`): every latent starts near a convex
  combination of all joints (column sums far from 0, so the normalisation is well conditioned). Returns float32
  arrays."""
  if layout.chiral:
    shapes = _block_shapes(layout)
  else:
    shapes = {
      'encoder': {'W': (layout.num_joints, layout.num_latents)},
      'decoder': {'W': (layout.num_latents, layout.num_joints)},
    }
  rng = np.random.default_rng(seed)
  return {
    part: {name: rng.random(shape, np.float32) for name, shape in shapes[part].items()}
    for part in ('encoder', 'decoder')
  }


def _normalise_columns(weights: jax.Array) -> jax.Array:
  return weights / jnp.sum(weights, axis=0, keepdims=True)


def _chiral_matrix(blocks: Mapping[str, jax.Array]) -> jax.Array:
  """[[S, Q, X], [Q, S, X], [C, C, Z]] in block order (rows then columns [left | right | centre])."""
  s, q, x, c, z = (blocks[name] for name in BLOCKS)
  return jnp.concatenate(
    [jnp.concatenate([s, q, x], 1), jnp.concatenate([q, s, x], 1), jnp.concatenate([c, c, z], 1)], 0
  )


def encoder_weights(params, layout: AcaeLayout) -> jax.Array:
  """The normalised encoder W_enc (J, L), joints in joint order: column l holds latent l's affine weights (sum 1)."""
  if not layout.chiral:
    return _normalise_columns(params['encoder']['W'])
  joint_rank = np.argsort(layout.joint_order)  # block row of each joint
  return _normalise_columns(_chiral_matrix(params['encoder'])[joint_rank])


def decoder_weights(params, layout: AcaeLayout) -> jax.Array:
  """The normalised decoder W_dec (L, J), joints in joint order: column j holds joint j's affine weights (sum 1)."""
  if not layout.chiral:
    return _normalise_columns(params['decoder']['W'])
  joint_rank = np.argsort(layout.joint_order)
  return _normalise_columns(_chiral_matrix(params['decoder'])[:, joint_rank])


def encode(params, layout: AcaeLayout, poses) -> jax.Array:
  """Latents Z = W_encᵀ X: poses (..., J, 3) → (..., L, 3), in the poses' units and frame."""
  return jnp.einsum('jl,...jc->...lc', encoder_weights(params, layout), poses)


def decode(params, layout: AcaeLayout, latents) -> jax.Array:
  """Joints X̂ = W_decᵀ Z: latents (..., L, 3) → (..., J, 3)."""
  return jnp.einsum('lj,...lc->...jc', decoder_weights(params, layout), latents)


def reconstruct(params, layout: AcaeLayout, poses) -> jax.Array:
  """decode(encode(poses)): (..., J, 3) → (..., J, 3)."""
  return decode(params, layout, encode(params, layout, poses))


def projection_error_m(pred_mm, true_mm, valid=None, min_depth_mm: float = MIN_DEPTH_MM) -> jax.Array:
  """The metric projection error: mean over valid (example, joint, x|y) of |p̂/max(ẑ, min) − p/z| · z / 1000 (m),
  p̂, p the x or y of the prediction and the truth. pred_mm, true_mm (n, J, 3) camera frame, mm; valid (n, J)
  optional; true joints with z < `min_depth_mm` are ignored. 0 when nothing counts."""
  pred = jnp.asarray(pred_mm, jnp.float32)
  true = jnp.asarray(true_mm, jnp.float32)
  mask = true[..., 2] >= min_depth_mm
  if valid is not None:
    mask = mask & (jnp.asarray(valid) > 0)
  true = jnp.where(mask[..., None], true, jnp.asarray([0.0, 0.0, min_depth_mm]))  # no NaN into the gradients
  true_depth = true[..., 2:3]
  error = jnp.abs(pred[..., :2] / jnp.maximum(pred[..., 2:3], min_depth_mm) - true[..., :2] / true_depth)
  error = error * true_depth / 1000.0
  mask2 = jnp.broadcast_to(mask[..., None], error.shape)
  return jnp.sum(jnp.where(mask2, error, 0.0)) / jnp.maximum(jnp.sum(mask2), 1)


def sparsity(params, layout: AcaeLayout) -> jax.Array:
  """mean|W_enc| + mean|W_dec| of the normalised matrices."""
  return jnp.mean(jnp.abs(encoder_weights(params, layout))) + jnp.mean(jnp.abs(decoder_weights(params, layout)))


def loss(params, layout: AcaeLayout, poses_mm, valid=None, lambda_sparsity: float = 0.6):
  """(total, {'proj': the metric projection error (m) of the reconstruction, 'sparsity': mean|W_enc| +
  mean|W_dec|}), total = proj + λ sparsity. poses_mm (n, J, 3) camera frame (z forward), mm, finite (every joint
  enters every latent); valid (n, J) optional: joints whose target does not count."""
  projection = projection_error_m(reconstruct(params, layout, poses_mm), poses_mm, valid)
  regulariser = sparsity(params, layout)
  return projection + lambda_sparsity * regulariser, {'proj': projection, 'sparsity': regulariser}


def joint_errors(params, layout: AcaeLayout, poses_mm) -> jax.Array:
  """Per-joint 3D reconstruction errors (n, J) in the poses' unit: |X̂ − X|₂."""
  return jnp.linalg.norm(reconstruct(params, layout, poses_mm) - jnp.asarray(poses_mm, jnp.float32), axis=-1)


def joint_projection_errors(params, layout: AcaeLayout, poses_mm, min_depth_mm: float = MIN_DEPTH_MM) -> jax.Array:
  """Per-joint metric projection errors (n, J) in mm, the loss's term unaveraged: the mean over x and y of
  |p̂/max(ẑ, min) − p/z| · z, for poses (n, J, 3) mm whose depths z are positive."""
  true = jnp.asarray(poses_mm, jnp.float32)
  pred = reconstruct(params, layout, true)
  depth = true[..., 2:3]
  error = jnp.abs(pred[..., :2] / jnp.maximum(pred[..., 2:3], min_depth_mm) - true[..., :2] / depth) * depth
  return jnp.mean(error, axis=-1)


def mirror(points, index) -> jax.Array:
  """The horizontal mirror image of points (..., N, 3): x → −x and point i taken from `index[i]` (a flip_index)."""
  points = jnp.asarray(points)
  return points[..., np.asarray(index), :] * jnp.asarray([-1.0, 1.0, 1.0], points.dtype)
