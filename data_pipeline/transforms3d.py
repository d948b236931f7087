"""grain transforms for 3D pose training and evaluation (MeTRAbs-style, docs/METHOD.md §3.6).

A record has the layout of `data_pipeline/builders/records3d.py`: the original image file (`image`, JPEG bytes),
the person box `bbox` (x, y, w, h px of the distorted image), the camera (`intrinsics` (3, 3), `distortion` (5,),
`distortion_model` b'opencv' | b'h36m'), `joints3d` (J, 3) mm in the camera frame and `valid` (J,).

The crop is perspective-correct (`posebh_jax.geometry.perspective_crop`): a virtual camera at the same optical
centre, turned to look at the box centre, without lens distortion, with square pixels and the principal point at
the crop centre; the image is resampled once, undoing the distortion (see Speed below), and the 3D joints are
rotated into the virtual camera's frame (a rigid rotation, so bone lengths are unchanged). The crop shows the box
(the tighter of its width and height fills the output) padded by `bbox_padding` on each axis, as the 2D top-down
crop does.

Training augmentation, drawn from the example's numpy Generator (grain's `random_map` seeds it from the pipeline
seed and the element's position, so a pipeline is deterministic and resumable), in this order:
  1. flip with probability `flip_prob`: the crop is mirrored left-right (x negated in the crop camera frame) and
     joints swap sides through the 3D format's `flip_index` (output joint i = mirrored input joint flip_index[i]);
  2. scale: the crop shows the padded box times a factor uniform in [1 - scale_factor, 1 + scale_factor]
     (scale_factor 0.25: ±25 %; > 1 is more context and a smaller person);
  3. rotation: the virtual camera rolls about its optical axis by an angle uniform in [-rotation, rotation] degrees
     (content turns counter-clockwise on screen for positive angles);
  4. synthetic occlusion with probability `occlusion_prob` (after the crop): 1 to `occlusion_max` occluders, each an
     ellipse or a rotated rectangle (50/50) whose long side is uniform in [0.2, 0.5] × the box's larger side in the
     crop and whose short side is that times a uniform [0.3, 1], centred uniformly in the box's region of the crop,
     filled (50/50) with a flat random colour or with a texture: the pixels of another region of the same crop (a
     random shift of at least the occluder's size). Labels are unchanged (occluded joints are still supervised);
  5. colour: brightness, contrast and saturation factors, each uniform in [1 - x, 1 + x] for x = `brightness`,
     `contrast`, `saturation`, applied as one affine colour map (`cv2.transform`, saturating to uint8):
     out = b (c (s rgb + (1 - s) Y(rgb)) + (1 - c) mean Y), Y the Rec. 601 luminance and mean Y its crop mean.

Speed: the crop is known before decoding, so the JPEG is decoded at 1/2, 1/4 or 1/8 size when the crop shrinks
the image at least that much at its centre (libjpeg's scaled decoding, as the 2D transform does; the camera is
rescaled to the decoded size with `Camera.resized`), then resampled once: with `cv2.warpPerspective` when the
camera has no distortion (the crop is then a homography of the image), else with the geometry module's
`reproject_image` (one remap that also undoes the distortion; where one crop pixel still spans more than 1.5
decoded pixels the region is first shrunk with INTER_AREA, in both cases). Occlusion and colour work on the small
crop with OpenCV / NumPy array operations.
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import grain
import numpy as np

from data_pipeline.synthetic import formats3d as _synthetic_formats3d  # noqa: F401 (registers the syn_* formats)
from data_pipeline.transforms import PADDING, decode_jpeg, use_single_threaded_opencv
from posebh_jax.geometry import Camera, PerspectiveCrop, perspective_crop, reproject_image
from posebh_jax.skeletons import get_format3d

# The keys of the 3D augmentation settings (`aug` of Pose3DTrainTransform) with the values of METHOD.md §3.6; a
# config's `data.aug3d` holds them.
DEFAULT_AUG = {
  'scale_factor': 0.25,
  'rotation': 20.0,
  'flip_prob': 0.5,
  'occlusion_prob': 0.5,
  'occlusion_max': 3,
  'brightness': 0.2,
  'contrast': 0.2,
  'saturation': 0.2,
}
# No augmentation (the crop of Pose3DEvalTransform).
NO_AUG = {key: 0.0 for key in DEFAULT_AUG}
# The record fields the train transform reads (the eval transform reads image_id too).
RECORD_FIELDS = ('image', 'bbox', 'intrinsics', 'distortion', 'distortion_model', 'joints3d', 'valid', 'instance_id')
# joints2d: depths are floored at this many mm before dividing (a joint at or behind the camera stays finite).
MIN_DEPTH_MM = 1.0
# Occluder sizes relative to the box's larger side in the crop, and the short/long side ratio range.
OCCLUDER_SIZE = (0.2, 0.5)
OCCLUDER_ASPECT = (0.3, 1.0)
_LUMA = np.array([0.299, 0.587, 0.114])
# Where one crop pixel spans more decoded pixels than this (at the crop centre), the crop is antialiased
# (`reproject_image(antialias=True)`, whose threshold this is).
ANTIALIAS_ABOVE = 1.5


def record_camera(element: Mapping[str, Any], image_size_hw=None) -> Camera:
  """The original camera of a records3d record: intrinsics, distortion and its model ('opencv' | 'h36m')."""
  model = element.get('distortion_model', b'opencv')
  model = model.decode() if isinstance(model, bytes) else str(model)
  return Camera(
    np.asarray(element['intrinsics'], np.float64),
    distortion=np.asarray(element.get('distortion', np.zeros(5)), np.float64),
    image_size=image_size_hw,
    distortion_model=model or 'opencv',
  )


def _box_edges(box) -> np.ndarray:
  """(4, 2) the midpoints of the left, right, top and bottom edges of an xywh box, px."""
  x, y, w, h = (float(v) for v in box)
  cx, cy = x + 0.5 * w, y + 0.5 * h
  return np.array([[x, cy], [x + w, cy], [cx, y], [cx, y + h]])


def box_in_crop(crop: PerspectiveCrop, box) -> tuple[float, float]:
  """(width, height) in crop px of an xywh box (source px) seen by the crop camera: the distances between its
  opposite edge midpoints (independent of the roll and the flip)."""
  rays = crop.source.image_to_camera_rays(_box_edges(box)) @ crop.matrix.T
  points = crop.camera.camera_to_image(rays)
  return float(np.linalg.norm(points[1] - points[0])), float(np.linalg.norm(points[3] - points[2]))


def project_joints(joints: np.ndarray, intrinsics: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Camera-frame joints (J, 3) mm, intrinsics (3, 3), valid (J,) -> float32 (J, 2) px = (K X)_xy / max(z,
  MIN_DEPTH_MM); zeros at joints that are not valid."""
  projected = np.asarray(joints, np.float64) @ np.asarray(intrinsics, np.float64).T
  uv = projected[:, :2] / np.maximum(projected[:, 2:3], MIN_DEPTH_MM)
  return np.where(np.asarray(valid, bool)[:, None], uv, 0.0).astype(np.float32)


