"""Cameras: pinhole projection of camera-frame 3D points to image pixels, and a calibrated `Camera` (intrinsics,
lens distortion, world -> camera extrinsics) for the 3D data pipeline.

Camera frame: x right, y down, z forward; pixel (u, v) = (fx x / z + cx, fy y / z + cy) for a 3x3 intrinsics
matrix, pixel centres at integer coordinates. Lengths are in millimetres wherever a unit matters (the
translation of the extrinsics); the projection itself is unit-free.

Lens distortion acts on normalised image coordinates (x / z, y / z) before the intrinsics, with the coefficients
in OpenCV's order `k1, k2, p1, p2, k3`:
  - `'opencv'` (the Brown-Conrady model of `cv2.projectPoints`): with r2 = x^2 + y^2 and
    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3,
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2),  y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y;
  - `'h36m'` (the model of the Human3.6M release's calibration code, which its 2D labels were projected with):
    the same radial part, but the tangential part is s = radial + p1 y + p2 x,
    x_d = x s + p2 r2,  y_d = y s + p1 r2 (its p1 xy and p2 x^2 terms lack OpenCV's factor 2). With Human3.6M's
    `p` = (p1, p2) it reproduces the released 2D labels to 1e-4 px; the OpenCV model with the same numbers is off
    by up to ~0.3 px.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DISTORTION_MODELS = ('opencv', 'h36m')
# Newton iterations of the undistortion (it converges quadratically; it stops early once converged).
_UNDISTORT_ITERATIONS = 20


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


def _as_array(value, shape, name) -> np.ndarray:
  """`value` as a read-only float64 array of `shape` (any layout with the same number of entries, e.g. a (3, 1)
  translation, is reshaped)."""
  array = np.array(value, dtype=np.float64)
  if array.size != int(np.prod(shape)):
    raise ValueError(f'{name} must have shape {shape}, got {array.shape}')
  array = array.reshape(shape)
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
  """A calibrated camera (NumPy, float64): X_camera = rotation @ X_world + translation, then projection.

  Attributes:
    intrinsics: (3, 3) K with last row (0, 0, 1) (skew allowed), pixels with centres at integer coordinates.
    distortion: (5,) `k1, k2, p1, p2, k3` on normalised coordinates (all zero = none); 4 values are padded with
      k3 = 0.
    rotation: (3, 3) world -> camera rotation (orthonormal; a mirrored camera, determinant -1, is allowed).
    translation: (3,) world -> camera translation, mm.
    image_size: (H, W) px of the image the camera took, or None where unknown.
    distortion_model: 'opencv' or 'h36m' (see the module docstring).
  """

  intrinsics: np.ndarray
  distortion: np.ndarray | None = None
  rotation: np.ndarray | None = None
  translation: np.ndarray | None = None
  image_size: tuple[int, int] | None = None
  distortion_model: str = 'opencv'

  def __post_init__(self):
    intrinsics = _as_array(self.intrinsics, (3, 3), 'intrinsics')
    if not np.allclose(intrinsics[2], (0.0, 0.0, 1.0)):
      raise ValueError(f'intrinsics must have the last row (0, 0, 1), got {intrinsics[2].tolist()}')
    distortion = np.zeros(5) if self.distortion is None else np.array(self.distortion, np.float64).reshape(-1)
    if distortion.size == 4:
      distortion = np.concatenate([distortion, [0.0]])
    elif distortion.size == 0:
      distortion = np.zeros(5)
    if distortion.size != 5:
      raise ValueError(f'distortion must hold k1, k2, p1, p2[, k3] (4 or 5 values), got {distortion.size}')
    distortion.setflags(write=False)
    rotation = _as_array(np.eye(3) if self.rotation is None else self.rotation, (3, 3), 'rotation')
    translation = _as_array(np.zeros(3) if self.translation is None else self.translation, (3,), 'translation')
    if self.distortion_model not in DISTORTION_MODELS:
      raise ValueError(f'distortion_model must be one of {DISTORTION_MODELS}, got {self.distortion_model!r}')
    image_size = None if self.image_size is None else tuple(int(v) for v in self.image_size)
    if image_size is not None and len(image_size) != 2:
      raise ValueError(f'image_size must be (H, W), got {self.image_size}')
    for name, value in (
      ('intrinsics', intrinsics),
      ('distortion', distortion),
      ('rotation', rotation),
      ('translation', translation),
      ('image_size', image_size),
    ):
      object.__setattr__(self, name, value)

  # --- properties -----------------------------------------------------------------------------------------

  @property
  def has_distortion(self) -> bool:
    """Whether any distortion coefficient is non-zero."""
    return bool(np.any(self.distortion != 0))

  @property
  def center(self) -> np.ndarray:
    """(3,) the optical centre in world coordinates, mm: -rotation^T translation."""
    return -self.rotation.T @ self.translation

  def replace(self, **changes) -> Camera:
    """A copy with the given fields replaced (dataclasses.replace)."""
    return dataclasses.replace(self, **changes)

  def resized(self, new_size_hw, old_size_hw=None) -> Camera:
    """The same camera for its image resized (cv2.resize) from `old_size_hw` (default `image_size`) to
    `new_size_hw` (H, W): the intrinsics are rescaled about the pixel edges, u' = (u + 0.5) W'/W - 0.5, and
    the distortion (on normalised coordinates) and extrinsics are unchanged."""
    old = self.image_size if old_size_hw is None else tuple(old_size_hw)
    if old is None:
      raise ValueError('resized needs old_size_hw when the camera has no image_size')
    scale_y, scale_x = new_size_hw[0] / old[0], new_size_hw[1] / old[1]
    pixels = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])
    return self.replace(intrinsics=pixels @ self.intrinsics, image_size=tuple(int(v) for v in new_size_hw))

  # --- frames ---------------------------------------------------------------------------------------------

  def world_to_camera(self, points) -> np.ndarray:
    """World points (..., 3) mm -> camera-frame points (..., 3) mm."""
    return np.asarray(points, np.float64) @ self.rotation.T + self.translation

  def camera_to_world(self, points) -> np.ndarray:
    """Camera-frame points (..., 3) mm -> world points (..., 3) mm (rotation assumed orthonormal)."""
    return (np.asarray(points, np.float64) - self.translation) @ self.rotation

  # --- distortion on normalised coordinates ---------------------------------------------------------------

  def distort(self, normalized) -> np.ndarray:
    """Undistorted normalised coordinates (..., 2) (x / z, y / z) -> distorted normalised coordinates (..., 2)."""
    normalized = np.asarray(normalized, np.float64)
    if not self.has_distortion:
      return normalized.copy()
    return self._distort(normalized, jacobian=False)[0]

  def undistort(self, distorted) -> np.ndarray:
    """Distorted normalised coordinates (..., 2) -> undistorted ones (..., 2): the inverse of `distort` by Newton
    iterations from the distorted point (exact to ~1e-12 where the distortion is invertible, i.e. within the
    calibrated field of view)."""
    distorted = np.asarray(distorted, np.float64)
    if not self.has_distortion:
      return distorted.copy()
    x = distorted.copy()
    for _ in range(_UNDISTORT_ITERATIONS):
      value, jac = self._distort(x, jacobian=True)
      residual = value - distorted
      # Solve the 2x2 systems jac @ step = residual in closed form.
      a, b, c, d = jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1]
      det = a * d - b * c
      det = np.where(np.abs(det) > 1e-12, det, 1e-12)
      step = np.stack([d * residual[..., 0] - b * residual[..., 1], a * residual[..., 1] - c * residual[..., 0]], -1)
      x = x - step / det[..., None]
      if np.all(np.abs(residual) < 1e-14):
        break
    return x

  def _distort(self, xy, jacobian):
    k1, k2, p1, p2, k3 = self.distortion
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    radial_d = k1 + r2 * (2.0 * k2 + 3.0 * r2 * k3)  # d radial / d r2
    if self.distortion_model == 'opencv':
      xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
      yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
      if not jacobian:
        return np.stack([xd, yd], -1), None
      dxdx = radial + 2.0 * x * x * radial_d + 2.0 * p1 * y + 6.0 * p2 * x
      dxdy = 2.0 * x * y * radial_d + 2.0 * p1 * x + 2.0 * p2 * y
      dydx = dxdy
      dydy = radial + 2.0 * y * y * radial_d + 6.0 * p1 * y + 2.0 * p2 * x
    else:  # 'h36m'
      s = radial + p1 * y + p2 * x
      xd = x * s + p2 * r2
      yd = y * s + p1 * r2
      if not jacobian:
        return np.stack([xd, yd], -1), None
      ds_dx = 2.0 * x * radial_d + p2
      ds_dy = 2.0 * y * radial_d + p1
      dxdx = s + x * ds_dx + 2.0 * p2 * x
      dxdy = x * ds_dy + 2.0 * p2 * y
      dydx = y * ds_dx + 2.0 * p1 * x
      dydy = s + y * ds_dy + 2.0 * p1 * y
    jac = np.stack([np.stack([dxdx, dxdy], -1), np.stack([dydx, dydy], -1)], -2)
    return np.stack([xd, yd], -1), jac

  # --- projection -----------------------------------------------------------------------------------------

  def normalized_to_image(self, normalized) -> np.ndarray:
    """Undistorted normalised coordinates (..., 2) -> pixels (..., 2), distortion and intrinsics applied."""
    distorted = self.distort(normalized)
    k = self.intrinsics
    return distorted @ k[:2, :2].T + k[:2, 2]

  def image_to_normalized(self, pixels) -> np.ndarray:
    """Pixels (..., 2) of the (distorted) image -> undistorted normalised coordinates (..., 2)."""
    k = self.intrinsics
    distorted = (np.asarray(pixels, np.float64) - k[:2, 2]) @ np.linalg.inv(k[:2, :2]).T
    return self.undistort(distorted)

  def camera_to_image(self, points) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixels (..., 2), distortion included (equal to `cv2.projectPoints` for the
    'opencv' model and zero skew). No depth check: points with z <= 0 give meaningless pixels."""
    points = np.asarray(points, np.float64)
    return self.normalized_to_image(points[..., :2] / points[..., 2:3])

  def world_to_image(self, points) -> np.ndarray:
    """World points (..., 3) mm -> pixels (..., 2), distortion included."""
    return self.camera_to_image(self.world_to_camera(points))

  def undistort_points(self, pixels) -> np.ndarray:
    """Pixels (..., 2) of the distorted image -> pixels (..., 2) where an ideal camera with the same intrinsics
    and no distortion would see the same rays."""
    k = self.intrinsics
    return self.image_to_normalized(pixels) @ k[:2, :2].T + k[:2, 2]

  def image_to_camera_rays(self, pixels) -> np.ndarray:
    """Pixels (..., 2) of the distorted image -> unit-length viewing rays (..., 3) in the camera frame (z > 0)."""
    normalized = self.image_to_normalized(pixels)
    rays = np.concatenate([normalized, np.ones_like(normalized[..., :1])], -1)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)
