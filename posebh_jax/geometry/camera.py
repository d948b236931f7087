"""Pinhole camera projection of camera-frame 3D points to image pixels.

Camera frame: x right, y down, z forward; pixel (u, v) = (fx x / z + cx, fy y / z + cy) for a 3x3 intrinsics
matrix, pixel centres at integer coordinates.
"""

from __future__ import annotations

import numpy as np


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
  """Camera-frame points (N, 3) and intrinsics (3, 3) -> pixel coordinates (N, 2); no depth check."""
  p = points @ intrinsics.T
  return p[:, :2] / p[:, 2:3]


def project_in_image(
  points: np.ndarray, intrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Camera-frame points (N, 3) and intrinsics (3, 3) -> (uv float64 (N, 2) px, inside bool (N,)).

  `inside`: in front of the camera (z > 0) and projecting into [0, width - 1] x [0, height - 1]. Points
  with z <= 0 are divided by 1 instead of their depth (finite, but meaningless: mask them with `inside`).
  """
  projected = points @ np.asarray(intrinsics, np.float64).T
  depth = projected[:, 2]
  uv = projected[:, :2] / np.where(depth > 0, depth, 1.0)[:, None]
  inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= height - 1)
  return uv, inside
