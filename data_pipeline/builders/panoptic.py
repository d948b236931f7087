"""tfds builder `panoptic`: CMU Panoptic Studio in 3D (records: `records3d`; base and skipping:
`data_pipeline.builders.real3d`), format 'coco' (25 joints: Panoptic's joints19, then six OpenPose foot points
that Panoptic does not label and that stay invalid).

Raw layout read (the official release as the Panoptic toolbox downloads and extracts it; relative to `--manual_dir`):
  <sequence>/calibration_<sequence>.json  {"cameras": [{"name": "00_03", "type": "hd", "resolution": [W, H],
      "K": 3x3, "distCoef": [k1, k2, p1, p2, k3] (OpenCV), "R": 3x3, "t": 3x1 (cm)}, ...]}: world -> camera
      X_cam = R X_world + t;
  <sequence>/hdPose3d_stage1_coco19/body3DScene_<frame:08d>.json  {"bodies": [{"id": person id, "joints19":
      19 x (x, y, z, confidence) world coordinates in cm}]} with Panoptic's joints19 order: neck, nose, body centre,
      left shoulder, elbow, wrist, hip, knee, ankle, right shoulder, elbow, wrist, hip, knee, ankle, left eye, ear,
      right eye, ear;
  <sequence>/hdImgs/<camera>/<camera>_<frame:08d>.jpg  the HD video frames (extracted by the toolbox).
Every directory of --manual_dir with a hdPose3d_stage1_coco19/ folder is a sequence. Splits: `validation` = the
sequences named by the option `validation_sequences` (comma-separated; default VoxelPose's and mmpose's validation
sequences 160906_pizza1, 160422_haggling1, 160906_ian5, 160906_band4), `train` = all others.

One record per person per camera view per frame: the cameras are the option `cameras` (comma-separated names) or
else every camera of type "hd" in the calibration (31 per sequence). joints3d = (R X + t) * 10 mm in the camera
frame, mapped by name to the 'coco' format (body centre -> pelv); valid = confidence > the option `min_confidence`
(default 0.1, the threshold of VoxelPose / mmpose's Panoptic loader; -1 marks an unlabelled joint). The box is the
extent of the valid joints in front of the camera projected with K and the distortion (cv2.projectPoints) that fall
inside the image, grown by 20 % on each side and clipped to the image (as the 3DPW builder); a person with fewer than
two such joints is skipped for that view (`person_not_in_view`). sequence = the sequence name, camera = the camera
name, frame = the file's frame number; image_id = 1 + the position of (sequence, frame, camera) in the split,
instance_id = 1 + the record's position in the split. The near-duplicate stream is (sequence, camera, person id).

Images: a view whose HD frame is not on disk is skipped as `missing_image`, unless the option `label_only` is set
(`--label_only`): then the record holds image b'' with the calibration's image size, for evaluation or for checks of
the labels without the videos (the realdata sample has no images).
"""

from __future__ import annotations

import glob
import os
import re

import cv2
import numpy as np

from data_pipeline.builders.pw3d import joints_box
from data_pipeline.builders.real import as_array, as_int, load_json, require, require_list
from data_pipeline.builders.real3d import Example3D, Real3DBuilder, Split3D, joint_table, map_joints
from data_pipeline.errors import RawDataError

# Panoptic joints19 (file order) -> the 'coco' format's short names.
SOURCE_JOINTS = (
  ('neck', 'neck'),
  ('nose', 'nose'),
  ('body_center', 'pelv'),
  ('left_shoulder', 'lsho'),
  ('left_elbow', 'lelb'),
  ('left_wrist', 'lwri'),
  ('left_hip', 'lhip'),
  ('left_knee', 'lkne'),
  ('left_ankle', 'lank'),
  ('right_shoulder', 'rsho'),
  ('right_elbow', 'relb'),
  ('right_wrist', 'rwri'),
  ('right_hip', 'rhip'),
  ('right_knee', 'rkne'),
  ('right_ankle', 'rank'),
  ('left_eye', 'leye'),
  ('left_ear', 'lear'),
  ('right_eye', 'reye'),
  ('right_ear', 'rear'),
)
POSE_DIR = 'hdPose3d_stage1_coco19'
VALIDATION_SEQUENCES = ('160906_pizza1', '160422_haggling1', '160906_ian5', '160906_band4')
MIN_CONFIDENCE = 0.1
CM_TO_MM = 10.0
_FRAME = re.compile(r'^body3DScene_(\d+)\.json$')


def camera_from_calibration(entry, path: str, what: str) -> dict:
  """A calibration entry -> {name, type, K (3, 3), dist (5,), R (3, 3), t (3,) cm, width, height}; raises
  `RawDataError` naming the field."""
  name = require(entry, 'name', path, what)
  what = f'camera {name!r}'
  resolution = as_array(require(entry, 'resolution', path, what), (2,), 'resolution', path, what)
  dist = np.asarray(entry.get('distCoef', np.zeros(5)), np.float64).reshape(-1)
  return {
    'name': str(name),
    'type': str(entry.get('type', '')),
    'K': as_array(require(entry, 'K', path, what), (3, 3), 'K', path, what),
    'dist': as_array(np.pad(dist, (0, max(0, 5 - dist.size))), (5,), 'distCoef', path, what),
    'R': as_array(require(entry, 'R', path, what), (3, 3), 'R', path, what),
    't': as_array(require(entry, 't', path, what), (3,), 't', path, what),
    'width': int(resolution[0]),
    'height': int(resolution[1]),
  }


