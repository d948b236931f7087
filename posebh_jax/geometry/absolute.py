"""Absolute 3D pose from root-relative 3D joints and 2D joints: the camera-frame translation T by weighted,
regularised linear least squares (the MeTRAbs head's reconstruction, method §3.2).

For joint j with relative position (x_j, y_j, z_j) mm and undistorted normalised image coordinates
(u_j, v_j) = K^-1 (px_j, 1), the absolute joint X_j + T projects onto (u_j, v_j) when
  (x_j + T_x) - u_j (z_j + T_z) = 0   and   (y_j + T_y) - v_j (z_j + T_z) = 0,
two equations linear in T whose residuals r_j are the projection errors times the joint's depth, in mm. T minimises
  E(T) = sum_j (w_j / max_k w_k)^2 (r_xj^2 + r_yj^2) + lambda ||T / 1000 mm||^2.
The weights scale the residuals (the rows of the linear system), as in MeTRAbs: `view_weights` gives 1 in view and
1e-4 out of view, so an out-of-view joint's squared error counts 1e-8 as much as an in-view joint's (a joint
predicted 770 px off outside a 256 px crop moves a 5 m deep T by 0.002 mm; with the squared errors weighted by
1e-4 instead it would move it by ~20 mm); 0 drops a joint. Dividing by the largest weight makes T independent of
the weights' overall scale: with every joint out of view they all count fully again.
The L2 regulariser (lambda = 1e-2 by default) acts on T in metres while the residuals are in mm, i.e.
lambda * 1e-6 per mm^2. It is a numerical safeguard: it keeps the 3x3 normal equations solvable when every weight
is zero (padding: T = 0) or the joints are degenerate (a single joint), and biases a well-posed solution by
~1e-7 relative (a person's 2D spread gives the depth ~1e-1 information against 1e-8). (MeTRAbs RMS-normalises the
system before its 1e-2 regulariser, which biases T by ~1e-4 relative.)

`absolute_pose` / `root_translation` are JAX (any leading batch dimensions, jit and vmap safe, closed form, no
solver call); `absolute_pose_numpy` / `root_translation_numpy` are the float64 NumPy reference (an explicit
stacked least-squares problem). `view_weights` gives the weights from 2D joints and an image size. JAX is
imported on first use, so the NumPy data pipeline can import `posebh_jax.geometry` without loading it. Run the
JAX version in float32 or wider (bfloat16 loses the depth; the regulariser's 1e-8 underflows in float16).
"""

from __future__ import annotations

import numpy as np

IN_VIEW_WEIGHT = 1.0
OUT_OF_VIEW_WEIGHT = 1e-4
L2_REGULARIZER = 1e-2
# The regulariser acts on T in metres; the residuals are in mm.
_REGULARIZER_UNIT_MM = 1000.0


def view_weights(points_px, image_size_hw, in_view: float = IN_VIEW_WEIGHT, out_of_view: float = OUT_OF_VIEW_WEIGHT):
  """Per-joint weights (..., J) float32 (JAX; NumPy input works too): `in_view` for 2D joints (..., J, 2) px inside
  [0, W - 1] x [0, H - 1] of an (H, W) image (pixel centres at integer coordinates), `out_of_view` elsewhere (and
  for non-finite points)."""
  import jax.numpy as jnp

  points = jnp.asarray(points_px)
  height, width = image_size_hw
  x, y = points[..., 0], points[..., 1]
  inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
  return jnp.where(inside, jnp.float32(in_view), jnp.float32(out_of_view))


def normalize_points(points_px, intrinsics):
  """2D points (..., J, 2) px and intrinsics (..., 3, 3) -> normalised image coordinates (..., J, 2) = K^-1 (px, 1)
  (JAX; undistorted pixels assumed, e.g. those of a perspective crop's virtual camera)."""
  import jax.numpy as jnp

  points = jnp.asarray(points_px)
  k = jnp.asarray(intrinsics, points.dtype)
  # K is upper triangular with last row (0, 0, 1): y = (v - cy) / fy, x = (u - cx - s y) / fx.
  fx, skew, cx = k[..., 0, 0, None], k[..., 0, 1, None], k[..., 0, 2, None]
  fy, cy = k[..., 1, 1, None], k[..., 1, 2, None]
  y = (points[..., 1] - cy) / fy
  x = (points[..., 0] - cx - skew * y) / fx
  return jnp.stack([x, y], -1)


