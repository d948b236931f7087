"""Bottom-layer geometry shared by the data pipeline and the model side: top-down crop affines, cameras (pinhole
projection, lens distortion, extrinsics), perspective-correct crops, absolute 3D pose from 2D + relative 3D, and
keypoints as affine combinations of landmarks. Imports nothing else of the project but `posebh_jax.errors`."""

from posebh_jax.geometry.absolute import (
  absolute_pose,
  absolute_pose_numpy,
  normalize_points,
  root_translation,
  root_translation_numpy,
  view_weights,
)
from posebh_jax.geometry.affine import box_to_center_scale, get_warp_matrix, transform_points
from posebh_jax.geometry.camera import Camera, project, project_in_image
from posebh_jax.geometry.combinations import combination_matrix, exact_landmarks
from posebh_jax.geometry.perspective import PerspectiveCrop, perspective_crop, reproject_image, source_pixel_map

__all__ = [
  'Camera',
  'PerspectiveCrop',
  'absolute_pose',
  'absolute_pose_numpy',
  'box_to_center_scale',
  'combination_matrix',
  'exact_landmarks',
  'get_warp_matrix',
  'normalize_points',
  'perspective_crop',
  'project',
  'project_in_image',
  'reproject_image',
  'root_translation',
  'root_translation_numpy',
  'source_pixel_map',
  'transform_points',
  'view_weights',
]
