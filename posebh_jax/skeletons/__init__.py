"""Keypoint formats: names, flip pairs, OKS sigmas, links, global index and mappings between formats.

The definitions are data in `formats.py`; `registry.py` builds and validates them.
"""

from posebh_jax.skeletons.registry import (
  TRAIN_FORMATS,
  GlobalKeypointIndex,
  SkeletonFormat,
  UnknownFormatError,
  format_mapping,
  get_format,
  global_index,
  list_formats,
)

__all__ = [
  'TRAIN_FORMATS',
  'GlobalKeypointIndex',
  'SkeletonFormat',
  'UnknownFormatError',
  'format_mapping',
  'get_format',
  'global_index',
  'list_formats',
]
