"""Consistency across 3D skeletons with a fitted affine-combining autoencoder (docs/METHOD.md §3, "Consistency
fine-tuning"): its matrices as constants, the output-regularisation term (variant a), the latent decoding (b) and
the latent head's distillation from the full head (c).

Conventions: the encoder `encoder` is (J, L) and the decoder `decoder` (L, J), both column-normalised (every
latent an affine combination of joints, every joint one of latents): latents Z = encoderᵀ X, X̂ = decoderᵀ Z for a
pose X (J, 3) (or 2D points (J, 2): an affine combination commutes with any affine map of the points).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def encode(points: jax.Array, encoder) -> jax.Array:
  """(n, J, C) points → (n, L, C) latents Z = encoderᵀ X."""
  return jnp.einsum('jl,njc->nlc', jnp.asarray(np.asarray(encoder), points.dtype), points)


def decode(latents: jax.Array, decoder) -> jax.Array:
  """(n, L, C) latents → (n, J, C) joints X̂ = decoderᵀ Z."""
  return jnp.einsum('lj,nlc->njc', jnp.asarray(np.asarray(decoder), latents.dtype), latents)


def decode_head_output(output: dict, decoder) -> dict:
  """A latent head's output dict ('coords2d' (n, L, 2) px, 'coords3d_rel' (n, L, 3) mm) → the joints' (n, J, ·):
  the decoder applied to the 2D and the 3D latents alike."""
  return {key: decode(output[key], decoder) for key in ('coords2d', 'coords3d_rel')}


def regularization(coords3d: jax.Array, encoder, decoder) -> jax.Array:
  """Variant (a): mean |P − decoderᵀ encoderᵀ P| / 1000 over the (n, J, 3) mm pose's coordinates (a scalar in m)."""
  points = jnp.asarray(coords3d, jnp.promote_types(coords3d.dtype, jnp.float32))
  return jnp.mean(jnp.abs(points - decode(encode(points, encoder), decoder))) / 1000.0


def distillation(student: dict, teacher: dict, crop_size_hw, box_size_mm: float) -> jax.Array:
  """Variant (c): the latent head's decoded output `student` against the full head's `teacher` (stop-gradient):
  mean |Δ coords3d_rel| / 1000 + mean |Δ coords2d| · (box_size_mm / max(H, W)) / 1000 (both in m)."""
  teacher = jax.tree.map(jax.lax.stop_gradient, teacher)
  error3d = jnp.mean(jnp.abs(student['coords3d_rel'] - teacher['coords3d_rel'])) / 1000.0
  error2d = jnp.mean(jnp.abs(student['coords2d'] - teacher['coords2d'])) * (box_size_mm / max(crop_size_hw)) / 1000.0
  return error3d + error2d
