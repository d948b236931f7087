"""The one record layout of every 3D dataset (real builders, the generic builder and the synthetic 3D datasets).

One ArrayRecord record per person example (a person in one camera view at one instant). Features are
`tfds.features.Tensor` only, so that neither building nor reading needs TensorFlow:

  image         bytes         the original image file bytes (JPEG as distributed, never re-encoded; synthetic: JPEG q90)
  file_name     bytes         the image's path relative to the raw dataset directory (or a synthetic name)
  image_id      int64         unique within the split (the dataset's frame id where it has one, else 1 + position)
  instance_id   int64         unique within the split (> 0); `gt.json` annotations carry it as `id`
  height, width int64         image size in px
  bbox          float32 (4,)  x, y, w, h in px of the original (distorted) image: the person box
  intrinsics    float32 (3,3) camera matrix K of the original image (pixel centres at integer coordinates)
  distortion    float32 (5,)  coefficients k1, k2, p1, p2, k3 (zeros: none)
  distortion_model bytes      b'opencv' (cv2.projectPoints' formula) or b'h36m' (the Human3.6M release's, whose
                              tangential terms differ: its labels are reproduced only with it); see
                              `posebh_jax.geometry.Camera`
  joints3d      float32 (J,3) camera-frame joints in mm (x right, y down, z forward) in the registry order of the
                              record's format (`posebh_jax.skeletons.get_format3d(format).joint_names`)
  valid         bool (J,)     which joints are labelled (an unlabelled joint holds zeros and is ignored by losses)
  mask          bytes         PNG of the person's segmentation mask at the image size, or b'' when none
  sequence      bytes         sequence / video / subject-action name
  camera        bytes         camera name within the sequence
  frame         int64         frame index within the sequence (-1 when unknown)
  format        bytes         the 3D skeleton format name (registry3d)

J differs between formats, so a dataset's builder declares its format and every record of the dataset has that
format's J. Near-duplicate frames (every valid joint within `NEAR_DUPLICATE_MM` of the last KEPT example of the
same sequence and camera) are dropped at preparation (`NearDuplicateFilter`) and counted in the summary.

Each non-train split also gets `gt_<split>.json` for `python -m posebh_jax.evaluate`:
  {"joints": [suffixed joint names], "root": suffixed root name,
   "annotations": [{"id": instance_id, "image_id": image_id, "keypoints_3d": J x 3 mm camera frame,
                    "valid": J booleans}]}
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

# An example is a near-duplicate of the last kept one of its sequence and camera when every joint labelled in
# both is closer than this (docs/METHOD.md §3.1).
NEAR_DUPLICATE_MM = 100.0

SCALAR_FIELDS = {
  'image': (bytes, b''),
  'file_name': (bytes, b''),
  'image_id': (np.int64, None),
  'instance_id': (np.int64, None),
  'height': (np.int64, None),
  'width': (np.int64, None),
  'mask': (bytes, b''),
  'sequence': (bytes, b''),
  'camera': (bytes, b''),
  'frame': (np.int64, -1),
  'format': (bytes, None),
  'distortion_model': (bytes, b'opencv'),
}


def feature_shapes(num_joints: int) -> dict[str, tuple[tuple[int, ...], object]]:
  """{field: (shape, dtype)} of a record of a format with `num_joints` joints (bytes fields: shape (), object)."""
  shapes = {name: ((), object if kind is bytes else np.dtype(kind)) for name, (kind, _) in SCALAR_FIELDS.items()}
  shapes.update(
    bbox=((4,), np.dtype(np.float32)),
    intrinsics=((3, 3), np.dtype(np.float32)),
    distortion=((5,), np.dtype(np.float32)),
    joints3d=((num_joints, 3), np.dtype(np.float32)),
    valid=((num_joints,), np.dtype(np.bool_)),
  )
  return shapes


def tfds_features(num_joints: int):
  """The tfds FeaturesDict of the layout (Tensor features only)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = {}
  for name, (shape, dtype) in feature_shapes(num_joints).items():
    features[name] = tfds.features.Tensor(shape=shape, dtype=np.object_ if dtype is object else dtype)
  return tfds.features.FeaturesDict(features)


def make_record(fields: Mapping, num_joints: int) -> dict:
  """A complete record from `fields` (defaults filled in, dtypes and shapes checked). Raises ValueError naming the
  field that is missing or has another shape."""
  record = {}
  for name, (kind, default) in SCALAR_FIELDS.items():
    value = fields.get(name, default)
    if value is None:
      raise ValueError(f'field {name} is missing')
    if kind is bytes:
      record[name] = value.encode() if isinstance(value, str) else bytes(value)
    else:
      record[name] = kind(value)
  for name, shape, dtype, default in (
    ('bbox', (4,), np.float32, None),
    ('intrinsics', (3, 3), np.float32, None),
    ('distortion', (5,), np.float32, np.zeros(5)),
    ('joints3d', (num_joints, 3), np.float32, None),
    ('valid', (num_joints,), np.bool_, np.ones(num_joints, bool)),
  ):
    value = fields.get(name, default)
    if value is None:
      raise ValueError(f'field {name} is missing')
    value = np.asarray(value, dtype)
    if value.shape != shape:
      raise ValueError(f'field {name} has shape {value.shape}, expected {shape}')
    record[name] = value
  if not np.all(np.isfinite(record['joints3d'][record['valid']])):
    raise ValueError('field joints3d has non-finite values at valid joints')
  record['joints3d'] = np.where(record['valid'][:, None], record['joints3d'], 0.0).astype(np.float32)
  return record


class NearDuplicateFilter:
  """Drops an example when every joint labelled in it and in the last kept example of the same (sequence, camera)
  is within `threshold_mm` of it; counts the dropped ones."""

  def __init__(self, threshold_mm: float = NEAR_DUPLICATE_MM):
    self.threshold_mm = float(threshold_mm)
    self.last: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    self.dropped = 0

  def keep(self, sequence, camera, joints3d: np.ndarray, valid: np.ndarray) -> bool:
    """Whether to keep this example (J, 3) mm with validity (J,); a kept one becomes its stream's reference."""
    key = (sequence, camera)
    joints3d, valid = np.asarray(joints3d, np.float64), np.asarray(valid, bool)
    if key in self.last:
      previous, previous_valid = self.last[key]
      both = valid & previous_valid
      if both.any() and np.all(np.linalg.norm(joints3d[both] - previous[both], axis=-1) < self.threshold_mm):
        self.dropped += 1
        return False
    self.last[key] = (joints3d, valid)
    return True


def gt_json(records, joint_names, root_name: str) -> dict:
  """The evaluation ground truth of a split from its records (mappings with instance_id, image_id, joints3d,
  valid): see the module docstring."""
  return {
    'joints': list(joint_names),
    'root': root_name,
    'annotations': [
      {
        'id': int(r['instance_id']),
        'image_id': int(r['image_id']),
        'keypoints_3d': np.round(np.asarray(r['joints3d'], np.float64), 3).tolist(),
        'valid': [bool(v) for v in np.asarray(r['valid'])],
      }
      for r in records
    ],
  }
