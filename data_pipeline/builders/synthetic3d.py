"""tfds builder `posebh_synthetic3d`: synthetic 3D datasets in several skeleton formats, in the 3D record layout
(`data_pipeline/builders/records3d.py`), from the embedded generator's human examples.

Formats: `data_pipeline.synthetic.formats3d.SYNTHETIC_FORMAT_NAMES` ('syn_smpl' 24 joints, 'syn_h36m' 17,
'syn_markers' 33), each computed from an example's camera-frame landmarks (`joints_in_format`).

Splits (every split holds one format; the record's `format` field and J follow it):
  `train_<format>`: `num_train_per_format` examples annotated in that format. Train images are disjoint across
    formats (example `i` of the `j`-th format is generator index `i * len(formats) + j`).
  `validation_<format>`: the same `num_val` validation images (generator split 'validation', index `i`) in every
    split, each with its format's ground truth, plus `gt_validation_<format>.json` (records3d's gt layout) for
    `python -m posebh_jax.evaluate`. One split per format keeps each format's evaluation an ordinary one-format
    evaluation, and cross-format checks pair records by position (or by image_id, equal across these splits).

J differs between splits, so the dataset declares `joints3d` (None, 3) and `valid` (None,) (`records3d.
tfds_features(None)`); every record is checked with `records3d.make_record` against its split's J.

Examples: the generator's humans (`generate_example(..., annotate_format=ANNOTATE_FORMAT)`; its 2D keypoints are not
used). The 2D dataset `posebh_synthetic` never renders (split, annotate_format) = ('train' | 'validation',
ANNOTATE_FORMAT) (its train splits use TRAIN_FORMATS, its validation annotate_format None), so the 3D images are
other images than the 2D dataset's. Record fields: image = JPEG q90; file_name '<generator split>/<index>.jpg';
image_id = instance_id = generator index + 1; bbox = the generator's visible-silhouette box; intrinsics = the
generator's (no distortion); valid all True; mask b''; sequence '<generator split>_<index>' (each example its own
sequence: the poses are independent, nothing is a near-duplicate); camera 'synthetic'; frame 0.

The generation parameters are kept in the dataset's metadata (`info.metadata['generation']`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline.builders import records3d
from data_pipeline.builders.records import gt_file_name
from data_pipeline.builders.synthetic import JPEG_QUALITY, GenerationWorkers, SyntheticParams
from data_pipeline.synthetic import generate_example
from data_pipeline.synthetic import formats3d
from posebh_jax.skeletons import TRAIN_FORMATS, get_format3d

TFDS_NAME = 'posebh_synthetic3d'
FORMATS = formats3d.SYNTHETIC_FORMAT_NAMES
# A human format the 2D builder never trains on: it fixes the generator's category and keeps the images apart
# from posebh_synthetic's (see the module docstring).
ANNOTATE_FORMAT = 'ochuman'
if ANNOTATE_FORMAT in TRAIN_FORMATS:  # pragma: no cover - guards a registry change
  raise ValueError(f'{ANNOTATE_FORMAT} became a 2D train format; choose another ANNOTATE_FORMAT for {TFDS_NAME}')


def train_split_name(format_name: str) -> str:
  """The train split of synthetic 3D format `format_name`, e.g. 'train_syn_h36m'."""
  return f'train_{format_name}'


def validation_split_name(format_name: str) -> str:
  """The validation split of synthetic 3D format `format_name`, e.g. 'validation_syn_h36m'."""
  return f'validation_{format_name}'


@dataclasses.dataclass(frozen=True)
class Synthetic3DParams(SyntheticParams):
  """Generation parameters of `posebh_synthetic3d`: those of the 2D synthetic data (`SyntheticParams`:
  num_train_per_format examples in each `train_<format>` split, num_val in each `validation_<format>` split (the same
  images in all of them), image_size, difficulty, seed, generator_version) plus `formats_version`, bumped when a
  synthetic 3D format's definition changes, so an old preparation is not silently reused."""

  formats_version: int = formats3d.FORMATS3D_VERSION

  def __post_init__(self):
    super().__post_init__()
    if self.seed < 0:
      raise ValueError(f'seed must be >= 0, got {self.seed}')

  def to_metadata(self) -> dict:
    """Returns the parameters as a JSON-serialisable dict."""
    return {**super().to_metadata(), 'formats_version': int(self.formats_version)}

  @classmethod
  def from_metadata(cls, metadata: dict) -> 'Synthetic3DParams':
    """Inverse of `to_metadata`."""
    base = SyntheticParams.from_metadata(metadata)
    return cls(**dataclasses.asdict(base), formats_version=int(metadata.get('formats_version', 0)))

  @classmethod
  def from_settings(cls, settings) -> 'Synthetic3DParams':
    """Parameters from a config section (a mapping or ConfigDict with any of the attribute names; the rest
    default), e.g. `config.data.synthetic3d`, or `config.data.synthetic` whose sizes the 3D data then shares."""
    defaults = cls()
    get = settings.get if hasattr(settings, 'get') else lambda key, default: getattr(settings, key, default)
    return cls(
      num_train_per_format=int(get('num_train_per_format', defaults.num_train_per_format)),
      num_val=int(get('num_val', defaults.num_val)),
      image_size=tuple(get('image_size', defaults.image_size)),
      difficulty=float(get('difficulty', defaults.difficulty)),
      seed=int(get('seed', defaults.seed)),
    )


