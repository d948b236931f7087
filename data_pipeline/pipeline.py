"""Multi-dataset grain pipelines over prepared tfds sources: fixed-composition train batches and eval batches.

Train: for each dataset in `config.data.order`, a grain MapDataset over its tfds ArrayRecord source is
globally shuffled (reshuffled every epoch), repeated forever, augmented (`TopDownTrainTransform`, seeded
per element), sharded by process and batched to the dataset's per-process count; the per-dataset batch
streams are zipped into one dict per step. Every stage before `to_iter_dataset` is a random-access
MapDataset, so the stream is a pure function of (seed, step): identical with or without worker processes,
and the iterator state is just a position.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from data_pipeline import builders
from data_pipeline import derived
from data_pipeline.builders import records
from data_pipeline.builders.records import prepared_builder
from data_pipeline.errors import DataConfigError, DatasetNotFoundError
from data_pipeline.transforms import PADDING, TopDownEvalTransform, TopDownTrainTransform, decode_jpeg
from posebh_jax import codecs
from posebh_jax.skeletons import get_format


# ----------------------------------------------------------------------------------------------- sources


def open_source(tfds_name: str, split: str, data_dir: str):
  """Opens a prepared tfds split as a random-access data source (a Sequence of record dicts).

  Raises:
    DatasetNotFoundError: the dataset is not prepared in `data_dir` (message names the prepare command).
    DataConfigError: the dataset has no split `split`.
  """
  builder = prepared_builder(tfds_name, data_dir)
  if split not in builder.info.splits:
    hint = ''
    if split.endswith('_det'):
      entry = builders.entry_for_tfds_name(tfds_name)
      hint = (
        f'; detector-box splits are built with: python -m data_pipeline.prepare '
        f'{entry.prepare_name if entry else tfds_name} --manual_dir=... --det_json=<detections json> '
        f'--data_dir={data_dir} --overwrite'
      )
    raise DataConfigError(
      f'dataset {tfds_name!r} in {data_dir} has no split {split!r}; it has: '
      f'{", ".join(sorted(builder.info.splits))}{hint}'
    )
  return builder.as_data_source(split=split)


class SelectedFieldsSource(Sequence):
  """Random-access view of a prepared tfds source that parses and decodes only `keys` of each record.

  tfds' numpy parser converts every feature of a record (29 for the synthetic data: all formats' keypoints,
  3D joints, ...); a train transform reads three, and parsing only those removes most of the per-record parse
  cost, a large share of the demo's input-pipeline CPU (figures: docs/MEASUREMENTS.md). Records equal the full
  source's restricted to `keys`.
  """

  def __init__(self, source, keys: Sequence[str]):
    from tensorflow_datasets.core import example_parser  # lazy: tfds is heavy and only tfds sources need it

    self.records = source.data_source
    features = source.dataset_info.features
    self.keys = tuple(keys)
    self.features = {key: features[key] for key in self.keys}
    self.parser = example_parser.ExampleParserNp(
      {key: feature.get_serialized_info() for key, feature in self.features.items()}
    )

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    parsed = self.parser.parse_example(self.records[index])
    return {key: self.features[key].decode_example_np(parsed[key]) for key in self.keys}


def select_fields(source, keys: Sequence[str]):
  """`SelectedFieldsSource(source, keys)` for a tfds ArrayRecord source whose features include every key as
  a top-level tensor; `source` itself otherwise (other sources, nested features)."""
  from tensorflow_datasets.core import features as features_lib  # lazy: tfds is heavy; see SelectedFieldsSource

  features = getattr(getattr(source, 'dataset_info', None), 'features', None)
  if not hasattr(source, 'data_source') or features is None:
    return source
  try:
    if not all(isinstance(features[key], features_lib.Tensor) for key in keys):
      return source
  except KeyError:
    return source
  return SelectedFieldsSource(source, keys)


def _dataset_config(data_config, name: str):
  if name not in data_config.datasets:
    raise DataConfigError(
      f'unknown dataset {name!r}; config.data.datasets has: {", ".join(sorted(data_config.datasets))}'
    )
  return data_config.datasets[name]


def trained_datasets(data_config) -> tuple[str, ...]:
  """The datasets of `data_config.order` that train: weight > 0. A dataset of weight 0 is evaluated only (e.g.
  OCHuman, or Halpe for the distillation student): it is in the model (its head, its expert) but in no batch."""
  return tuple(n for n in data_config.order if float(_dataset_config(data_config, n).weight) != 0)


def dataset_sizes(data_config) -> dict[str, int]:
  """Returns {dataset name: number of train examples} for the datasets of `data_config.order` that train."""
  sizes = {}
  for name in trained_datasets(data_config):
    cfg = _dataset_config(data_config, name)
    sizes[name] = len(open_source(cfg.tfds_name, cfg.train_split, data_config.data_dir))
  return sizes


# ----------------------------------------------------------------------------------------------- missing datasets

MISSING_POLICIES = ('error', 'skip')  # config.data.missing


def prepare_command(tfds_name: str, data_dir: str) -> str:
  """The `python -m data_pipeline.prepare ...` command that prepares tfds dataset `tfds_name` in `data_dir`, or a
  clause saying that no builder exists for it."""
  entry = builders.entry_for_tfds_name(tfds_name)
  if entry is None:
    known = ', '.join(b.tfds_name for b in builders.BUILDERS.values())
    return f'no builder is registered for {tfds_name!r} (known: {known})'
  if entry.prepare_name in builders.SYNTHETIC_DATASETS:
    return f'python -m data_pipeline.prepare {entry.prepare_name} --data_dir={data_dir}'
  raw = entry.prepare_name
  dataset3d = ''
  if '/' in tfds_name:  # one tfds config per dataset ('generic3d/aspset')
    raw = tfds_name.split('/', 1)[1]
    dataset3d = f' --dataset3d={raw}'
  return (
    f'python -m data_pipeline.prepare {entry.prepare_name}{dataset3d} --manual_dir=<raw {raw} directory> '
    f'--data_dir={data_dir}'
  )


def missing_train_split(data_config, name: str) -> str | None:
  """Why dataset `name`'s train split cannot be read from `data_config.data_dir` (a clause naming its tfds name,
  split and data_dir), or None when it is prepared."""
  entry = _dataset_config(data_config, name)
  split = entry.train_split if float(entry.weight) != 0 else entry.eval_split  # weight 0: evaluated only
  where = f"{'train' if split == entry.train_split else 'eval'} split {split!r} of tfds dataset {entry.tfds_name!r}"
  try:
    builder = prepared_builder(entry.tfds_name, data_config.data_dir)
  except DatasetNotFoundError:
    return f'{where} is not prepared in {data_config.data_dir}'
  if split not in builder.info.splits:
    return f'{where} is not in {data_config.data_dir} (it has: {", ".join(sorted(builder.info.splits))})'
  return None


def drop_missing_datasets(config):
  """Applies `config.data.missing` to the datasets of `config.data.order` whose train split is not prepared.

  Returns (config, dropped): with 'skip', a copy of `config` (locked as it was) without those datasets in
  `data.order`, `data.datasets`, `eval_datasets` and `transfer.new_datasets` / `init_like` (the others keep their
  weights, hence their ratios), and dropped = {name: why} in order; `config` itself and {} when none is missing.
  Raises DatasetNotFoundError (one line: dataset, tfds name, split, data_dir, prepare command) for a missing dataset
  under 'error', and DataConfigError when 'skip' leaves no dataset, or no dataset of a non-empty eval_datasets, or
  `missing` is neither.
  """
  data = config.data
  policy = data.get('missing', 'error')
  if policy not in MISSING_POLICIES:
    raise DataConfigError(f"config.data.missing is {policy!r}; use 'error' (stop) or 'skip' (train without them)")
  known = [name for name in data.order if name in data.datasets]  # unknown names: validate_config's message
  dropped = {name: why for name in known if (why := missing_train_split(data, name)) is not None}
  if not dropped:
    return config, {}
  if policy == 'error':
    name, why = next(iter(dropped.items()))
    entry = data.datasets[name]
    others = [n for n in dropped if n != name]
    more = f'; also not prepared: {", ".join(others)}' if others else ''
    raise DatasetNotFoundError(
      f'dataset {name!r}: {why}; run: {prepare_command(entry.tfds_name, data.data_dir)}{more} (or pass '
      '--config.data.missing=skip to train without the datasets that are not prepared)'
    )
  kept = tuple(name for name in data.order if name not in dropped)
  if not kept:
    raise DataConfigError(
      f'no dataset of config.data.order is prepared in {data.data_dir} (config.data.missing=skip dropped all '
      f'{len(dropped)}: {", ".join(dropped)}); prepare them with python -m data_pipeline.prepare, or fix '
      'config.data.data_dir'
    )
  evaluated = tuple(config.eval_datasets)
  if evaluated and all(name in dropped for name in evaluated):
    raise DataConfigError(
      f'config.data.missing=skip dropped every dataset of config.eval_datasets ({", ".join(evaluated)}: not '
      f'prepared in {data.data_dir}); prepare one of them, or set --config.eval_datasets to datasets of {kept}'
    )
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    resolved.data.order = kept
    for name in dropped:
      del resolved.data.datasets[name]
    resolved.eval_datasets = tuple(name for name in evaluated if name not in dropped)
    if 'transfer' in resolved:
      transfer = resolved.transfer
      transfer.new_datasets = tuple(n for n in transfer.new_datasets if n not in dropped)
      transfer.init_like = tuple(pair for pair in transfer.init_like if not set(pair) & set(dropped))
  return resolved, dropped


def missing_lines(dropped: Mapping[str, str]) -> list[str]:
  """One printed line per dataset `drop_missing_datasets` dropped, saying why."""
  return [f"skipped dataset {name!r} (config.data.missing=skip): {why}" for name, why in dropped.items()]


def describe_composition(counts: Mapping[str, int], num_groups: int) -> str:
  """One line: the per-dataset examples of one global batch (`composition`) with their shares, e.g. 'composition
  of the batch of 48 (1 shard): coco 18 (38%), aic 6 (12%), ...'."""
  total = sum(counts.values())
  shards = f'{num_groups} shards of {total // num_groups}' if num_groups > 1 else '1 shard'
  parts = ', '.join(f'{name} {count} ({count / total:.1%})' for name, count in counts.items())
  return f'composition of the batch of {total} ({shards}): {parts}'


