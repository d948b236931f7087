"""The 3D evaluation's picture (`posebh_jax.viz.pose3d`) on synthetic arrays: the PNG's layout, the projection into
the crop against the pinhole closed form, and the 3D view's red-under-green drawing."""

import cv2
import numpy as np
import pytest

from posebh_jax.skeletons import get_format3d
from posebh_jax.viz import pose3d

FMT = get_format3d('h36m')
CROP_HW = (64, 48)
DEPTH_MM = 4000.0
# A standing person, root-relative, mm in a camera frame (x right, y down, z forward).
_STANDING = {
  'pelv': (0, 0, 0),
  'rhip': (-120, 0, 0),
  'rkne': (-130, 420, 30),
  'rank': (-130, 820, 0),
  'rfoo': (-130, 880, -80),
  'rtoe': (-130, 880, -160),
  'spin': (0, -250, 0),
  'neck': (0, -520, 0),
  'head': (0, -640, -20),
  'htop': (0, -760, 0),
  'rsho': (-180, -500, 0),
  'relb': (-200, -250, 60),
  'rwri': (-210, -20, 80),
  'rthu': (-200, 30, 60),
  'rfin': (-215, 60, 90),
}


def _standing_pose() -> np.ndarray:
  """(J, 3) mm: `_STANDING` with its left side mirrored from the right, DEPTH_MM in front of the camera."""
  joints = np.zeros((FMT.num_joints, 3))
  for name, xyz in _STANDING.items():
    joints[FMT.index(name)] = xyz
    if name[0] == 'r':
      joints[FMT.index('l' + name[1:])] = (-xyz[0], xyz[1], xyz[2])
  return joints + (0.0, 0.0, DEPTH_MM)


def _intrinsics(focal=60.0, cx=24.0, cy=32.0) -> np.ndarray:
  return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def _reddish(image: np.ndarray) -> np.ndarray:
  """(H, W) bool: pixels in the prediction's hues (red, the left side's light red, their blends with black), which no
  grey, green or green drawn over red is."""
  r, g, b = (image[..., c].astype(float) for c in range(3))
  return (r > 60) & (r > 1.8 * g) & (r > 1.8 * b)


def test_writes_png_of_expected_size(tmp_path):
  count = 3
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (count,) + CROP_HW + (3,), np.uint8)
  true = np.stack([_standing_pose()] * count)
  pred = true + rng.normal(0.0, 40.0, true.shape)
  valid = np.ones((count, FMT.num_joints), bool)
  valid[1, 5] = False
  path = tmp_path / 'viz' / 'h36m_step7.png'
  written = pose3d.write_pose3d_png(str(path), crops, np.stack([_intrinsics()] * count), pred, true, valid, FMT)
  assert written == str(path)
  image = cv2.imread(written)
  height, width = CROP_HW
  # One row per person: the crop ×2 and a square 3D view as tall as it.
  assert image.shape == (count * 2 * height, 2 * width + 2 * height, 3)


def test_projected_true_joint_lands_at_the_intrinsics_pixel():
  """A valid true joint is drawn at 2·(K X)_xy / z in the ×2 crop; an invalid one and a prediction behind the camera
  are not drawn at all."""
  crop = np.zeros(CROP_HW + (3,), np.uint8)
  true = np.zeros((FMT.num_joints, 3))
  valid = np.zeros(FMT.num_joints, bool)
  pelvis, hidden = FMT.index('pelv'), FMT.index('neck')
  true[pelvis] = (150.0, 250.0, 3000.0)
  true[hidden] = (-400.0, -200.0, 2500.0)
  valid[pelvis] = True
  pred = np.tile([0.0, 0.0, -1000.0], (FMT.num_joints, 1))  # behind the camera: not projected
  intrinsics = _intrinsics(focal=70.0, cx=23.5, cy=30.0)

  def drawn_at(panel, xyz, k):
    x, y = 2.0 * (k @ xyz)[:2] / xyz[2]
    return panel[int(round(y)), int(round(x))]

  panel = pose3d.crop_panel(crop, intrinsics, pred, true, valid, FMT)
  assert panel.shape == (2 * CROP_HW[0], 2 * CROP_HW[1], 3)
  np.testing.assert_array_equal(drawn_at(panel, true[pelvis], intrinsics), pose3d.TRUE_RGB)
  np.testing.assert_array_equal(drawn_at(panel, true[hidden], intrinsics), (0, 0, 0))
  assert not _reddish(panel[40:]).any()  # below the legend, no prediction was drawn
  # Moving the principal point moves the drawn joint with it.
  shifted = _intrinsics(focal=70.0, cx=23.5 + 6.0, cy=30.0)
  panel = pose3d.crop_panel(crop, shifted, pred, true, valid, FMT)
  np.testing.assert_array_equal(drawn_at(panel, true[pelvis], shifted), pose3d.TRUE_RGB)
  np.testing.assert_array_equal(drawn_at(panel, true[pelvis], intrinsics), (0, 0, 0))


def test_identical_poses_leave_no_red_and_an_error_shows():
  """The true pose is drawn over the prediction with the same strokes: a perfect prediction (even at another depth,
  the 3D view being root-relative) leaves no red pixel; one wrong arm does."""
  true = _standing_pose()
  valid = np.ones(FMT.num_joints, bool)
  crop = np.zeros(CROP_HW + (3,), np.uint8)
  view = pose3d.view_panel(true + (0.0, 0.0, 800.0), true, valid, FMT, size=128)
  assert view.shape == (128, 128, 3)
  assert not _reddish(view).any()
  assert not _reddish(pose3d.crop_panel(crop, _intrinsics(), true, true, valid, FMT)[40:]).any()

  wrong = true.copy()
  for name in ('lelb', 'lwri', 'lthu', 'lfin'):
    wrong[FMT.index(name)] += (0.0, -300.0, 300.0)  # the left arm raised forward
  assert _reddish(pose3d.view_panel(wrong, true, valid, FMT, size=128)).sum() > 20
  assert _reddish(pose3d.crop_panel(crop, _intrinsics(), wrong, true, valid, FMT)[40:]).sum() > 5


def test_example_mpjpe_is_root_relative():
  true = _standing_pose()
  valid = np.ones(FMT.num_joints, bool)
  assert pose3d.example_mpjpe(true + (100.0, -50.0, 900.0), true, valid, FMT) == pytest.approx(0.0, abs=1e-9)
  moved = true.copy()
  moved[FMT.index('lwri')] += (0.0, 0.0, 250.0)
  assert pose3d.example_mpjpe(moved, true, valid, FMT) == pytest.approx(250.0 / FMT.num_joints)
  # An invalid joint does not count; without a valid root both poses are centred on the valid joints.
  valid[FMT.index('lwri')] = False
  assert pose3d.example_mpjpe(moved, true, valid, FMT) == pytest.approx(0.0, abs=1e-9)
  valid[FMT.index('pelv')] = False
  assert pose3d.example_mpjpe(true + 500.0, true, valid, FMT) == pytest.approx(0.0, abs=1e-9)


def test_view_rotation():
  np.testing.assert_allclose(pose3d.view_rotation(0.0, 0.0), np.eye(3), atol=1e-12)
  rotation = pose3d.view_rotation(45.0, 15.0)
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  # Looking down: a point farther away (larger z) rises on the screen (smaller y).
  assert (rotation @ [0.0, 0.0, 1000.0])[1] < 0
