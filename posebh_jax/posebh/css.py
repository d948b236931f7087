"""Cross-type self-supervision (CSS, docs/METHOD.md §2): pseudo-labels for a dataset's keypoints on samples of other
datasets, where a head and the prototype heatmap agree. Includes a jnp DARK-UDP decoder and UDP Gaussian encoder
that mirror the NumPy codecs (posebh_jax.codecs.heatmap) on (n, H, W, K) arrays with static shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.codecs import heatmap as heatmap_codec
from posebh_jax.losses.heatmap import joints_mse
from posebh_jax.posebh.prototypes import pixel_labels

DARK_KERNEL = heatmap_codec.DARK_KERNEL


def _argmax_xy(maps):
  """maps (n, K, H, W) → integer (x, y) of the first maximum (n, K, 2) float32, and the maximum (n, K)."""
  n, k, h, w = maps.shape
  flat = maps.reshape(n, k, h * w)
  index = jnp.argmax(flat, axis=-1)
  return jnp.stack([index % w, index // w], axis=-1).astype(jnp.float32), jnp.max(flat, axis=-1)


def _blur(maps, kernel):
  """Separable Gaussian blur with zero padding (as the codec's correlate1d, mode='constant') of (n, K, H, W)."""
  sigma = 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8  # what OpenCV derives from the kernel size
  taps = np.arange(kernel, dtype=np.float64) - (kernel - 1) / 2.0
  weights = np.exp(-(taps**2) / (2.0 * sigma**2))
  weights = (weights / weights.sum()).astype(np.float32)
  radius = kernel // 2
  for axis in (3, 2):
    size = maps.shape[axis]
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = jnp.pad(maps, pad)
    maps = sum(float(weights[t]) * jax.lax.slice_in_dim(padded, t, t + size, axis=axis) for t in range(kernel))
  return maps


def decode_dark_udp(heatmaps: jax.Array, kernel: int = DARK_KERNEL):
  """Argmax + DARK-UDP sub-pixel refinement, as `codecs.heatmap.decode(..., 'udp')`.

  Args: heatmaps (n, H, W, K).
  Returns: coords float32 (n, K, 2) (x, y) in heatmap px (−1 where the maximum is ≤ 0), peak values (n, K).
  """
  maps = jnp.transpose(heatmaps.astype(jnp.float32), (0, 3, 1, 2))
  n, k, h, w = maps.shape
  coords, peaks = _argmax_xy(maps)
  coords = jnp.where((peaks <= 0)[..., None], -1.0, coords)

  blurred = _blur(maps, kernel)
  blurred_max = jnp.max(blurred, axis=(2, 3), keepdims=True)
  ratio = jnp.where(blurred_max > 0, peaks[..., None, None] / jnp.where(blurred_max > 0, blurred_max, 1.0), 1.0)
  log_maps = jnp.log(jnp.clip(blurred * ratio, 0.001, 50.0))
  padded = jnp.pad(log_maps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode='edge').reshape(n, k, -1)
  px = jnp.clip(jnp.round(coords[..., 0]), 0, w - 1).astype(jnp.int32) + 1
  py = jnp.clip(jnp.round(coords[..., 1]), 0, h - 1).astype(jnp.int32) + 1

  def at(dx, dy):
    index = (py + dy) * (w + 2) + px + dx
    return jnp.take_along_axis(padded, index[..., None], axis=-1)[..., 0]

  numerator_x, numerator_y, det = heatmap_codec.taylor_newton_step(at)
  step = jnp.stack([numerator_x / det, numerator_y / det], axis=-1)
  valid = jnp.all(coords >= 0, axis=-1) & (peaks > 0) & jnp.all(jnp.isfinite(step), axis=-1)
  refined = jnp.where(valid[..., None], coords - jnp.where(valid[..., None], step, 0.0), coords)
  return refined, peaks


def udp_gaussian(coords: jax.Array, height: int, width: int, sigma: float = 2.0) -> jax.Array:
  """UDP Gaussian heatmaps centred at sub-pixel coords, truncated to radius 3σ around the rounded centre, as
  `codecs.heatmap.encode_udp` (with heatmap px as input).

  Args: coords (n, K, 2) (x, y) heatmap px; non-finite coords give zero maps.
  Returns: float32 (n, height, width, K).
  """
  coords = coords.astype(jnp.float32)
  finite = jnp.all(jnp.isfinite(coords), axis=-1, keepdims=True)
  centers = jnp.where(finite, coords, 0.0)
  rounded = jnp.floor(centers + 0.5)
  radius = 3.0 * sigma

  def axis_profile(size, c, r):
    grid = jnp.arange(size, dtype=jnp.float32)
    inside = jnp.abs(grid - r[..., None]) <= radius
    return jnp.exp(-jnp.square(grid - c[..., None]) / (2.0 * sigma**2)) * inside

  gx = axis_profile(width, centers[..., 0], rounded[..., 0])  # (n, K, W)
  gy = axis_profile(height, centers[..., 1], rounded[..., 1])  # (n, K, H)
  maps = gy[..., :, None] * gx[..., None, :] * finite[..., None]
  return jnp.transpose(maps, (0, 2, 3, 1))


def css_targets(
  head_heatmaps: jax.Array,
  proto_heatmaps: jax.Array,
  min_peak: float = 0.25,
  max_distance: float = 2.1,
  sigma: float = 2.0,
):
  """CSS pseudo-labels for dataset d's keypoints on samples of another dataset.

  (i, k) is kept when both peaks s_H, s_h exceed `min_peak` and the two integer argmax positions (x, y) are at
  most `max_distance` heatmap px apart. Then t = (s_H·y_H + s_h·y_h) / max(s_H + s_h, 1e-4) with y_H, y_h the
  DARK-UDP coordinates, and T = UDP Gaussian at t.

  Args: head_heatmaps Ĥ^d (n, H, W, K_d); proto_heatmaps ĥ^d (n, H, W, K_d), dataset d's channels.
  Returns: target T float32 (n, H, W, K_d) (zero where not kept); weight ω (n, K_d) = min(s_H, s_h) where kept,
    else 0. Both without gradient.
  """
  head = jax.lax.stop_gradient(head_heatmaps.astype(jnp.float32))
  proto = jax.lax.stop_gradient(proto_heatmaps.astype(jnp.float32))
  argmax_head, _ = _argmax_xy(jnp.transpose(head, (0, 3, 1, 2)))
  argmax_proto, _ = _argmax_xy(jnp.transpose(proto, (0, 3, 1, 2)))
  y_head, s_head = decode_dark_udp(head)
  y_proto, s_proto = decode_dark_udp(proto)
  distance = jnp.linalg.norm(argmax_head - argmax_proto, axis=-1)
  keep = (s_head > min_peak) & (s_proto > min_peak) & (distance <= max_distance)
  t = (s_head[..., None] * y_head + s_proto[..., None] * y_proto) / jnp.maximum(s_head + s_proto, 1e-4)[..., None]
  weight = jnp.where(keep, jnp.minimum(s_head, s_proto), 0.0)
  target = udp_gaussian(t, head.shape[1], head.shape[2], sigma) * keep[:, None, None, :]
  return jax.lax.stop_gradient(target), jax.lax.stop_gradient(weight)


def css_loss(
  head_heatmaps: jax.Array, proto_heatmaps: jax.Array, target: jax.Array, weight: jax.Array, alpha: float
) -> jax.Array:
  """Heatmap part of L_CSS for one (dataset d, other samples) pair: joints-MSE_ω(Ĥ^d, T) + α·joints-MSE_ω(ĥ^d, T).

  Args: head_heatmaps, proto_heatmaps, target (n, H, W, K_d); weight ω (n, K_d). Returns a float32 scalar.
  """
  return joints_mse(head_heatmaps, target, weight) + alpha * joints_mse(proto_heatmaps, target, weight)


def css_pixel_labels(target: jax.Array, weight: jax.Array):
  """Pixel labels for the PPC/PPD part of CSS from the pixels of T·ω.

  Args: target T (n, H, W, K_d); weight ω (n, K_d).
  Returns: local_class int32 (n, H, W) = argmax_k T_k ω_k; confidence float32 (n, H, W) = max_k T_k ω_k (the
    pixel weight, T's confidence × ω); valid bool (n, H, W) where that is > 0.
  Equivalently, `prototypes.assign_pixels` accepts (T·ω, ω) as heatmaps and target weights to also get the
  Sinkhorn m* and the most-similar-class mask.
  """
  weighted = target.astype(jnp.float32) * weight.astype(jnp.float32)[:, None, None, :]
  return pixel_labels(weighted, weight, 0)
