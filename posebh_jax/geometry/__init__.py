"""Bottom-layer geometry shared by the data pipeline and the model side: top-down crop affines, pinhole
projection, and keypoints as affine combinations of landmarks. Imports nothing else of the project."""

from posebh_jax.geometry.affine import box_to_center_scale, get_warp_matrix, transform_points
from posebh_jax.geometry.camera import project, project_in_image
from posebh_jax.geometry.combinations import combination_matrix, exact_landmarks

__all__ = [
  'box_to_center_scale',
  'combination_matrix',
  'exact_landmarks',
  'get_warp_matrix',
  'project',
  'project_in_image',
  'transform_points',
]
