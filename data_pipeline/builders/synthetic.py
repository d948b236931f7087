"""tfds builder `posebh_synthetic`: the synthetic multi-skeleton dataset written as ArrayRecord.

Splits:
  `train_<format>` for each format in `posebh_jax.skeletons.TRAIN_FORMATS`: `num_train_per_format` examples,
    each annotated in that one format. Train images are disjoint across formats (example `i` of the `j`-th
    format is generator index `i * len(TRAIN_FORMATS) + j` of the generator's 'train' split).
  `validation`: `num_val` examples (generator split 'validation') with every format's ground truth.

Features (shared by all splits, only `tfds.features.Tensor` so that building and reading need no TensorFlow):
  image       bytes   JPEG (quality 90) of the RGB image
  image_id    int64   generator index (unique within the split family: train splits share one index space)
  height, width int64 image size in px
  category    bytes   b'human' | b'animal'
  bbox        float32 (4,) x, y, w, h in px;  area float32;  head_size float32 (px)
  joints3d    float32 (L, 3) camera-frame joints in mm;  intrinsics float32 (3, 3)
  keypoints   float32 (K, 3) x, y, visibility in the split's format (train splits); (0, 3) in validation
  keypoints_<fmt>  float32 (K_fmt, 3) for every format of both categories: in validation the example's
                   ground truth in `fmt`, zeros when its category has no such format; (0, 3) in train splits
  has_<fmt>   bool    the example is annotated in `fmt` (train: in `keypoints`; validation: in
                   `keypoints_<fmt>`)

The generation parameters are kept in the dataset's metadata (`info.metadata['generation']`).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from typing import Callable

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline.synthetic import FORMATS_BY_CATEGORY, generate_example
from posebh_jax.skeletons import TRAIN_FORMATS, get_format

TFDS_NAME = 'posebh_synthetic'
VALIDATION_SPLIT = 'validation'
JPEG_QUALITY = 90


def train_split_name(format_name: str) -> str:
  """Returns the train split holding examples annotated in `format_name`, e.g. 'train_coco'."""
  return f'train_{format_name}'


# Bump whenever a change to data_pipeline/synthetic alters generated images or labels: a preparation records
# it, so an old one is rebuilt (with --overwrite) instead of silently reused.
GENERATOR_VERSION = 3

# Every format the generator annotates (its FORMATS_BY_CATEGORY, human then animal), as stored in the dataset's
# features; `_check_generator_formats` keeps the two in step.
ALL_FORMATS = ('coco', 'aic', 'mpii', 'coco_wholebody', 'ochuman', 'crowdpose', 'halpe', 'ap10k', 'apt36k')


def all_formats() -> tuple[str, ...]:
  """Returns every format with a `keypoints_<fmt>` / `has_<fmt>` field (human formats, then animal ones)."""
  return ALL_FORMATS


def _check_generator_formats() -> None:
  generated = set(FORMATS_BY_CATEGORY['human']) | set(FORMATS_BY_CATEGORY['animal'])
  if generated != set(ALL_FORMATS) or not set(TRAIN_FORMATS) <= generated:
    raise ValueError(
      f'the synthetic generator annotates {sorted(generated)} but the builder stores '
      f'{sorted(ALL_FORMATS)}; update ALL_FORMATS in {__name__} and bump its VERSION'
    )


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
  """Generation parameters of `posebh_synthetic`.

  Attributes:
    num_train_per_format: examples in each `train_<format>` split.
    num_val: examples in the `validation` split.
    image_size: (H, W) of the generated images in px.
    difficulty: generator difficulty in [0, 1] (occlusion, clutter, pose range).
    seed: generator seed.
  """

  num_train_per_format: int = 1000
  num_val: int = 200
  image_size: tuple[int, int] = (256, 256)
  difficulty: float = 0.5
  seed: int = 0
  # Bumped whenever the generator's output changes, so an old preparation is not silently reused.
  generator_version: int = GENERATOR_VERSION

  def __post_init__(self):
    object.__setattr__(self, 'image_size', tuple(int(v) for v in self.image_size))
    if self.num_train_per_format < 1 or self.num_val < 1:
      raise ValueError(
        f'num_train_per_format and num_val must be >= 1, got {self.num_train_per_format} and {self.num_val}'
      )
    if len(self.image_size) != 2 or min(self.image_size) < 32:
      raise ValueError(f'image_size must be (H, W) with both sides >= 32 px, got {self.image_size}')
    if not 0.0 <= self.difficulty <= 1.0:
      raise ValueError(f'difficulty must be in [0, 1], got {self.difficulty}')

  def to_metadata(self) -> dict:
    """Returns the parameters as a JSON-serialisable dict."""
    return {
      'num_train_per_format': int(self.num_train_per_format),
      'num_val': int(self.num_val),
      'image_size': list(self.image_size),
      'difficulty': float(self.difficulty),
      'seed': int(self.seed),
      'generator_version': int(self.generator_version),
    }

  @classmethod
  def from_metadata(cls, metadata: dict) -> 'SyntheticParams':
    """Inverse of `to_metadata`."""
    return cls(
      num_train_per_format=int(metadata['num_train_per_format']),
      num_val=int(metadata['num_val']),
      image_size=tuple(metadata['image_size']),
      difficulty=float(metadata['difficulty']),
      seed=int(metadata['seed']),
      generator_version=int(metadata.get('generator_version', 0)),
    )


def _empty_keypoints() -> np.ndarray:
  return np.zeros((0, 3), np.float32)


def make_record(task: tuple) -> tuple[int, dict]:
  """Generates one example and converts it to a tfds record.

  Args:
    task: (key, generator_index, split, format_name | None, params_dict) where split is 'train' (then
      `format_name` is the annotation format) or 'validation' (format_name None).
  Returns:
    (key, record dict of numpy values / bytes matching the builder's features).
  """
  key, index, split, format_name, params = task
  example = generate_example(
    index,
    split,
    seed=params['seed'],
    annotate_format=format_name,
    image_size_hw=tuple(params['image_size']),
    difficulty=params['difficulty'],
  )
  image = np.asarray(example['image'], np.uint8)
  ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
  if not ok:
    raise RuntimeError(f'JPEG encoding failed for {split} example {index}')
  annotations = {name: np.asarray(kp, np.float32) for name, kp in example['keypoints'].items()}
  record = {
    'image': jpeg.tobytes(),
    'image_id': np.int64(index),
    'height': np.int64(image.shape[0]),
    'width': np.int64(image.shape[1]),
    'category': str(example['category']),
    'bbox': np.asarray(example['bbox'], np.float32).reshape(4),
    'area': np.float32(example['area']),
    'head_size': np.float32(example['head_size']),
    'joints3d': np.asarray(example['joints3d'], np.float32).reshape(-1, 3),
    'intrinsics': np.asarray(example['intrinsics'], np.float32).reshape(3, 3),
    'keypoints': annotations[format_name] if format_name is not None else _empty_keypoints(),
  }
  for name in all_formats():
    record[f'has_{name}'] = name in annotations
    if format_name is not None:
      record[f'keypoints_{name}'] = _empty_keypoints()
    elif name in annotations:
      record[f'keypoints_{name}'] = annotations[name]
    else:
      record[f'keypoints_{name}'] = np.zeros((get_format(name).num_keypoints, 3), np.float32)
  return key, record


class GenerationWorkers:
  """The generator processes of a synthetic builder: `map` runs a picklable function over tasks (in `num_workers`
  spawned processes, or in-process for <= 1; default all cores), in order, logging progress; `close` ends them."""

  def __init__(self, num_workers: int | None, log: Callable[[str], None]):
    self.num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    self.log = log
    self.pool = None

  def map(self, function, tasks: list, label: str):
    """Yields `function(task)` for each of `tasks` in order; logs '<label>: done/total examples (rate)' about ten
    times."""
    total = len(tasks)
    every = max(10, total // 10)
    start = time.perf_counter()
    if self.num_workers > 1:
      if self.pool is None:
        # spawn: the parent may hold JAX/grain threads, which fork would copy in a broken state.
        self.pool = multiprocessing.get_context('spawn').Pool(self.num_workers)
      results = self.pool.imap(function, tasks, chunksize=4)
    else:
      results = map(function, tasks)
    for done, result in enumerate(results, 1):
      yield result
      if done % every == 0 or done == total:
        rate = done / max(time.perf_counter() - start, 1e-9)
        self.log(f'{label}: {done}/{total} examples ({rate:.1f} examples/s)')

  def close(self) -> None:
    """Ends the worker processes (a later `map` starts new ones)."""
    if self.pool is not None:
      self.pool.close()
      self.pool.join()
      self.pool = None


class PosebhSynthetic(tfds.core.GeneratorBasedBuilder):
  """Builds the synthetic multi-skeleton dataset (see the module docstring for splits and features)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version: six train splits (one format each) and an all-format validation.'}
  # tfds derives this through importlib_resources (not installed) for classes inside a package.
  code_path = epath.Path(__file__)

  def __init__(
    self,
    *,
    params: SyntheticParams | None = None,
    num_workers: int | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs,
  ):
    """Keyword args: `params` (generation parameters; default `SyntheticParams()`), `num_workers`
    (generator processes; default all cores, <= 1 generates in-process), `log` (progress lines; default
    print), plus tfds builder args (`data_dir`, ...). The file format is ArrayRecord."""
    kwargs.setdefault('file_format', 'array_record')
    self._params = params or SyntheticParams()
    self._log = log or (lambda line: print(line, flush=True))
    self._workers = GenerationWorkers(num_workers, self._log)
    super().__init__(**kwargs)

  @property
  def params(self) -> SyntheticParams:
    """The generation parameters: those stored with the prepared data if any, else the requested ones."""
    stored = self.info.metadata.get('generation') if self.info.metadata else None
    return SyntheticParams.from_metadata(stored) if stored else self._params

  def _info(self) -> tfds.core.DatasetInfo:
    def tensor(shape, dtype):
      return tfds.features.Tensor(shape=shape, dtype=dtype)

    features = {
      'image': tensor((), np.object_),
      'image_id': tensor((), np.int64),
      'height': tensor((), np.int64),
      'width': tensor((), np.int64),
      'category': tensor((), np.object_),
      'bbox': tensor((4,), np.float32),
      'area': tensor((), np.float32),
      'head_size': tensor((), np.float32),
      'joints3d': tensor((None, 3), np.float32),
      'intrinsics': tensor((3, 3), np.float32),
      'keypoints': tensor((None, 3), np.float32),
    }
    for name in all_formats():
      features[f'keypoints_{name}'] = tensor((None, 3), np.float32)
      features[f'has_{name}'] = tensor((), np.bool_)
    return tfds.core.DatasetInfo(
      builder=self,
      description='Synthetic multi-skeleton pose dataset (procedural bipeds and quadrupeds).',
      features=tfds.features.FeaturesDict(features),
      metadata=tfds.core.MetadataDict(generation=self._params.to_metadata()),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    _check_generator_formats()
    params = self._params.to_metadata()
    n = self._params.num_train_per_format
    splits = {}
    for j, name in enumerate(TRAIN_FORMATS):
      tasks = [(i, i * len(TRAIN_FORMATS) + j, 'train', name, params) for i in range(n)]
      splits[train_split_name(name)] = self._generate_examples(train_split_name(name), tasks)
    val_tasks = [(i, i, 'validation', None, params) for i in range(self._params.num_val)]
    splits[VALIDATION_SPLIT] = self._generate_examples(VALIDATION_SPLIT, val_tasks)
    return splits

  def _generate_examples(self, split_name: str, tasks: list):
    yield from self._workers.map(make_record, tasks, f'{TFDS_NAME} {split_name}')

  def _download_and_prepare(self, dl_manager, download_config=None):
    try:
      return super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._workers.close()
