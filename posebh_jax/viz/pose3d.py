"""The 3D evaluation's picture: a few validation people, predicted (red) against true (green) 3D joints.

One row (tile) per person: on the left the input crop (upscaled ×`ZOOM`) with both skeletons projected by the crop
camera's intrinsics; on the right an orthographic view of the root-relative poses, turned by a fixed azimuth and
elevation so that depth shows, over a ground grid (`GRID_STEP_MM` squares at the true feet's height), both poses on
one metric scale, with the person's root-relative MPJPE in mm. The ground truth is drawn over the prediction with the
same strokes, so a perfect prediction leaves no red. Left-side bones are drawn in a lighter shade than the rest (a
mirrored prediction shows). Drawing uses OpenCV only; `tasks.metrabs` writes `viz/<dataset>_step<step>.png` with it.
"""

from __future__ import annotations

import cv2
import numpy as np

from posebh_jax.viz import common

ZOOM = 2
PRED_RGB = (230, 0, 0)
PRED_LEFT_RGB = (255, 110, 110)
TRUE_RGB = (0, 200, 0)
TRUE_LEFT_RGB = (120, 255, 120)
VIEW_BACKGROUND_RGB = (32, 32, 32)
GRID_RGB = (85, 85, 85)
GRID_STEP_MM = 500.0
GRID_HALF_SIZE_MM = 750.0  # the grid's squares: 3 x 3 around the root, inside the view when turned by 45 degrees
# Smallest scene width the 3D view shows (mm): a standing person fits with margin (MeTRAbs' 2200 mm box).
MIN_VIEW_EXTENT_MM = 2200.0
MIN_DEPTH_MM = 1.0  # joints nearer than this (or behind the camera) are not projected into the crop
_MAX_PIXEL = 1e5  # coordinates are clipped here before OpenCV's int conversion