# ----------------------------------------------------------------------------------------------- train

MAX_STEPS = 2**40  # length of the "infinite" train stream, in batches


def steps_per_epoch(data_config, global_batch_size: int) -> int:
  """Steps in one epoch: all datasets' training examples over the global batch, rounded up (at least 1)."""
  return max(1, -(-sum(dataset_sizes(data_config).values()) // global_batch_size))


def composition(data_config, global_batch_size: int, num_groups: int) -> dict[str, int]:
  """Per-dataset example counts of one global batch, in `data_config.order`.

  Each count is a positive multiple of `num_groups` (so every batch shard holds the same number of each
  dataset's examples); the counts sum to `global_batch_size` and follow the datasets' `weight`s by the
  largest-remainder method in units of `num_groups` (ties go to the dataset earlier in the order). Datasets of
  weight 0 (evaluated only, `trained_datasets`) are left out. Raises a one-line DataConfigError (a ValueError) when
  that is impossible.
  """
  if len(data_config.order) == 0:
    raise DataConfigError('config.data.order is empty; list the datasets to train on')
  every = np.array([float(_dataset_config(data_config, n).weight) for n in data_config.order])
  if np.any(every < 0):
    bad = [n for n, w in zip(data_config.order, every) if w < 0]
    raise DataConfigError(
      f'dataset weights must be > 0 (0: evaluated only); fix config.data.datasets.<name>.weight for: {", ".join(bad)}'
    )
  names = list(trained_datasets(data_config))
  if not names:
    raise DataConfigError('every dataset of config.data.order has weight 0 (evaluated only); give one a weight > 0')
  weights = np.array([float(_dataset_config(data_config, n).weight) for n in names])
  if num_groups < 1:
    raise ValueError(f'num_groups must be >= 1, got {num_groups}')
  count = len(names)
  if global_batch_size % num_groups or global_batch_size < count * num_groups:
    raise DataConfigError(
      f'global batch {global_batch_size} cannot give each of {count} datasets a positive multiple of '
      f'{num_groups} examples (the batch shards); set config.batch_size to a multiple of {num_groups} that '
      f'is at least {count * num_groups} (e.g. {count * num_groups})'
    )
  units = global_batch_size // num_groups
  quotas = units * weights / weights.sum()
  alloc = np.ones(count, np.int64)
  for _ in range(units - count):
    alloc[int(np.argmax(quotas - alloc))] += 1  # argmax takes the first of ties
  return {name: int(a) * num_groups for name, a in zip(names, alloc)}


def _worst_share_error(data_config, counts: Mapping[str, int]) -> tuple[float, str, float]:
  """The largest |share / weight share − 1| over datasets, that dataset's name and its weight share."""
  weights = {n: float(_dataset_config(data_config, n).weight) for n in counts}
  total_weight, total_count = sum(weights.values()), sum(counts.values())
  errors = {n: abs(counts[n] / total_count / (weights[n] / total_weight) - 1.0) for n in counts}
  name = max(errors, key=errors.get)
  return errors[name], name, weights[name] / total_weight


def mixture_note(
  data_config, global_batch_size: int, num_groups: int, counts: Mapping[str, int], tolerance: float = 0.25
) -> str | None:
  """A one-line note when the batch shards force a per-dataset mixture far from the weights (some dataset's
  share off by more than `tolerance` of its weight share, e.g. the demo's 3:1:1:1:1:1 at batch 48 on 8 shards
  is 8 of each), naming the nearest larger batch that keeps every share within 10 %; None when it is close."""
  worst, name, target = _worst_share_error(data_config, counts)
  if worst <= tolerance:
    return None
  message = (
    f'note: {num_groups} batch shards give {name} {counts[name]} of {global_batch_size} examples '
    f'({counts[name] / global_batch_size:.0%}) where its weight asks for {target:.0%}'
  )
  for candidate in range(global_batch_size + num_groups, 8 * global_batch_size + 1, num_groups):
    if _worst_share_error(data_config, composition(data_config, candidate, num_groups))[0] <= 0.1:
      return message + f'; --config.batch_size={candidate} keeps every dataset within 10 % of its weight'
  return message


def _ensure_absl_flags_parsed() -> None:
  # grain reads absl flags (e.g. in mp_prefetch); outside absl.app.run they are not parsed yet.
  from absl import flags  # lazy: only multi-process prefetch needs the flags parsed

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# Closing an mp_prefetch iterator sets the workers' stop event and joins each worker for up to this many seconds
# before killing it. A worker that had just handed one more element to its output queue hangs at exit in that
# queue's feeder thread (the parent no longer reads the pipe), so with grain 0.2.18 every close of a 2-worker
# iterator waited the full 25 s per hung worker, at the end of every training run (docs/MEASUREMENTS.md). The
# workers hold no state worth a graceful exit: their elements are deterministic functions of the iterator
# position.
_WORKER_JOIN_TIMEOUT_S = 2.0


def _shorten_worker_join_timeout() -> None:
  try:
    from grain._src.python.dataset.transformations import process_prefetch
  except ImportError:  # another grain layout: keep its own timeout
    return
  if getattr(process_prefetch, '_PROCESS_KILL_TIMEOUT_S', 0) > _WORKER_JOIN_TIMEOUT_S:
    process_prefetch._PROCESS_KILL_TIMEOUT_S = _WORKER_JOIN_TIMEOUT_S


def _dataset_seeds(seed: int, dataset_position: int) -> tuple[int, int]:
  shuffle_seed, augment_seed = np.random.SeedSequence([int(seed), dataset_position]).generate_state(2)
  return int(shuffle_seed), int(augment_seed)


def record_fields(transform) -> tuple[str, ...]:
  """The stored record fields a train transform reads: its `record_fields` (e.g. the 3D transforms'), else
  'image', 'bbox' and its `keypoints_key` (the 2D top-down transforms)."""
  fields = getattr(transform, 'record_fields', None)
  return tuple(fields) if fields is not None else ('image', 'bbox', transform.keypoints_key)


class _NameBatches(grain.transforms.Map):
  """Tuple of per-dataset batches -> {name: batch}."""

  def __init__(self, names: Sequence[str]):
    self.names = tuple(names)

  def map(self, batches):
    return dict(zip(self.names, batches))


def train_transform(
  data_config, name: str, camera_fov_deg: float | None = None, with_heatmaps: bool = True
) -> TopDownTrainTransform:
  """Returns the train transform of dataset `name` (its format, codec, half-body setting and config.data.aug);
  `camera_fov_deg` and `with_heatmaps` as `TopDownTrainTransform`'s."""
  cfg = _dataset_config(data_config, name)
  return TopDownTrainTransform(
    format_name=cfg.format,
    codec_name=cfg.codec,
    image_size_hw=tuple(data_config.image_size),
    heatmap_size_hw=tuple(data_config.heatmap_size),
    sigma=data_config.sigma,
    bbox_padding=data_config.bbox_padding,
    aug=data_config.aug,
    half_body=cfg.half_body,
    fast_decode=data_config.fast_jpeg_decode,
    camera_fov_deg=camera_fov_deg,
    with_heatmaps=with_heatmaps,
  )


def make_train_dataset(
  data_config,
  global_batch_size: int,
  num_groups: int,
  process_index: int = 0,
  process_count: int = 1,
  seed: int = 0,
  transforms: Mapping[str, Any] | None = None,
) -> grain.IterDataset:
  """The train pipeline as a grain IterDataset (see `make_train_iterator`)."""
  counts = composition(data_config, global_batch_size, num_groups)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count})')
  streams = []
  for position, name in enumerate(data_config.order):
    if name not in counts:  # evaluated only
      continue
    cfg = _dataset_config(data_config, name)
    if counts[name] % process_count:
      raise DataConfigError(
        f'dataset {name!r} gets {counts[name]} examples per batch, which '
        f'{process_count} processes cannot split evenly; use a global batch size and '
        f'device count such that every process holds whole batch shards'
      )
    stored = open_source(cfg.tfds_name, cfg.train_split, data_config.data_dir)
    transform = transforms[name] if transforms is not None else train_transform(data_config, name)
    source = derived.wrap_source(stored, cfg)
    if source is stored:  # annotated records: read only what the transform reads
      source = select_fields(stored, record_fields(transform))
    shuffle_seed, augment_seed = _dataset_seeds(seed, position)
    stream = (
      grain.MapDataset.source(source)
      .shuffle(seed=shuffle_seed)
      .repeat()  # reshuffles every epoch
      # Augmenting before sharding seeds each element by its global position, so that
      # processes never share augmentation draws.
      .random_map(transform, seed=augment_seed)
    )
    local_count = counts[name] // process_count
    # Zip needs equal lengths: cut every (nominally infinite) stream at the same number of steps.
    stream = stream[process_index::process_count][: local_count * MAX_STEPS]
    streams.append(stream.batch(local_count, drop_remainder=True))
  zipped = grain.experimental.ZipMapDataset(streams)
  buffer_size = max(1, int(data_config.prefetch_buffer_size))
  threads = max(1, min(buffer_size, os.cpu_count() or 1))
  dataset = zipped.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer_size))
  if int(data_config.num_workers) > 0:
    _ensure_absl_flags_parsed()
    _shorten_worker_join_timeout()
    dataset = dataset.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=int(data_config.num_workers), per_worker_buffer_size=buffer_size)
    )
  # Named after the worker hop: dicts coming back from worker processes lose their key order.
  return dataset.map(_NameBatches(tuple(counts)))


