"""Perspective-correct crops: a virtual camera with the same optical centre as the real one, turned to look at a
box, whose undistorted image the crop is (NumPy, per example).

Unlike an affine crop of the image, turning the camera keeps the crop a true pinhole image: a person near the
image border is seen in the crop as a camera pointed at them would see them (no stretching), and the crop's
intrinsics are exact for the 3D losses and for the absolute-pose reconstruction.

How the virtual camera is chosen (`perspective_crop`):
  1. Turn (pan, then tilt): the new optical axis is the viewing ray through the box centre (undistorted), and
     the new x axis is perpendicular to the old camera's y axis, so a vertical 3D line through the box centre
     (along the old camera's y axis) stays the vertical centre line of the crop: an upright person in the
     original image stays upright, whatever the box's position.
  2. Focal length (square pixels): the box's edge midpoints, undistorted and seen from the turned camera, give
     the box's width and height in normalised coordinates (tangents of the angles); the focal length makes the
     box fit the output exactly (the tighter of width and height fills it, the other side gets context), then
     it is divided by `scale`, so `scale` = 1.25 shows the box with 25 % more context on each axis (and the
     person 1 / 1.25 as large). The principal point is the output centre ((W - 1) / 2, (H - 1) / 2) (pixel
     centres at integer coordinates), where the box centre lands.
  3. In-plane rotation: the camera is rolled about its optical axis so that the image content turns
     `rotation_deg` degrees counter-clockwise on screen (the sense of `geometry.get_warp_matrix` and
     `cv2.getRotationMatrix2D`).
  4. Flip: the output is mirrored left-right (u -> W - 1 - u), i.e. x is negated in the new camera frame. The
     mirrored camera's extrinsics have determinant -1; 3D and 2D joints also swap their left/right labels through
     the skeleton's `flip_index` (output joint i = mirrored input joint flip_index[i], the 2D pipeline's
     convention).
The virtual camera has no distortion: `reproject_image` undistorts while it resamples (one cv2.remap).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from posebh_jax.geometry.camera import Camera

_MIRROR_X = np.diag([-1.0, 1.0, 1.0])
# reproject_image(antialias=True) first shrinks the source region (INTER_AREA) when one output pixel spans more
# than this many source pixels.
_ANTIALIAS_ABOVE = 1.5


def _look_at_rotation(direction: np.ndarray) -> np.ndarray:
  """(3, 3) rotation (rows = new axes in old coordinates) whose z axis is `direction` (3,) and whose x axis is
  perpendicular to the old y axis (pan, then tilt)."""
  z = direction / np.linalg.norm(direction)
  x = np.cross((0.0, 1.0, 0.0), z)
  norm = np.linalg.norm(x)
  if norm < 1e-9:
    raise ValueError('cannot turn the camera to look along its own y axis (box centre at infinity)')
  x = x / norm
  y = np.cross(z, x)
  return np.stack([x, y, z])


def _roll_rotation(rotation_deg: float) -> np.ndarray:
  """(3, 3) rotation about the optical axis that turns image content `rotation_deg` counter-clockwise on screen."""
  theta = np.deg2rad(rotation_deg)
  cos, sin = np.cos(theta), np.sin(theta)
  return np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])


@dataclasses.dataclass(frozen=True, eq=False)
class PerspectiveCrop:
  """A perspective-correct crop of one image.

  Attributes:
    source: the original camera (with its distortion).
    camera: the virtual crop camera: intrinsics of the output image, no distortion, image_size = output (H, W),
      extrinsics = `matrix` composed with the source's (same optical centre).
    rotation: (3, 3) proper rotation from the source camera frame to the crop camera frame, before mirroring.
    flip: whether the crop is mirrored left-right (x negated in the crop camera frame).
  """

  source: Camera
  camera: Camera
  rotation: np.ndarray
  flip: bool

  @property
  def matrix(self) -> np.ndarray:
    """(3, 3) source camera frame -> crop camera frame: `rotation`, then the mirror diag(-1, 1, 1) when flipped
    (determinant -1 then)."""
    return _MIRROR_X @ self.rotation if self.flip else self.rotation

  @property
  def output_size(self) -> tuple[int, int]:
    """(H, W) of the crop."""
    return self.camera.image_size

  def _permute(self, values: np.ndarray, flip_index) -> np.ndarray:
    if not self.flip:
      return values
    if flip_index is None:
      raise ValueError('a flipped crop needs the joints\' flip_index (left/right swap) to map joints')
    return values[..., np.asarray(flip_index), :]

  def points_to_crop(self, points, flip_index=None) -> np.ndarray:
    """Joints (..., J, 3) in the source camera frame, mm -> the crop camera frame (..., J, 3), mm (rotated, and
    mirrored and permuted through `flip_index` (J,) when flipped; flip_index is required then)."""
    return self._permute(np.asarray(points, np.float64) @ self.matrix.T, flip_index)

  def pixels_to_crop(self, pixels, flip_index=None) -> np.ndarray:
    """Joints (..., J, 2) in source image px (distorted image) -> crop px (..., J, 2) (undistorted, rotated,
    projected; permuted through `flip_index` when flipped, which is required then)."""
    rays = self.source.image_to_camera_rays(pixels) @ self.matrix.T
    return self._permute(self.camera.camera_to_image(rays), flip_index)

  def crop_to_source_pixels(self, pixels) -> np.ndarray:
    """Crop px (..., 2) -> source px (..., 2) of the distorted image, point by point (no permutation): the map
    `reproject_image` samples. Points whose ray is behind the source camera give NaN."""
    return _new_to_old_pixels(self.source, self.camera, pixels)

  def warp(self, image: np.ndarray, **kwargs) -> np.ndarray:
    """The crop of `image` (the source camera's picture, (H, W[, C])): `reproject_image` with this crop."""
    return reproject_image(image, self.source, self.camera, self.output_size, **kwargs)


def perspective_crop(
  camera: Camera,
  box_xywh,
  output_size_hw,
  scale: float = 1.0,
  rotation_deg: float = 0.0,
  flip: bool = False,
) -> PerspectiveCrop:
  """The perspective-correct crop of a box (see the module docstring for the choices).

  Args:
    camera: the source camera (intrinsics, distortion, extrinsics).
    box_xywh: (4,) x, y, w, h of the box in source image px (the distorted image as stored).
    output_size_hw: (H, W) of the crop, px.
    scale: the crop shows the fitted box times `scale` on each axis (1 = the box fills the crop; > 1 more
      context, smaller person).
    rotation_deg: in-plane rotation of the content, degrees counter-clockwise on screen.
    flip: mirror the crop left-right.
  Returns:
    PerspectiveCrop (the new camera, the source -> crop rotation, the flip).
  """
  box = np.asarray(box_xywh, np.float64).reshape(-1)
  if box.size != 4 or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f'box_xywh must be x, y, w, h with w, h > 0, got {box.tolist()}')
  if scale <= 0:
    raise ValueError(f'scale must be positive, got {scale}')
  out_h, out_w = (int(v) for v in output_size_hw)
  if out_h <= 0 or out_w <= 0:
    raise ValueError(f'output_size_hw must be positive (H, W), got {tuple(output_size_hw)}')
  x, y, w, h = box
  cx, cy = x + 0.5 * w, y + 0.5 * h
  # Box centre, then the midpoints of the left, right, top and bottom edges.
  points = np.array([[cx, cy], [x, cy], [x + w, cy], [cx, y], [cx, y + h]])
  rays = camera.image_to_camera_rays(points)
  look = _look_at_rotation(rays[0])
  turned = rays @ look.T
  normalized = turned[:, :2] / turned[:, 2:3]
  box_w, box_h = normalized[2, 0] - normalized[1, 0], normalized[4, 1] - normalized[3, 1]
  if not (box_w > 0 and box_h > 0):
    raise ValueError(f'the box {box.tolist()} does not map to a proper region of the view (edges behind the camera)')
  focal = min(out_w / box_w, out_h / box_h) / scale
  intrinsics = np.array([[focal, 0.0, (out_w - 1) / 2.0], [0.0, focal, (out_h - 1) / 2.0], [0.0, 0.0, 1.0]])
  rotation = _roll_rotation(rotation_deg) @ look
  matrix = _MIRROR_X @ rotation if flip else rotation
  new_camera = Camera(
    intrinsics,
    rotation=matrix @ camera.rotation,
    translation=matrix @ camera.translation,
    image_size=(out_h, out_w),
  )
  return PerspectiveCrop(source=camera, camera=new_camera, rotation=rotation, flip=bool(flip))


