"""PoseBH prototype losses for one dataset's samples (docs/METHOD.md §2): PHM (prototype heatmap MSE), PPC (pixel–
prototype contrast) and PPD (pixel–prototype distance). Each returns a float32 scalar; PPC and PPD average over
pixels with positive weight and are 0 when there are none."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posebh_jax.losses.heatmap import joints_mse


def dataset_prototype_columns(global_offset: int, num_keypoints: int, per_keypoint: int) -> slice:
  """Columns of dataset d in the J·M flattening of (..., J, M) similarities: slice(offset·M, (offset + K_d)·M).

  Inside that range local class k, prototype m is column k·M + m (global column (offset + k)·M + m)."""
  return slice(global_offset * per_keypoint, (global_offset + num_keypoints) * per_keypoint)


def dataset_similarity(sim: jax.Array, global_offset: int, num_keypoints: int) -> jax.Array:
  """Dataset d's own prototypes out of all: sim (..., J, M) → (..., K_d, M), keypoints offset … offset + K_d."""
  return sim[..., global_offset : global_offset + num_keypoints, :]


def _masked_mean(per_pixel, weight, weighted):
  positive = weight > 0
  w = jnp.where(positive, weight.astype(jnp.float32) if weighted else 1.0, 0.0)
  total = jnp.sum(w)
  return jnp.where(total > 0, jnp.sum(jnp.where(positive, per_pixel, 0.0) * w) / jnp.maximum(total, 1e-12), 0.0)


def phm_loss(proto_heatmaps: jax.Array, gt: jax.Array, target_weights: jax.Array) -> jax.Array:
  """PHM: joints MSE between prototype heatmaps (n, H, W, K_d) of the dataset's channels and its GT (n, H, W, K_d)
  with target weights (n, K_d)."""
  return joints_mse(proto_heatmaps, gt, target_weights)


def _target_column(local_class, assignment, per_keypoint, weight):
  return jnp.where(weight > 0, local_class * per_keypoint + assignment, 0).astype(jnp.int32)


def ppc_loss(
  sim: jax.Array, local_class: jax.Array, assignment: jax.Array, weight: jax.Array, weighted: bool = False
) -> jax.Array:
  """PPC: cross-entropy over the dataset's K_d·M prototype logits (the |cos| values) with target k·M + m*.

  Args:
    sim: (n, H, W, K_d, M) similarities to dataset d's own prototypes (`dataset_similarity`).
    local_class, assignment: (n, H, W) int k and m*; weight: (n, H, W), pixels with weight ≤ 0 are ignored.
    weighted: average with the weights instead of uniformly over the positive pixels.
  Returns: float32 scalar.
  """
  per_keypoint = sim.shape[-1]
  logits = sim.astype(jnp.float32).reshape(sim.shape[:-2] + (-1,))
  target = _target_column(local_class, assignment, per_keypoint, weight)
  picked = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
  return _masked_mean(jax.nn.logsumexp(logits, axis=-1) - picked, weight, weighted)


def ppd_loss(
  sim: jax.Array, local_class: jax.Array, assignment: jax.Array, weight: jax.Array, weighted: bool = False
) -> jax.Array:
  """PPD: mean over positive-weight pixels of (1 − s_{p,k,m*})²; same arguments as `ppc_loss`."""
  per_keypoint = sim.shape[-1]
  flat = sim.astype(jnp.float32).reshape(sim.shape[:-2] + (-1,))
  target = _target_column(local_class, assignment, per_keypoint, weight)
  picked = jnp.take_along_axis(flat, target[..., None], axis=-1)[..., 0]
  return _masked_mean(jnp.square(1.0 - picked), weight, weighted)
