"""grain transforms for top-down pose training and evaluation.

A record (from a tfds data source) holds `image` (JPEG bytes), `bbox` (4,) x, y, w, h and keypoints (K, 3)
x, y, visibility in image px. The train transform samples an augmentation, crops the box region with one
affine warp (flip, half-body, scale and rotation are all folded into the warp matrix, so the full image is
never flipped or rotated) and encodes heatmap targets; the eval transform only crops.

Speed (see benchmarks/input_pipeline.py): the warp matrix is known before the image is decoded, so when the
crop shrinks the image 2x, 4x or 8x the JPEG is decoded at that reduced size (`decode_and_crop`), by
libjpeg-turbo straight to RGB (`decode_jpeg`); targets are computed for all joints at once, directly
channels-last.

Augmentation, in the order it is applied (mmpose's top-down order):
  1. horizontal flip with probability `flip_prob` (keypoints swap left/right through the format's flip_index);
  2. half-body with probability `half_body_prob` when at least `half_body_min_keypoints` keypoints are
     labelled: the box becomes the (1.5x padded, aspect-fixed) extent of the upper or the lower body's
     labelled keypoints (upper if the lower half has < 3, lower if the upper half has < 2, else 50/50);
  3. scale: the crop size is multiplied by `1 + scale_factor * t`, t a standard normal truncated to
     [-1, 1] (so the factor lies in [1 - sf, 1 + sf]);
  4. rotation with probability `rotation_prob` by `rotation * t` degrees, t as above (in [-rot, rot]).
Truncated normals are drawn by rejection from the example's numpy Generator (deterministic per seed/index).
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import grain
import numpy as np
import simplejpeg

from posebh_jax import codecs
from posebh_jax.geometry import affine
from posebh_jax.skeletons import get_format

# Eval padding record (grain drops None elements, so padding is a marker dict).
PADDING = {'padding': True}
HALF_BODY_PADDING = 1.5
HALF_BODY_MIN_UPPER = 2
HALF_BODY_MIN_LOWER = 3
# OpenCV decode flags by size reduction (libjpeg scaled decoding); OpenCV is the fallback decoder.
_DECODE_FLAGS = {
  1: cv2.IMREAD_COLOR,
  2: cv2.IMREAD_REDUCED_COLOR_2,
  4: cv2.IMREAD_REDUCED_COLOR_4,
  8: cv2.IMREAD_REDUCED_COLOR_8,
}
_APP1 = 0xE1
_opencv_threads_set = False


def use_single_threaded_opencv() -> None:
  """Makes OpenCV run single-threaded in this process (once). The loaders already run one transform per
  thread or worker process; OpenCV's own pool on top of that costs more CPU per warp of a demo-sized crop and
  competes with XLA's threads in in-process loading (figures: docs/MEASUREMENTS.md)."""
  global _opencv_threads_set
  if not _opencv_threads_set:
    cv2.setNumThreads(1)
    _opencv_threads_set = True


def has_exif(data: bytes) -> bool:
  """Whether JPEG `data` carries an Exif APP1 segment (which may hold an orientation tag).

  Walks the marker segments before the image data (APPn, COM, DQT, ...), so it costs microseconds.
  """
  view = memoryview(data)
  position = 2
  while position + 4 <= len(view) and view[position] == 0xFF:
    marker = view[position + 1]
    if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: no more metadata
      return False
    length = (view[position + 2] << 8) | view[position + 3]
    if marker == _APP1 and bytes(view[position + 4 : position + 10]) == b'Exif\x00\x00':
      return True
    position += 2 + length
  return False