def _relative_rotation(old_camera: Camera, new_camera: Camera) -> np.ndarray:
  """(3, 3) new camera frame -> old camera frame; raises ValueError when the optical centres differ."""
  gap = np.linalg.norm(old_camera.center - new_camera.center)
  if gap > 1e-6 * (1.0 + np.linalg.norm(old_camera.center)):
    raise ValueError(f'reprojection needs cameras with the same optical centre; they are {gap:.3g} mm apart')
  return old_camera.rotation @ new_camera.rotation.T


def _new_to_old_pixels(old_camera: Camera, new_camera: Camera, pixels) -> np.ndarray:
  rays = new_camera.image_to_camera_rays(pixels) @ _relative_rotation(old_camera, new_camera).T
  in_front = rays[..., 2] > 1e-9
  rays = np.where(in_front[..., None], rays, (0.0, 0.0, 1.0))
  return np.where(in_front[..., None], old_camera.camera_to_image(rays), np.nan)


def source_pixel_map(old_camera: Camera, new_camera: Camera, output_size_hw) -> tuple[np.ndarray, np.ndarray]:
  """The cv2.remap maps of a reprojection: for every output pixel of `new_camera`'s image (H, W), the old
  camera's (distorted) pixel that sees the same ray. Returns (map_x, map_y), float32 (H, W) each; rays behind
  the old camera map to -1e6 (outside: border value). The cameras must share their optical centre."""
  out_h, out_w = (int(v) for v in output_size_hw)
  if new_camera.has_distortion:
    grid = np.stack(np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64)), -1)
    old = _new_to_old_pixels(old_camera, new_camera, grid)
  else:
    # Rays (not normalised) of the output pixels in the old camera frame: M (u, v, 1) with M = R_rel K_new^-1, as
    # outer sums of a row and a column (no (H, W, 3) intermediate).
    m = _relative_rotation(old_camera, new_camera) @ np.linalg.inv(new_camera.intrinsics)
    u, v = np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64)
    x, y, z = (m[i, 0] * u[None, :] + (m[i, 1] * v + m[i, 2])[:, None] for i in range(3))
    in_front = z > 1e-9
    z = np.where(in_front, z, 1.0)
    old = old_camera.normalized_to_image(np.stack([x / z, y / z], -1))
    old = np.where(in_front[..., None], old, np.nan)
  old = np.where(np.isfinite(old), old, -1e6).astype(np.float32)
  return old[..., 0], old[..., 1]


