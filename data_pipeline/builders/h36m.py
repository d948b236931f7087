"""tfds builder `h36m`: Human3.6M in 3D from mmpose's preprocessed body3d layout (records: `records3d`; base and
skipping: `data_pipeline.builders.real3d`), format 'h36m' (25 joints, 17 labelled).

Raw layout read (mmpose's `tools/dataset_converters/preprocess_h36m.py` output; relative to `--manual_dir`):
  annotation_body3d/fps50/h36m_train.npz (else fps10/), the `train` split (S1, S5, S6, S7, S8);
  annotation_body3d/fps50/h36m_test.npz (else fps10/), the `test` split (S9, S11); fields:
    imgname (N,)        'S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg' (a bare file name is
                        looked up as <subject>/<subject>_<action>.<camera>/<name>), relative to images/ (else to
                        --manual_dir);
    center (N, 2), scale (N,)  the box: the square of side 200 * scale px centred at `center` (px of the original,
                        distorted image);
    S (N, 17, 4)        camera-frame joints x, y, z in metres and a visibility flag (> 0 = labelled), mmpose's 17
                        joints: root, right_hip, right_knee, right_foot, left_hip, left_knee, left_foot, spine,
                        thorax, neck_base, head, left_shoulder, left_elbow, left_wrist, right_shoulder, right_elbow,
                        right_wrist (H36M's raw joints 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27);
    (center/scale/part are also read by the 2D tools; `part` is not used here);
  annotation_body3d/cameras.pkl (else cameras.pkl, or the option `cameras`): {(subject, camera id): {R, T, c (2, 1),
    f (2, 1), k (3, 1), p (2, 1), w, h, name, id}}.

Record fields: joints3d = S[..., :3] * 1000 mapped by name to the 'h36m' format (root -> pelv, thorax -> neck,
neck_base -> head, head -> htop, *_foot -> *ank, ...; rfoo, rtoe, lfoo, ltoe, lthu, lfin, rthu, rfin stay invalid);
valid = visibility > 0; intrinsics from f and c; distortion = (k1, k2, p1, p2, k3) from k and p in Human3.6M's own
model (info.metadata['distortion_model'] = 'h36m': its tangential terms lack OpenCV's factor 2, and only this model
reproduces the released 2D labels, see `posebh_jax.geometry.camera`); sequence = '<subject>_<action>' (e.g.
'S1_Directions_1'), camera = the camera id ('54138969'), frame = the file name's frame number; image_id =
instance_id = 1 + the record's position in the npz. Near-duplicates are dropped in `train` (stream: sequence and
camera).
"""

from __future__ import annotations

import os
import re

from data_pipeline.builders.real3d import Body3DNpzBuilder, SplitLayout

# mmpose's 17 H36M joint names (the npz order) -> the 'h36m' format's short names.
SOURCE_JOINTS = (
  ('root', 'pelv'),
  ('right_hip', 'rhip'),
  ('right_knee', 'rkne'),
  ('right_foot', 'rank'),
  ('left_hip', 'lhip'),
  ('left_knee', 'lkne'),
  ('left_foot', 'lank'),
  ('spine', 'spin'),
  ('thorax', 'neck'),
  ('neck_base', 'head'),
  ('head', 'htop'),
  ('left_shoulder', 'lsho'),
  ('left_elbow', 'lelb'),
  ('left_wrist', 'lwri'),
  ('right_shoulder', 'rsho'),
  ('right_elbow', 'relb'),
  ('right_wrist', 'rwri'),
)
_NAME = re.compile(r'^(S\d+)_(.+)\.(\d+)_(\d+)\.[A-Za-z]+$')


def _npz(split: str) -> tuple[str, ...]:
  return tuple(f'annotation_body3d/{fps}/h36m_{split}.npz' for fps in ('fps50', 'fps10'))


class H36m(Body3DNpzBuilder):
  """Human3.6M 3D (mmpose body3d layout), see the module docstring."""

  name = 'h36m'
  FORMAT = 'h36m'
  DESCRIPTION = 'Human3.6M: camera-frame 3D joints (mm), one record per frame and camera.'
  DISTORTION_MODEL = 'h36m'
  LAYOUT = {
    'train': SplitLayout(_npz('train'), ('images',)),
    'test': SplitLayout(_npz('test'), ('images',)),
  }
  SOURCE_JOINTS = SOURCE_JOINTS
  CAMERA_FILES = ('annotation_body3d/cameras.pkl', 'cameras.pkl')

  def parse_name(self, imgname: str):
    """(camera key (subject, camera id), sequence, camera id, frame, candidate paths) or None."""
    base = os.path.basename(imgname)
    match = _NAME.match(base)
    if match is None:
      return None
    subject, action, camera, frame = match.groups()
    candidates = (imgname, f'{subject}/{subject}_{action}.{camera}/{base}')
    return (subject, camera), f'{subject}_{action}', camera, int(frame), candidates