def _centre_jacobian(crop: PerspectiveCrop) -> tuple[np.ndarray, bool]:
  """(jac (2, 2) source px per crop px at the crop centre, whether every crop corner's ray is in front of the source
  camera), from the crop -> source pixel map at the centre, its two neighbours and the four corners."""
  height, width = crop.output_size
  cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
  probes = np.array(
    [
      [cx, cy],
      [cx + 1.0, cy],
      [cx, cy + 1.0],
      [0.0, 0.0],
      [width - 1.0, 0.0],
      [0.0, height - 1.0],
      [width - 1.0, height - 1.0],
    ]
  )
  source = crop.crop_to_source_pixels(probes)
  jac = np.stack([source[1] - source[0], source[2] - source[0]], axis=1)
  return jac, bool(np.all(np.isfinite(source)))


def decode_reduction_for(crop: PerspectiveCrop, max_reduction: int = 8) -> int:
  """The largest r in (1, 2, 4, 8) (<= `max_reduction`) with r * s <= 1, s the crop px per source px along the
  least-shrunk direction at the crop centre (from the crop -> source map's Jacobian there): decoding at 1/r then
  still maps at most one decoded pixel onto each crop pixel at the centre."""
  return _reduction(_centre_jacobian(crop)[0], max_reduction)