def make_train_iterator(
  data_config,
  global_batch_size: int,
  num_groups: int,
  process_index: int = 0,
  process_count: int = 1,
  seed: int = 0,
  transforms: Mapping[str, Any] | None = None,
) -> grain.DatasetIterator:
  """Infinite iterator of this process's share of the global train batches.

  Each element is {name: {'image': uint8 (n, H, W, 3), 'heatmaps': float32 (n, h, w, K_name),
  'target_weights': float32 (n, K_name)}} for name in `data_config.order`, n = composition count /
  `process_count`. Deterministic in `seed` (and independent of `data_config.num_workers`); supports
  `get_state()` / `set_state()` (e.g. through `grain.checkpoint.CheckpointSave/Restore`). Close it with
  `.close()` when done if it uses worker processes. `transforms` ({name: grain transform}, the trainer passes
  each dataset's task's) replaces the default top-down heatmap transform (`train_transform`); a transform
  reads the record fields of `record_fields(transform)` and returns the example's arrays.
  """
  return iter(
    make_train_dataset(data_config, global_batch_size, num_groups, process_index, process_count, seed, transforms)
  )


# ----------------------------------------------------------------------------------------------- eval


def _eval_keypoints_key(first_record: Mapping[str, Any], format_name: str) -> str:
  """The record field with `format_name`'s ground truth in an eval split ('keypoints_<fmt>' or 'keypoints'),
  judged from the split's first record (empty for an empty split)."""
  return f'keypoints_{format_name}' if f'keypoints_{format_name}' in first_record else 'keypoints'


