"""tfds builder `pw3d`: 3DPW as a 2D dataset: the 24 SMPL joints projected into the images (the registry's
'smpl24' format), COCO style. Record schema, skipping and ground truth: see `data_pipeline.builders.real`.

Raw layout (the official release; relative to `--manual_dir`):
  sequenceFiles/{train,validation,test}/<sequence>.pkl   one pickle (Python 2, latin-1) per sequence with
      'sequence' (name), 'jointPositions' (per person: (F, 72) world joints in m), 'cam_poses' (F, 4, 4)
      world -> camera, 'cam_intrinsics' (3, 3), 'campose_valid' (per person: (F,) 0/1), 'img_frame_ids' (F,)
  imageFiles/<sequence>/image_<frame:05d>.jpg
Alternatively a COCO-style keypoint file with 24 keypoints per person (as reformatted releases ship it):
annotations/3dpw_{train,validation,test}.json with images under imageFiles/ (or --ann_file / --image_dir).

From the pickles: camera-frame joints X = (cam_pose @ [x_world; 1])[:3] (m); pixels = K X / Z; visibility 2
for a joint in front of the camera and inside the image, else 0; frames whose `campose_valid` is 0 for a person
are skipped for that person (counted). The box is the extent of the person's in-image projected joints grown
by 20 % of its size on each side (joints miss the head top and the soles) and clipped to the image.
image_id = 100000 * (sequence position in the sorted split directory + 1) + frame id; instance_id =
10 * image_id + person index + 1. Extras: `joints_cam` (24, 3) mm (zeros for the COCO-style input),
`sequence` (bytes).
"""

from __future__ import annotations

import glob
import os
import pickle

import numpy as np

from data_pipeline.builders.real import (
  CocoStyleBuilder,
  RawImage,
  RawInstance,
  SplitData,
  SplitLayout,
  as_array,
  clip_box,
  gt_annotation,
  gt_image,
  image_size_from_file,
  normalised_category,
)
from data_pipeline.errors import RawDataError

NUM_JOINTS = 24
BOX_GROWTH = 0.2  # of the joints' extent, on each side
FRAME_STRIDE = 100000


def project_world_joints(world_m: np.ndarray, cam_pose: np.ndarray, intrinsics: np.ndarray):
  """World joints (N, 3) m -> (pixels (N, 2), camera-frame joints (N, 3) m) with a 3DPW camera (cam_pose
  (4, 4) world -> camera, intrinsics (3, 3))."""
  homogeneous = np.concatenate([np.asarray(world_m, np.float64), np.ones((len(world_m), 1))], axis=1)
  camera = (np.asarray(cam_pose, np.float64) @ homogeneous.T).T[:, :3]
  depth = np.where(np.abs(camera[:, 2]) < 1e-9, 1e-9, camera[:, 2])
  uvw = (np.asarray(intrinsics, np.float64) @ (camera / depth[:, None]).T).T
  return uvw[:, :2], camera


def in_view(pixels: np.ndarray, camera: np.ndarray, width: int, height: int) -> np.ndarray:
  """bool (N,): joints in front of the camera (camera-frame z > 0) whose `pixels` fall inside the width x height
  image (pixel centres at integer coordinates)."""
  return (
    (camera[:, 2] > 0)
    & (pixels[:, 0] >= 0)
    & (pixels[:, 0] <= width - 1)
    & (pixels[:, 1] >= 0)
    & (pixels[:, 1] <= height - 1)
  )


def joints_box(pixels: np.ndarray, visible: np.ndarray, width: int, height: int) -> np.ndarray | None:
  """The person box (x, y, w, h) from projected joints: extent of the visible ones grown by BOX_GROWTH on each
  side, clipped to the image; None if fewer than 2 joints are visible or the box is empty."""
  points = pixels[visible]
  if len(points) < 2:
    return None
  low, high = points.min(axis=0), points.max(axis=0)
  grow = (high - low) * BOX_GROWTH
  low, high = low - grow, high + grow
  return clip_box(np.array([low[0], low[1], high[0] - low[0], high[1] - low[1]]), width, height)


