"""tfds builder `interhand26m`: InterHand2.6M as a 2D dataset (42 hand keypoints: right hand 0-20, left hand 21-41,
the registry's 'interhand' format). Record schema, skipping and ground truth: see `data_pipeline.builders.real`.

Raw layout (relative to `--manual_dir`), per split (train / val / test of the release -> train / validation /
test):
  annotations/<s>/InterHand2.6M_<s>_data.json      COCO-like: images {id, file_name, width, height, capture,
                                                   camera, frame_idx, ...}, annotations {id, image_id, bbox
                                                   xywh, joint_valid [42][1], hand_type, hand_type_valid}
  annotations/<s>/InterHand2.6M_<s>_camera.json    {capture: {campos|camrot|focal|princpt: {camera: ...}}}
  annotations/<s>/InterHand2.6M_<s>_joint_3d.json  {capture: {frame_idx: {world_coord [42][3] mm, ...}}}
  images/<s>/<file_name>
`--ann_file SPLIT=<..._data.json>` names another data file; its camera and joint files are the ones whose name
ends in `_camera.json` / `_joint_3d.json` instead of `_data.json`.

Keypoints: world joints -> camera frame X = R (x_world - campos) (mm) -> pixels u = f X/Z + c; visibility =
the annotation's joint_valid (0 / 1), and 0 for a joint behind the camera. Extras: `joints_cam` (42, 3) the
camera-frame joints in mm, `hand_type` (b'right' | b'left' | b'interacting'). Every image's hands form one
instance (the annotation's box). head_size is 0 (hand metrics normalise by the box).
"""

from __future__ import annotations

import os

import numpy as np

from data_pipeline.builders.real import (
  RawImage,
  RawInstance,
  RealPoseBuilder,
  SplitData,
  SplitLayout,
  as_array,
  as_int,
  gt_annotation,
  gt_image,
  normalised_category,
  require,
  require_list,
)
from data_pipeline.errors import RawDataError

NUM_JOINTS = 42


