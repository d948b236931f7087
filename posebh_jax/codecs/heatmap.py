"""Gaussian heatmap codecs (MSRA and UDP), decoding with DARK-UDP / quarter-pixel refinement, flip test.

Coordinates are `(x, y)` with pixel centres at integers. Sizes are `(W, H)` like OpenCV. Heatmaps are
`(K, h, w)` per instance and `(N, K, h, w)` for batches.

Two encodings follow the reference top-down pipelines:
- MSRA: keypoint -> heatmap px by `x / stride` with `stride = input / heatmap`; the Gaussian is centred at
  the *rounded* location. Paired with the classic (biased) affine transform.
- UDP: keypoint -> heatmap px by `x * (w - 1) / (W_in - 1)`; the Gaussian is centred at the exact sub-pixel
  location. Paired with the UDP affine transform, so image, crop and heatmap grids are unbiased.
In both, the Gaussian is truncated to a window of radius `3 sigma` around the rounded centre, and a keypoint
gets weight 0 when it is not visible or when that window does not touch the heatmap at all (a keypoint just
outside the heatmap whose window still overlaps it keeps a partial Gaussian and weight 1, as in the reference).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

DEFAULT_SIGMA = 2.0
DARK_KERNEL = 11


def _gaussian_targets(centers_hm, rounded_hm, visible, heatmap_size_wh, sigma, channels_last=False):
  """Separable truncated Gaussians: centres `(K, 2)` (sub-pixel), window centres `(K, 2)` (integer).

  All K joints at once (no per-joint loop): the x and y profiles `(K, w)`, `(K, h)` come from one `exp`,
  the weights are folded into the y profile and the maps are their float32 outer product, laid out
  `(K, h, w)` or, with `channels_last`, `(h, w, K)` (the same values, no transpose needed).
  """
  w, h = (int(v) for v in heatmap_size_wh)
  radius = 3.0 * sigma
  finite = np.isfinite(centers_hm).all(axis=-1)
  centers = np.where(finite[:, None], centers_hm, 0.0)
  rounded = np.where(finite[:, None], rounded_hm, -1e9)
  # The window [rounded - radius, rounded + radius] must contain at least one heatmap pixel.
  touches = (
    (rounded[:, 0] + radius >= 0)
    & (rounded[:, 0] - radius <= w - 1)
    & (rounded[:, 1] + radius >= 0)
    & (rounded[:, 1] - radius <= h - 1)
  )
  weights = (visible & finite & touches).astype(np.float32)
  grid = np.arange(max(w, h), dtype=np.float64)
  # profiles[k, 0] along x, profiles[k, 1] along y, zero outside the window.
  profiles = np.exp((grid - centers[:, :, None]) ** 2 * (-0.5 / sigma**2))
  profiles *= np.abs(grid - rounded[:, :, None]) <= radius
  gx = profiles[:, 0, :w].astype(np.float32)
  gy = (profiles[:, 1, :h] * weights[:, None]).astype(np.float32)
  if channels_last:
    heatmaps = gy.T[:, None, :] * gx.T[None, :, :]
  else:
    heatmaps = gy[:, :, None] * gx[:, None, :]
  return heatmaps, weights


def _check_encode_args(keypoints_xy, visible, sigma):
  keypoints = np.asarray(keypoints_xy, dtype=np.float64)
  if keypoints.ndim != 2 or keypoints.shape[1] != 2:
    raise ValueError(f"keypoints_xy must have shape (K, 2), got {keypoints.shape}")
  vis = np.asarray(visible).reshape(-1) > 0
  if vis.shape[0] != keypoints.shape[0]:
    raise ValueError(f"visible must have shape ({keypoints.shape[0]},), got {np.shape(visible)}")
  if sigma <= 0:
    raise ValueError(f"sigma must be positive, got {sigma}")
  return keypoints, vis


def encode_msra(
  keypoints_xy, visible, input_size_wh, heatmap_size_wh, sigma: float = DEFAULT_SIGMA, channels_last: bool = False
):
  """MSRA Gaussian targets.

  Args:
    keypoints_xy: `(K, 2)` keypoints in input-crop px.
    visible: `(K,)`; entries > 0 count as labelled (pass the COCO visibility directly).
    input_size_wh, heatmap_size_wh: `(W, H)` of the crop and of the heatmap.
    sigma: Gaussian standard deviation in heatmap px.
    channels_last: lay the heatmaps out `(h, w, K)` instead of `(K, h, w)`.
  Returns:
    `heatmaps` float32 `(K, h, w)` with peak 1 at the rounded location `floor(x / stride + 0.5)`,
    `weights` float32 `(K,)`.
  """
  keypoints, vis = _check_encode_args(keypoints_xy, visible, sigma)
  stride = np.asarray(input_size_wh, np.float64) / np.asarray(heatmap_size_wh, np.float64)
  rounded = np.floor(keypoints / stride + 0.5)
  return _gaussian_targets(rounded, rounded, vis, heatmap_size_wh, sigma, channels_last)


def encode_udp(
  keypoints_xy, visible, input_size_wh, heatmap_size_wh, sigma: float = DEFAULT_SIGMA, channels_last: bool = False
):
  """UDP Gaussian targets centred at the exact sub-pixel location `x * (w - 1) / (W_in - 1)`.

  Same arguments and returns as `encode_msra`; the truncation window is centred at the rounded location.
  """
  keypoints, vis = _check_encode_args(keypoints_xy, visible, sigma)
  in_wh = np.asarray(input_size_wh, np.float64)
  hm_wh = np.asarray(heatmap_size_wh, np.float64)
  centers = keypoints * (hm_wh - 1.0) / (in_wh - 1.0)
  return _gaussian_targets(centers, np.floor(centers + 0.5), vis, heatmap_size_wh, sigma, channels_last)


def _check_batch(heatmaps):
  heatmaps = np.asarray(heatmaps)
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must have shape (N, K, h, w), got {heatmaps.shape}")
  return heatmaps


def decode_argmax(heatmaps):
  """Per-channel maximum of `(N, K, h, w)` heatmaps.

  Returns `coords` float32 `(N, K, 2)` = integer (x, y) heatmap px of the maximum (first one in row-major
  order on ties) and `scores` float32 `(N, K)` = the maximum value. Where the maximum is <= 0 the
  coordinates are set to -1.
  """
  heatmaps = _check_batch(heatmaps)
  n, k, h, w = heatmaps.shape
  flat = heatmaps.reshape(n, k, h * w)
  index = np.argmax(flat, axis=-1)
  scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0].astype(np.float32)
  coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
  coords[scores <= 0] = -1.0
  return coords, scores


def decode_argmax_jax(heatmaps):
  """Device-side `decode_argmax` for `(N, K, h, w)` jnp heatmaps; same semantics, returns jnp arrays."""
  import jax.numpy as jnp  # lazy: the host-side codecs (and data_pipeline) must not need jax

  n, k, h, w = heatmaps.shape
  flat = heatmaps.reshape(n, k, h * w)
  index = jnp.argmax(flat, axis=-1)
  scores = jnp.max(flat, axis=-1).astype(jnp.float32)
  coords = jnp.stack([index % w, index // w], axis=-1).astype(jnp.float32)
  coords = jnp.where((scores <= 0)[..., None], -1.0, coords)
  return coords, scores


def _cv2_gaussian_sigma(kernel: int) -> float:
  """The sigma OpenCV derives from a kernel size when none is given (2.0 for kernel 11)."""
  return 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8


def _modulate(heatmaps, kernel):
  """DARK distribution modulation: Gaussian blur (zero padding outside), rescaled to the original max."""
  sigma = _cv2_gaussian_sigma(kernel)
  taps = np.arange(kernel, dtype=np.float64) - (kernel - 1) / 2.0
  weights = np.exp(-(taps**2) / (2.0 * sigma**2))
  weights /= weights.sum()
  blurred = heatmaps.astype(np.float32)
  for axis in (-1, -2):
    blurred = ndimage.correlate1d(blurred, weights.astype(np.float32), axis=axis, mode="constant", cval=0.0)
  original_max = heatmaps.max(axis=(-2, -1), keepdims=True)
  blurred_max = blurred.max(axis=(-2, -1), keepdims=True)
  ratio = np.divide(original_max, blurred_max, out=np.ones_like(blurred_max), where=blurred_max > 0)
  return blurred * ratio


def taylor_newton_step(at):
  """The Newton step `-H^-1 g` of DARK's second-order Taylor expansion of a log heatmap around integer pixels.

  `at(dx, dy)` returns the log map at offset (dx, dy) from each pixel, as numpy or jax arrays of one shape S
  (only arithmetic is used, so both the host decoder and the jitted one in `posebh.css` share it). Returns
  `(numerator_x, numerator_y, det)` of shape S: the step is `numerator / det` (det may be 0 on flat maps).
  """
  center = at(0, 0)
  right, left, down, up = at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
  dx = 0.5 * (right - left)
  dy = 0.5 * (down - up)
  dxx = right - 2.0 * center + left
  dyy = down - 2.0 * center + up
  dxy = 0.5 * (at(1, 1) - right - down + 2.0 * center - left - up + at(-1, -1))
  eps = float(np.finfo(np.float32).eps)
  a, d = dxx + eps, dyy + eps
  det = a * d - dxy * dxy
  return d * dx - dxy * dy, a * dy - dxy * dx, det


def refine_dark_udp(heatmaps, coords, kernel: int = DARK_KERNEL):
  """DARK sub-pixel refinement for UDP heatmaps.

  The heatmaps are blurred with a `kernel` x `kernel` Gaussian (sigma as OpenCV derives it) and rescaled to
  their original maxima, clipped to [0.001, 50] and log-transformed; around each integer location the log
  map is approximated by its second-order Taylor expansion (central first derivatives and the Hessian,
  edge-replicated at the borders) and the location moves by `-H^-1 g`.

  Args:
    heatmaps: `(N, K, h, w)`.
    coords: `(N, K, 2)` heatmap px, normally the argmax; rounded to the nearest pixel before use.
  Returns: refined float32 `(N, K, 2)`. Entries with a negative coordinate (no maximum), a non-positive
    heatmap maximum or a non-finite step are returned unchanged.

  As in the reference, the blur pads with zeros, which pulls peaks within about a kernel radius of the
  border inwards (up to ~0.8 px for a sigma-2 target one pixel from the edge); interior peaks of a UDP
  target are recovered to ~1e-4 px.
  """
  heatmaps = _check_batch(heatmaps)
  coords = np.asarray(coords, dtype=np.float64)
  n, k, h, w = heatmaps.shape
  log_maps = np.log(np.clip(_modulate(heatmaps, kernel), 0.001, 50.0))
  padded = np.pad(log_maps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").astype(np.float64)

  px = np.clip(np.rint(coords[..., 0]), 0, w - 1).astype(np.int64) + 1
  py = np.clip(np.rint(coords[..., 1]), 0, h - 1).astype(np.int64) + 1
  batch = np.arange(n)[:, None]
  channel = np.arange(k)[None, :]

  def at(dx, dy):
    return padded[batch, channel, py + dy, px + dx]

  numerator_x, numerator_y, det = taylor_newton_step(at)
  with np.errstate(divide="ignore", invalid="ignore"):
    step = np.stack([numerator_x / det, numerator_y / det], axis=-1)

  valid = np.all(coords >= 0, axis=-1) & (heatmaps.max(axis=(-2, -1)) > 0) & np.all(np.isfinite(step), axis=-1)
  refined = np.where(valid[..., None], coords - step, coords)
  return refined.astype(np.float32)


def refine_quarter_shift(heatmaps, coords):
  """Move each integer location 0.25 px towards its higher neighbour, separately along x and y.

  `heatmaps` `(N, K, h, w)`, `coords` `(N, K, 2)` heatmap px (normally the argmax). An axis is shifted
  only when both neighbours along it exist; entries with a negative coordinate are left unchanged.
  Returns float32 `(N, K, 2)`.
  """
  heatmaps = _check_batch(heatmaps)
  coords = np.asarray(coords, dtype=np.float64)
  n, k, h, w = heatmaps.shape
  x = np.rint(coords[..., 0]).astype(np.int64)
  y = np.rint(coords[..., 1]).astype(np.int64)
  valid = np.all(coords >= 0, axis=-1)
  shift_x = valid & (x > 0) & (x < w - 1) & (y >= 0) & (y < h)
  shift_y = valid & (y > 0) & (y < h - 1) & (x >= 0) & (x < w)
  xc, yc = np.clip(x, 1, max(w - 2, 1)), np.clip(y, 1, max(h - 2, 1))
  xs, ys = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
  batch = np.arange(n)[:, None]
  channel = np.arange(k)[None, :]
  grad_x = heatmaps[batch, channel, ys, np.minimum(xc + 1, w - 1)] - heatmaps[batch, channel, ys, xc - 1]
  grad_y = heatmaps[batch, channel, np.minimum(yc + 1, h - 1), xs] - heatmaps[batch, channel, yc - 1, xs]
  refined = coords.copy()
  refined[..., 0] += np.where(shift_x, 0.25 * np.sign(grad_x), 0.0)
  refined[..., 1] += np.where(shift_y, 0.25 * np.sign(grad_y), 0.0)
  return refined.astype(np.float32)


DECODE_METHODS = ("udp", "msra")


def decode(heatmaps, method: str):
  """Decode `(N, K, h, w)` heatmaps to `coords` float32 `(N, K, 2)` heatmap px and `scores` `(N, K)`.

  `method` 'udp' = argmax + DARK-UDP refinement (kernel 11); 'msra' = argmax + quarter-pixel shift.
  Scores are the heatmap maxima (before refinement).
  """
  if method not in DECODE_METHODS:
    raise ValueError(f"unknown decode method {method!r}; use one of {DECODE_METHODS}")
  coords, scores = decode_argmax(heatmaps)
  if method == "udp":
    coords = refine_dark_udp(heatmaps, coords, DARK_KERNEL)
  else:
    coords = refine_quarter_shift(heatmaps, coords)
  return coords, scores


def heatmap_to_image(coords, center, scale, heatmap_size_wh, use_udp: bool):
  """Map heatmap px back to image px for unrotated crops (the inverse of crop + heatmap downsampling).

  Args:
    coords: `(N, K, 2)` heatmap px.
    center, scale: `(N, 2)` crop centre and (width, height) in image px.
    heatmap_size_wh: `(w, h)`.
    use_udp: UDP uses `scale / (size - 1)` per heatmap px, the classic pipeline `scale / size`.
  Returns: float64 `(N, K, 2)` image px.
  """
  coords = np.asarray(coords, dtype=np.float64)
  center = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
  scale = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 2)
  size = np.asarray(heatmap_size_wh, dtype=np.float64)
  px_per_cell = scale / (size - 1.0) if use_udp else scale / size
  return coords * px_per_cell + center - 0.5 * scale


def flip_heatmaps(heatmaps, flip_index, shift: bool):
  """Heatmaps predicted on a horizontally flipped crop -> heatmaps for the original crop.

  Mirrors `(N, K, h, w)` heatmaps along w and reorders channels: output channel k is input channel
  `flip_index[k]` (left/right swap). With `shift=True` the result is also moved one pixel to the right
  (column 0 is kept), as the classic (non-UDP) reference does: there, flipping the crop maps heatmap x to
  `w - 1/stride - x` rather than `w - 1 - x`, and the one-pixel shift roughly compensates. UDP pipelines
  are exactly symmetric (x -> w - 1 - x) and use `shift=False`.
  """
  heatmaps = _check_batch(heatmaps)
  flip_index = np.asarray(flip_index, dtype=np.int64)
  if flip_index.shape != (heatmaps.shape[1],):
    raise ValueError(f"flip_index must have shape ({heatmaps.shape[1]},), got {flip_index.shape}")
  flipped = heatmaps[:, flip_index, :, ::-1].copy()
  if shift:
    flipped[..., 1:] = flipped[..., :-1].copy()
  return flipped


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
  """One heatmap convention as an object: encoding, decoding and the mapping back to image px.

  Get one with `get_codec(name)`. Attributes: `name` ('udp' | 'msra'); `use_udp`, the unbiased (UDP) affine
  and coordinate convention (also selects the UDP crop warp); `flip_shift`, whether flip-test heatmaps need
  the one-pixel shift back (`flip_heatmaps(..., shift=codec.flip_shift)`).
  """

  name: str
  use_udp: bool
  flip_shift: bool

  def encode(
    self,
    keypoints_xy,
    visible,
    input_size_wh,
    heatmap_size_wh,
    sigma: float = DEFAULT_SIGMA,
    channels_last: bool = False,
  ):
    """`(K, 2)` input-crop px and `(K,)` visibility -> `(heatmaps (K, h, w) f32, weights (K,) f32)` for
    crops of `input_size_wh` and heatmaps of `heatmap_size_wh` (W, H), Gaussian `sigma` in heatmap px;
    heatmaps `(h, w, K)` with `channels_last`."""
    raise NotImplementedError

  def decode(self, heatmaps):
    """`(N, K, h, w)` heatmaps -> `(coords (N, K, 2) f32 heatmap px, scores (N, K) f32)`."""
    return decode(heatmaps, self.name)

  def to_image(self, coords, center, scale, heatmap_size_wh):
    """Heatmap px `(N, K, 2)` -> float64 image px `(N, K, 2)` for unrotated crops with `center`, `scale`
    `(N, 2)` image px and heatmaps of `heatmap_size_wh` (w, h)."""
    return heatmap_to_image(coords, center, scale, heatmap_size_wh, self.use_udp)

  def heatmap_to_input_scale(self, heatmap_size_wh, input_size_wh) -> np.ndarray:
    """Model-input px per heatmap px, float64 `(2,)` (x, y): UDP `(W - 1) / (w - 1)`, MSRA `W / w`."""
    heat = np.asarray(heatmap_size_wh, np.float64)
    size = np.asarray(input_size_wh, np.float64)
    return (size - 1.0) / (heat - 1.0) if self.use_udp else size / heat


@dataclasses.dataclass(frozen=True)
class UDPHeatmap(HeatmapCodec):
  """UDP encoding (sub-pixel Gaussian) with argmax + DARK-UDP decoding."""

  name: str = "udp"
  use_udp: bool = True
  flip_shift: bool = False

  def encode(
    self,
    keypoints_xy,
    visible,
    input_size_wh,
    heatmap_size_wh,
    sigma: float = DEFAULT_SIGMA,
    channels_last: bool = False,
  ):
    return encode_udp(keypoints_xy, visible, input_size_wh, heatmap_size_wh, sigma, channels_last)


@dataclasses.dataclass(frozen=True)
class MSRAHeatmap(HeatmapCodec):
  """MSRA encoding (Gaussian at the rounded location) with argmax + quarter-pixel shift decoding."""

  name: str = "msra"
  use_udp: bool = False
  flip_shift: bool = True

  def encode(
    self,
    keypoints_xy,
    visible,
    input_size_wh,
    heatmap_size_wh,
    sigma: float = DEFAULT_SIGMA,
    channels_last: bool = False,
  ):
    return encode_msra(keypoints_xy, visible, input_size_wh, heatmap_size_wh, sigma, channels_last)


_CODECS = {"udp": UDPHeatmap(), "msra": MSRAHeatmap()}


def get_codec(name: str) -> HeatmapCodec:
  """The codec called `name` ('udp' or 'msra'); raises ValueError for any other name."""
  if name not in _CODECS:
    raise ValueError(f"unknown heatmap codec {name!r}; use one of: {', '.join(_CODECS)}")
  return _CODECS[name]
