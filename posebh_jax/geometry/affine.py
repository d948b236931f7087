"""Top-down crop geometry: box -> (center, scale) and the image -> crop affine transform.

Conventions: pixel centres sit at integer coordinates; `center` is in image pixels and `scale` is the
(width, height) in image pixels of the region that is mapped onto the crop (box after aspect-ratio fixing
and padding). Sizes passed to these functions are `(W, H)` like OpenCV. Rotation is in degrees,
counter-clockwise positive as seen on screen (image y axis pointing down), the same sense as
`cv2.getRotationMatrix2D`: with rotation 90 the image's "up" direction ends up pointing left in the crop.
"""

from __future__ import annotations

import numpy as np


def box_to_center_scale(bbox_xywh, aspect_ratio_wh: float, padding: float = 1.25):
  """Box `(..., 4)` = x, y, w, h (image px) -> `(center (..., 2), scale (..., 2))` in image px.

  The centre is the box centre; the box is first grown (never shrunk) along one side to the target
  aspect ratio `aspect_ratio_wh` = width / height, then both sides are multiplied by `padding`.
  """
  if aspect_ratio_wh <= 0:
    raise ValueError(f"aspect_ratio_wh must be positive (width / height), got {aspect_ratio_wh}")
  box = np.asarray(bbox_xywh, dtype=np.float64)
  if box.shape[-1] != 4:
    raise ValueError(f"bbox_xywh must have a last dimension of 4 (x, y, w, h), got shape {box.shape}")
  x, y, w, h = np.moveaxis(box, -1, 0)
  center = np.stack([x + 0.5 * w, y + 0.5 * h], axis=-1)
  wider = w > aspect_ratio_wh * h
  fixed_w = np.where(wider, w, h * aspect_ratio_wh)
  fixed_h = np.where(wider, w / aspect_ratio_wh, h)
  scale = np.stack([fixed_w, fixed_h], axis=-1) * padding
  return center, scale


def get_warp_matrix(center, scale, rotation_deg: float, output_size_wh, use_udp: bool) -> np.ndarray:
  """Affine `(2, 3)` float64 matrix mapping image px to crop px for a top-down crop.

  Args:
    center: `(2,)` crop centre in image px.
    scale: `(2,)` (width, height) in image px of the region mapped onto the crop.
    rotation_deg: counter-clockwise rotation of the image content inside the crop, degrees.
    output_size_wh: crop size `(W, H)` in px.
    use_udp: False gives the classic top-down transform: uniform scale `W / scale_w`, centre -> (W/2, H/2).
      True gives the unbiased (UDP) transform that works on pixel spacings: scale `(W-1) / scale_w`
      horizontally and `(H-1) / scale_h` vertically, centre -> ((W-1)/2, (H-1)/2).
  """
  center = np.asarray(center, dtype=np.float64).reshape(2)
  scale = np.asarray(scale, dtype=np.float64).reshape(2)
  out_w, out_h = (float(v) for v in output_size_wh)
  if np.any(scale <= 0):
    raise ValueError(f"scale must be positive (width, height in px), got {scale.tolist()}")
  theta = np.deg2rad(rotation_deg)
  cos, sin = np.cos(theta), np.sin(theta)
  # Counter-clockwise on screen (y down) is the rotation [[c, s], [-s, c]] in array coordinates.
  rotation = np.array([[cos, sin], [-sin, cos]])
  if use_udp:
    stretch = np.diag([(out_w - 1.0) / scale[0], (out_h - 1.0) / scale[1]])
    out_center = np.array([(out_w - 1.0) / 2.0, (out_h - 1.0) / 2.0])
  else:
    stretch = np.eye(2) * (out_w / scale[0])
    out_center = np.array([out_w / 2.0, out_h / 2.0])
  linear = stretch @ rotation
  translation = out_center - linear @ center
  return np.concatenate([linear, translation[:, None]], axis=1)


def transform_points(points_xy, matrix) -> np.ndarray:
  """Apply an affine `(2, 3)` matrix to points `(..., 2)`; returns float64 `(..., 2)`."""
  points = np.asarray(points_xy, dtype=np.float64)
  matrix = np.asarray(matrix, dtype=np.float64)
  if points.shape[-1] != 2 or matrix.shape != (2, 3):
    raise ValueError(f"expected points (..., 2) and a (2, 3) matrix, got {points.shape} and {matrix.shape}")
  return points @ matrix[:, :2].T + matrix[:, 2]