class Pw3d(CocoStyleBuilder):
  """3DPW 2D (24 SMPL joints), see the module docstring."""

  name = 'pw3d'
  FORMAT = 'smpl24'
  DESCRIPTION = '3DPW: SMPL joints projected to 2D, one record per person and frame.'
  LAYOUT = {
    split: SplitLayout((f'sequenceFiles/{split}', f'annotations/3dpw_{split}.json'), ('imageFiles', 'images'))
    for split in ('train', 'validation', 'test')
  }
  INSTANCE_EXTRAS = {
    'joints_cam': ((NUM_JOINTS, 3), np.float32, np.zeros((NUM_JOINTS, 3))),
    'sequence': ((), np.object_, ''),
  }

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> SplitData:
    if os.path.isfile(annotation_path):
      return super().load_split(split, annotation_path, image_dir)
    return self._load_sequences(split, annotation_path, image_dir)

  def _load_sequences(self, split: str, directory: str, image_dir: str) -> SplitData:
    files = sorted(glob.glob(os.path.join(directory, '*.pkl')))
    if not files:
      raise RawDataError(f'{directory}: no 3DPW sequence files (*.pkl)')
    is_train = split in self.TRAIN_SPLITS
    images: dict[int, RawImage] = {}
    instances, gt_annotations = [], []
    for seq_index, path in enumerate(files):
      try:
        with open(path, 'rb') as f:
          seq = pickle.load(f, encoding='latin1')
      except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise RawDataError(f'{path}: not a readable 3DPW sequence pickle ({err})') from None
      if not isinstance(seq, dict):
        raise RawDataError(f'{path}: expected a dict, got {type(seq).__name__}')
      for key in ('jointPositions', 'cam_poses', 'cam_intrinsics', 'campose_valid', 'img_frame_ids'):
        if key not in seq:
          raise RawDataError(f'{path}: missing field {key!r}')
      name = str(seq.get('sequence', os.path.splitext(os.path.basename(path))[0]))
      frame_ids = np.asarray(seq['img_frame_ids']).reshape(-1).astype(np.int64)
      num_frames = len(frame_ids)
      cam_poses = as_array(seq['cam_poses'], (num_frames, 4, 4), 'cam_poses', path, 'sequence')
      intrinsics = as_array(seq['cam_intrinsics'], (3, 3), 'cam_intrinsics', path, 'sequence')
      people = [
        as_array(j, (num_frames, NUM_JOINTS * 3), f'jointPositions[{p}]', path, 'sequence')
        for p, j in enumerate(seq['jointPositions'])
      ]
      valid = [
        as_array(v, (num_frames,), f'campose_valid[{p}]', path, 'sequence') for p, v in enumerate(seq['campose_valid'])
      ]
      if len(valid) != len(people):
        raise RawDataError(
          f'{path}: sequence: field \'campose_valid\' has {len(valid)} persons, \'jointPositions\' {len(people)}'
        )
      for f_index, frame in enumerate(frame_ids):
        file_name = f'{name}/image_{int(frame):05d}.jpg'
        image_id = FRAME_STRIDE * (seq_index + 1) + int(frame)
        what = f'frame {int(frame)}'
        located = self.locate_image(image_dir, file_name)
        size = image_size_from_file(located) if located else None
        if size is None:
          self.skipped.skip(
            split, 'missing_image' if located is None else 'unreadable_image', os.path.join(image_dir, file_name)
          )
          continue
        height, width = size
        image = RawImage(image_id, file_name, located, height, width)
        frame_instances = []
        for person, joints in enumerate(people):
          pwhat = f'{what} person {person}'
          if valid[person][f_index] <= 0:
            self.skipped.skip(split, 'invalid_camera_pose', f'{path}: {pwhat}')
            continue
          pixels, camera = project_world_joints(joints[f_index].reshape(NUM_JOINTS, 3), cam_poses[f_index], intrinsics)
          inside = in_view(pixels, camera, width, height)
          keypoints = np.concatenate([pixels, 2.0 * inside[:, None]], axis=1).astype(np.float32)
          box = joints_box(pixels, inside, width, height)
          instance_id = 10 * image_id + person + 1
          area = float(box[2] * box[3]) if box is not None else 0.0
          if not is_train:
            gt_annotations.append(
              gt_annotation(
                instance_id,
                image_id,
                1,
                keypoints,
                box if box is not None else np.zeros(4),
                area,
                0,
                sequence=name,
                person=person,
              )
            )
          if box is None:
            self.skipped.skip(split, 'bad_bbox', f'{path}: {pwhat} (fewer than 2 joints in the image)')
            continue
          if not self.keep_instance(split, keypoints, path, pwhat):
            continue
          frame_instances.append(
            RawInstance(
              instance_id=instance_id,
              image_id=image_id,
              category_id=1,
              bbox=box,
              area=area,
              keypoints=keypoints,
              extras={'joints_cam': (camera * 1000.0).astype(np.float32), 'sequence': name},
            )
          )
        images[image_id] = image
        instances.extend(frame_instances)
    gt = None
    if not is_train:
      gt = {
        'info': {'description': f'pw3d {split}: SMPL joints projected from {directory}'},
        'images': [gt_image(im) for im in images.values()],
        'annotations': gt_annotations,
        'categories': [
          normalised_category({'id': 1, 'name': 'person', 'supercategory': 'person'}, self.FORMAT, directory)
        ],
      }
    return SplitData(images=images, instances=instances, gt=gt, source=directory)