def world_to_pixels(
  world_mm: np.ndarray, rotation: np.ndarray, position_mm: np.ndarray, focal: np.ndarray, principal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Projects world joints (N, 3) mm with an InterHand2.6M camera (camrot (3, 3), campos (3,) mm, focal (2,),
  princpt (2,) px). Returns (pixels (N, 2), camera-frame joints (N, 3) mm)."""
  camera = (np.asarray(rotation, np.float64) @ (np.asarray(world_mm, np.float64) - position_mm).T).T
  depth = np.where(np.abs(camera[:, 2]) < 1e-9, 1e-9, camera[:, 2])
  pixels = camera[:, :2] / depth[:, None] * np.asarray(focal, np.float64) + np.asarray(principal, np.float64)
  return pixels, camera


def _companion(data_path: str, suffix: str) -> str:
  if not data_path.endswith('_data.json'):
    raise RawDataError(
      f'{data_path}: an InterHand2.6M data file name must end in _data.json (its camera and '
      f'joint files are found by replacing that suffix)'
    )
  path = data_path[: -len('_data.json')] + suffix
  if not os.path.isfile(path):
    raise RawDataError(f'{path}: missing (needed with {os.path.basename(data_path)})')
  return path


class Interhand26m(RealPoseBuilder):
  """InterHand2.6M 2D keypoints (42), see the module docstring."""

  name = 'interhand26m'
  FORMAT = 'interhand'
  DESCRIPTION = 'InterHand2.6M hands as 2D keypoints (42, projected from joint_3d), one record per image.'
  LAYOUT = {
    split: SplitLayout((f'annotations/{raw}/InterHand2.6M_{raw}_data.json',), (f'images/{raw}',))
    for split, raw in (('train', 'train'), ('validation', 'val'), ('test', 'test'))
  }
  INSTANCE_EXTRAS = {
    'joints_cam': ((NUM_JOINTS, 3), np.float32, np.zeros((NUM_JOINTS, 3))),
    'hand_type': ((), np.object_, ''),
  }

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> SplitData:
    path = annotation_path
    data = self.cached_json(path)
    camera_path, joints_path = _companion(path, '_camera.json'), _companion(path, '_joint_3d.json')
    cameras, joints3d = self.cached_json(camera_path), self.cached_json(joints_path)
    for other, content in ((camera_path, cameras), (joints_path, joints3d)):
      if not isinstance(content, dict):
        raise RawDataError(f'{other}: expected a JSON object keyed by capture id')
    is_train = split in self.TRAIN_SPLITS
    images: dict[int, RawImage] = {}
    for index, image in enumerate(require_list(data, 'images', path)):
      what = f'image #{index}'
      image_id = as_int(require(image, 'id', path, what), 'id', path, what)
      what = f'image id={image_id} (#{index})'
      if image_id in images:
        raise RawDataError(f'{path}: {what}: duplicate image id')
      file_name = str(require(image, 'file_name', path, what))
      height = as_int(require(image, 'height', path, what), 'height', path, what)
      width = as_int(require(image, 'width', path, what), 'width', path, what)
      camera_info = {key: str(require(image, key, path, what)) for key in ('capture', 'camera', 'frame_idx')}
      images[image_id] = RawImage(
        image_id,
        file_name,
        self.locate_image(image_dir, file_name),
        height,
        width,
        extras=camera_info,
        gt_extras={k: image[k] for k in ('capture', 'camera', 'frame_idx', 'seq_name', 'subject') if k in image},
      )
    instances, gt_annotations = [], []
    missing = set()
    for index, ann in enumerate(require_list(data, 'annotations', path)):
      what = f'annotation #{index}'
      ann_id = as_int(require(ann, 'id', path, what), 'id', path, what)
      what = f'annotation id={ann_id} (#{index})'
      image_id = as_int(require(ann, 'image_id', path, what), 'image_id', path, what)
      if image_id not in images:
        raise RawDataError(f'{path}: {what}: field \'image_id\' is {image_id}, which is not in \'images\'')
      image = images[image_id]
      valid = as_array(require(ann, 'joint_valid', path, what), (NUM_JOINTS,), 'joint_valid', path, what)
      bbox = as_array(require(ann, 'bbox', path, what), (4,), 'bbox', path, what)
      hand_type = str(ann.get('hand_type', ''))
      capture, camera, frame = (image.extras[k] for k in ('capture', 'camera', 'frame_idx'))
      try:
        params = {key: cameras[capture][key][camera] for key in ('campos', 'camrot', 'focal', 'princpt')}
      except (KeyError, TypeError):
        raise RawDataError(
          f'{camera_path}: capture {capture!r}: no campos/camrot/focal/princpt for camera '
          f'{camera!r} (needed by {what} of {path})'
        ) from None
      joint_record = joints3d.get(capture, {}).get(frame) if isinstance(joints3d.get(capture), dict) else None
      if joint_record is None:
        raise RawDataError(f'{joints_path}: capture {capture!r}: no frame {frame!r} (needed by {what} of {path})')
      jwhat = f'capture {capture} frame {frame}'
      world = as_array(
        require(joint_record, 'world_coord', joints_path, jwhat), (NUM_JOINTS, 3), 'world_coord', joints_path, jwhat
      )
      cwhat = f'capture {capture} camera {camera}'
      pixels, camera_mm = world_to_pixels(
        world,
        as_array(params['camrot'], (3, 3), 'camrot', camera_path, cwhat),
        as_array(params['campos'], (3,), 'campos', camera_path, cwhat),
        as_array(params['focal'], (2,), 'focal', camera_path, cwhat),
        as_array(params['princpt'], (2,), 'princpt', camera_path, cwhat),
      )
      visibility = np.where(camera_mm[:, 2] > 0, (valid > 0).astype(np.float64), 0.0)
      keypoints = np.concatenate([pixels, visibility[:, None]], axis=1).astype(np.float32)
      if image.path is None:
        if image_id not in missing:
          missing.add(image_id)
          self.skipped.skip(split, 'missing_image', f'{os.path.join(image_dir, image.file_name)} ({what})')
        continue
      if not is_train:
        gt_annotations.append(gt_annotation(ann_id, image_id, 1, keypoints, bbox, None, 0, hand_type=hand_type))
      if bbox[2] <= 0 or bbox[3] <= 0:
        self.skipped.skip(split, 'bad_bbox', f'{path}: {what} (bbox {bbox.tolist()})')
        continue
      if not self.keep_instance(split, keypoints, path, what):
        continue
      instances.append(
        RawInstance(
          instance_id=ann_id,
          image_id=image_id,
          category_id=1,
          bbox=bbox.astype(np.float32),
          area=float(bbox[2] * bbox[3]),
          keypoints=keypoints,
          extras={'joints_cam': camera_mm.astype(np.float32), 'hand_type': hand_type},
        )
      )
    for image_id in list(images):
      if images[image_id].path is None:
        if image_id not in missing:
          self.skipped.skip(split, 'missing_image', os.path.join(image_dir, images[image_id].file_name))
        del images[image_id]
    gt = None
    if not is_train:
      gt = {
        'info': {'description': f'interhand26m {split}: normalised ground truth of {path}'},
        'images': [gt_image(im) for im in images.values()],
        'annotations': gt_annotations,
        'categories': [normalised_category({'id': 1, 'name': 'hand', 'supercategory': 'hand'}, self.FORMAT, path)],
      }
    return SplitData(images=images, instances=instances, gt=gt, source=path)
