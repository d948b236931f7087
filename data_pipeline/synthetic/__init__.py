"""Procedural synthetic multi-skeleton dataset: articulated 3D bipeds and quadrupeds rendered with OpenCV and
annotated in every keypoint format's own convention (see generator.generate_example)."""

from data_pipeline.synthetic.formats import compiled_format, keypoints_3d
from data_pipeline.synthetic.generator import (
  FORMATS_BY_CATEGORY,
  LANDMARK_NAMES,
  QUADRUPED_LANDMARK_NAMES,
  SPLITS,
  generate_example,
)

__all__ = [
  'FORMATS_BY_CATEGORY',
  'LANDMARK_NAMES',
  'QUADRUPED_LANDMARK_NAMES',
  'SPLITS',
  'compiled_format',
  'generate_example',
  'keypoints_3d',
]
