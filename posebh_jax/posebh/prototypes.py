"""Keypoint prototypes (docs/METHOD.md §2): cosine similarity, prototype heatmaps, per-pixel labels, Sinkhorn–Knopp
assignment of pixels to a keypoint's M prototypes, momentum update and prototype clustering.

Everything is float32 with static shapes (masks and segment sums, no boolean indexing), so it runs under jit on
global (sharded) arrays: the prototype update is computed from the global batch and is therefore identical on
every device without explicit collectives.

Index spaces: a keypoint's global class j ∈ [0, J) is its dataset's global offset plus its local index k ∈ [0, K_d)
(the order of docs/METHOD.md §1). Flattened prototype columns are j·M + m.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _cos(a, b):
  return jnp.einsum('nf,cf->nc', a, b, precision=_HIGHEST)


def init_prototypes(rng: jax.Array, num_keypoints: int, per_keypoint: int = 3, dim: int = 64) -> jax.Array:
  """Random prototypes (J, M, F) float32: truncated normal (std 0.02, truncated at ±2 std), L2-normalised over F."""
  c = 0.02 * jax.random.truncated_normal(rng, -2.0, 2.0, (num_keypoints, per_keypoint, dim), jnp.float32)
  return l2_normalize(c)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(‖x‖₂, eps) along `axis`, in float32; same shape as x."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def similarity(embeddings: jax.Array, prototypes: jax.Array) -> jax.Array:
  """s = |cos(e, c)|: embeddings (..., F) (normalised here), prototypes (J, M, F) → float32 (..., J, M)."""
  e = l2_normalize(embeddings)
  return jnp.abs(jnp.einsum('...f,jmf->...jm', e, prototypes.astype(jnp.float32), precision=_HIGHEST))


def prototype_heatmaps(sim: jax.Array) -> jax.Array:
  """Prototype heatmap ĥ_j = clip(max_m s_{j,m}, 1e-4, 1 − 1e-4): sim (..., J, M) → (..., J)."""
  return jnp.clip(jnp.max(sim, axis=-1), 1e-4, 1.0 - 1e-4)


def pixel_labels(gt_heatmaps: jax.Array, target_weights: jax.Array, global_offset: int):
  """Per-pixel keypoint class from GT heatmaps of one dataset.

  Args:
    gt_heatmaps: (n, H, W, K) GT Gaussians; target_weights: (n, K); global_offset: the dataset's first global index.
  Returns:
    global_class int32 (n, H, W) = global_offset + argmax_k H_k(p); confidence float32 (n, H, W) = max_k H_k(p);
    valid bool (n, H, W): confidence > 0 (inside a GT Gaussian window) and that keypoint's target weight > 0.
  """
  gt = gt_heatmaps.astype(jnp.float32)
  local = jnp.argmax(gt, axis=-1).astype(jnp.int32)
  confidence = jnp.max(gt, axis=-1)
  n, h, w = local.shape
  weight = jnp.take_along_axis(target_weights.astype(jnp.float32), local.reshape(n, h * w), axis=1).reshape(n, h, w)
  valid = (confidence > 0) & (weight > 0)
  return local + jnp.int32(global_offset), confidence, valid


def _segment_sum(x, segments, num_segments):
  return jax.ops.segment_sum(x, segments, num_segments=num_segments)


def sinkhorn(
  scores: jax.Array, classes: jax.Array, valid: jax.Array, num_classes: int, kappa: float = 0.05, iterations: int = 3
) -> jax.Array:
  """Sinkhorn–Knopp transport plan between each class's pixels and its M prototypes, all classes at once.

  For class g with n_g valid pixels: L = exp(S/κ) on its n_g × M block, normalised to sum 1; then `iterations`
  times: divide each prototype column by its sum over the class's pixels and by M, divide each pixel row by its
  sum over prototypes and by n_g; finally × n_g (ProtoSeg's distributed_sinkhorn, one block per class).

  Args:
    scores: (P, M) similarities s_{p, g(p), m}; classes: (P,) int class g(p) ∈ [0, num_classes);
    valid: (P,) bool, invalid pixels take part in no class.
  Returns: Q float32 (P, M); zero rows for invalid pixels.
  """
  scores = scores.astype(jnp.float32)
  num_prototypes = scores.shape[-1]
  # Invalid pixels go to an extra segment that is never read back.
  seg = jnp.where(valid, classes.astype(jnp.int32), num_classes)
  num_seg = num_classes + 1
  mask = valid[:, None]
  # A per-class shift cancels in the first normalisation and keeps exp() finite for any score range.
  shift = jax.ops.segment_max(jnp.max(jnp.where(mask, scores, -jnp.inf), axis=1), seg, num_segments=num_seg)
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  q = jnp.where(mask, jnp.exp((scores - shift[seg][:, None]) / kappa), 0.0)
  count = _segment_sum(valid.astype(jnp.float32), seg, num_seg)[seg][:, None]

  def div(a, b):
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)

  q = div(q, _segment_sum(jnp.sum(q, axis=1), seg, num_seg)[seg][:, None])
  for _ in range(iterations):
    q = div(q, _segment_sum(q, seg, num_seg)[seg]) / num_prototypes
    q = div(q, jnp.sum(q, axis=1, keepdims=True) * count)
  return q * count


def sinkhorn_assign(
  scores: jax.Array, classes: jax.Array, valid: jax.Array, num_classes: int, kappa: float = 0.05, iterations: int = 3
) -> jax.Array:
  """Prototype index m*(p) = argmax_m Q_{p,m} of `sinkhorn` (same arguments): int32 (P,); 0 for invalid pixels."""
  return jnp.argmax(sinkhorn(scores, classes, valid, num_classes, kappa, iterations), axis=-1).astype(jnp.int32)


def momentum_update(
  prototypes: jax.Array,
  embeddings: jax.Array,
  classes: jax.Array,
  assignment: jax.Array,
  weights: jax.Array,
  momentum: float = 0.999,
) -> jax.Array:
  """One momentum step of the prototypes.

  f_{g,m} = normalise(Σ_p [g(p)=g][m*(p)=m] w_p ê_p); c_{g,m} ← normalise(λ c_{g,m} + (1−λ) f_{g,m}) for the
  (g, m) whose summed weight is positive, unchanged otherwise.

  Args:
    prototypes: (J, M, F); embeddings: (P, F) (normalised here, no gradient); classes, assignment: (P,) int
    global class and prototype index; weights: (P,) pixel weights (≤ 0 = ignored); momentum: λ.
  Returns: new prototypes float32 (J, M, F).
  """
  num_classes, num_prototypes, dim = prototypes.shape
  num_cells = num_classes * num_prototypes
  e = l2_normalize(jax.lax.stop_gradient(embeddings))
  w = jax.lax.stop_gradient(jnp.maximum(weights.astype(jnp.float32), 0.0))
  cell = classes.astype(jnp.int32) * num_prototypes + assignment.astype(jnp.int32)
  cell = jnp.where(w > 0, cell, num_cells)
  feature_sum = _segment_sum(w[:, None] * e, cell, num_cells + 1)[:num_cells]
  weight_sum = _segment_sum(w, cell, num_cells + 1)[:num_cells]
  f = l2_normalize(feature_sum).reshape(num_classes, num_prototypes, dim)
  old = prototypes.astype(jnp.float32)
  new = l2_normalize(momentum * old + (1.0 - momentum) * f)
  touched = (weight_sum > 0).reshape(num_classes, num_prototypes, 1)
  return jnp.where(touched, new, old)


class PixelAssignment(NamedTuple):
  """Per-pixel labels of one dataset's samples, each (n, H, W).

  global_class int32 (j), local_class int32 (k = j − offset), assignment int32 (m*), weight float32 (confidence,
  0 for pixels outside GT windows, with zero target weight, or whose most similar class is not j).
  """

  global_class: jax.Array
  local_class: jax.Array
  assignment: jax.Array
  weight: jax.Array


def assign_pixels(
  prototypes: jax.Array,
  embeddings: Mapping[str, jax.Array],
  heatmaps: Mapping[str, jax.Array],
  target_weights: Mapping[str, jax.Array],
  offsets: Mapping[str, int],
  kappa: float = 0.05,
  iterations: int = 3,
  similarities: Mapping[str, jax.Array] | None = None,
) -> dict[str, PixelAssignment]:
  """Labels and Sinkhorn prototype assignments for every pixel of a global batch.

  The Sinkhorn runs jointly over the pixels of all datasets (one block per global class), so the result depends
  on the global batch only. A pixel's weight is zeroed when its globally most similar class
  argmax_j max_m s_{p,j,m} (over all J) differs from its global class: both sides are global indices.

  Args:
    prototypes: (J, M, F). Per dataset name: embeddings (n_d, H, W, F), heatmaps (n_d, H, W, K_d) GT,
    target_weights (n_d, K_d), offsets the global index of keypoint 0. similarities: optional precomputed
    `similarity(embeddings, prototypes)` per dataset, (n_d, H, W, J, M).
  Returns: {name: PixelAssignment} with (n_d, H, W) fields.
  """
  num_classes, num_prototypes = prototypes.shape[:2]
  names = list(embeddings)
  labels, scores = {}, []
  for name in names:
    sim = similarities[name] if similarities is not None else similarity(embeddings[name], prototypes)
    sim = jax.lax.stop_gradient(sim)
    cls, confidence, valid = pixel_labels(heatmaps[name], target_weights[name], offsets[name])
    best = jnp.argmax(jnp.max(sim, axis=-1), axis=-1)
    labels[name] = (cls, valid, jnp.where(valid & (best == cls), confidence, 0.0))
    # s_{p, j(p), m} for the pixel's own class: (n, H, W, M).
    scores.append(jnp.take_along_axis(sim, cls[..., None, None], axis=-2)[..., 0, :].reshape(-1, num_prototypes))
  cat = lambda i: jnp.concatenate([labels[name][i].reshape(-1) for name in names])
  assignment = sinkhorn_assign(jnp.concatenate(scores), cat(0), cat(1), num_classes, kappa, iterations)
  out, start = {}, 0
  for name in names:
    cls, _, weight = labels[name]
    m = assignment[start : start + cls.size].reshape(cls.shape)
    out[name] = PixelAssignment(cls, cls - jnp.int32(offsets[name]), m, weight)
    start += cls.size
  return out


def update_prototypes(
  prototypes: jax.Array,
  embeddings: Mapping[str, jax.Array],
  assignments: Mapping[str, PixelAssignment],
  momentum: float = 0.999,
) -> jax.Array:
  """`momentum_update` on all pixels of the global batch: embeddings {name: (n_d, H, W, F)}, assignments from
  `assign_pixels` → new prototypes (J, M, F)."""
  names = list(assignments)
  dim = prototypes.shape[-1]
  cat = lambda f: jnp.concatenate([f(name).reshape(-1) for name in names])
  e = jnp.concatenate([embeddings[name].reshape(-1, dim) for name in names])
  return momentum_update(
    prototypes,
    e,
    cat(lambda n: assignments[n].global_class),
    cat(lambda n: assignments[n].assignment),
    cat(lambda n: assignments[n].weight),
    momentum,
  )


def _farthest_point_init(x: jax.Array, num_clusters: int, rng: jax.Array) -> jax.Array:
  """Initial centroids (C, F): a random first point, then repeatedly the point farthest (1 − |cos|) from all
  chosen ones; deterministic given the first pick and robust to unlucky draws."""
  first = jax.random.randint(rng, (), 0, x.shape[0])
  centroids = jnp.zeros((num_clusters, x.shape[1]), jnp.float32).at[0].set(x[first])
  min_dist = 1.0 - jnp.abs(_cos(x, x[first][None]))[:, 0]

  def body(c, carry):
    centroids, min_dist = carry
    pick = x[jnp.argmax(min_dist)]
    return centroids.at[c].set(pick), jnp.minimum(min_dist, 1.0 - jnp.abs(_cos(x, pick[None]))[:, 0])

  centroids, _ = jax.lax.fori_loop(1, num_clusters, body, (centroids, min_dist))
  return centroids


def cluster_responsibilities(x: jax.Array, centroids: jax.Array, temperature: float) -> jax.Array:
  """Soft assignment of each point to the clusters: x (N, F), centroids (C, F), both unit norm →
  r (N, C) = softmax over the CLUSTER axis of |cos(x_i, μ_c)|/τ (each row sums to 1)."""
  return jax.nn.softmax(jnp.abs(_cos(x, centroids)) / temperature, axis=1)


def cluster_prototypes(prototypes: jax.Array, num_clusters: int, iterations: int, temperature: float, rng: jax.Array):
  """Cluster prototypes for the CPS terms: soft k-means over all J·M prototypes on the cosine distance.

  Interpretation (the supplement, §3.2/Fig. 5: learned prototypes "align similar keypoints across different
  datasets", e.g. COCO nose with 3DPW jaw; docs/METHOD.md §2: CPS = the PPC/PPD/PHM terms on "cluster prototypes"
  from clustering all J·M prototypes at the start of stage 2): each prototype is replaced by the centroid of its
  cluster, so keypoints of different skeletons whose prototypes fall in one cluster share a target direction, and
  the CPS terms pull their embeddings together across datasets. The cluster prototypes keep the (J, M, F) layout,
  so every prototype function and loss applies to them unchanged.

  The distance is 1 − |cos|, consistent with the |cos| similarity (c and −c give the same heatmap); members are
  sign-aligned to their centroid when it is updated. Centroids start from farthest-point picks; each iteration
  computes responsibilities r (J·M, C), a softmax over the cluster axis, and μ_c = normalise(Σ_i r_ic σ_ic x_i)
  with σ_ic = sign⟨x_i, μ_c⟩. Finally every prototype takes its most similar centroid (argmax over clusters),
  signed to point the prototype's way.

  Args: prototypes (J, M, F); num_clusters C ≤ J·M (static); iterations (static); temperature τ; rng key.
  Returns: (cluster prototypes float32 (J, M, F) unit norm, assignment int32 (J·M,) cluster of each prototype).
  """
  num_classes, num_prototypes, dim = prototypes.shape
  x = l2_normalize(jax.lax.stop_gradient(prototypes)).reshape(-1, dim)
  if not 1 <= num_clusters <= x.shape[0]:
    raise ValueError(f'num_clusters must be in [1, {x.shape[0]}] (the number of prototypes), got {num_clusters}')
  centroids = _farthest_point_init(x, num_clusters, rng)

  def step(_, centroids):
    r = cluster_responsibilities(x, centroids, temperature)
    sign = jnp.sign(_cos(x, centroids))
    total = jnp.einsum('nc,nf->cf', r * sign, x, precision=_HIGHEST)
    norm = jnp.linalg.norm(total, axis=-1, keepdims=True)
    return jnp.where(norm > 1e-6, total / jnp.maximum(norm, 1e-12), centroids)

  centroids = jax.lax.fori_loop(0, iterations, step, centroids)
  cos = _cos(x, centroids)
  assignment = jnp.argmax(jnp.abs(cos), axis=1).astype(jnp.int32)
  chosen = jnp.take_along_axis(cos, assignment[:, None], axis=1)
  clustered = centroids[assignment] * jnp.where(chosen < 0, -1.0, 1.0)
  return clustered.reshape(num_classes, num_prototypes, dim), assignment