def _reduction(jac: np.ndarray, max_reduction: int) -> int:
  if not np.all(np.isfinite(jac)):
    return 1
  squares = float(np.sum(jac * jac))
  det = abs(float(np.linalg.det(jac)))
  sigma_min_sq = 0.5 * (squares - np.sqrt(max(squares * squares - 4.0 * det * det, 0.0)))
  if sigma_min_sq <= 0:
    return 1
  s_max = 1.0 / np.sqrt(sigma_min_sq)
  reduction = 1
  while reduction < max_reduction and 2 * reduction * s_max <= 1.0 + 1e-9:
    reduction *= 2
  return reduction


def decode_and_warp(data: bytes, crop: PerspectiveCrop, reduced_decode: bool, fast_decode: bool) -> np.ndarray:
  """JPEG bytes -> uint8 (H, W, 3) RGB perspective crop (bilinear, black outside the image; see the module
  docstring). With `reduced_decode` the JPEG is decoded at 1/r size (`decode_reduction_for`) and the source camera
  rescaled to it; `fast_decode`: `decode_jpeg`'s `fast`.

  A source camera without distortion maps crop pixels to source pixels by a homography, K_src R K_crop^-1: then the
  crop is one `cv2.warpPerspective` (the same samples as the remap, within a gray level at a few pixels, at a fifth
  of its CPU time). With distortion, or where a crop pixel spans more than ANTIALIAS_ABOVE decoded pixels at the
  centre, it is `reproject_image` (one remap, antialiased by shrinking the source region first)."""
  jac, in_front = _centre_jacobian(crop)
  reduction = _reduction(jac, 8) if reduced_decode else 1
  image = decode_jpeg(data, reduction, fast_decode)
  source = crop.source
  if reduction > 1:
    # Reduced pixel x' covers original [r x', r x' + r): x' = (x + 0.5) / r - 0.5, what `resized` gives for an
    # exact 1/r scale.
    height, width = image.shape[:2]
    source = source.resized((height, width), (height * reduction, width * reduction))
  step = np.sqrt(abs(np.linalg.det(jac))) / reduction if np.all(np.isfinite(jac)) else np.inf
  if source.has_distortion or not in_front or step > ANTIALIAS_ABOVE:
    return reproject_image(image, source, crop.camera, crop.output_size, antialias=True)
  homography = source.intrinsics @ source.rotation @ crop.camera.rotation.T @ np.linalg.inv(crop.camera.intrinsics)
  out_h, out_w = crop.output_size
  return cv2.warpPerspective(
    image,
    homography,
    (out_w, out_h),
    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=(0, 0, 0),
  )


