"""Keypoints derived at pipeline time: a skeleton format the synthetic data was not annotated in, computed from
the camera-frame 3D joints and intrinsics that every synthetic example stores.

Used for the domain-transfer demo (a dataset entry with `keypoints_from='joints3d'`): SMPL-24, as 3DPW provides
it, is the 2D projection of the body model's joints, so visibility is "projects inside the image" (3DPW labels
occluded joints too). Deriving at read time needs no new split, no new stored field and no rebuild of prepared
data: the records come from an existing split (e.g. `train_coco`'s images for training, `validation` for
evaluation) and only gain `keypoints`, `keypoints_<fmt>` and `has_<fmt>` fields.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from data_pipeline.synthetic.formats import compiled_format, keypoints_3d
from posebh_jax.geometry.camera import project_in_image
from posebh_jax.skeletons import get_format

KEYPOINT_SOURCES = ('annotation', 'joints3d')


def project_keypoints(
  format_name: str, joints3d: np.ndarray, intrinsics: np.ndarray, height: int, width: int
) -> np.ndarray:
  """float32 (K, 3) x, y, visibility of `format_name` from an example's joints3d (L, 3) (camera frame) and
  intrinsics (3, 3): pinhole projection; visibility 2 inside [0, W-1] × [0, H-1] in front of the camera,
  else 0 with x = y = 0 (the generator's convention for keypoints outside the image)."""
  points = keypoints_3d(format_name, joints3d)
  uv, inside = project_in_image(points, intrinsics, height, width)
  out = np.zeros((len(points), 3), np.float32)
  out[inside, :2] = uv[inside]
  out[inside, 2] = 2.0
  return out


def _category(record: Mapping[str, Any]) -> str:
  value = record.get('category', b'human')
  return value.decode() if isinstance(value, bytes) else str(value)


class DerivedKeypointsSource(Sequence):
  """Random-access view of a synthetic data source whose records gain `format_name`'s keypoints.

  Each record gets `keypoints` and `keypoints_<fmt>` (K, 3) from `project_keypoints`, and `has_<fmt>`: the
  example's category matches the format's (bipeds for human formats), so evaluation skips the animals.
  """

  def __init__(self, source, format_name: str):
    self.source = source
    self.format_name = format_name
    self.category = compiled_format(format_name).category  # ValueError for formats without a definition

  def __len__(self) -> int:
    return len(self.source)

  def _derive(self, record: Mapping[str, Any]) -> dict:
    record = dict(record)
    has = _category(record) == self.category
    if has:
      keypoints = project_keypoints(
        self.format_name, record['joints3d'], record['intrinsics'], int(record['height']), int(record['width'])
      )
    else:
      keypoints = np.zeros((get_format(self.format_name).num_keypoints, 3), np.float32)
    record['keypoints'] = keypoints
    record[f'keypoints_{self.format_name}'] = keypoints
    record[f'has_{self.format_name}'] = np.bool_(has)
    return record

  def __getitem__(self, index):
    return self._derive(self.source[index])

  def __iter__(self):
    for index in range(len(self)):
      yield self[index]

  def __getitems__(self, indices):
    return [self._derive(r) for r in self.source.__getitems__(indices)]


def wrap_source(source, entry) -> Any:
  """The source of a `config.data.datasets` entry: itself, or derived keypoints when
  `entry.keypoints_from == 'joints3d'`. Raises ValueError for an unknown `keypoints_from`."""
  how = entry.keypoints_from
  if how not in KEYPOINT_SOURCES:
    raise ValueError(f"keypoints_from is {how!r}; use one of {', '.join(KEYPOINT_SOURCES)}")
  if how == 'annotation':
    return source
  return DerivedKeypointsSource(source, entry.format)
