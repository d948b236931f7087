"""Checks of `config.data` that the pipeline owns, run before anything is built."""

from __future__ import annotations

from data_pipeline.errors import DataConfigError
from data_pipeline.synthetic import formats3d as _synthetic_formats3d  # noqa: F401 (registers the syn_* 3D formats)
from posebh_jax import skeletons


def validate_config(data_config) -> None:
  """Checks `config.data`: the dataset order and entries, input geometry and augmentation. Raises DataConfigError
  (a UserError; one line naming the key and what to do)."""
  order = tuple(data_config.order)
  if not order:
    raise DataConfigError('config.data.order is empty; list the datasets to train on, e.g. coco,aic,mpii')
  for name in order:
    if name not in data_config.datasets:
      known = ', '.join(sorted(data_config.datasets.keys()))
      raise DataConfigError(
        f"unknown dataset '{name}' in config.data.order; known datasets in config.data.datasets: {known}"
      )
    entry = data_config.datasets[name]
    try:
      skeletons.get_format(entry.format)
    except ValueError as e:
      try:  # a 3D skeleton format (the 3D tasks' datasets)
        skeletons.get_format3d(entry.format)
      except ValueError:
        raise DataConfigError(f'config.data.datasets.{name}.format: {e}') from None
    if entry.weight < 0:
      raise DataConfigError(
        f'config.data.datasets.{name}.weight must be > 0, or 0 for a dataset evaluated only (got {entry.weight})'
      )
  if all(data_config.datasets[name].weight == 0 for name in order):
    raise DataConfigError('every dataset of config.data.order has weight 0 (evaluated only); give one a weight > 0')
  for key in ('image_size', 'heatmap_size'):
    size = tuple(data_config[key])
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
      raise DataConfigError(f'config.data.{key} must be (height, width) in pixels, two positive integers (got {size})')
  if data_config.num_workers < 0 or data_config.sigma <= 0:
    raise DataConfigError(
      'config.data.num_workers must be >= 0 and config.data.sigma > 0 '
      f'(got {data_config.num_workers} and {data_config.sigma})'
    )
  aug = data_config.aug
  for key in ('rotation_prob', 'flip_prob', 'half_body_prob'):
    if not 0 <= aug[key] <= 1:
      raise DataConfigError(f'config.data.aug.{key} is a probability in [0, 1] (got {aug[key]})')
  if not 0 <= aug.scale_factor < 1 or aug.rotation < 0:
    raise DataConfigError(
      'config.data.aug.scale_factor must be in [0, 1) (crops scaled by 1 ± it) and rotation '
      f'>= 0 (degrees, ±) (got {aug.scale_factor} and {aug.rotation})'
    )
