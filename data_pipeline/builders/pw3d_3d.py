"""tfds builder `pw3d_3d`: 3DPW in 3D, the 24 SMPL joints in the camera frame (records: `records3d`; base and
skipping: `data_pipeline.builders.real3d`), format 'smpl'. The 2D builder of the same release is `pw3d` (unchanged).

Raw layout read (the official release; relative to `--manual_dir`):
  sequenceFiles/{train,validation,test}/<sequence>.pkl  one pickle (Python 2, latin-1) per sequence with
      'sequence' (name), 'jointPositions' (per person: (F, 72) world joints in m, SMPL's 24 joints in SMPL's order),
      'cam_poses' (F, 4, 4) world -> camera, 'cam_intrinsics' (3, 3), 'campose_valid' (per person: (F,) 0/1),
      'img_frame_ids' (F,);
  imageFiles/<sequence>/image_<frame:05d>.jpg.

Record fields: joints3d = (cam_pose @ [X_world; 1])[:3] * 1000 mm, mapped by name to the 'smpl' format (SMPL's
spine1/2/3 -> spi1/2/3, left/right_foot -> ltoe/rtoe, collar -> cla, ...), all 24 valid; intrinsics = cam_intrinsics,
distortion zeros; the box as the 2D builder's (`pw3d.joints_box`: the in-image projected joints grown by 20 % on each
side, clipped to the image size from the JPEG header, or for a label-only record without image twice the principal
point); a person-frame whose `campose_valid` is 0 is skipped (`invalid_camera_pose`), one with fewer than two
joints in the image too (`person_not_in_view`). sequence = the sequence name, camera = '' (one moving camera),
frame = the frame id; image_id = 100000 * (sequence position in the sorted split directory + 1) + frame id,
instance_id = 10 * image_id + person index + 1 (as the 2D builder). The near-duplicate stream is (sequence, person).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from data_pipeline.builders.pw3d import FRAME_STRIDE, NUM_JOINTS, in_view, joints_box, project_world_joints
from data_pipeline.builders.real import as_array, image_size_from_file
from data_pipeline.builders.real3d import (
  Example3D,
  Real3DBuilder,
  Split3D,
  SplitLayout,
  joint_table,
  load_pickle,
  map_joints,
)
from data_pipeline.errors import RawDataError

# SMPL's joint names (the jointPositions order) -> the 'smpl' format's short names.
SOURCE_JOINTS = (
  ('pelvis', 'pelv'),
  ('left_hip', 'lhip'),
  ('right_hip', 'rhip'),
  ('spine1', 'spi1'),
  ('left_knee', 'lkne'),
  ('right_knee', 'rkne'),
  ('spine2', 'spi2'),
  ('left_ankle', 'lank'),
  ('right_ankle', 'rank'),
  ('spine3', 'spi3'),
  ('left_foot', 'ltoe'),
  ('right_foot', 'rtoe'),
  ('neck', 'neck'),
  ('left_collar', 'lcla'),
  ('right_collar', 'rcla'),
  ('head', 'head'),
  ('left_shoulder', 'lsho'),
  ('right_shoulder', 'rsho'),
  ('left_elbow', 'lelb'),
  ('right_elbow', 'relb'),
  ('left_wrist', 'lwri'),
  ('right_wrist', 'rwri'),
  ('left_hand', 'lhan'),
  ('right_hand', 'rhan'),
)
REQUIRED = ('jointPositions', 'cam_poses', 'cam_intrinsics', 'campose_valid', 'img_frame_ids')


class Pw3d3D(Real3DBuilder):
  """3DPW 3D (SMPL joints in the camera frame), see the module docstring."""

  name = 'pw3d_3d'
  FORMAT = 'smpl'
  DESCRIPTION = '3DPW: camera-frame SMPL joints (mm), one record per person and frame.'
  LAYOUT = {
    split: SplitLayout((f'sequenceFiles/{split}',), ('imageFiles',)) for split in ('train', 'validation', 'test')
  }

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> Split3D:
    files = sorted(glob.glob(os.path.join(annotation_path, '*.pkl')))
    if not files:
      raise RawDataError(f'{annotation_path}: no 3DPW sequence files (*.pkl)')
    table = joint_table(self.FORMAT, SOURCE_JOINTS)
    examples = []
    for seq_index, path in enumerate(files):
      seq = load_pickle(path)
      if not isinstance(seq, dict):
        raise RawDataError(f'{path}: expected a dict, got {type(seq).__name__}')
      for key in REQUIRED:
        if key not in seq:
          raise RawDataError(f'{path}: sequence: missing field {key!r}')
      name = str(seq.get('sequence', os.path.splitext(os.path.basename(path))[0]))
      frame_ids = np.asarray(seq['img_frame_ids']).reshape(-1).astype(np.int64)
      num_frames = len(frame_ids)
      cam_poses = as_array(seq['cam_poses'], (num_frames, 4, 4), 'cam_poses', path, 'sequence')
      intrinsics = as_array(seq['cam_intrinsics'], (3, 3), 'cam_intrinsics', path, 'sequence')
      people = [
        as_array(j, (num_frames, NUM_JOINTS * 3), f'jointPositions[{p}]', path, f'person {p}')
        for p, j in enumerate(seq['jointPositions'])
      ]
      valid_pose = [
        as_array(v, (num_frames,), f'campose_valid[{p}]', path, f'person {p}')
        for p, v in enumerate(seq['campose_valid'])
      ]
      if len(valid_pose) != len(people):
        raise RawDataError(
          f"{path}: sequence: field 'campose_valid' has {len(valid_pose)} persons, 'jointPositions' {len(people)}"
        )
      for f_index, frame in enumerate(frame_ids):
        file_name = f'{name}/image_{int(frame):05d}.jpg'
        image_path = os.path.join(image_dir, file_name)
        image_id = FRAME_STRIDE * (seq_index + 1) + int(frame)
        size = image_size_from_file(image_path) if os.path.isfile(image_path) else None
        height, width = size or (int(round(2 * intrinsics[1, 2])), int(round(2 * intrinsics[0, 2])))
        for person, joints in enumerate(people):
          what = f'frame {int(frame)} person {person}'
          if valid_pose[person][f_index] <= 0:
            self.skipped.skip(split, 'invalid_camera_pose', f'{path}: {what}')
            continue
          pixels, camera = project_world_joints(joints[f_index].reshape(NUM_JOINTS, 3), cam_poses[f_index], intrinsics)
          inside = in_view(pixels, camera, width, height)
          box = joints_box(pixels, inside, width, height)
          if box is None:
            self.skipped.skip(split, 'person_not_in_view', f'{path}: {what}')
            continue
          mapped, valid = map_joints(table, camera * 1000.0, np.ones(NUM_JOINTS, bool))
          examples.append(
            Example3D(
              source=path,
              what=what,
              file_name=file_name,
              image_path=image_path,
              image_id=image_id,
              instance_id=10 * image_id + person + 1,
              bbox=box,
              intrinsics=intrinsics,
              joints3d=mapped,
              valid=valid,
              sequence=name,
              camera='',
              frame=int(frame),
              height=height,
              width=width,
              stream=(name, person),
            )
          )
    return Split3D(examples, annotation_path)