def reproject_image(
  image: np.ndarray,
  old_camera: Camera,
  new_camera: Camera,
  output_size_hw=None,
  interpolation: int = cv2.INTER_LINEAR,
  border_value=0,
  antialias: bool = True,
) -> np.ndarray:
  """The picture `new_camera` would take, resampled from `image` (the old camera's distorted picture, (H, W[, C]),
  any dtype cv2.remap accepts) with one cv2.remap: every output pixel's ray in the new camera -> the old camera
  frame -> the old camera's distorted pixel. The cameras must share their optical centre (a perspective crop).

  Args:
    output_size_hw: (H, W) of the output; default `new_camera.image_size`.
    interpolation: cv2 interpolation flag.
    border_value: the value of output pixels that see outside the old image.
    antialias: when an output pixel spans more than 1.5 source pixels at the output centre (a zoom-out), the part
      of the source the crop sees is first shrunk with cv2.INTER_AREA to about one source pixel per output pixel
      (the map is rescaled to match), so the remap does not alias.
  Returns:
    The output image (H, W[, C]), the dtype of `image`.
  """
  size = new_camera.image_size if output_size_hw is None else tuple(int(v) for v in output_size_hw)
  if size is None:
    raise ValueError('reproject_image needs output_size_hw when the new camera has no image_size')
  image = np.asarray(image)
  map_x, map_y = source_pixel_map(old_camera, new_camera, size)
  if antialias and min(size) >= 2:
    map_x, map_y, image = _shrink_source(image, map_x, map_y, size)
  border = border_value if np.ndim(border_value) else (border_value,) * 4
  return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _shrink_source(image, map_x, map_y, size):
  """Antialiasing for `reproject_image`: the source region the maps read, shrunk (INTER_AREA) to about one source
  pixel per output pixel where the maps step more than `_ANTIALIAS_ABOVE` source pixels per output pixel at the
  output centre, and the maps rescaled onto it. Returns (map_x, map_y, image), unchanged where no shrink is due."""
  cy, cx = (size[0] - 1) // 2, (size[1] - 1) // 2
  jac = np.array(
    [
      [map_x[cy, cx + 1] - map_x[cy, cx], map_x[cy + 1, cx] - map_x[cy, cx]],
      [map_y[cy, cx + 1] - map_y[cy, cx], map_y[cy + 1, cx] - map_y[cy, cx]],
    ],
    np.float64,
  )
  step = np.sqrt(abs(np.linalg.det(jac)))
  if not (np.isfinite(step) and step > _ANTIALIAS_ABOVE and np.all(np.abs(jac) < 1e5)):
    return map_x, map_y, image
  height, width = image.shape[:2]
  valid = map_x > -1e5
  if not valid.any():
    return map_x, map_y, image
  x0 = int(np.clip(np.floor(map_x[valid].min()) - 1, 0, width - 1))
  x1 = int(np.clip(np.ceil(map_x[valid].max()) + 1, 0, width - 1))
  y0 = int(np.clip(np.floor(map_y[valid].min()) - 1, 0, height - 1))
  y1 = int(np.clip(np.ceil(map_y[valid].max()) + 1, 0, height - 1))
  region = image[y0 : y1 + 1, x0 : x1 + 1]
  new_w, new_h = max(1, round(region.shape[1] / step)), max(1, round(region.shape[0] / step))
  shrunk = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
  # Pixel centres at integer coordinates: u' = (u - x0 + 0.5) new_w / region_w - 0.5.
  scale_x, scale_y = new_w / region.shape[1], new_h / region.shape[0]
  map_x = np.where(valid, (map_x - x0 + 0.5) * scale_x - 0.5, map_x).astype(np.float32)
  map_y = np.where(valid, (map_y - y0 + 0.5) * scale_y - 0.5, map_y).astype(np.float32)
  return map_x, map_y, shrunk