def decode_jpeg(data: bytes, reduction: int = 1, fast: bool = False) -> np.ndarray:
  """JPEG bytes -> uint8 (ceil(H / r), ceil(W / r), 3) RGB image; raises ValueError if it cannot be decoded.

  With `reduction` r in (2, 4, 8) the image is decoded at 1/r size (libjpeg's scaled IDCT), where reduced
  pixel x' covers original pixels [r x', r x' + r), i.e. its centre is original x = r x' + (r - 1) / 2
  (`reduced_decode_matrix`).

  JPEGs are decoded by libjpeg-turbo through simplejpeg, straight to RGB: the same pixels as
  `cv2.imdecode` (same library, same IDCT; tested) at less CPU time (docs/MEASUREMENTS.md). A JPEG with Exif
  metadata, or one simplejpeg rejects, goes through `cv2.imdecode`, which applies the Exif orientation as
  `cv2.imread` does (so annotations made on the displayed image stay aligned).

  `fast` uses libjpeg's fast integer IDCT and plain (not "fancy") chroma upsampling: less decode time for
  pixels within a gray level or two of the exact decode (what training pipelines such as FFCV use; figures in
  docs/MEASUREMENTS.md); evaluation always decodes exactly.
  """
  if reduction not in _DECODE_FLAGS:
    raise ValueError(f'reduction must be one of {sorted(_DECODE_FLAGS)}, got {reduction}')
  if data[:2] == b'\xff\xd8' and not has_exif(data):
    try:
      height, width = simplejpeg.decode_jpeg_header(data)[:2]
      # simplejpeg picks the smallest libjpeg scale whose output is at least this size: exactly 1/r.
      return simplejpeg.decode_jpeg(
        data,
        'RGB',
        fastdct=fast,
        fastupsample=fast,
        min_height=-(-height // reduction),
        min_width=-(-width // reduction),
      )
    except ValueError:
      pass  # e.g. a recoverable libjpeg warning (strict mode) or an unusual colour space: let OpenCV try
  try:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS[reduction]) if len(data) else None
  except cv2.error:
    image = None
  if image is None:
    raise ValueError(f'could not decode an image of {len(data)} bytes; re-prepare the dataset')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_reduction(matrix: np.ndarray, max_reduction: int = 8) -> int:
  """The largest r in (1, 2, 4, 8) (<= `max_reduction`) at which a crop with affine `matrix` loses nothing.

  That is the largest r with r * s <= 1, s the largest singular value of the matrix's linear part (crop px
  per image px along the least-shrunk direction): decoding at 1/r then still maps at most one decoded
  pixel onto each crop pixel, and the scaled decode's block averaging stands in for the anti-aliasing
  that the bilinear warp of the full image lacks.
  """
  linear = np.asarray(matrix, np.float64)[:, :2]
  squares = float(np.sum(linear * linear))
  det = float(linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0])
  s_max = np.sqrt(0.5 * (squares + np.sqrt(max(squares * squares - 4.0 * det * det, 0.0))))
  reduction = 1
  while reduction < max_reduction and 2 * reduction * s_max <= 1.0 + 1e-9:
    reduction *= 2
  return reduction


def reduced_decode_matrix(matrix: np.ndarray, reduction: int) -> np.ndarray:
  """Composes an image -> crop affine (2, 3) with reduced px -> image px (x = r x' + (r - 1) / 2)."""
  matrix = np.asarray(matrix, np.float64)
  if reduction == 1:
    return matrix
  offset = 0.5 * (reduction - 1)
  out = np.empty((2, 3), np.float64)
  out[:, :2] = matrix[:, :2] * reduction
  out[:, 2] = matrix[:, 2] + offset * (matrix[:, 0] + matrix[:, 1])
  return out


def decode_and_crop(
  data: bytes, matrix: np.ndarray, output_size_wh, reduced_decode: bool = True, fast_decode: bool = False
) -> np.ndarray:
  """JPEG bytes -> uint8 RGB crop (H, W, 3) through the image -> crop affine `matrix` (bilinear, black border).

  With `reduced_decode`, the JPEG is decoded at the smallest size `decode_reduction` allows and the warp
  is adjusted to it, so the crop shows the same region at a fraction of the decode cost; it differs from
  the full-size crop only where the full-size bilinear warp aliases (the scaled decode averages r x r
  blocks, which is closer to a properly filtered crop). `fast_decode`: see `decode_jpeg`'s `fast`.
  """
  reduction = decode_reduction(matrix) if reduced_decode else 1
  image = decode_jpeg(data, reduction, fast_decode)
  return cv2.warpAffine(
    image,
    reduced_decode_matrix(matrix, reduction),
    tuple(output_size_wh),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=(0, 0, 0),
  )


def truncated_normal(rng: np.random.Generator) -> float:
  """A standard normal sample conditioned on [-1, 1] (rejection sampling)."""
  while True:
    value = rng.standard_normal()
    if -1.0 <= value <= 1.0:
      return float(value)


def crop_matrix(
  center, scale, rotation_deg: float, flip: bool, image_width: int, output_size_wh, use_udp: bool
) -> np.ndarray:
  """(2, 3) affine matrix mapping original-image px to crop px, optionally with a horizontal flip first.

  `center` and `scale` describe the crop in the original (unflipped) image. With `flip`, the image is
  mirrored (x -> image_width - 1 - x, the pixel-centre flip) before the crop; the crop centre moves with
  it. The result is meant for `cv2.warpAffine` on the original image. `image_width` cancels out (the
  flip amounts to a mirror about the crop centre), so the matrix can be built before the image is decoded.
  """
  center = np.asarray(center, np.float64).reshape(2)
  if flip:
    center = np.array([image_width - 1.0 - center[0], center[1]])
  matrix = affine.get_warp_matrix(center, scale, rotation_deg, output_size_wh, use_udp)
  if flip:
    mirror = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    matrix = matrix @ mirror
  return matrix