def _eval_records(data_config, name: str):
  """(source, record indices with ground truth in the dataset's format, keypoints field) for `name`'s eval split."""
  cfg = _dataset_config(data_config, name)
  source = derived.wrap_source(open_source(cfg.tfds_name, cfg.eval_split, data_config.data_dir), cfg)
  first = source[0] if len(source) else {}
  key = _eval_keypoints_key(first, cfg.format)
  flag = f'has_{cfg.format}'
  if first and flag not in first:  # real datasets: every record is annotated in the format
    return source, np.arange(len(source), dtype=np.int64), key
  return source, _records_with_flag(source, flag), key


def _records_with_flag(source, flag: str) -> np.ndarray:
  """Indices of the records of `source` whose boolean field `flag` is set (absent counts as set), parsing only
  that field where the source allows it (whole synthetic records are costly to parse, see
  `SelectedFieldsSource`, and an evaluation scans its split several times per dataset: iterator, ground
  truth, pictures)."""
  lean = select_fields(source, (flag,))
  return np.asarray([i for i in range(len(lean)) if bool(lean[i].get(flag, True))], np.int64)


class _PaddedSelection(Sequence):
  """Random-access view of `source` at `indices`, padded up to `length` with `PADDING` records."""

  def __init__(self, source, indices: np.ndarray, length: int):
    self.source, self.indices, self.length = source, indices, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, position: int):
    if position >= len(self.indices):
      return PADDING
    record = self.source[int(self.indices[position])]
    if 'instance_id' not in record:  # synthetic: the annotation id of `eval_ground_truth`
      record = dict(record, instance_id=np.int64(position + 1))
    return record


