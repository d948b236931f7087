"""Keypoint formats: names, flip pairs, OKS sigmas, links, global index and mappings between formats.

The 2D definitions are data in `formats.py`; `registry.py` builds and validates them. The 3D skeleton formats of
the multi-dataset 3D training (docs/METHOD.md §3) are data in `formats3d.py`, built by `registry3d.py`.
"""

from posebh_jax.skeletons.registry import (
  TRAIN_FORMATS,
  GlobalKeypointIndex,
  SkeletonFormat,
  UnknownFormatError,
  format_mapping,
  remap_keypoints,
  get_format,
  global_index,
  list_formats,
)
from posebh_jax.skeletons.registry3d import (
  DATASETS_3D,
  Dataset3D,
  Skeleton3DFormat,
  benchmark_format,
  benchmark_joints,
  benchmark_merged_index,
  canonical_2d_name,
  dataset_merged_index,
  get_dataset3d,
  get_format3d,
  list_formats3d,
  merged_flip_index,
  merged_index,
  merged_joint_names,
  merged_links,
  merged_sides,
  prefix_map,
  prefix_matrix,
)

__all__ = [
  'DATASETS_3D',
  'TRAIN_FORMATS',
  'Dataset3D',
  'GlobalKeypointIndex',
  'Skeleton3DFormat',
  'SkeletonFormat',
  'UnknownFormatError',
  'benchmark_format',
  'benchmark_joints',
  'benchmark_merged_index',
  'canonical_2d_name',
  'dataset_merged_index',
  'format_mapping',
  'remap_keypoints',
  'get_dataset3d',
  'get_format',
  'get_format3d',
  'global_index',
  'list_formats',
  'list_formats3d',
  'merged_flip_index',
  'merged_index',
  'merged_joint_names',
  'merged_links',
  'merged_sides',
  'prefix_map',
  'prefix_matrix',
]
