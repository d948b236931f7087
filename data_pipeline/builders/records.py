"""Where a prepared dataset lives and the files written next to its records: the tfds builder of a prepared
dataset, its normalised ground truth (`gt_<split>.json`) and its per-record index (`records_<split>.npz`).

Shared by the real builders, which write these files, and the pipeline, which reads them.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipeline import builders
from data_pipeline.errors import DatasetNotFoundError

DET_SUFFIX = '_det'


def prepared_builder(tfds_name: str, data_dir: str):
  """The tfds builder of a dataset prepared in `data_dir` (registered through `data_pipeline.builders`).

  Raises:
    DatasetNotFoundError: the dataset is not prepared in `data_dir` (message names the prepare command).
  """
  import tensorflow_datasets as tfds  # lazy: only opening a prepared dataset needs tfds

  entry = builders.entry_for_tfds_name(tfds_name)
  if entry is not None:
    builders.builder_class(tfds_name)  # registers the builder with tfds
  if entry is None:
    how = f'no builder is registered for it (known: {", ".join(b.tfds_name for b in builders.BUILDERS.values())})'
  elif entry.prepare_name in builders.SYNTHETIC_DATASETS:
    how = f'run: python -m data_pipeline.prepare {entry.prepare_name} --data_dir={data_dir}'
  else:
    how = (
      f'run: python -m data_pipeline.prepare {entry.prepare_name} --manual_dir=<raw {entry.prepare_name} '
      f'directory> --data_dir={data_dir}'
    )
  message = f'dataset {tfds_name!r} is not prepared in {data_dir}; {how}'
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetNotFoundError(message) from None
  if not builders.is_prepared(builder):
    raise DatasetNotFoundError(message)
  return builder


def gt_file_name(split: str) -> str:
  """File name of the normalised ground truth of `split` inside the dataset directory ('gt_<split>.json')."""
  base = split[: -len(DET_SUFFIX)] if split.endswith(DET_SUFFIX) else split
  return f'gt_{base}.json'


# Per-record fields also stored in `records_<split>.npz` (in record order), so that evaluation can read the
# ground truth of every record without reading the images.
INDEX_FIELDS = ('image_id', 'instance_id', 'category_id', 'bbox', 'bbox_score', 'head_size', 'keypoints')


def index_file_name(split: str) -> str:
  """File name of the per-record index of `split` ('records_<split>.npz': `INDEX_FIELDS` arrays, record order)."""
  return f'records_{split}.npz'


def read_record_index(tfds_name: str, split: str, data_dir: str) -> dict[str, np.ndarray] | None:
  """The per-record index of a prepared real dataset's split ({field: array with one row per record}), or
  None when the dataset has none (the synthetic dataset)."""
  builder = prepared_builder(tfds_name, data_dir)
  path = os.path.join(os.fspath(builder.data_path), index_file_name(split))
  if not os.path.isfile(path):
    return None
  with np.load(path) as data:
    return {key: data[key] for key in data.files}


def gt_json_path(tfds_name: str, split: str, data_dir: str) -> str:
  """Path of the normalised COCO-format ground truth of a prepared real dataset's `split`.

  Args: `tfds_name` (e.g. 'coco_keypoints'), `split` (e.g. 'validation' or 'validation_det', which shares
  the gt of 'validation'), tfds `data_dir`.
  Raises: `DatasetNotFoundError` if the dataset is not prepared there; `ValueError` if the split has no
  ground-truth file (train splits, the synthetic dataset).
  """
  source_builder = prepared_builder(tfds_name, data_dir)
  path = os.path.join(os.fspath(source_builder.data_path), gt_file_name(split))
  if not os.path.isfile(path):
    raise ValueError(
      f'dataset {tfds_name!r} in {data_dir} has no ground-truth file for split {split!r} '
      f'({path}); ground truth is written for the evaluation splits of real datasets'
    )
  return path