def make_eval_iterator(data_config, name: str, batch_size: int):
  """Iterator over the eval split of dataset `name` in fixed order (one pass).

  Yields batches {'image': uint8 (B, H, W, 3), 'center': float32 (B, 2), 'scale': float32 (B, 2),
  'bbox': float32 (B, 4) xywh px, 'bbox_score': float32 (B,), 'image_id': int64 (B,), 'instance_id': int64
  (B,), 'category_id': int64 (B,), 'valid': bool (B,)}, B = `batch_size`; the last batch is padded with
  valid=False examples. Only examples annotated in the dataset's format are used (for the synthetic
  validation split: those whose category has the format); the order matches `eval_ground_truth`'s arrays.
  Real datasets: one example per instance record (several per image), `bbox_score` is the detector's score
  in `<split>_det` splits (1 for ground-truth boxes), `instance_id` is the gt annotation id for
  ground-truth-box splits, and results should carry `category_id` (AP-10K / APT-36K: the species).
  """
  if batch_size < 1:
    raise ValueError(f'eval batch size must be >= 1, got {batch_size}')
  cfg = _dataset_config(data_config, name)
  source, indices, _ = _eval_records(data_config, name)
  transform = TopDownEvalTransform(
    tuple(data_config.image_size), data_config.bbox_padding, use_udp=codecs.get_codec(cfg.codec).use_udp
  )
  return padded_batches(source, indices, batch_size, transform)


