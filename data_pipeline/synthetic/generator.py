"""`generate_example`: one synthetic example (image + every requested format's keypoints + 3D truth).

Pipeline per example: seed a Generator from all arguments -> sample a biped/quadruped -> random global rotation
and pinhole camera, distance chosen so the subject fills 40-90% of the image -> background, distractors ->
bodies drawn far-to-near -> optional occluder -> colour/blur/noise degradations -> keypoints of each format by
projecting its landmark combinations, with visibility from the analytic occlusion test, the occluder mask and
the image border.
"""

from __future__ import annotations

import math
import zlib

import cv2
import numpy as np

from data_pipeline.synthetic import body as body_lib
from data_pipeline.synthetic import formats as formats_lib
from data_pipeline.synthetic import render
from posebh_jax.geometry.camera import project

LANDMARK_NAMES = body_lib.BIPED_LANDMARKS
QUADRUPED_LANDMARK_NAMES = body_lib.QUADRUPED_LANDMARKS
FORMATS_BY_CATEGORY = formats_lib.FORMATS_BY_CATEGORY
SPLITS = ('train', 'validation', 'test')
# Validation/test examples without a requested format: index % 3 == 2 is an animal, the rest humans.
_ANIMAL_EVERY = 3
# Quadruped rows of 'joints3d' beyond its own landmarks repeat this landmark (keeps projections finite).
_QUAD_PAD_LANDMARK = 'spine_mid'


def _seed(seed: int, split: str, index: int, annotate_format, image_size_hw, difficulty) -> np.random.Generator:
  words = [
    seed,
    SPLITS.index(split),
    index,
    zlib.crc32((annotate_format or '').encode()),
    image_size_hw[0],
    image_size_hw[1],
    int(round(difficulty * 1_000_000)),
  ]
  return np.random.default_rng(np.random.SeedSequence(words))


def _check_args(index, split, seed, annotate_format, image_size_hw, difficulty):
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f'index must be a non-negative integer, got {index!r}')
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
  if annotate_format is not None and annotate_format not in formats_lib.CATEGORY_OF_FORMAT:
    known = ', '.join(f for fs in FORMATS_BY_CATEGORY.values() for f in fs)
    raise ValueError(f'annotate_format {annotate_format!r} is not a synthetic format; use one of: {known}')
  if (
    len(image_size_hw) != 2
    or min(image_size_hw) < 32
    or max(image_size_hw) > 4096
    or any(int(s) != s for s in image_size_hw)
  ):
    raise ValueError(f'image_size_hw must be two integers in [32, 4096], got {image_size_hw!r}')
  if not 0.0 <= difficulty <= 1.0:
    raise ValueError(f'difficulty must be in [0, 1], got {difficulty!r}')