def warp_keypoints(keypoints: np.ndarray, matrix: np.ndarray, output_size_wh, flip_index=None) -> np.ndarray:
  """Maps keypoints (K, 3) through an affine (2, 3) matrix; returns float32 (K, 3).

  With `flip_index` (int (K,)), channels are permuted so that output keypoint i is input keypoint
  flip_index[i] (left/right swap after a horizontal flip). Keypoints that land outside the crop
  (x outside [0, W-1] or y outside [0, H-1], `output_size_wh` = (W, H)) get visibility 0.
  """
  keypoints = np.asarray(keypoints, np.float32)
  out = np.empty_like(keypoints)
  out[:, :2] = affine.transform_points(keypoints[:, :2], matrix)
  out[:, 2] = keypoints[:, 2]
  if flip_index is not None:
    out = out[np.asarray(flip_index)]
  width, height = output_size_wh
  inside = (out[:, 0] >= 0) & (out[:, 0] <= width - 1) & (out[:, 1] >= 0) & (out[:, 1] <= height - 1)
  out[~inside, 2] = 0.0
  return out


def half_body_center_scale(
  keypoints: np.ndarray, upper_ids, lower_ids, aspect_ratio_wh: float, rng: np.random.Generator
):
  """Half-body crop from labelled keypoints (K, 3): returns (center (2,), scale (2,)) in px, or None.

  Picks the upper or lower half (see the module docstring) and returns the extent of its labelled
  keypoints, grown to `aspect_ratio_wh` and padded by HALF_BODY_PADDING. None if neither half qualifies.
  """
  labelled = keypoints[:, 2] > 0
  upper = [i for i in upper_ids if labelled[i]]
  lower = [i for i in lower_ids if labelled[i]]
  if len(lower) < HALF_BODY_MIN_LOWER and len(upper) < HALF_BODY_MIN_UPPER:
    return None
  if len(lower) < HALF_BODY_MIN_LOWER:
    chosen = upper
  elif len(upper) < HALF_BODY_MIN_UPPER:
    chosen = lower
  else:
    chosen = upper if rng.random() < 0.5 else lower
  points = keypoints[chosen, :2].astype(np.float64)
  low, high = points.min(axis=0), points.max(axis=0)
  box = np.array([low[0], low[1], max(high[0] - low[0], 1.0), max(high[1] - low[1], 1.0)])
  return affine.box_to_center_scale(box, aspect_ratio_wh, HALF_BODY_PADDING)