def padded_batches(source, indices: np.ndarray, batch_size: int, transform):
  """Iterator over the records of `source` at `indices`, in that order (one pass), mapped by `transform` (a grain Map
  that turns `PADDING` into a padding example) in batches of `batch_size`; the last batch is padded with `PADDING`
  records. A record without `instance_id` gets its position + 1 (the synthetic eval splits)."""
  padded = -(-len(indices) // batch_size) * batch_size
  dataset = grain.MapDataset.source(_PaddedSelection(source, indices, padded)).map(transform).batch(batch_size)
  threads = max(1, min(4, os.cpu_count() or 1))
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2)))


def make_eval_records_iterator(data_config, name: str, batch_size: int, transform, fields: Sequence[str]):
  """Iterator over every record of dataset `name`'s eval split in stored order (one pass), each read with only
  `fields` and mapped by `transform` (a grain Map that turns `PADDING` into a padding example), in batches of
  `batch_size`; the last batch is padded with `PADDING` records. For tasks whose eval split holds one example per
  record in the dataset's format (the 3D datasets: `tasks.metrabs` with `transforms3d.Pose3DEvalTransform`)."""
  if batch_size < 1:
    raise ValueError(f'eval batch size must be >= 1, got {batch_size}')
  source = eval_records(data_config, name, fields)
  return padded_batches(source, np.arange(len(source), dtype=np.int64), batch_size, transform)


