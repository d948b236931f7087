"""Rendering of a posed `Body` into an image with OpenCV: backgrounds, shaded primitives in depth order, faces,
distractors, occluders, image degradations, and the analytic occlusion test that sets keypoint visibility.
Functions taking `level` scale their clutter/degradation with it (0 = clean, 1 = hardest; the generator passes
difficulty^2).

Coordinates: camera frame x right, y down, z forward (metres); pixel (u, v) = (fx x / z + cx, fy y / z + cy),
pixel centres at integer coordinates (as OpenCV draws). Everything is drawn with `shift=4` sub-pixel precision.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from data_pipeline.synthetic import body as body_lib
from posebh_jax.geometry.camera import project

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
# (radius scale, offset toward the light in radii, brightness) per shading layer.
_LAYERS = {
  3: ((1.0, 0.0, 0.62), (0.8, 0.14, 0.86), (0.45, 0.34, 1.12)),
  2: ((1.0, 0.0, 0.7), (0.6, 0.28, 1.04)),
  1: ((1.0, 0.0, 0.9),),
}
_BANK_SIZE = 512


# ------------------------------------------------------------------------------------------------ texture banks
@functools.lru_cache(maxsize=1)
def _banks() -> dict:
  """Fixed texture/noise tiles (uint8 (S, S, 3), mean ~128), built once from a fixed seed so that examples
  stay deterministic; examples take random crops of them (much cheaper than fresh noise per image)."""
  rng = np.random.default_rng(20240601)
  s = _BANK_SIZE
  fine = np.clip(rng.normal(128, 42, (s, s, 3)), 0, 255).astype(np.uint8)
  blotch = cv2.GaussianBlur(rng.normal(0, 1, (s, s)).astype(np.float32), (0, 0), 4)
  blotch = np.clip(128 + 42 * blotch / blotch.std(), 0, 255).astype(np.uint8)
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
  stripes = []
  for angle, period in ((0.0, 9.0), (90.0, 13.0), (45.0, 7.0), (-30.0, 17.0)):
    a = math.radians(angle)
    phase = (xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period)
    stripes.append(np.clip(128 + 100 * np.sign(np.sin(phase)) * 0.6 + 40 * np.sin(phase), 0, 255).astype(np.uint8))
  return {
    'fine': fine,
    'blotch': np.repeat(blotch[:, :, None], 3, axis=2),
    'stripes': [np.repeat(x[:, :, None], 3, axis=2) for x in stripes],
  }


def _crop(bank: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A random (h, w, 3) window of a texture bank (tiled if the image is larger than the bank)."""
  s = bank.shape[0]
  if h > s or w > s:
    bank = np.tile(bank, (h // s + 1, w // s + 1, 1))
  y = int(rng.integers(0, bank.shape[0] - h + 1))
  x = int(rng.integers(0, bank.shape[1] - w + 1))
  return bank[y : y + h, x : x + w]


def _add_texture(img, tex, amount):
  """img + amount * (tex - 128), saturated, in place."""
  if amount > 0:
    cv2.addWeighted(img, 1.0, tex, float(amount), -128.0 * float(amount), dst=img)


# ------------------------------------------------------------------------------------------------ projection
class ProjectedParts:
  """The body's primitives projected to the image: 2D shapes for drawing plus what the occlusion test needs.

  Capsules/sticks: c0, c1 (2,), radii R0, R1 (px), depths z0, z1 and 3D radii r0, r1 (m).
  Ellipsoids: centre c0, 2D shape matrix `cov2` (x^T cov2^-1 x <= 1 inside), depth of the centre and the
  distance from the centre to the front surface along the view ray.
  """

  def __init__(self, parts: list, intrinsics: np.ndarray):
    f = float(intrinsics[0, 0])
    self.names = [p.name for p in parts]
    self.parts = parts
    n = len(parts)
    self.kind = np.array([p.kind for p in parts])
    self.c0 = np.zeros((n, 2))
    self.c1 = np.zeros((n, 2))
    self.R0 = np.zeros(n)
    self.R1 = np.zeros(n)
    self.z0 = np.zeros(n)
    self.z1 = np.zeros(n)
    self.r0 = np.zeros(n)
    self.r1 = np.zeros(n)
    self.cov2 = np.zeros((n, 2, 2))
    self.front = np.zeros(n)
    self.sort_key = np.zeros(n)
    pts = np.stack([p.p0 for p in parts] + [p.p1 if p.p1 is not None else p.p0 for p in parts])
    uv = project(pts, intrinsics)
    for i, p in enumerate(parts):
      self.c0[i] = uv[i]
      self.z0[i] = p.p0[2]
      if p.kind == body_lib.ELLIPSOID:
        m = p.rot * p.axes  # columns scaled by the semi-axes
        cov3 = m @ m.T
        self.cov2[i] = cov3[:2, :2] * (f / p.p0[2]) ** 2
        a_inv = (p.rot / p.axes) @ (p.rot / p.axes).T
        self.front[i] = 1.0 / math.sqrt(a_inv[2, 2])
        self.z1[i] = p.p0[2]
        self.sort_key[i] = p.p0[2] + p.depth_bias
      else:
        self.c1[i] = uv[n + i]
        self.z1[i] = p.p1[2]
        self.R0[i] = f * p.r0 / p.p0[2]
        self.R1[i] = f * p.r1 / p.p1[2]
        self.r0[i] = p.r0
        self.r1[i] = p.r1
        self.sort_key[i] = 0.5 * (p.p0[2] + p.p1[2]) + p.depth_bias

  def index(self, name: str) -> int:
    """Index of the part called `name`, -1 if the body has none."""
    try:
      return self.names.index(name)
    except ValueError:
      return -1

  def ellipse_params(self, i: int, scale: float = 1.0):
    """(centre, (semi-major, semi-minor), angle_deg) of ellipsoid i's silhouette scaled by `scale`."""
    a, b, c = self.cov2[i, 0, 0], self.cov2[i, 0, 1], self.cov2[i, 1, 1]
    mean, dif = 0.5 * (a + c), math.sqrt(0.25 * (a - c) ** 2 + b * b)
    l1, l2 = mean + dif, max(mean - dif, 1e-9)
    angle = 0.5 * math.degrees(math.atan2(2 * b, a - c))
    return self.c0[i], (math.sqrt(l1) * scale, math.sqrt(l2) * scale), angle

  def box(self, i: int) -> tuple:
    """Axis-aligned 2D box (x0, y0, x1, y1) of part i's silhouette."""
    if self.kind[i] == body_lib.ELLIPSOID:
      hx, hy = math.sqrt(self.cov2[i, 0, 0]), math.sqrt(self.cov2[i, 1, 1])
      cx, cy = self.c0[i]
      return cx - hx, cy - hy, cx + hx, cy + hy
    lo = np.minimum(self.c0[i] - self.R0[i], self.c1[i] - self.R1[i])
    hi = np.maximum(self.c0[i] + self.R0[i], self.c1[i] + self.R1[i])
    return lo[0], lo[1], hi[0], hi[1]


# ------------------------------------------------------------------------------------------------ primitives
def _fx(v) -> int:
  return int(round(v * _ONE))


def _pt(p) -> tuple:
  return (int(round(p[0] * _ONE)), int(round(p[1] * _ONE)))


def _colour(c) -> tuple:
  return (float(c[0]), float(c[1]), float(c[2]))


def draw_capsule(img, c0, c1, r0, r1, colour, aa=_AA):
  """Fills the 2D hull of two discs (centres c0, c1 px; radii r0, r1 px) on `img`."""
  col = _colour(colour) if img.ndim == 3 else colour
  d = np.asarray(c1, dtype=np.float64) - c0
  length = math.hypot(d[0], d[1])
  cv2.circle(img, _pt(c0), max(_fx(r0), 1), col, -1, aa, _SHIFT)
  cv2.circle(img, _pt(c1), max(_fx(r1), 1), col, -1, aa, _SHIFT)
  if length > 1e-3:
    n = np.array([-d[1], d[0]]) / length
    quad = np.array([c0 + n * r0, c1 + n * r1, c1 - n * r1, c0 - n * r0]) * _ONE
    cv2.fillConvexPoly(img, np.round(quad).astype(np.int32), col, aa, _SHIFT)


def draw_ellipse(img, centre, axes, angle, colour, aa=_AA):
  """Fills an ellipse (centre px, semi-axes px, angle in degrees)."""
  col = _colour(colour) if img.ndim == 3 else colour
  cv2.ellipse(img, _pt(centre), (max(_fx(axes[0]), 1), max(_fx(axes[1]), 1)), float(angle), 0, 360, col, -1, aa, _SHIFT)


def draw_shaded_capsule(img, c0, c1, r0, r1, colour, layers, light, contrast):
  """A capsule with `layers` concentric shading layers shifted toward the 2D light direction."""
  colour = np.asarray(colour, dtype=np.float64)
  for scale, off, shade in _LAYERS[layers]:
    o = light * off * 0.5 * (r0 + r1)
    draw_capsule(
      img, c0 + o, c1 + o, r0 * scale, r1 * scale, np.clip(colour * (1.0 + contrast * (shade - 1.0)), 0, 255)
    )


def draw_shaded_ellipse(img, centre, axes, angle, colour, layers, light, contrast):
  """An ellipse with concentric shading layers shifted toward the 2D light direction."""
  colour = np.asarray(colour, dtype=np.float64)
  for scale, off, shade in _LAYERS[layers]:
    o = light * off * 0.5 * (axes[0] + axes[1])
    draw_ellipse(
      img,
      centre + o,
      (axes[0] * scale, axes[1] * scale),
      angle,
      np.clip(colour * (1.0 + contrast * (shade - 1.0)), 0, 255),
    )


def _facing(normal_cam: np.ndarray, point_cam: np.ndarray) -> np.ndarray:
  """Cosine between outward normals and the view ray; negative = the surface faces the camera."""
  n = normal_cam / (np.linalg.norm(normal_cam, axis=-1, keepdims=True) + 1e-12)
  v = point_cam / (np.linalg.norm(point_cam, axis=-1, keepdims=True) + 1e-12)
  return np.sum(n * v, axis=-1)


def _draw_human_face(img, head, intrinsics, style):
  """Eyes, brows, nose and mouth of the 68-point template on the head ellipsoid (only where facing)."""
  tmpl = body_lib.FACE68_TEMPLATE
  pts3 = head.p0 + (tmpl * head.axes) @ head.rot.T
  normals = (tmpl / head.axes) @ head.rot.T
  cosv = _facing(normals, pts3)
  uv = project(pts3, intrinsics)
  f = intrinsics[0, 0]
  head_px = f * head.axes[1] / head.p0[2]
  skin = np.asarray(style['skin'])
  if head_px < 5:
    return
  thin = max(int(round(head_px * 0.035)), 1)  # line thickness is in whole pixels (not shifted)
  if head_px < 11:
    for idx in (range(36, 42), range(42, 48)):
      idx = list(idx)
      if cosv[idx].mean() < -0.15:
        c = uv[idx].mean(axis=0)
        cv2.circle(img, _pt(c), max(_fx(head_px * 0.09), _ONE // 2), (25.0, 20.0, 20.0), -1, _AA, _SHIFT)
    if cosv[48:60].mean() < -0.15:
      cv2.polylines(
        img,
        [np.round(uv[[48, 51, 54, 57]] * _ONE).astype(np.int32)],
        True,
        _colour(style['lip'] * 0.8),
        thin,
        _AA,
        _SHIFT,
      )
    return
  # Brows.
  for idx in (slice(17, 22), slice(22, 27)):
    if cosv[idx].mean() < -0.1:
      cv2.polylines(
        img,
        [np.round(uv[idx] * _ONE).astype(np.int32)],
        False,
        _colour(style['brow']),
        max(int(round(head_px * 0.06)), 1),
        _AA,
        _SHIFT,
      )
  # Eyes: white, iris, pupil.
  for idx, centre_i in ((slice(36, 42), (37, 38, 40, 41)), (slice(42, 48), (43, 44, 46, 47))):
    if cosv[idx].mean() < -0.1:
      poly = np.round(uv[idx] * _ONE).astype(np.int32)
      cv2.fillPoly(img, [poly], _colour(style['eye_white']), _AA, _SHIFT)
      c = uv[list(centre_i)].mean(axis=0)
      cv2.circle(img, _pt(c), max(_fx(head_px * 0.075), _ONE // 2), _colour(style['iris']), -1, _AA, _SHIFT)
      cv2.circle(img, _pt(c), max(_fx(head_px * 0.035), _ONE // 4), (10.0, 10.0, 10.0), -1, _AA, _SHIFT)
  # Nose line and nostrils.
  if cosv[31:36].mean() < -0.1:
    cv2.polylines(img, [np.round(uv[31:36] * _ONE).astype(np.int32)], False, _colour(skin * 0.6), thin, _AA, _SHIFT)
  if cosv[27:31].mean() < 0.3:
    cv2.polylines(img, [np.round(uv[27:31] * _ONE).astype(np.int32)], False, _colour(skin * 0.8), thin, _AA, _SHIFT)
  # Mouth.
  if cosv[48:60].mean() < -0.1:
    cv2.fillPoly(img, [np.round(uv[48:60] * _ONE).astype(np.int32)], _colour(style['lip']), _AA, _SHIFT)
    cv2.polylines(
      img, [np.round(uv[60:65] * _ONE).astype(np.int32)], False, _colour(style['lip'] * 0.45), thin, _AA, _SHIFT
    )


def _draw_animal_eyes(img, head, body_cam, intrinsics):
  f = intrinsics[0, 0]
  for side in ('left', 'right'):
    p = body_cam.landmarks[body_cam.index(f'{side}_eye')]
    n = head.rot @ (np.linalg.solve(np.diag(head.axes**2), head.rot.T @ (p - head.p0)))
    if _facing(n[None], p[None])[0] < -0.05:
      uv = project(p[None], intrinsics)[0]
      r = f * 0.16 * head.axes[0] / p[2]
      cv2.circle(img, _pt(uv), max(_fx(r), _ONE // 2), (15.0, 12.0, 10.0), -1, _AA, _SHIFT)
      if r > 2.5:
        cv2.circle(img, _pt(uv - 0.3 * r), max(_fx(0.3 * r), _ONE // 4), (220.0, 220.0, 220.0), -1, _AA, _SHIFT)


def draw_body(
  img: np.ndarray,
  mask: np.ndarray,
  body_cam,
  proj: ProjectedParts,
  intrinsics: np.ndarray,
  light: np.ndarray,
  contrast: float,
) -> None:
  """Draws all parts far-to-near (painter's algorithm) on `img` (H, W, 3) and the silhouette on `mask`."""
  order = np.argsort(-proj.sort_key, kind='stable')
  for i in order:
    part = proj.parts[i]
    if proj.kind[i] == body_lib.ELLIPSOID:
      centre, axes, angle = proj.ellipse_params(i)
      draw_shaded_ellipse(img, centre, axes, angle, part.colour, part.layers, light, contrast)
      draw_ellipse(mask, centre, axes, angle, 255, cv2.LINE_8)
      if part.name == body_cam.head_part:
        if body_cam.category == 'human':
          _draw_human_face(img, part, intrinsics, body_cam.style)
        else:
          _draw_animal_eyes(img, part, body_cam, intrinsics)
    elif proj.kind[i] == body_lib.CAPSULE:
      draw_shaded_capsule(
        img, proj.c0[i], proj.c1[i], proj.R0[i], proj.R1[i], part.colour, part.layers, light, contrast
      )
      draw_capsule(mask, proj.c0[i], proj.c1[i], proj.R0[i], proj.R1[i], 255, cv2.LINE_8)
      if part.name == 'muzzle':  # dark nose pad across the muzzle's tip
        along = proj.c1[i] - proj.c0[i]
        draw_ellipse(
          img,
          proj.c1[i],
          (proj.R1[i] * 0.75, proj.R1[i] * 0.55),
          math.degrees(math.atan2(along[1], along[0])) + 90,
          body_cam.style['nose_tip'],
        )
    else:  # finger sticks: one anti-aliased line
      thick = max(int(round(proj.R0[i] + proj.R1[i])), 1)
      col = np.asarray(part.colour) * (1.0 - 0.12 * contrast)
      cv2.line(img, _pt(proj.c0[i]), _pt(proj.c1[i]), _colour(col), thick, _AA, _SHIFT)
      cv2.line(mask, _pt(proj.c0[i]), _pt(proj.c1[i]), 255, thick, cv2.LINE_8, _SHIFT)


# ------------------------------------------------------------------------------------------------ visibility
def occluded_by_parts(
  points: np.ndarray, uv: np.ndarray, anchors: np.ndarray, body_cam, proj: ProjectedParts, margin: float = 0.01
) -> np.ndarray:
  """Analytic self-occlusion test (a z-buffer evaluated only at the keypoints).

  points: (N, 3) camera-frame keypoints (m); uv: (N, 2) their pixels; anchors: (N,) landmark row of each
  keypoint (its own parts and limb radius come from that landmark). A keypoint is hidden when a part that is
  not its own covers its pixel with a front surface nearer than the keypoint's own surface (depth minus the
  limb radius) by more than `margin`, or when it sits on the far side of the head (face points).
  Returns bool (N,).
  """
  n = len(points)
  n_parts = len(proj.names)
  own = np.zeros((len(body_cam.landmark_names), n_parts), dtype=bool)
  for li, name in enumerate(body_cam.landmark_names):
    for part_name in body_cam.own_parts.get(name, ()):
      j = proj.index(part_name)
      if j >= 0:
        own[li, j] = True
  own = own[anchors]
  surface = points[:, 2] - body_cam.landmark_radius[anchors] - margin
  hidden = np.zeros(n, dtype=bool)

  cap = np.nonzero(proj.kind != body_lib.ELLIPSOID)[0]
  if len(cap):
    c0, c1 = proj.c0[cap], proj.c1[cap]
    seg = c1 - c0
    len2 = np.sum(seg * seg, axis=1) + 1e-9
    rel = uv[:, None, :] - c0[None]
    t = np.clip(np.sum(rel * seg[None], axis=2) / len2, 0.0, 1.0)
    d = np.linalg.norm(rel - t[..., None] * seg[None], axis=2)
    rad = proj.R0[cap] + t * (proj.R1[cap] - proj.R0[cap])
    inside = d < rad
    depth = proj.z0[cap] + t * (proj.z1[cap] - proj.z0[cap])
    r3 = proj.r0[cap] + t * (proj.r1[cap] - proj.r0[cap])
    front = depth - r3 * np.sqrt(np.clip(1.0 - (d / np.maximum(rad, 1e-9)) ** 2, 0.0, 1.0))
    hidden |= np.any(inside & ~own[:, cap] & (front < surface[:, None]), axis=1)
  ell = np.nonzero(proj.kind == body_lib.ELLIPSOID)[0]
  if len(ell):
    inv = np.linalg.inv(proj.cov2[ell])
    rel = uv[:, None, :] - proj.c0[ell][None]
    m = np.einsum('npi,pij,npj->np', rel, inv, rel)
    front = proj.z0[ell] - proj.front[ell] * np.sqrt(np.clip(1.0 - m, 0.0, 1.0))
    hidden |= np.any((m < 1.0) & ~own[:, ell] & (front < surface[:, None]), axis=1)

  # Face / head-surface points: hidden when their surface normal points away from the camera.
  head_i = proj.index(body_cam.head_part)
  head = proj.parts[head_i]
  tolerance = _HEAD_SURFACE[body_cam.category]
  names = body_cam.landmark_names
  tol = np.array([tolerance.get(names[a], np.nan) for a in anchors])
  on_head = ~np.isnan(tol)
  if on_head.any():
    local = (points[on_head] - head.p0) @ head.rot / head.axes**2
    normals = local @ head.rot.T
    hidden[on_head] |= _facing(normals, points[on_head]) > tol[on_head]
  return hidden


# Landmarks on the head surface -> cosine threshold of the facing test (ears sit on the side of the head).
_HEAD_SURFACE = {
  'human': {'nose': 0.05, 'left_eye': 0.0, 'right_eye': 0.0, 'left_ear': 0.35, 'right_ear': 0.35, 'chin': 0.15},
  'animal': {'left_eye': 0.05, 'right_eye': 0.05, 'left_ear': 0.4, 'right_ear': 0.4},
}


# ------------------------------------------------------------------------------------------------ scene
def make_background(rng: np.random.Generator, h: int, w: int, level: float) -> np.ndarray:
  """Random procedural background (uint8 (h, w, 3)): smooth colour field, optional stripes, noise, shapes."""
  banks = _banks()
  g = int(rng.integers(2, 7))
  base = body_lib.random_colour(rng, sat=(0.0, 0.6), val=(0.2, 0.9))
  spread = rng.uniform(10, 30 + 50 * level)
  chroma = rng.uniform(0.15, 0.3 + 0.5 * level)
  low = base + rng.normal(0, spread, (g, g, 1)) + rng.normal(0, spread * chroma, (g, g, 3))
  low = np.clip(low, 0, 255).astype(np.uint8)
  img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)
  if rng.random() < 0.3:
    stripes = banks['stripes'][int(rng.integers(len(banks['stripes'])))]
    _add_texture(img, _crop(stripes, rng, h, w), rng.uniform(0.05, 0.15 + 0.25 * level))
  _add_texture(img, _crop(banks['blotch'], rng, h, w), rng.uniform(0.0, 0.15 + 0.3 * level))
  n_shapes = int(rng.poisson(1.0 + 6.0 * level))
  for _ in range(n_shapes):
    col = _colour(body_lib.random_colour(rng, sat=(0.0, 0.8), val=(0.1, 0.95)))
    kind = rng.integers(4)
    cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
    size = rng.uniform(0.05, 0.4) * max(h, w)
    fill = -1 if rng.random() < 0.7 else int(rng.integers(1, 4))
    if kind == 0:
      x0, y0 = cx - size * rng.uniform(0.2, 1), cy - size * rng.uniform(0.2, 1)
      cv2.rectangle(img, _pt((x0, y0)), _pt((cx, cy)), col, fill, _AA, _SHIFT)
    elif kind == 1:
      cv2.ellipse(
        img,
        _pt((cx, cy)),
        (_fx(size * rng.uniform(0.2, 0.6)), _fx(size * rng.uniform(0.1, 0.6))),
        float(rng.uniform(0, 180)),
        0,
        360,
        col,
        fill,
        _AA,
        _SHIFT,
      )
    elif kind == 2:
      pts = np.array([cx, cy]) + rng.normal(0, size * 0.4, (int(rng.integers(3, 6)), 2))
      hull = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
      cv2.fillConvexPoly(img, hull, col, _AA, _SHIFT)
    else:
      a = rng.uniform(0, math.pi)
      d = np.array([math.cos(a), math.sin(a)]) * size
      cv2.line(img, _pt((cx - d[0], cy - d[1])), _pt((cx + d[0], cy + d[1])), col, int(rng.integers(1, 6)), _AA, _SHIFT)
  if rng.random() < 0.6 - 0.3 * level:  # defocused background: separates the subject
    cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 2.5), dst=img)
  _add_texture(img, _crop(banks['fine'], rng, h, w), rng.uniform(0.0, 0.06 + 0.1 * level))
  return img


def draw_distractors(
  img: np.ndarray, rng: np.random.Generator, level: float, subject_size: float, light: np.ndarray
) -> None:
  """Limb-like shaded capsules and blobs behind the subject (more with level)."""
  h, w = img.shape[:2]
  for _ in range(int(rng.poisson(0.2 + 3.0 * level))):
    col = body_lib.random_colour(rng, sat=(0.1, 0.9), val=(0.2, 0.95))
    c0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    if rng.random() < 0.7:
      a = rng.uniform(0, 2 * math.pi)
      length = subject_size * rng.uniform(0.1, 0.35)
      c1 = c0 + length * np.array([math.cos(a), math.sin(a)])
      r = subject_size * rng.uniform(0.02, 0.05)
      draw_shaded_capsule(img, c0, c1, r, r * rng.uniform(0.6, 1.1), col, 3, light, 1.0)
    else:
      ax = subject_size * rng.uniform(0.03, 0.12)
      draw_shaded_ellipse(img, c0, (ax, ax * rng.uniform(0.5, 1.0)), rng.uniform(0, 180), col, 3, light, 1.0)


def draw_occluder(
  img: np.ndarray, occ_mask: np.ndarray, rng: np.random.Generator, target: np.ndarray, subject_box: tuple
) -> None:
  """Draws an opaque textured object over `target` (px), sized relative to the subject box (x0, y0, x1, y1),
  on `img` and marks it in `occ_mask`."""
  h, w = img.shape[:2]
  bw, bh = subject_box[2] - subject_box[0], subject_box[3] - subject_box[1]
  size = rng.uniform(0.15, 0.35) * max(bw, bh)
  col = body_lib.random_colour(rng, sat=(0.0, 0.8), val=(0.15, 0.9))
  centre = target + rng.normal(0, 0.25 * size, 2)
  kind = rng.integers(3)
  layer = np.zeros((h, w), dtype=np.uint8)
  if kind == 0:  # a (rotated) box, e.g. a table or sign
    a = rng.uniform(0, math.pi)
    half = np.array([size * rng.uniform(0.6, 1.6), size * rng.uniform(0.3, 0.8)])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    corners = centre + (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half) @ rot.T
    cv2.fillConvexPoly(layer, np.round(corners * _ONE).astype(np.int32), 255, cv2.LINE_8, _SHIFT)
  elif kind == 1:
    draw_ellipse(
      layer, centre, (size * rng.uniform(0.5, 1.2), size * rng.uniform(0.4, 0.9)), rng.uniform(0, 180), 255, cv2.LINE_8
    )
  else:
    pts = centre + rng.normal(0, size * 0.7, (6, 2))
    cv2.fillConvexPoly(layer, cv2.convexHull(np.round(pts * _ONE).astype(np.int32)), 255, cv2.LINE_8, _SHIFT)
  fill = np.empty_like(img)
  fill[:] = np.asarray(col, dtype=np.uint8)
  _add_texture(fill, _crop(_banks()['blotch'], rng, h, w), rng.uniform(0.1, 0.4))
  cv2.copyTo(fill, layer, img)
  cv2.bitwise_or(occ_mask, layer, dst=occ_mask)


def texture_body(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, level: float) -> None:
  """Cloth/fur texture inside the silhouette (noise, blotches or stripes, in place)."""
  h, w = img.shape[:2]
  banks = _banks()
  kind = rng.integers(3)
  if kind == 0:
    tex = _crop(banks['fine'], rng, h, w)
    amount = rng.uniform(0.02, 0.08)
  elif kind == 1:
    tex = _crop(banks['blotch'], rng, h, w)
    amount = rng.uniform(0.05, 0.25)
  else:
    tex = _crop(banks['stripes'][int(rng.integers(len(banks['stripes'])))], rng, h, w)
    amount = rng.uniform(0.03, 0.12)
  textured = cv2.addWeighted(img, 1.0, tex, float(amount), -128.0 * float(amount))
  cv2.copyTo(textured, mask, img)


def degrade(img: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
  """Colour jitter (gain, contrast, brightness, saturation), blur and sensor noise, all growing with
  level. Returns the new uint8 image."""
  d = level
  gains = 1.0 + rng.normal(0, 0.02 + 0.06 * d, 3)
  contrast = rng.uniform(1.0 - 0.35 * d, 1.0 + 0.2 * d)
  brightness = rng.normal(0, 4 + 14 * d)
  sat = rng.uniform(1.0 - 0.5 * d, 1.0 + 0.2 * d)
  lum = np.array([0.299, 0.587, 0.114])
  m = sat * np.eye(3) + (1.0 - sat) * np.tile(lum, (3, 1))
  m = contrast * gains[:, None] * m
  offset = brightness + 128.0 * (1.0 - contrast)
  out = cv2.transform(img, np.hstack([m, np.full((3, 1), offset)]).astype(np.float32))
  if rng.random() < 0.25 + 0.45 * d:
    cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.5 + 1.3 * d), dst=out)
  _add_texture(out, _crop(_banks()['fine'], rng, *out.shape[:2]), rng.uniform(0.0, 0.03 + 0.2 * d))
  return out
