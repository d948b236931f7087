"""Shared pieces of the picture commands: a run's config from its workdir, colours, labels, PNG writing."""

from __future__ import annotations

import os

import cv2
import numpy as np

# Distinct RGB colours (Tableau 10 and a few more), one per dataset in config order.
PALETTE = (
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
  (0, 0, 128),
  (128, 128, 0),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour(index: int) -> tuple[int, int, int]:
  """RGB colour of the index-th dataset (the palette repeats after 12)."""
  return PALETTE[index % len(PALETTE)]


def label(
  canvas: np.ndarray,
  text: str,
  origin: tuple[int, int],
  scale: float = 0.45,
  colour_rgb=(255, 255, 255),
  background=(0, 0, 0),
) -> None:
  """Draws `text` with its top-left corner at `origin` on a filled background box (in place)."""
  (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
  x, y = origin
  cv2.rectangle(canvas, (x, y), (x + w + 6, y + h + base + 4), background, -1)
  cv2.putText(canvas, text, (x + 3, y + h + 2), FONT, scale, colour_rgb, 1, cv2.LINE_AA)


def write_png(path: str, image_rgb: np.ndarray) -> str:
  """Writes an RGB uint8 image as PNG (creating the directory); returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)):
    raise OSError(f'could not write {path}')
  return path