def occlude(image: np.ndarray, box_wh, rng: np.random.Generator, max_occluders: int) -> None:
  """Draws 1 to `max_occluders` synthetic occluders into `image` (uint8 (H, W, 3), in place) around the crop
  centre, where the box of size `box_wh` (crop px) is: see the module docstring (4.) for shapes, sizes and fills."""
  height, width = image.shape[:2]
  box_w, box_h = max(float(box_wh[0]), 1.0), max(float(box_wh[1]), 1.0)
  extent = max(box_w, box_h)
  for _ in range(int(rng.integers(1, max(int(max_occluders), 1) + 1))):
    long_side = extent * rng.uniform(*OCCLUDER_SIZE)
    short_side = long_side * rng.uniform(*OCCLUDER_ASPECT)
    centre = (0.5 * (width - 1) + box_w * rng.uniform(-0.5, 0.5), 0.5 * (height - 1) + box_h * rng.uniform(-0.5, 0.5))
    angle = rng.uniform(0.0, 180.0)
    ellipse = rng.random() < 0.5
    textured = rng.random() < 0.5
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    shift = rng.uniform(1.0, 2.0, 2) * long_side * np.where(rng.random(2) < 0.5, -1.0, 1.0)
    rect = (centre, (long_side, short_side), angle)
    if textured:
      mask = np.zeros((height, width), np.uint8)
      _draw(mask, rect, ellipse, 255)
      # The texture: the crop's own pixels shifted by `shift` (wrapping around the crop's edges).
      texture = np.roll(image, (int(round(shift[1])), int(round(shift[0]))), axis=(0, 1))
      np.copyto(image, texture, where=mask[..., None].astype(bool))
    else:
      _draw(image, rect, ellipse, colour)


def _draw(target: np.ndarray, rect, ellipse: bool, colour) -> None:
  """Fills a rotated rectangle ((cx, cy), (long, short), angle_deg) or the ellipse inscribed in it into `target`."""
  if ellipse:
    cv2.ellipse(target, rect, colour, thickness=-1, lineType=cv2.LINE_8)
  else:
    cv2.fillConvexPoly(target, np.round(cv2.boxPoints(rect)).astype(np.int32), colour, lineType=cv2.LINE_8)


def jitter_colour(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
  """uint8 (H, W, 3) RGB -> uint8 (H, W, 3) with the given brightness, contrast and saturation factors (1 = none),
  as one affine colour map (module docstring, 5.)."""
  s, c, b = float(saturation), float(contrast), float(brightness)
  matrix = s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _LUMA)
  mean_luma = float(np.dot(_LUMA, cv2.mean(image)[:3]))
  affine = np.empty((3, 4), np.float64)
  affine[:, :3] = b * c * matrix
  affine[:, 3] = b * (1.0 - c) * mean_luma
  return cv2.transform(image, affine)


def _label_only_error(element) -> ValueError:
  ident = element.get('instance_id', '?')
  return ValueError(
    f'3D record {ident} has no image (a label-only dataset); it can be evaluated from files but not cropped, '
    f'so leave it out of data.datasets'
  )