def root_translation(normalized_2d, relative_3d, weights, l2_regularizer: float = L2_REGULARIZER):
  """The translation T (..., 3) mm minimising E(T) (module docstring), JAX.

  Args:
    normalized_2d: (..., J, 2) undistorted normalised image coordinates of the joints (`normalize_points`).
    relative_3d: (..., J, 3) joints relative to any reference point (root, mean), camera frame, mm.
    weights: (..., J) non-negative per-joint weights (scaling the residuals; module docstring).
    l2_regularizer: lambda, on T in metres (> 0 keeps an all-zero-weight example finite: T = 0).
  Returns:
    (..., 3) camera-frame position of the reference point, mm (absolute joints = relative_3d + T[..., None, :]).
  """
  import jax.numpy as jnp

  uv = jnp.asarray(normalized_2d)
  rel = jnp.asarray(relative_3d, uv.dtype)
  w = jnp.asarray(weights, uv.dtype)
  # (w / max w)^2, 0 where every weight is 0 (no tiny epsilon: XLA may square it into a flushed denormal).
  largest = jnp.max(w, -1, keepdims=True)
  w = jnp.square(w / jnp.where(largest > 0, largest, 1.0))
  reg = jnp.asarray(l2_regularizer / _REGULARIZER_UNIT_MM**2, uv.dtype)
  # Per joint: rows (1, 0, -u) and (0, 1, -v) against right-hand sides u z - x and v z - y.
  b = uv * rel[..., 2:3] - rel[..., :2]  # (..., J, 2)
  total = jnp.sum(w, -1)  # (...,)
  mean_uv = jnp.sum(w[..., None] * uv, -2) / jnp.where(total > 0, total, 1.0)[..., None]
  centred = uv - mean_uv[..., None, :]
  # Normal equations [[S + r, 0, -m_u], [0, S + r, -m_v], [-m_u, -m_v, Q + r]] T = (g_x, g_y, g_z) with S = sum w,
  # m = sum w uv, Q = sum w |uv|^2, g_xy = sum w b, g_z = -sum w uv.b, solved by eliminating T_x and T_y:
  # T_z = (g_z + m.g_xy / (S + r)) / (Q + r - |m|^2 / (S + r)). Both are written with the weighted mean of uv taken
  # out (no cancellation in float32 for a person far from the optical axis):
  #   Q + r - |m|^2 / (S + r) = spread + r + S |mean|^2 r / (S + r),   spread = sum w |uv - mean|^2,
  #   g_z + m.g_xy / (S + r) = -sum w (uv - mean).b - (mean.g_xy) r / (S + r).
  diag = total + reg
  g_xy = jnp.sum(w[..., None] * b, -2)
  spread = jnp.sum(w * jnp.sum(centred**2, -1), -1)
  mean_sq = jnp.sum(mean_uv**2, -1)
  schur = spread + reg + total * mean_sq * reg / diag
  rhs = -jnp.sum(w[..., None] * centred * b, (-2, -1)) - jnp.sum(mean_uv * g_xy, -1) * reg / diag
  t_z = rhs / schur
  t_xy = (g_xy + total[..., None] * mean_uv * t_z[..., None]) / diag[..., None]
  return jnp.concatenate([t_xy, t_z[..., None]], -1)


def absolute_pose(points_px, relative_3d, intrinsics, weights, l2_regularizer: float = L2_REGULARIZER):
  """Absolute camera-frame joints (..., J, 3) mm = relative_3d + T, JAX (jit and vmap safe).

  Args:
    points_px: (..., J, 2) predicted 2D joints, px of the (undistorted) image the intrinsics describe.
    relative_3d: (..., J, 3) root-relative 3D joints, camera frame, mm.
    intrinsics: (..., 3, 3).
    weights: (..., J) per-joint weights (`view_weights`).
    l2_regularizer: lambda on T in metres (module docstring).
  """
  import jax.numpy as jnp

  translation = root_translation(normalize_points(points_px, intrinsics), relative_3d, weights, l2_regularizer)
  return jnp.asarray(relative_3d, translation.dtype) + translation[..., None, :]


def root_translation_numpy(normalized_2d, relative_3d, weights, l2_regularizer: float = L2_REGULARIZER) -> np.ndarray:
  """NumPy float64 reference of `root_translation` for one example: normalized_2d (J, 2), relative_3d (J, 3) mm,
  weights (J,) -> T (3,) mm, from the stacked problem [w A; sqrt(lambda) / 1000 I] T = [w b; 0] (w / max w)."""
  uv = np.asarray(normalized_2d, np.float64)
  rel = np.asarray(relative_3d, np.float64)
  w = np.asarray(weights, np.float64)
  w = w / w.max() if w.max() > 0 else w
  count = len(uv)
  a = np.zeros((2 * count, 3))
  a[0::2, 0] = 1.0
  a[1::2, 1] = 1.0
  a[0::2, 2] = -uv[:, 0]
  a[1::2, 2] = -uv[:, 1]
  b = (uv * rel[:, 2:3] - rel[:, :2]).reshape(-1)
  rows = np.repeat(w, 2)
  a = np.concatenate([a * rows[:, None], np.eye(3) * np.sqrt(l2_regularizer) / _REGULARIZER_UNIT_MM])
  b = np.concatenate([b * rows, np.zeros(3)])
  return np.linalg.lstsq(a, b, rcond=None)[0]


def absolute_pose_numpy(points_px, relative_3d, intrinsics, weights, l2_regularizer: float = L2_REGULARIZER):
  """NumPy float64 reference of `absolute_pose` for one example: points_px (J, 2), relative_3d (J, 3) mm,
  intrinsics (3, 3), weights (J,) -> absolute joints (J, 3) mm."""
  points = np.asarray(points_px, np.float64)
  homogeneous = np.concatenate([points, np.ones_like(points[:, :1])], 1)
  normalized = homogeneous @ np.linalg.inv(np.asarray(intrinsics, np.float64)).T
  rel = np.asarray(relative_3d, np.float64)
  return rel + root_translation_numpy(normalized[:, :2], rel, weights, l2_regularizer)