def project(points_cam: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray) -> np.ndarray:
  """Camera-frame points (N, 3) (z > 0) -> pixels (N, 2) with OpenCV's distortion model."""
  if len(points_cam) == 0:
    return np.zeros((0, 2))
  pixels, _ = cv2.projectPoints(
    np.asarray(points_cam, np.float64).reshape(-1, 1, 3), np.zeros(3), np.zeros(3), intrinsics, distortion
  )
  return pixels.reshape(-1, 2)


class Panoptic(Real3DBuilder):
  """CMU Panoptic 3D (joints19, every HD view), see the module docstring."""

  name = 'panoptic'
  FORMAT = 'coco'
  DESCRIPTION = 'CMU Panoptic Studio: camera-frame 3D joints (mm), one record per person, frame and HD view.'
  LAYOUT = {}

  def _sequences(self) -> list[str]:
    if self._manual_dir is None:
      return []
    return sorted(d for d in os.listdir(self._manual_dir) if os.path.isdir(os.path.join(self._manual_dir, d, POSE_DIR)))

  def split_sources(self) -> dict[str, tuple[str, str]]:
    """{'train' / 'validation': (--manual_dir, --manual_dir)} for the splits that have sequences."""
    option = self.option('validation_sequences')
    validation = set(str(option).split(',')) if option is not None else set(VALIDATION_SEQUENCES)
    self._split_sequences = {'train': [], 'validation': []}
    for sequence in self._sequences():
      self._split_sequences['validation' if sequence in validation else 'train'].append(sequence)
    return {s: (self._manual_dir, self._manual_dir) for s, seqs in self._split_sequences.items() if seqs}

  def _cameras(self, sequence: str) -> list[dict]:
    path = os.path.join(self._manual_dir, sequence, f'calibration_{sequence}.json')
    if not os.path.isfile(path):
      raise RawDataError(f'{path}: calibration file of sequence {sequence!r} does not exist')
    entries = require_list(load_json(path), 'cameras', path)
    cameras = [camera_from_calibration(e, path, f'camera #{i}') for i, e in enumerate(entries)]
    wanted = self.option('cameras')
    if wanted:
      names = [n for n in str(wanted).split(',') if n]
      by_name = {c['name']: c for c in cameras}
      missing = [n for n in names if n not in by_name]
      if missing:
        raise RawDataError(f'{path}: top level: field \'cameras\' has no camera {missing[0]!r} (option cameras)')
      return [by_name[n] for n in names]
    return [c for c in cameras if c['type'] == 'hd']

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> Split3D:
    table = joint_table(self.FORMAT, SOURCE_JOINTS)
    min_confidence = float(self.option('min_confidence', MIN_CONFIDENCE))
    examples, image_ids = [], {}
    for sequence in self._split_sequences[split]:
      cameras = self._cameras(sequence)
      frames = []
      for path in glob.glob(os.path.join(self._manual_dir, sequence, POSE_DIR, '*.json')):
        match = _FRAME.match(os.path.basename(path))
        if match:
          frames.append((int(match.group(1)), path))
      for frame, path in sorted(frames):
        bodies = require_list(load_json(path), 'bodies', path)
        people = []
        for index, body in enumerate(bodies):
          what = f'body #{index}'
          person = as_int(require(body, 'id', path, what), 'id', path, what)
          what = f'body #{index} (id {person})'
          raw = as_array(require(body, 'joints19', path, what), (19, 4), 'joints19', path, what)
          people.append((person, what, raw[:, :3], raw[:, 3] > min_confidence))
        for camera in cameras:
          name = camera['name']
          file_name = f'{sequence}/hdImgs/{name}/{name}_{frame:08d}.jpg'
          image_path = os.path.join(self._manual_dir, file_name)
          for person, what, world, labelled in people:
            where = f'{path}: {what}'
            if not labelled.any():
              self.skipped.skip(split, 'no_labelled_joints', where)
              continue
            cam_mm = ((camera['R'] @ world.T).T + camera['t']) * CM_TO_MM
            joints, valid = map_joints(table, cam_mm, labelled)
            front = labelled & (cam_mm[:, 2] > 0)
            pixels = np.zeros((19, 2))
            pixels[front] = project(cam_mm[front], camera['K'], camera['dist'])
            inside = (
              front
              & (pixels[:, 0] >= 0)
              & (pixels[:, 0] <= camera['width'] - 1)
              & (pixels[:, 1] >= 0)
              & (pixels[:, 1] <= camera['height'] - 1)
            )
            box = joints_box(pixels, inside, camera['width'], camera['height'])
            if box is None:
              self.skipped.skip(split, 'person_not_in_view', f'{where} in camera {name}')
              continue
            image_id = image_ids.setdefault((sequence, frame, name), len(image_ids) + 1)
            examples.append(
              Example3D(
                source=path,
                what=f'{what}, camera {name}',
                file_name=file_name,
                image_path=image_path,
                image_id=image_id,
                instance_id=len(examples) + 1,
                bbox=box,
                intrinsics=camera['K'],
                distortion=camera['dist'],
                joints3d=joints,
                valid=valid,
                sequence=sequence,
                camera=name,
                frame=frame,
                height=camera['height'],
                width=camera['width'],
                stream=(sequence, name, person),
              )
            )
    return Split3D(examples, self._manual_dir)
