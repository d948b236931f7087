"""tfds builder `mpi_inf_3dhp`: MPI-INF-3DHP in 3D from mmpose's preprocessed body3d layout (records: `records3d`;
base and skipping: `data_pipeline.builders.real3d`), format '3dhp' (28 joints, 17 labelled).

Raw layout read (mmpose's `tools/dataset_converters/preprocess_mpi_inf_3dhp.py` output; relative to
`--manual_dir`):
  annotations/mpi_inf_3dhp_train.npz (else annotation_body3d/...), the `train` split;
  annotations/mpi_inf_3dhp_test_valid.npz (else annotation_body3d/...), the `test` split (TS1-TS6, valid frames);
  fields as in H36M's npz:
    imgname (N,)        'S4_Seq2_Cam0_001033.jpg' (train) or 'TS1_002001.jpg' (test), relative to images/ (else to
                        --manual_dir); a bare name is also looked up as <S4_Seq2_Cam0 | TS1>/<name>;
    center (N, 2), scale (N,)  the box: the square of side 200 * scale px centred at `center`;
    S (N, 17, 4)        camera-frame joints x, y, z in metres and a visibility flag (> 0 = labelled), mmpose's 17
                        joints (the test set's order): head_top, neck, right_shoulder, right_elbow, right_wrist,
                        left_shoulder, left_elbow, left_wrist, right_hip, right_knee, right_ankle, left_hip,
                        left_knee, left_ankle, root, spine, head;
  annotations/cameras_train.pkl {'S1_Seq1_Cam0': {R, T, c, f, w, h, name}} and annotations/cameras_test.pkl
    {'TS1': {c, f, w, h, name}} (else next to --manual_dir, or the option `cameras`); every camera file found is read,
    a record finds its camera by its name ('S4_Seq2_Cam0' or 'TS1'), so either split may name either npz.

Record fields: joints3d = S[..., :3] * 1000 mapped by name to the '3dhp' format (root -> pelv, spine -> spin, the
other names -> their short names; thor, spi4, spi2, lcla, rcla, lhan, rhan, lfoo, ltoe, rfoo, rtoe stay invalid);
valid = visibility > 0; intrinsics from f and c; distortion zeros (the pickles hold none); sequence = 'S4_Seq2' (train)
or 'TS1' (test), camera = 'Cam0' (train) or '' (test: one camera per sequence), frame = the file name's number;
image_id = instance_id = 1 + the record's position in the npz. The image size comes from the JPEG (the training
cameras' `h` is 204 in some releases of cameras_train.pkl; it is used only for label-only records).
"""

from __future__ import annotations

import os
import re

from data_pipeline.builders.real3d import Body3DNpzBuilder, SplitLayout

# mmpose's 17 MPI-INF-3DHP joint names (the npz order) -> the '3dhp' format's short names.
SOURCE_JOINTS = (
  ('head_top', 'htop'),
  ('neck', 'neck'),
  ('right_shoulder', 'rsho'),
  ('right_elbow', 'relb'),
  ('right_wrist', 'rwri'),
  ('left_shoulder', 'lsho'),
  ('left_elbow', 'lelb'),
  ('left_wrist', 'lwri'),
  ('right_hip', 'rhip'),
  ('right_knee', 'rkne'),
  ('right_ankle', 'rank'),
  ('left_hip', 'lhip'),
  ('left_knee', 'lkne'),
  ('left_ankle', 'lank'),
  ('root', 'pelv'),
  ('spine', 'spin'),
  ('head', 'head'),
)
_TRAIN_NAME = re.compile(r'^(S\d+)_(Seq\d+)_(Cam\d+)_(\d+)\.[A-Za-z]+$')
_TEST_NAME = re.compile(r'^(TS\d+)_(\d+)\.[A-Za-z]+$')


def _annotations(name: str) -> tuple[str, ...]:
  return tuple(f'{folder}/{name}' for folder in ('annotations', 'annotation_body3d'))


class MpiInf3dhp(Body3DNpzBuilder):
  """MPI-INF-3DHP 3D (mmpose body3d layout), see the module docstring."""

  name = 'mpi_inf_3dhp'
  FORMAT = '3dhp'
  DESCRIPTION = 'MPI-INF-3DHP: camera-frame 3D joints (mm), one record per frame and camera.'
  LAYOUT = {
    'train': SplitLayout(_annotations('mpi_inf_3dhp_train.npz'), ('images',)),
    'test': SplitLayout(_annotations('mpi_inf_3dhp_test_valid.npz'), ('images',)),
  }
  SOURCE_JOINTS = SOURCE_JOINTS
  CAMERA_FILES = (
    *_annotations('cameras_train.pkl'),
    *_annotations('cameras_test.pkl'),
    'cameras_train.pkl',
    'cameras_test.pkl',
  )

  def parse_name(self, imgname: str):
    """(camera key, sequence, camera, frame, candidate paths) or None."""
    base = os.path.basename(imgname)
    match = _TRAIN_NAME.match(base)
    if match is not None:
      subject, seq, camera, frame = match.groups()
      key = f'{subject}_{seq}_{camera}'
      return key, f'{subject}_{seq}', camera, int(frame), (imgname, f'{key}/{base}')
    match = _TEST_NAME.match(base)
    if match is not None:
      sequence, frame = match.groups()
      return sequence, sequence, '', int(frame), (imgname, f'{sequence}/{base}')
    return None