def eval_records(data_config, name: str, fields: Sequence[str]):
  """Random-access source of dataset `name`'s eval split that reads only `fields` of each record."""
  cfg = _dataset_config(data_config, name)
  return select_fields(open_source(cfg.tfds_name, cfg.eval_split, data_config.data_dir), tuple(fields))


def eval_ground_truth(data_config, name: str) -> dict[str, Any]:
  """COCO-format ground truth of dataset `name`'s eval split, in `make_eval_iterator`'s order.

  Returns {'images': [{id, width, height, file_name}], 'annotations': [{id, image_id, category_id 1,
  keypoints [x, y, v] * K flattened, num_keypoints, bbox xywh, area, iscrowd 0}], 'categories':
  [{id 1, name, supercategory, keypoints (names), skeleton (1-based links)}]} plus numpy arrays for
  PCKh-style metrics: 'keypoints' float32 (N, K, 3), 'head_size' float32 (N,) px, 'image_ids' int64 (N,).
  (Drop the numpy entries before writing it as JSON.) Also 'instance_ids' int64 (N,): the annotation id of
  each example (= the `instance_id` of `make_eval_iterator`'s batches).

  Real datasets (prepared by a real builder): 'images', 'annotations' and 'categories' are the split's stored
  official ground truth (`gt_<split>.json`, see `data_pipeline.builders.real`: every annotation of every
  stored image, several persons per image, crowd and unlabelled ones included, the dataset's own category
  ids and fields such as `area` only where the dataset has them); the numpy arrays hold one row per eval
  record (instance) in iterator order: 'keypoints' (N, K, 3), 'head_size', 'image_ids', 'instance_ids',
  'category_ids', 'bbox' (N, 4) and 'bbox_score' (N,) (detector splits: zero keypoints, detection boxes and
  scores). 'gt_path' is the json file.
  """
  cfg = _dataset_config(data_config, name)
  skeleton = get_format(cfg.format)
  real_gt = _real_ground_truth(data_config, cfg, skeleton)
  if real_gt is not None:
    return real_gt
  source, indices, key = _eval_records(data_config, name)
  images, annotations = [], []
  keypoints = np.zeros((len(indices), skeleton.num_keypoints, 3), np.float32)
  head_sizes = np.zeros(len(indices), np.float32)
  image_ids = np.zeros(len(indices), np.int64)
  for position, index in enumerate(indices):
    record = source[int(index)]
    kps = np.asarray(record[key], np.float32)
    if kps.shape != keypoints.shape[1:]:
      raise ValueError(
        f'{name}: eval record {index} has keypoints of shape {kps.shape}, expected '
        f'{keypoints.shape[1:]} for format {cfg.format!r}; check data.datasets.{name}'
      )
    image_id = int(record['image_id'])
    height, width = _image_hw(record)
    keypoints[position], head_sizes[position] = kps, float(record.get('head_size', 0.0))
    image_ids[position] = image_id
    images.append({'id': image_id, 'width': width, 'height': height, 'file_name': f'{image_id:012d}.jpg'})
    annotations.append(
      {
        'id': position + 1,
        'image_id': image_id,
        'category_id': 1,
        'keypoints': [float(v) for v in kps.reshape(-1)],
        'num_keypoints': int(np.count_nonzero(kps[:, 2] > 0)),
        'bbox': [float(v) for v in np.asarray(record['bbox']).reshape(4)],
        'area': float(record['area']),
        'iscrowd': 0,
      }
    )
  category = {
    'id': 1,
    'name': 'person' if skeleton.category == 'human' else skeleton.category,
    'supercategory': skeleton.category,
    'keypoints': list(skeleton.keypoint_names),
    'skeleton': [[int(i) + 1, int(j) + 1] for i, j in skeleton.links],
  }
  return {
    'images': images,
    'annotations': annotations,
    'categories': [category],
    'keypoints': keypoints,
    'head_size': head_sizes,
    'image_ids': image_ids,
    'instance_ids': np.arange(1, len(indices) + 1, dtype=np.int64),
  }