def project(points_mm: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Pinhole projection of camera-frame points (J, 3) mm with intrinsics (3, 3): (crop px (J, 2) = (K X)_xy / z,
  in front (J,) bool: z >= MIN_DEPTH_MM; the pixels of the other points are meaningless)."""
  points = np.asarray(points_mm, np.float64)
  in_front = points[:, 2] >= MIN_DEPTH_MM
  homogeneous = points @ np.asarray(intrinsics, np.float64).T
  depth = np.where(in_front, homogeneous[:, 2], 1.0)
  return homogeneous[:, :2] / depth[:, None], in_front


def root_relative(
  pred_mm: np.ndarray, true_mm: np.ndarray, valid: np.ndarray, fmt
) -> tuple[np.ndarray, np.ndarray, bool]:
  """Both poses (J, 3) mm made relative to their own root (the mean of `fmt.root_indices`, as the evaluation does).
  Where the true root is not valid, both are centred on the mean of the valid joints instead. Returns (pred (J, 3),
  true (J, 3), whether the root was used)."""
  pred = np.asarray(pred_mm, np.float64)
  true = np.asarray(true_mm, np.float64)
  valid = np.asarray(valid, bool)
  anchor = list(fmt.root_indices)
  root_valid = bool(np.all(valid[anchor]))
  if not root_valid:
    anchor = np.flatnonzero(valid) if valid.any() else np.arange(len(valid))
  return pred - pred[anchor].mean(axis=0), true - true[anchor].mean(axis=0), root_valid


def example_mpjpe(pred_mm: np.ndarray, true_mm: np.ndarray, valid: np.ndarray, fmt) -> float:
  """Mean Euclidean error (mm) over the valid joints of one person's root-relative poses (`root_relative`), NaN
  without valid joints. `pred_mm`, `true_mm` (J, 3) mm, `valid` (J,) bool."""
  valid = np.asarray(valid, bool)
  if not valid.any():
    return float('nan')
  pred, true, _ = root_relative(pred_mm, true_mm, valid, fmt)
  return float(np.mean(np.linalg.norm(pred[valid] - true[valid], axis=-1)))


def view_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
  """(3, 3) rotation from the camera frame (x right, y down, z forward) to the view frame (x right, y down on the
  screen): a turn by `azimuth_deg` about the vertical (y) axis, then a tilt by `elevation_deg` about x that looks
  down on the scene (farther points rise on the screen)."""
  a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
  turn = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
  tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(e), -np.sin(e)], [0.0, np.sin(e), np.cos(e)]])
  return tilt @ turn


def _pixel(xy) -> tuple[int, int]:
  x, y = np.clip(np.round(xy), -_MAX_PIXEL, _MAX_PIXEL)
  return int(x), int(y)


def _draw_skeleton(canvas, xy, shown, fmt, colour, left_colour, thickness, radius) -> None:
  """Draws `fmt`'s links between shown joints and the shown joints (in place); left-side ones in `left_colour`."""
  for a, b in fmt.links:
    if shown[a] and shown[b]:
      sided = 'left' in (fmt.sides[a], fmt.sides[b])
      cv2.line(canvas, _pixel(xy[a]), _pixel(xy[b]), left_colour if sided else colour, thickness, cv2.LINE_AA)
  for k in np.flatnonzero(shown):
    cv2.circle(canvas, _pixel(xy[k]), radius, left_colour if fmt.sides[k] == 'left' else colour, -1, cv2.LINE_AA)


def _font_scale(panel_height: int) -> float:
  return 0.35 if panel_height < 200 else 0.45


def crop_panel(crop: np.ndarray, intrinsics: np.ndarray, pred_mm: np.ndarray, true_mm, valid, fmt) -> np.ndarray:
  """The crop uint8 (H, W, 3) upscaled ×ZOOM, with the predicted (red) and the valid true (green) joints (J, 3) mm
  in its camera frame projected by `intrinsics` (3, 3) (crop px ×ZOOM): RGB uint8 (ZOOM·H, ZOOM·W, 3)."""
  height, width = crop.shape[:2]
  canvas = cv2.resize(np.ascontiguousarray(crop), (width * ZOOM, height * ZOOM), interpolation=cv2.INTER_LINEAR)
  thickness, radius = 1, 2
  pred_xy, pred_in_front = project(pred_mm, intrinsics)
  _draw_skeleton(canvas, pred_xy * ZOOM, pred_in_front, fmt, PRED_RGB, PRED_LEFT_RGB, thickness, radius)
  true_xy, true_in_front = project(true_mm, intrinsics)
  shown = np.asarray(valid, bool) & true_in_front
  _draw_skeleton(canvas, true_xy * ZOOM, shown, fmt, TRUE_RGB, TRUE_LEFT_RGB, thickness, radius)
  scale = _font_scale(canvas.shape[0])
  common.label(canvas, 'pred', (0, 0), scale, PRED_RGB)
  (pred_width, _), _ = cv2.getTextSize('pred', common.FONT, scale, 1)
  common.label(canvas, 'true', (pred_width + 8, 0), scale, TRUE_RGB)
  return canvas


def view_panel(
  pred_mm: np.ndarray,
  true_mm: np.ndarray,
  valid: np.ndarray,
  fmt,
  size: int,
  azimuth_deg: float = 45.0,
  elevation_deg: float = 15.0,
) -> np.ndarray:
  """The 3D view of one person: the root-relative predicted (red, every joint) and true (green, valid joints) poses
  (J, 3) mm in the crop camera frame, rotated by `view_rotation` and projected orthographically, one scale for both
  (the larger of MIN_VIEW_EXTENT_MM and 1.25 × the true pose's on-screen extent spans the panel) and one offset
  (the true pose's on-screen box centred), over a ground grid at the lowest valid true joint, with the MPJPE: RGB
  uint8 (size, size, 3)."""
  valid = np.asarray(valid, bool)
  pred, true, root_valid = root_relative(pred_mm, true_mm, valid, fmt)
  rotation = view_rotation(azimuth_deg, elevation_deg)
  pred_view, true_view = pred @ rotation.T, true @ rotation.T
  # One scale and one offset for both poses, so that the red-green differences are true millimetres.
  low, high = (true_view[valid, :2].min(axis=0), true_view[valid, :2].max(axis=0)) if valid.any() else (0.0, 0.0)
  centre = (low + high) / 2.0
  px_per_mm = size / max(MIN_VIEW_EXTENT_MM, 1.25 * np.max(high - low))
  to_screen = lambda view: (view[:, :2] - centre) * px_per_mm + size / 2.0

  canvas = np.full((size, size, 3), VIEW_BACKGROUND_RGB, np.uint8)
  floor_y = np.max(true[valid, 1]) if valid.any() else 0.0  # y points down: the lowest joint has the largest y
  ticks = np.arange(-GRID_HALF_SIZE_MM, GRID_HALF_SIZE_MM + 1.0, GRID_STEP_MM)
  for t in ticks:
    for start, end in (
      ((t, -GRID_HALF_SIZE_MM), (t, GRID_HALF_SIZE_MM)),
      ((-GRID_HALF_SIZE_MM, t), (GRID_HALF_SIZE_MM, t)),
    ):
      ends = np.array([[start[0], floor_y, start[1]], [end[0], floor_y, end[1]]]) @ rotation.T
      a, b = to_screen(ends)
      cv2.line(canvas, _pixel(a), _pixel(b), GRID_RGB, 1, cv2.LINE_AA)

  thickness, radius = 2, 3
  everywhere = np.ones(len(valid), bool)
  _draw_skeleton(canvas, to_screen(pred_view), everywhere, fmt, PRED_RGB, PRED_LEFT_RGB, thickness, radius)
  _draw_skeleton(canvas, to_screen(true_view), valid, fmt, TRUE_RGB, TRUE_LEFT_RGB, thickness, radius)

  scale = _font_scale(size)
  error = example_mpjpe(pred_mm, true_mm, valid, fmt)
  text = f'MPJPE {error:.0f} mm' if root_valid else f'MPJPE* {error:.0f} mm (mean-centred)'
  common.label(canvas, text, (0, 0), scale)
  common.label(
    canvas,
    f'az {azimuth_deg:g} el {elevation_deg:g}, grid {GRID_STEP_MM:g} mm',
    (0, size - int(20 * scale / 0.45) - 2),
    scale * 0.85,
    (200, 200, 200),
  )
  return canvas


def render(
  crops: np.ndarray,
  intrinsics: np.ndarray,
  pred_mm: np.ndarray,
  true_mm: np.ndarray,
  valid: np.ndarray,
  fmt,
  azimuth_deg: float = 45.0,
  elevation_deg: float = 15.0,
) -> np.ndarray:
  """The picture of n people as RGB uint8 (n·ZOOM·H, ZOOM·W + ZOOM·H, 3): one row per person, the crop panel
  (`crop_panel`) and the square 3D view (`view_panel`) side by side.

  Args:
    crops: uint8 (n, H, W, 3) RGB input crops.
    intrinsics: (n, 3, 3) the crop cameras' intrinsics (crop px).
    pred_mm, true_mm: (n, J, 3) predicted and true joints in the crop camera frame, mm.
    valid: (n, J) bool, the true joints that are labelled.
    fmt: the joints' 3D skeleton format (`skeletons.get_format3d`).
    azimuth_deg, elevation_deg: the 3D view's direction (`view_rotation`).
  """
  crops = np.asarray(crops, np.uint8)
  if crops.ndim != 4 or len(crops) == 0:
    raise ValueError(f'render needs crops of shape (n >= 1, H, W, 3), got {crops.shape}')
  expected = (len(crops), fmt.num_joints)
  for name, array, tail in (('pred_mm', pred_mm, (3,)), ('true_mm', true_mm, (3,)), ('valid', valid, ())):
    if np.shape(array) != expected + tail:
      raise ValueError(f'{name} must have shape {expected + tail} for {fmt!r}, got {np.shape(array)}')
  rows = []
  for i in range(len(crops)):
    left = crop_panel(crops[i], intrinsics[i], pred_mm[i], true_mm[i], valid[i], fmt)
    right = view_panel(pred_mm[i], true_mm[i], valid[i], fmt, left.shape[0], azimuth_deg, elevation_deg)
    rows.append(np.concatenate([left, right], axis=1))
  return np.concatenate(rows, axis=0)


def write_pose3d_png(
  path: str,
  crops: np.ndarray,
  intrinsics: np.ndarray,
  pred_mm: np.ndarray,
  true_mm: np.ndarray,
  valid: np.ndarray,
  fmt,
  azimuth_deg: float = 45.0,
  elevation_deg: float = 15.0,
) -> str:
  """Draws `render(crops, intrinsics, pred_mm, true_mm, valid, fmt, ...)` (see there for the shapes; joints in mm in
  the crop camera frame) and writes it to `path` as PNG (creating the directory); returns the path."""
  image = render(crops, intrinsics, pred_mm, true_mm, valid, fmt, azimuth_deg, elevation_deg)
  return common.write_png(path, image)