class TopDownTrainTransform(grain.transforms.RandomMap):
  """Record -> {'image' uint8 (H, W, 3) RGB, 'heatmaps' float32 (h, w, K), 'target_weights' float32 (K,)}.

  Augments as described in the module docstring and encodes the dataset's heatmap targets (channels-last).
  """

  def __init__(
    self,
    format_name: str,
    codec_name: str,
    image_size_hw,
    heatmap_size_hw,
    sigma: float,
    bbox_padding: float,
    aug: Mapping[str, Any],
    half_body: bool,
    keypoints_key: str = 'keypoints',
    reduced_decode: bool = True,
    fast_decode: bool = True,
    camera_fov_deg: float | None = None,
    with_heatmaps: bool = True,
  ):
    """Args: skeleton `format_name`; `codec_name` 'udp' | 'msra' (also selects the UDP warp); model
    `image_size_hw` (H, W) and `heatmap_size_hw` (h, w); Gaussian `sigma` (heatmap px); `bbox_padding`;
    `aug` with keys scale_factor, rotation, rotation_prob, flip_prob, half_body_prob,
    half_body_min_keypoints; `half_body` enables half-body; `keypoints_key` is the record field;
    `reduced_decode` decodes JPEGs at 1/2, 1/4 or 1/8 size when the crop shrinks the image that much
    (see `decode_and_crop`; the targets never depend on it); `fast_decode` uses libjpeg's fast IDCT and
    upsampling (see `decode_jpeg`); `camera_fov_deg` (2D examples that supervise a 3D head): also return the crop
    camera (`crop_camera_2d` of an assumed camera with this field of view) as 'intrinsics' float32 (3, 3) and the
    crop's keypoints as 'keypoints2d' float32 (K, 2) px and 'keypoints2d_valid' bool (K,) (labelled and inside the
    crop); `with_heatmaps` False leaves out 'heatmaps' and 'target_weights' (a dataset without a heatmap head)."""
    skeleton = get_format(format_name)
    self.format_name = format_name
    self.output_size_wh = (int(image_size_hw[1]), int(image_size_hw[0]))
    self.heatmap_size_wh = (int(heatmap_size_hw[1]), int(heatmap_size_hw[0]))
    self.sigma = float(sigma)
    self.codec = codecs.get_codec(codec_name)
    self.use_udp = self.codec.use_udp
    self.bbox_padding = float(bbox_padding)
    self.aug = {
      key: float(aug[key])
      for key in ('scale_factor', 'rotation', 'rotation_prob', 'flip_prob', 'half_body_prob', 'half_body_min_keypoints')
    }
    self.half_body = bool(half_body)
    self.keypoints_key = keypoints_key
    self.reduced_decode = bool(reduced_decode)
    self.fast_decode = bool(fast_decode)
    self.camera_fov_deg = None if camera_fov_deg is None else float(camera_fov_deg)
    self.with_heatmaps = bool(with_heatmaps)
    self.num_keypoints = skeleton.num_keypoints
    self.flip_index = np.asarray(skeleton.flip_index, np.int64)
    self.upper_ids = tuple(int(i) for i in skeleton.upper_body_ids)
    self.lower_ids = tuple(int(i) for i in skeleton.lower_body_ids)

  @property
  def record_fields(self) -> tuple[str, ...]:
    """The stored record fields the transform reads (the image size too when it returns the crop camera)."""
    fields = ('image', 'bbox', self.keypoints_key)
    return fields + ('height', 'width') if self.camera_fov_deg is not None else fields

  def sample_crop(self, keypoints: np.ndarray, bbox, rng: np.random.Generator):
    """Draws the augmentation: returns (center (2,), scale (2,), rotation_deg, flip) for the original image."""
    aug = self.aug
    aspect = self.output_size_wh[0] / self.output_size_wh[1]
    flip = bool(rng.random() < aug['flip_prob'])
    center, scale = affine.box_to_center_scale(np.asarray(bbox, np.float64), aspect, self.bbox_padding)
    if (
      self.half_body
      and rng.random() < aug['half_body_prob']
      and np.count_nonzero(keypoints[:, 2] > 0) >= aug['half_body_min_keypoints']
    ):
      half = half_body_center_scale(keypoints, self.upper_ids, self.lower_ids, aspect, rng)
      if half is not None:
        center, scale = half
    # Degenerate (empty) boxes would give a zero-size crop; keep at least one pixel.
    scale = np.maximum(scale, 1.0) * (1.0 + aug['scale_factor'] * truncated_normal(rng))
    rotation = aug['rotation'] * truncated_normal(rng) if rng.random() < aug['rotation_prob'] else 0.0
    return center, scale, rotation, flip

  def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Record -> train example (see the class docstring)."""
    use_single_threaded_opencv()
    keypoints = np.asarray(element[self.keypoints_key], np.float32)
    if keypoints.shape != (self.num_keypoints, 3):
      raise ValueError(
        f'expected {self.format_name} keypoints of shape ({self.num_keypoints}, 3) in '
        f'{self.keypoints_key!r}, got {keypoints.shape}; check data.datasets.*.format'
      )
    center, scale, rotation, flip = self.sample_crop(keypoints, element['bbox'], rng)
    # The image width cancels out of the matrix (see crop_matrix): it is built before decoding, which
    # lets the decode size follow the crop's scale.
    matrix = crop_matrix(center, scale, rotation, flip, 0, self.output_size_wh, self.use_udp)
    crop = decode_and_crop(element['image'], matrix, self.output_size_wh, self.reduced_decode, self.fast_decode)
    warped = warp_keypoints(keypoints, matrix, self.output_size_wh, self.flip_index if flip else None)
    example = {'image': crop}
    if self.with_heatmaps:
      example['heatmaps'], example['target_weights'] = self.codec.encode(
        warped[:, :2], warped[:, 2] > 0, self.output_size_wh, self.heatmap_size_wh, self.sigma, channels_last=True
      )
    if self.camera_fov_deg is not None:
      image_hw = (int(element['height']), int(element['width']))
      example['intrinsics'] = crop_camera_2d(matrix, image_hw, self.camera_fov_deg, flip)
      example['keypoints2d'] = np.ascontiguousarray(warped[:, :2])
      example['keypoints2d_valid'] = warped[:, 2] > 0
    return example


def assumed_intrinsics(image_hw, fov_deg: float) -> np.ndarray:
  """float64 (3, 3) intrinsics of an image without a known camera: square pixels, the principal point at the image
  centre and the focal length that gives the image's longer side a field of view of `fov_deg` degrees."""
  height, width = (float(v) for v in image_hw)
  focal = max(height, width) / (2.0 * np.tan(np.deg2rad(fov_deg) / 2.0))
  return np.array([[focal, 0.0, (width - 1.0) / 2.0], [0.0, focal, (height - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def crop_camera_2d(matrix: np.ndarray, image_hw, fov_deg: float, flip: bool) -> np.ndarray:
  """float32 (3, 3) intrinsics of a 2D example's affine crop: K_crop = A K (M), A the image → crop affine `matrix`
  (2, 3) as a 3×3, K `assumed_intrinsics(image_hw, fov_deg)`, M = diag(-1, 1, 1) when the crop is `flip`ped, so that
  the crop camera is a proper one (positive determinant) viewing the mirrored scene, as the 3D examples' flip
  mirrors their joints. Projecting camera-frame points with it (K_crop X / z) lands them in crop px."""
  affine_3x3 = np.concatenate([np.asarray(matrix, np.float64), [[0.0, 0.0, 1.0]]])
  intrinsics = affine_3x3 @ assumed_intrinsics(image_hw, fov_deg)
  if flip:
    intrinsics = intrinsics @ np.diag([-1.0, 1.0, 1.0])
  return intrinsics.astype(np.float32)


def eval_crop(image: np.ndarray, bbox, image_size_hw, bbox_padding: float, use_udp: bool):
  """The evaluation crop of one box: `image` uint8 (H, W, 3), `bbox` xywh image px → (crop uint8 (h, w, 3) at
  `image_size_hw`, center float64 (2,), scale float64 (2,) image px). The box is padded by `bbox_padding` and
  widened to the crop's aspect ratio (scale at least 1 px); bilinear, black outside the image; the UDP or classic
  warp by `use_udp`."""
  height, width = int(image_size_hw[0]), int(image_size_hw[1])
  center, scale = affine.box_to_center_scale(np.asarray(bbox, np.float64)[:4], width / height, bbox_padding)
  scale = np.maximum(scale, 1.0)
  matrix = affine.get_warp_matrix(center, scale, 0.0, (width, height), use_udp)
  crop = cv2.warpAffine(
    image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
  )
  return crop, center, scale


class TopDownEvalTransform(grain.transforms.Map):
  """Record (or `PADDING`) -> {'image' uint8 (H, W, 3) RGB, 'center' f32 (2,), 'scale' f32 (2,),
  'bbox' f32 (4,) xywh px, 'bbox_score' f32, 'image_id' int64, 'instance_id' int64, 'category_id' int64,
  'valid' bool}.

  The crop is the (padded, aspect-fixed) box with no augmentation. `bbox_score`, `instance_id` and
  `category_id` come from the record when it has them (real datasets; detector boxes carry their score),
  else 1.0, -1 (`make_eval_iterator` supplies the synthetic annotation id) and 1. `PADDING` gives a padding
  example: black image, center 0, scale 1, bbox 0, ids -1, valid False.
  """

  def __init__(self, image_size_hw, bbox_padding: float, use_udp: bool):
    """Args: model `image_size_hw` (H, W), `bbox_padding`, `use_udp` (the dataset codec's warp)."""
    self.output_size_wh = (int(image_size_hw[1]), int(image_size_hw[0]))
    self.bbox_padding = float(bbox_padding)
    self.use_udp = bool(use_udp)

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Record -> eval example (see the class docstring)."""
    use_single_threaded_opencv()
    width, height = self.output_size_wh
    if element.get('padding', False):
      return {
        'image': np.zeros((height, width, 3), np.uint8),
        'center': np.zeros(2, np.float32),
        'scale': np.ones(2, np.float32),
        'bbox': np.zeros(4, np.float32),
        'bbox_score': np.float32(0.0),
        'image_id': np.int64(-1),
        'instance_id': np.int64(-1),
        'category_id': np.int64(-1),
        'valid': np.bool_(False),
      }
    image = decode_jpeg(element['image'])
    bbox = np.asarray(element['bbox'], np.float64).reshape(4)
    crop, center, scale = eval_crop(image, bbox, (height, width), self.bbox_padding, self.use_udp)
    return {
      'image': crop,
      'center': np.asarray(center, np.float32),
      'scale': np.asarray(scale, np.float32),
      'bbox': bbox.astype(np.float32),
      'bbox_score': np.float32(element.get('bbox_score', 1.0)),
      'image_id': np.int64(element['image_id']),
      'instance_id': np.int64(element.get('instance_id', -1)),
      'category_id': np.int64(element.get('category_id', 1)),
      'valid': np.bool_(True),
    }