def _real_ground_truth(data_config, cfg, skeleton) -> dict[str, Any] | None:
  """`eval_ground_truth` of a real dataset (its stored gt json and record index), or None (synthetic data)."""
  if cfg.keypoints_from != 'annotation':
    return None
  index = records.read_record_index(cfg.tfds_name, cfg.eval_split, data_config.data_dir)
  if index is None:
    return None
  path = records.gt_json_path(cfg.tfds_name, cfg.eval_split, data_config.data_dir)
  with open(path) as f:
    gt = json.load(f)
  keypoints = np.asarray(index['keypoints'], np.float32)
  if keypoints.shape[1:] != (skeleton.num_keypoints, 3):
    raise ValueError(
      f'{cfg.tfds_name} {cfg.eval_split}: records have keypoints of shape {keypoints.shape[1:]}, '
      f'expected ({skeleton.num_keypoints}, 3) for format {cfg.format!r}; check the format of '
      f'this dataset entry in config.data.datasets'
    )
  return {
    'images': gt['images'],
    'annotations': gt['annotations'],
    'categories': gt['categories'],
    'keypoints': keypoints,
    'head_size': np.asarray(index['head_size'], np.float32),
    'image_ids': np.asarray(index['image_id'], np.int64),
    'instance_ids': np.asarray(index['instance_id'], np.int64),
    'category_ids': np.asarray(index['category_id'], np.int64),
    'bbox': np.asarray(index['bbox'], np.float32),
    'bbox_score': np.asarray(index['bbox_score'], np.float32),
    'gt_path': path,
  }


def _image_hw(record: Mapping[str, Any]) -> tuple[int, int]:
  if 'height' in record and 'width' in record:
    return int(record['height']), int(record['width'])
  return tuple(int(v) for v in decode_jpeg(record['image']).shape[:2])


__all__ = [
  'DatasetNotFoundError',
  'composition',
  'dataset_sizes',
  'eval_ground_truth',
  'make_eval_iterator',
  'make_eval_records_iterator',
  'make_train_dataset',
  'make_train_iterator',
  'open_source',
  'record_fields',
  'train_transform',
]