class _Pose3DBase:
  """What the train and eval transforms share: the format, output size, padding, decode settings."""

  def __init__(self, format_name: str, image_size_hw, bbox_padding: float):
    skeleton = get_format3d(format_name)
    self.format_name = format_name
    self.output_size_hw = (int(image_size_hw[0]), int(image_size_hw[1]))
    self.bbox_padding = float(bbox_padding)
    self.num_joints = skeleton.num_joints
    self.flip_index = np.asarray(skeleton.flip_index, np.int64)
    self.record_fields = RECORD_FIELDS

  def labels(self, element: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The record's (joints3d float64 (J, 3) mm, valid bool (J,)), checked against the format's J."""
    joints = np.asarray(element['joints3d'], np.float64)
    valid = np.asarray(element['valid'], bool)
    if joints.shape != (self.num_joints, 3) or valid.shape != (self.num_joints,):
      raise ValueError(
        f'expected {self.format_name} joints3d of shape ({self.num_joints}, 3) and valid ({self.num_joints},), got '
        f'{joints.shape} and {valid.shape}; check data.datasets.*.format'
      )
    return joints, valid

  def outputs(self, crop: PerspectiveCrop, image, joints, valid, box) -> dict[str, np.ndarray]:
    """The fields every example has: image, intrinsics, joints3d / valid / joints2d in the crop, box_size."""
    flip_index = self.flip_index if crop.flip else None
    joints = crop.points_to_crop(joints, flip_index)
    valid = valid[self.flip_index] if crop.flip else valid
    joints = np.where(valid[:, None], joints, 0.0)
    intrinsics = crop.camera.intrinsics
    return {
      'image': image,
      'intrinsics': intrinsics.astype(np.float32),
      'joints3d': joints.astype(np.float32),
      'valid': valid.copy(),
      'joints2d': project_joints(joints, intrinsics, valid),
      'box_size': np.float32(max(box_in_crop(crop, box))),
    }


class Pose3DTrainTransform(_Pose3DBase, grain.transforms.RandomMap):
  """Record (records3d layout) -> {'image' uint8 (H, W, 3) RGB crop, 'intrinsics' float32 (3, 3) of the crop camera
  (no distortion), 'joints3d' float32 (J, 3) mm in the crop camera frame, 'valid' bool (J,), 'joints2d' float32
  (J, 2) crop px, 'box_size' float32 px}.

  `joints3d` are the record's joints rotated into the crop camera (and, when flipped, mirrored and permuted through
  the format's flip_index); joints outside the crop stay valid (the 3D labels hold; losses decide what is in view).
  `joints2d` = the projection of `joints3d` with `intrinsics` (depth floored at MIN_DEPTH_MM; zeros where not
  valid). `box_size` = the larger side of the record's person box as the crop camera sees it, in crop px (the
  output size / (bbox_padding × scale factor) along the box's fitting side): the person's apparent size, for a loss
  that scales pixel errors by the box rather than by the crop (METHOD.md §3.3's L_proj as implemented in
  `posebh_jax.losses.metrabs` uses the crop side max(H, W) with the head's 2200 mm box and does not need it).
  Augmentation: the module docstring. A record without image bytes (a label-only dataset) is a ValueError.
  """

  def __init__(
    self,
    format_name: str,
    image_size_hw,
    bbox_padding: float,
    aug: Mapping[str, Any],
    reduced_decode: bool = True,
    fast_decode: bool = True,
  ):
    """Args: 3D skeleton `format_name` (registry3d); crop `image_size_hw` (H, W); `bbox_padding` (1.25: the box
    with 25 % context on each axis); `aug` with every key of DEFAULT_AUG (config.data.aug3d); `reduced_decode`
    decodes at 1/2, 1/4 or 1/8 size when the crop allows it; `fast_decode` uses libjpeg's fast IDCT and
    upsampling (`decode_jpeg`)."""
    super().__init__(format_name, image_size_hw, bbox_padding)
    missing = [key for key in DEFAULT_AUG if key not in aug]
    if missing:
      raise ValueError(f'3D augmentation settings lack {missing} (keys: {list(DEFAULT_AUG)})')
    self.aug = {key: float(aug[key]) for key in DEFAULT_AUG}
    self.reduced_decode = bool(reduced_decode)
    self.fast_decode = bool(fast_decode)

  def sample_crop(self, element: Mapping[str, Any], rng: np.random.Generator) -> PerspectiveCrop:
    """Draws flip, scale and rotation (module docstring, 1.-3.) and returns the record's perspective crop."""
    aug = self.aug
    flip = bool(rng.random() < aug['flip_prob'])
    scale = self.bbox_padding * (1.0 + aug['scale_factor'] * rng.uniform(-1.0, 1.0))
    rotation = aug['rotation'] * rng.uniform(-1.0, 1.0)
    box = np.asarray(element['bbox'], np.float64).reshape(4)
    box[2:] = np.maximum(box[2:], 1.0)  # a degenerate box still gives a crop
    return perspective_crop(record_camera(element), box, self.output_size_hw, scale, rotation, flip)

  def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Record -> train example (see the class docstring)."""
    use_single_threaded_opencv()
    if not len(element['image']):
      raise _label_only_error(element)
    joints, valid = self.labels(element)
    crop = self.sample_crop(element, rng)
    image = decode_and_warp(element['image'], crop, self.reduced_decode, self.fast_decode)
    box = np.maximum(np.asarray(element['bbox'], np.float64).reshape(4), (-np.inf, -np.inf, 1.0, 1.0))
    example = self.outputs(crop, image, joints, valid, box)
    aug = self.aug
    if rng.random() < aug['occlusion_prob']:
      occlude(image, box_in_crop(crop, box), rng, int(aug['occlusion_max']))
    factors = [1.0 + aug[key] * rng.uniform(-1.0, 1.0) for key in ('brightness', 'contrast', 'saturation')]
    if any(f != 1.0 for f in factors):
      example['image'] = jitter_colour(image, *factors)
    return example


class Pose3DEvalTransform(_Pose3DBase, grain.transforms.Map):
  """Record (or `transforms.PADDING`) -> the train example's fields without augmentation, plus
  {'rotation' float32 (3, 3), 'bbox' float32 (4,) xywh source px, 'image_id' int64, 'instance_id' int64,
  'example_valid' bool}.

  The crop: the padded box, scale 1, no roll, no flip; the JPEG decoded exactly at full size (antialiased where the
  crop shrinks it). `rotation` R maps the original camera frame to the crop camera frame, X_crop = R X_orig (rows:
  `joints @ R.T`); predictions in the crop frame go back to the original camera with X_orig = R^T X_crop
  (`joints_crop @ R`; both cameras share their optical centre, so there is no translation). `valid` (J,) is the
  joints' labels as in training; `example_valid` is the padding mask (False for `PADDING`: black image, identity
  intrinsics and rotation, zero joints and box, ids -1; the 2D eval batches call it `valid`).
  """

  def __init__(self, format_name: str, image_size_hw, bbox_padding: float):
    """Args: 3D skeleton `format_name`, crop `image_size_hw` (H, W), `bbox_padding` (as the train transform's)."""
    super().__init__(format_name, image_size_hw, bbox_padding)

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Record -> eval example (see the class docstring)."""
    use_single_threaded_opencv()
    height, width = self.output_size_hw
    if element.get('padding', False):
      return {
        'image': np.zeros((height, width, 3), np.uint8),
        'intrinsics': np.eye(3, dtype=np.float32),
        'joints3d': np.zeros((self.num_joints, 3), np.float32),
        'valid': np.zeros(self.num_joints, bool),
        'joints2d': np.zeros((self.num_joints, 2), np.float32),
        'box_size': np.float32(0.0),
        'rotation': np.eye(3, dtype=np.float32),
        'bbox': np.zeros(4, np.float32),
        'image_id': np.int64(-1),
        'instance_id': np.int64(-1),
        'example_valid': np.bool_(False),
      }
    if not len(element['image']):
      raise _label_only_error(element)
    joints, valid = self.labels(element)
    bbox = np.asarray(element['bbox'], np.float64).reshape(4)
    box = np.maximum(bbox, (-np.inf, -np.inf, 1.0, 1.0))
    crop = perspective_crop(record_camera(element), box, self.output_size_hw, self.bbox_padding, 0.0, False)
    image = decode_and_warp(element['image'], crop, reduced_decode=False, fast_decode=False)
    example = self.outputs(crop, image, joints, valid, box)
    example.update(
      rotation=crop.matrix.astype(np.float32),
      bbox=bbox.astype(np.float32),
      image_id=np.int64(element['image_id']),
      instance_id=np.int64(element.get('instance_id', -1)),
      example_valid=np.bool_(True),
    )
    return example


__all__ = [
  'DEFAULT_AUG',
  'NO_AUG',
  'PADDING',
  'RECORD_FIELDS',
  'Pose3DEvalTransform',
  'Pose3DTrainTransform',
  'box_in_crop',
  'decode_and_warp',
  'jitter_colour',
  'occlude',
  'project_joints',
  'record_camera',
]
