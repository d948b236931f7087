"""Contact sheet of synthetic examples with every format's keypoints and links drawn on top.

  python -m data_pipeline.synthetic.preview --out=preview.png [--n=8] [--seed=0] [--difficulty=0.5]

Row 1: one validation person, one panel per human format (plus the plain image); row 2: one validation animal
(AP-10K, APT-36K, both overlaid); then --n train examples in their single format. Filled dots are visible
keypoints, rings hidden ones (visibility 1); keypoints outside the image are not drawn.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

from data_pipeline.synthetic import generator
from data_pipeline.synthetic.formats import FORMATS_BY_CATEGORY, compiled_format
from posebh_jax.skeletons import get_format

_PANEL = 300


def _crop_around(image, bbox, keypoint_sets, size=_PANEL):
  """Crops a square around bbox (1.4x, clipped to the image) and scales it to `size`; returns the panel and
  the transformed keypoint sets."""
  h, w = image.shape[:2]
  x, y, bw, bh = bbox
  side = max(bw, bh) * 1.4 + 8
  cx, cy = x + bw / 2, y + bh / 2
  x0, y0 = cx - side / 2, cy - side / 2
  scale = size / side
  m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float32)
  panel = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(40, 40, 40))
  out = []
  for kps in keypoint_sets:
    k = kps.copy()
    k[:, :2] = (kps[:, :2] - [x0, y0]) * scale
    out.append(k)
  return panel, out


def _draw_format(panel, kps, format_name, colour_override=None):
  fmt = get_format(format_name)
  radius = 3 if fmt.num_keypoints < 40 else 2
  for (i, j), col in zip(fmt.links, fmt.link_colors):
    if kps[i, 2] > 0 and kps[j, 2] > 0:
      c = colour_override or col
      cv2.line(
        panel, tuple(np.round(kps[i, :2]).astype(int)), tuple(np.round(kps[j, :2]).astype(int)), c, 1, cv2.LINE_AA
      )
  for k, col in zip(kps, fmt.keypoint_colors):
    if k[2] > 0:
      c = colour_override or col
      cv2.circle(panel, tuple(np.round(k[:2]).astype(int)), radius, c, -1 if k[2] == 2 else 1, cv2.LINE_AA)


def _label(panel, text):
  cv2.rectangle(panel, (0, 0), (panel.shape[1], 18), (0, 0, 0), -1)
  cv2.putText(panel, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
  return panel


def _row(panels, width):
  row = np.full((_PANEL, width, 3), 255, dtype=np.uint8)
  for i, p in enumerate(panels):
    row[:, i * _PANEL : (i + 1) * _PANEL] = p
  return row


def _first_complete(category, seed, image_size_hw, difficulty):
  """The first validation example of `category` with its whole body inside the image (for a clear view)."""
  fmt = FORMATS_BY_CATEGORY[category][0]
  first = None
  for i in range(200):
    if (i % 3 == 2) != (category == 'animal'):
      continue
    ex = generator.generate_example(i, 'validation', seed, None, image_size_hw, difficulty)
    first = first or ex
    if np.all(ex['keypoints'][fmt][:, 2] > 0) and ex['bbox'][3] > 0.5 * image_size_hw[0]:
      return ex
  return first


def build_sheet(
  n_train: int = 8, seed: int = 0, difficulty: float = 0.5, image_size_hw: tuple[int, int] = (256, 256)
) -> np.ndarray:
  """Returns the preview sheet as an RGB uint8 image."""
  human_formats = FORMATS_BY_CATEGORY['human']
  cols = max(len(human_formats) + 1, 4, min(n_train, 8))
  width = cols * _PANEL
  rows = []

  person = _first_complete('human', seed, image_size_hw, difficulty)
  names = list(human_formats)
  panel0, kps = _crop_around(person['image'], person['bbox'], [person['keypoints'][n] for n in names])
  panels = [_label(panel0.copy(), 'validation person')]
  for n, k in zip(names, kps):
    p = panel0.copy()
    _draw_format(p, k, n)
    panels.append(_label(p, f'{n} ({compiled_format(n).weights.shape[0]})'))
  rows.append(_row(panels, width))

  animal = _first_complete('animal', seed, image_size_hw, difficulty)
  names = list(FORMATS_BY_CATEGORY['animal'])
  panel0, kps = _crop_around(animal['image'], animal['bbox'], [animal['keypoints'][n] for n in names])
  panels = [_label(panel0.copy(), 'validation animal')]
  for n, k in zip(names, kps):
    p = panel0.copy()
    _draw_format(p, k, n)
    panels.append(_label(p, n))
  both = panel0.copy()
  _draw_format(both, kps[0], names[0], (255, 255, 0))
  _draw_format(both, kps[1], names[1], (255, 0, 255))
  panels.append(_label(both, f'{names[0]} (yellow) vs {names[1]} (magenta)'))
  rows.append(_row(panels, width))

  train_formats = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody', 'crowdpose', 'halpe')
  panels = []
  for i in range(n_train):
    fmt = train_formats[i % len(train_formats)]
    ex = generator.generate_example(i, 'train', seed, fmt, image_size_hw, difficulty)
    p = cv2.resize(ex['image'], (_PANEL, _PANEL), interpolation=cv2.INTER_LINEAR)
    k = ex['keypoints'][fmt].copy()
    s = np.array([_PANEL / image_size_hw[1], _PANEL / image_size_hw[0]])
    k[:, :2] = (k[:, :2] + 0.5) * s - 0.5
    _draw_format(p, k, fmt)
    x, y, bw, bh = ex['bbox']
    cv2.rectangle(p, (int(x * s[0]), int(y * s[1])), (int((x + bw) * s[0]), int((y + bh) * s[1])), (255, 255, 255), 1)
    panels.append(_label(p, f'train {i} {fmt}'))
    if len(panels) == cols:
      rows.append(_row(panels, width))
      panels = []
  if panels:
    rows.append(_row(panels, width))
  return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
  """Command-line entry point; writes the PNG given by --out."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', required=True, help='output PNG path')
  parser.add_argument('--n', type=int, default=8, help='number of train examples')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--difficulty', type=float, default=0.5)
  parser.add_argument('--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'))
  args = parser.parse_args(argv)
  if args.n < 0:
    parser.error('--n must be >= 0')
  if not 0.0 <= args.difficulty <= 1.0:
    parser.error('--difficulty must be in [0, 1]')
  directory = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(directory):
    parser.error(f'output directory {directory} does not exist; create it first')
  sheet = build_sheet(args.n, args.seed, args.difficulty, tuple(args.size))
  if not cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
    parser.error(f'could not write {args.out}; use a .png path in a writable directory')
  print(f'wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
