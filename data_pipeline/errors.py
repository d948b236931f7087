"""Errors of the data pipeline that a user can cause and fix."""

from posebh_jax.errors import UserError


class DatasetNotFoundError(FileNotFoundError):
  """A dataset was opened that is not prepared in the data directory.

  The message is one line and names the command that prepares it, e.g.
  `dataset 'posebh_synthetic' is not prepared in data/tfds; run: python -m data_pipeline.prepare synthetic
  --data_dir=data/tfds`.
  """


class RawDataError(ValueError):
  """Raw (official-layout) data that a builder cannot use: a missing or malformed annotation file, a record
  with a missing or wrong field, an unknown category, ...

  The message is one line naming the file, the record and the field, e.g.
  `/data/coco/annotations/person_keypoints_val2017.json: annotation id=183126 (#12): field 'keypoints' has 50
  values, expected 51 (17 keypoints x 3)`. `python -m data_pipeline.prepare` prints it as `error: ...` and
  exits with status 2.
  """


class DataConfigError(UserError):
  """A data config that the pipeline cannot serve: an unknown dataset name, a missing split, a global batch
  that cannot be split into the per-dataset composition across the devices or processes.

  The message is one line that says what to change, e.g. `global batch 20 cannot give each of 6 datasets a
  positive multiple of 8 examples (the batch shards); set config.batch_size to a multiple of 8 that is at least
  48 (e.g. 48)`.
  """