def _choose_formats(index: int, split: str, annotate_format):
  """(category, formats to annotate) for this example."""
  if annotate_format is not None:
    category = formats_lib.CATEGORY_OF_FORMAT[annotate_format]
    if split == 'train':
      return category, (annotate_format,)
    return category, FORMATS_BY_CATEGORY[category]
  category = 'animal' if index % _ANIMAL_EVERY == _ANIMAL_EVERY - 1 else 'human'
  names = FORMATS_BY_CATEGORY[category]
  if split == 'train':
    return category, (names[(index // _ANIMAL_EVERY) % len(names)],)
  return category, names


def _camera_pose(rng: np.random.Generator, category: str, level: float) -> np.ndarray:
  """Rotation body frame -> camera frame: any yaw, mostly upright, random camera elevation."""
  d = level
  # Yaw range grows with difficulty: near-frontal subjects (±76° at difficulty 0.1) make left/right easy to
  # tell apart; from difficulty 0.5 (level 0.25) on, any direction including seen from behind.
  yaw_range = math.pi * min(1.0, 0.4 + 2.4 * d)
  if category == 'animal':  # animals: centred on side views, half the spread
    yaw = rng.choice([-0.5, 0.5]) * math.pi + rng.uniform(-yaw_range, yaw_range) / 2
  else:
    yaw = rng.uniform(-yaw_range, yaw_range)
  if category == 'human' and rng.random() < 0.04 * d:  # lying / upside-down poses, only when hard
    pitch = math.radians(rng.choice([-1, 1]) * rng.uniform(60, 100))
  else:
    pitch = math.radians(np.clip(rng.normal(0, 4 + 10 * d), -40, 40))
  roll = math.radians(np.clip(rng.normal(0, 3 + 8 * d), -35, 35))
  elevation = math.radians(np.clip(rng.normal(8, 12), -25, 45))
  body_to_world = body_lib.rot_y(yaw) @ body_lib.rot_x(pitch) @ body_lib.rot_z(roll)
  world_to_cam = body_lib.rot_x(-elevation) @ np.diag([1.0, -1.0, -1.0])  # y up -> image up, face the camera
  return world_to_cam @ body_to_world


def _box(uv: np.ndarray, pad: float):
  return uv[:, 0].min() - pad, uv[:, 1].min() - pad, uv[:, 0].max() + pad, uv[:, 1].max() + pad


def _place(rng, landmarks_rot: np.ndarray, pad_m: float, h: int, w: int, level: float, truncate: bool):
  """Chooses focal length and translation so the subject fills a random 40-90% of the image (rarely beyond
  the border when `truncate`). Returns (intrinsics (3,3), translation (3,))."""
  f = min(h, w) * rng.uniform(1.0, 2.4)
  intr = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
  lo, hi = landmarks_rot.min(axis=0), landmarks_rot.max(axis=0)
  extent = float(np.max(hi - lo)) + 2 * pad_m
  centre = 0.5 * (lo + hi)
  fill = rng.uniform(0.4 - 0.1 * level, 0.9 + 0.05 * level)
  depth = 3.0 * extent * f / min(h, w)
  t = np.array([-centre[0], -centre[1], depth - centre[2]])
  for _ in range(2):  # rescale distance to reach the fill fraction (two passes absorb perspective effects)
    uv = project(landmarks_rot + t, intr)
    x0, y0, x1, y1 = _box(uv, f * pad_m / depth)
    current = max((y1 - y0) / h, (x1 - x0) / w)
    new_depth = max(depth * current / fill, 1.2 * extent)
    t[2] += new_depth - depth
    depth = new_depth
  targets = None
  for _ in range(2):  # shift sideways so the box lands at a random admissible place (second pass refines)
    uv = project(landmarks_rot + t, intr)
    x0, y0, x1, y1 = _box(uv, f * pad_m / depth)
    bw, bh = x1 - x0, y1 - y0
    if targets is None:
      targets = []
      for size, length in ((bw, w), (bh, h)):
        margin = 0.02 * length
        lo_c, hi_c = size / 2 + margin, length - size / 2 - margin
        targets.append(rng.uniform(lo_c, hi_c) if hi_c > lo_c else length / 2)
      if truncate:  # push a random side 10-26% (difficulty 0.5) / 10-45% (1.0) of the box beyond the border
        axis = int(rng.integers(2))
        out = rng.uniform(0.1, 0.2 + 0.25 * level)
        size, length = (bw, w) if axis == 0 else (bh, h)
        targets[axis] = size * (0.5 - out) if rng.random() < 0.5 else length - size * (0.5 - out)
    du, dv = targets[0] - 0.5 * (x0 + x1), targets[1] - 0.5 * (y0 + y1)
    t[0] += du * depth / f
    t[1] += dv * depth / f
  return intr, t


def generate_example(
  index: int,
  split: str,
  seed: int = 0,
  annotate_format: str | None = None,
  image_size_hw: tuple[int, int] = (256, 256),
  difficulty: float = 0.5,
) -> dict:
  """Renders one synthetic example; a pure function of all its arguments.

  Args:
    index: example number (>= 0) within the split.
    split: 'train' (annotated in one format), 'validation' or 'test' (annotated in every format of the
      category).
    seed: dataset seed (>= 0).
    annotate_format: a name of FORMATS_BY_CATEGORY; it fixes the category (human formats -> biped, animal
      -> quadruped). None: the category follows the index (every third example an animal) and train
      examples get the category's formats in turn.
    image_size_hw: (H, W) of the image.
    difficulty: 0..1; clutter, occlusion, truncation, pose range, blur, noise and colour jitter grow with
      difficulty^2, while the left/right shading cue fades.

  Returns a dict:
    image uint8 (H, W, 3) RGB; category 'human' | 'animal';
    bbox float32 (4,) x, y, w, h of the visible silhouette (integer pixel box, inside the image);
    keypoints {format: float32 (K, 3) x, y, visibility} in the registry's keypoint order; visibility 2 =
      visible, 1 = in the image but hidden (by the body or an occluder), 0 = outside the image (x = y = 0);
    area float32: visible silhouette pixels; head_size float32: 0.6 x head-box diagonal (px, PCKh scale);
    joints3d float32 (len(LANDMARK_NAMES), 3): camera-frame landmarks in mm (animals: QUADRUPED_LANDMARK_NAMES
      in the first rows, the rest repeat 'spine_mid'); intrinsics float32 (3, 3).
  """
  _check_args(index, split, seed, annotate_format, image_size_hw, difficulty)
  h, w = int(image_size_hw[0]), int(image_size_hw[1])
  difficulty = float(difficulty)
  rng = _seed(int(seed), split, int(index), annotate_format, (h, w), difficulty)
  category, names = _choose_formats(int(index), split, annotate_format)

  # Nuisances grow with difficulty^2: 0.5 stays clearly learnable (level 0.25), 1.0 is the full range.
  level = difficulty * difficulty
  body = (body_lib.sample_biped if category == 'human' else body_lib.sample_quadruped)(rng, level)
  rot = _camera_pose(rng, category, level)
  truncate = rng.random() < 0.02 + 0.08 * level + 0.2 * level * level  # 5% at difficulty 0.5, 30% at 1
  occlude = rng.random() < 0.03 + 0.1 * level + 0.22 * level * level  # 7% at difficulty 0.5, 35% at 1
  lo, hi = body.landmarks.min(axis=0), body.landmarks.max(axis=0)
  pad_m = 0.035 * float(np.max(hi - lo))  # limb radii beyond the landmarks
  intr, t = _place(rng, body.landmarks @ rot.T, pad_m, h, w, level, truncate)
  body_cam = body.transformed(rot, t)
  proj = render.ProjectedParts(body_cam.parts, intr)

  img = render.make_background(rng, h, w, level)
  a = rng.uniform(-160, -20) * math.pi / 180
  light = np.array([math.cos(a), math.sin(a)])
  contrast = rng.uniform(0.6, 1.3)
  uv_lm = project(body_cam.landmarks, intr)
  box = _box(uv_lm, intr[0, 0] * pad_m / float(np.median(body_cam.landmarks[:, 2])))
  subject_size = max(box[2] - box[0], box[3] - box[1])
  render.draw_distractors(img, rng, level, subject_size, light)
  mask = np.zeros((h, w), dtype=np.uint8)
  render.draw_body(img, mask, body_cam, proj, intr, light, contrast)
  render.texture_body(img, mask, rng, level)
  occ_mask = np.zeros((h, w), dtype=np.uint8)
  if occlude:
    target = uv_lm[int(rng.integers(len(uv_lm)))]
    render.draw_occluder(img, occ_mask, rng, target, box)
  img = render.degrade(img, rng, level)

  visible = cv2.bitwise_and(mask, cv2.bitwise_not(occ_mask))
  area = cv2.countNonZero(visible)
  if area > 0:
    bx, by, bw, bh = cv2.boundingRect(visible)
    bbox = np.array([bx, by, bw, bh], dtype=np.float32)
  else:  # fully hidden (practically never): box of the in-image landmarks
    x0, y0 = np.clip(uv_lm.min(axis=0), 0, [w - 1, h - 1])
    x1, y1 = np.clip(uv_lm.max(axis=0), 0, [w - 1, h - 1])
    bbox = np.array([x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)], dtype=np.float32)

  compiled = [formats_lib.compiled_format(n) for n in names]
  pts3 = np.concatenate([c.points3d(body_cam.landmarks) for c in compiled])
  anchors = np.concatenate([c.anchors for c in compiled])
  uv = project(pts3, intr)
  hidden = render.occluded_by_parts(pts3, uv, anchors, body_cam, proj)
  inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) & (pts3[:, 2] > 0)
  px = np.clip(np.round(uv).astype(np.int64), 0, [w - 1, h - 1])
  hidden |= occ_mask[px[:, 1], px[:, 0]] > 0
  vis = np.where(inside, np.where(hidden, 1.0, 2.0), 0.0)
  kps = np.concatenate([np.where(inside[:, None], uv, 0.0), vis[:, None]], axis=1).astype(np.float32)
  keypoints, start = {}, 0
  for c in compiled:
    keypoints[c.name] = kps[start : start + len(c.keypoint_names)]
    start += len(c.keypoint_names)

  head_box = proj.box(proj.index(body_cam.head_part))
  if category == 'animal':
    mb = proj.box(proj.index('muzzle'))
    head_box = (min(head_box[0], mb[0]), min(head_box[1], mb[1]), max(head_box[2], mb[2]), max(head_box[3], mb[3]))
  head_size = 0.6 * math.hypot(head_box[2] - head_box[0], head_box[3] - head_box[1])

  joints = body_cam.landmarks
  if category == 'animal':
    pad = np.repeat(
      joints[[QUADRUPED_LANDMARK_NAMES.index(_QUAD_PAD_LANDMARK)]], len(LANDMARK_NAMES) - len(joints), axis=0
    )
    joints = np.concatenate([joints, pad])
  return {
    'image': img,
    'category': category,
    'bbox': bbox,
    'keypoints': keypoints,
    'area': np.float32(area),
    'head_size': np.float32(head_size),
    'joints3d': (joints * 1000.0).astype(np.float32),
    'intrinsics': intr.astype(np.float32),
  }