def render_example(task: tuple) -> tuple[int, dict]:
  """Renders one human example and returns its format-independent fields.

  Args:
    task: (key, generator_index, generator split 'train' | 'validation', params dict of `to_metadata`).
  Returns:
    (key, {'image' JPEG bytes, 'file_name', 'image_id', 'instance_id', 'height', 'width', 'bbox', 'intrinsics',
    'sequence', 'camera', 'frame', 'landmarks' float32 (L, 3) camera-frame mm}).
  """
  key, index, split, params = task
  example = generate_example(
    index,
    split,
    seed=params['seed'],
    annotate_format=ANNOTATE_FORMAT,
    image_size_hw=tuple(params['image_size']),
    difficulty=params['difficulty'],
  )
  image = np.asarray(example['image'], np.uint8)
  ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
  if not ok:
    raise RuntimeError(f'JPEG encoding failed for {split} example {index}')
  return key, {
    'image': jpeg.tobytes(),
    'file_name': f'{split}/{index:06d}.jpg',
    'image_id': np.int64(index + 1),
    'instance_id': np.int64(index + 1),
    'height': np.int64(image.shape[0]),
    'width': np.int64(image.shape[1]),
    'bbox': np.asarray(example['bbox'], np.float32).reshape(4),
    'intrinsics': np.asarray(example['intrinsics'], np.float32).reshape(3, 3),
    'sequence': f'{split}_{index:06d}',
    'camera': 'synthetic',
    'frame': np.int64(0),
    'landmarks': np.asarray(example['joints3d'], np.float32),
  }


def format_record(rendered: dict, format_name: str) -> dict:
  """The records3d record of a rendered example (`render_example`'s dict) in synthetic 3D format `format_name`."""
  joints, valid = formats3d.joints_in_format(rendered['landmarks'], format_name)
  fields = {k: v for k, v in rendered.items() if k != 'landmarks'}
  fields.update(joints3d=joints, valid=valid, format=format_name)
  return records3d.make_record(fields, get_format3d(format_name).num_joints)


class PosebhSynthetic3d(tfds.core.GeneratorBasedBuilder):
  """Builds the synthetic 3D datasets (see the module docstring for splits and fields)."""

  name = TFDS_NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version: syn_smpl, syn_h36m, syn_markers; train and validation split per format.'}
  code_path = epath.Path(__file__)

  def __init__(
    self,
    *,
    params: Synthetic3DParams | None = None,
    num_workers: int | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs,
  ):
    """Keyword args: `params` (default `Synthetic3DParams()`), `num_workers` (generator processes; default all
    cores, <= 1 generates in-process), `log` (progress lines; default print), plus tfds builder args (`data_dir`,
    ...). The file format is ArrayRecord."""
    kwargs.setdefault('file_format', 'array_record')
    self._params = params or Synthetic3DParams()
    self._log = log or (lambda line: print(line, flush=True))
    self._workers = GenerationWorkers(num_workers, self._log)
    self._validation: list | None = None
    super().__init__(**kwargs)

  @property
  def params(self) -> Synthetic3DParams:
    """The generation parameters: those stored with the prepared data if any, else the requested ones."""
    stored = self.info.metadata.get('generation') if self.info.metadata else None
    return Synthetic3DParams.from_metadata(stored) if stored else self._params

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='Synthetic 3D human poses in several skeleton formats (procedural bipeds, camera-frame joints).',
      features=records3d.tfds_features(None),
      metadata=tfds.core.MetadataDict(generation=self._params.to_metadata()),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    params = self._params.to_metadata()
    n, f = self._params.num_train_per_format, len(FORMATS)
    splits = {}
    for j, name in enumerate(FORMATS):
      tasks = [(i, i * f + j, 'train', params) for i in range(n)]
      splits[train_split_name(name)] = self._generate_examples(train_split_name(name), name, tasks)
    for name in FORMATS:
      splits[validation_split_name(name)] = self._generate_examples(validation_split_name(name), name, None)
    return splits

  def _rendered(self, split_name: str, tasks: list):
    return self._workers.map(render_example, tasks, f'{TFDS_NAME} {split_name}')

  def _validation_examples(self) -> list:
    """The rendered validation examples, generated once and shared by every `validation_<format>` split."""
    if self._validation is None:
      params = self._params.to_metadata()
      tasks = [(i, i, 'validation', params) for i in range(self._params.num_val)]
      self._validation = list(self._rendered('validation', tasks))
    return self._validation

  def _generate_examples(self, split_name: str, format_name: str, tasks: list | None):
    """Yields (key, record) of a split; `tasks` None: the shared validation images, and writes the split's gt."""
    rendered = self._rendered(split_name, tasks) if tasks is not None else iter(self._validation_examples())
    kept = []
    for key, example in rendered:
      record = format_record(example, format_name)
      if tasks is None:
        kept.append({k: record[k] for k in ('instance_id', 'image_id', 'joints3d', 'valid')})
      yield key, record
    if tasks is None:
      fmt = get_format3d(format_name)
      gt = records3d.gt_json(kept, fmt.suffixed_names, fmt.suffixed_names[fmt.index(fmt.root)])
      with open(os.path.join(self.data_dir, gt_file_name(split_name)), 'w') as f:
        json.dump(gt, f)

  def _download_and_prepare(self, dl_manager, download_config=None):
    try:
      return super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._validation = None
      self._workers.close()
