"""The ACAE's latent points among the joints of a few skeleton formats on one pose (the WACV'23 paper's figure).

Two orthographic views of the root-centred pose side by side, on one metric scale: the front view (camera x to the
right, y down: what the camera sees, without perspective) and the side view (depth z to the right, y down). The
joints of each format are dots in the format's colour (`common.colour` by position) with its bones as thin lines;
the latents are markers (left latents white diamonds, right latents yellow diamonds, centre latents white squares;
unconstrained latents, which have no side, white squares); a few latents (`LINKED_LATENTS`, those that mix the shown joints most
evenly; ringed in magenta) have magenta lines to the shown joints they mix most (their `LINKS_PER_LATENT`
largest encoder weights), the thicker the larger the weight. Drawing uses OpenCV only.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from posebh_jax.viz import common

MAX_FORMATS = 3
LINKED_LATENTS = 6
LINKS_PER_LATENT = 3
PANEL_SIZE = 420
MARGIN = 24
BACKGROUND_RGB = (32, 32, 32)
LINK_RGB = (255, 0, 255)
LATENT_RGB = {'left': (255, 255, 255), 'right': (255, 220, 0), 'center': (255, 255, 255)}
_VIEWS = (('front', 0), ('side', 2))  # (title, the coordinate drawn to the right); y is drawn downwards


class JointGroup(NamedTuple):
  """One format's joints in the pose: its name, its joints' indices (K,) into the pose's J, and its bones as
  (i, j) pairs of positions in `indices`."""

  name: str
  indices: np.ndarray
  links: Sequence[tuple[int, int]]


def linked_latents(
  weights: np.ndarray, shown: np.ndarray, count: int = LINKED_LATENTS, per_latent: int = LINKS_PER_LATENT
) -> list[tuple[int, list[tuple[int, float]]]]:
  """[(latent, [(joint, weight), ...]), ...]: the `count` latents of the encoder `weights` (J, L) that mix the
  `shown` joints (int indices) most evenly (the smallest largest weight among them: a latent that is one joint
  would show no lines), each with its `per_latent` largest weights among the shown joints."""
  columns = weights[shown]
  chosen = np.argsort(columns.max(axis=0))[: min(count, weights.shape[1])]
  out = []
  for latent in sorted(int(i) for i in chosen):
    top = np.argsort(-columns[:, latent])[:per_latent]
    out.append((latent, [(int(shown[i]), float(columns[i, latent])) for i in top]))
  return out


def _diamond(canvas, centre, radius, fill, outline=(0, 0, 0)) -> None:
  x, y = centre
  points = np.asarray([[x, y - radius], [x + radius, y], [x, y + radius], [x - radius, y]], np.int32)
  cv2.fillPoly(canvas, [points], fill, cv2.LINE_AA)
  cv2.polylines(canvas, [points], True, outline, 1, cv2.LINE_AA)


def _square(canvas, centre, radius, fill, outline=(0, 0, 0)) -> None:
  x, y = centre
  cv2.rectangle(canvas, (x - radius, y - radius), (x + radius, y + radius), fill, -1)
  cv2.rectangle(canvas, (x - radius, y - radius), (x + radius, y + radius), outline, 1)


def _latent_marker(canvas, centre, side: str) -> None:
  if side == 'center':
    _square(canvas, centre, 3, LATENT_RGB['center'])
  else:
    _diamond(canvas, centre, 5, LATENT_RGB[side])


def render(
  pose_mm: np.ndarray,
  latents_mm: np.ndarray,
  encoder_weights: np.ndarray,
  groups: Sequence[JointGroup],
  latent_sides: Sequence[str] | None = None,
  title: str = '',
  panel_size: int = PANEL_SIZE,
) -> np.ndarray:
  """The picture as RGB uint8 (module docstring).

  Args:
    pose_mm: (J, 3) the pose (camera frame, mm; only its shape matters: it is centred on the shown joints' mean).
    latents_mm: (L, 3) its latents (`acae.model.encode`), same frame.
    encoder_weights: (J, L) the normalised encoder weights.
    groups: the formats to show (at most `MAX_FORMATS` are drawn).
    latent_sides: (L,) 'left' | 'right' | 'center' per latent (default all 'center').
    title: a line above the views.
  """
  groups = tuple(groups)[:MAX_FORMATS]
  pose = np.asarray(pose_mm, np.float64)
  latents = np.asarray(latents_mm, np.float64)
  sides = tuple(latent_sides) if latent_sides is not None else ('center',) * len(latents)
  shown = np.concatenate([np.asarray(g.indices, int) for g in groups]) if groups else np.zeros(0, int)
  centre = pose[shown].mean(0) if len(shown) else np.zeros(3)
  pose, latents = pose - centre, latents - centre
  points = np.concatenate([pose[shown], latents])
  finite = points[np.all(np.isfinite(points), axis=1)]
  extent = float(np.max(np.abs(finite))) if len(finite) else 1.0
  scale = (panel_size / 2 - MARGIN) / max(extent, 1.0)
  links = linked_latents(np.asarray(encoder_weights, np.float64), shown) if len(shown) else []

  def pixel(point, axis):
    u = panel_size / 2 + scale * point[axis]
    v = panel_size / 2 + scale * point[1]
    return int(round(np.clip(u, -1e4, 1e4))), int(round(np.clip(v, -1e4, 1e4)))

  panels = []
  for view, axis in _VIEWS:
    panel = np.full((panel_size, panel_size, 3), BACKGROUND_RGB, np.uint8)
    for index, group in enumerate(groups):
      colour = common.colour(index)
      indices = np.asarray(group.indices, int)
      for a, b in group.links:
        cv2.line(panel, pixel(pose[indices[a]], axis), pixel(pose[indices[b]], axis), colour, 1, cv2.LINE_AA)
    for index, group in enumerate(groups):
      for joint in np.asarray(group.indices, int):
        cv2.circle(panel, pixel(pose[joint], axis), 3, common.colour(index), -1, cv2.LINE_AA)
    for latent in range(len(latents)):
      _latent_marker(panel, pixel(latents[latent], axis), sides[latent])
    # The linked latents and their lines on top, each latent ringed.
    for latent, targets in links:
      for joint, weight in targets:
        thickness = int(np.clip(round(1 + 3 * weight), 1, 4))
        cv2.line(panel, pixel(latents[latent], axis), pixel(pose[joint], axis), LINK_RGB, thickness, cv2.LINE_AA)
      cv2.circle(panel, pixel(latents[latent], axis), 9, LINK_RGB, 2, cv2.LINE_AA)
      _latent_marker(panel, pixel(latents[latent], axis), sides[latent])
    common.label(panel, f'{view} view', (4, 4))
    panels.append(panel)
  body = np.concatenate(panels, axis=1)
  header = np.full((28, body.shape[1], 3), 0, np.uint8)
  common.label(header, title, (4, 2), 0.5)
  legend = np.full((30, body.shape[1], 3), 0, np.uint8)
  x = 6
  for index, group in enumerate(groups):
    cv2.circle(legend, (x + 5, 15), 5, common.colour(index), -1, cv2.LINE_AA)
    (width, _), _ = cv2.getTextSize(group.name, common.FONT, 0.45, 1)
    cv2.putText(legend, group.name, (x + 14, 20), common.FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    x += width + 30
  for side in ('left', 'right', 'center'):
    if side in sides:
      _latent_marker(legend, (x + 6, 15), side)
      text = f'{side} latents' if side != 'center' or len(set(sides)) > 1 else 'latents'
      (width, _), _ = cv2.getTextSize(text, common.FONT, 0.45, 1)
      cv2.putText(legend, text, (x + 16, 20), common.FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
      x += width + 32
  return np.concatenate([header, body, legend], axis=0)


def write_latents_png(
  path: str,
  pose_mm: np.ndarray,
  latents_mm: np.ndarray,
  encoder_weights: np.ndarray,
  groups: Sequence[JointGroup],
  latent_sides: Sequence[str] | None = None,
  title: str = '',
) -> str:
  """Writes `render`'s picture to `path` (PNG); returns the path."""
  return common.write_png(path, render(pose_mm, latents_mm, encoder_weights, groups, latent_sides, title))
