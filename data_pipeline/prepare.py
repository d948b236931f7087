"""Prepares a dataset as tfds ArrayRecord files (once, before training).

  python -m data_pipeline.prepare synthetic [--num_train N] [--num_val N] [--data_dir DIR]
      [--image_size H,W] [--difficulty D] [--seed S] [--num_workers N] [--overwrite]
  python -m data_pipeline.prepare synthetic3d [--config=CONFIG] [same flags as synthetic]
  python -m data_pipeline.prepare <real dataset> --manual_dir=RAW_DIR [--data_dir DIR] [--det_json FILE]
      [--det_score_threshold T] [--ann_file SPLIT=PATH ...] [--image_dir SPLIT=DIR ...] [--headboxes FILE]
      [--ap10k_split N] [--overwrite]

Real datasets: coco_keypoints, aic, mpii, ap10k, apt36k, coco_wholebody, ochuman, crowdpose, halpe,
interhand, 3dpw (raw layouts: see data_pipeline/builders/*.py). 3D datasets (the records3d layout): h36m,
mpi_inf_3dhp, panoptic, pw3d_3d, and generic3d --dataset3d=NAME for any of the 28 from the generic per-example
layout; `--label_only` keeps examples without images, `--option KEY=VALUE` sets builder options. `--det_json` adds
a detector-box eval split (`validation_det`; CrowdPose `test_det`). Skipped records are counted and listed at the end.

`--num_train` is per train format. An existing preparation with the same parameters is kept; one with
different parameters is rebuilt only with `--overwrite`. No TensorFlow is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Callable

import tensorflow_datasets as tfds

from data_pipeline import builders
from data_pipeline.builders import real, synthetic

DEFAULT_DATA_DIR = 'data/tfds'


def _print(line: str) -> None:
  print(line, flush=True)


def _directory_bytes(path) -> int:
  return sum(f.stat().st_size for f in pathlib.Path(os.fspath(path)).rglob('*') if f.is_file())


def _summary(builder, seconds: float, built: bool) -> dict:
  """The common part of a preparation summary: path, splits {split: examples}, bytes, seconds, examples_per_s
  (0 when nothing was built) and built."""
  splits = {split: int(info.num_examples) for split, info in builder.info.splits.items()}
  total = sum(splits.values())
  return {
    'path': str(builder.data_path),
    'splits': splits,
    'bytes': _directory_bytes(builder.data_path),
    'seconds': seconds,
    'examples_per_s': total / seconds if built and seconds > 0 else 0.0,
    'built': built,
  }


def prepare_synthetic(
  data_dir: str = DEFAULT_DATA_DIR,
  params=None,
  num_workers: int | None = None,
  overwrite: bool = False,
  log: Callable[[str], None] = _print,
) -> dict:
  """Builds `posebh_synthetic` in `data_dir` (no-op if already built with the same parameters).

  Args:
    data_dir: tfds data directory.
    params: `builders.synthetic.SyntheticParams` (default parameters if None).
    num_workers: generator processes (default: all cores).
    overwrite: rebuild when the existing preparation has different parameters.
    log: receives progress and summary lines.
  Returns:
    summary dict: `path`, `splits` {split: num examples}, `bytes`, `seconds`, `examples_per_s`
    (0 when nothing was built), `built` (bool).
  Raises:
    ValueError: prepared with different parameters and `overwrite` is False.
  """
  params = params or synthetic.SyntheticParams()
  return _prepare_generated(
    synthetic.PosebhSynthetic, synthetic.TFDS_NAME, data_dir, params, num_workers, overwrite, log
  )


def prepare_synthetic3d(
  data_dir: str = DEFAULT_DATA_DIR,
  params=None,
  num_workers: int | None = None,
  overwrite: bool = False,
  log: Callable[[str], None] = _print,
) -> dict:
  """Builds `posebh_synthetic3d` (the synthetic 3D datasets, `data_pipeline/builders/synthetic3d.py`) in `data_dir`
  (no-op if already built with the same parameters). Args, return value and errors as `prepare_synthetic`'s, with
  `params` a `builders.synthetic3d.Synthetic3DParams`."""
  from data_pipeline.builders import synthetic3d  # pylint: disable=g-import-not-at-top

  params = params or synthetic3d.Synthetic3DParams()
  return _prepare_generated(
    synthetic3d.PosebhSynthetic3d, synthetic3d.TFDS_NAME, data_dir, params, num_workers, overwrite, log
  )


def _prepare_generated(builder_class, tfds_name: str, data_dir: str, params, num_workers, overwrite: bool, log) -> dict:
  """Builds a generated (synthetic) dataset with `builder_class(data_dir=, params=, num_workers=, log=)` unless it
  is already prepared with `params`; another preparation is replaced only with `overwrite`. Returns the summary."""

  def make():
    return builder_class(data_dir=data_dir, params=params, num_workers=num_workers, log=log)

  builder, built, start = make(), False, time.perf_counter()
  if builders.is_prepared(builder) and builder.params != params:
    if not overwrite:
      raise ValueError(
        f'{tfds_name} in {data_dir} was built with {builder.params.to_metadata()}; pass '
        f'--overwrite to rebuild it with {params.to_metadata()}, or use another --data_dir'
      )
    log(f'removing {builder.data_path} (built with other parameters)')
    shutil.rmtree(builder.data_path)
    builder = make()
  if builders.is_prepared(builder):
    log(f'{tfds_name} is already prepared in {builder.data_path} with these parameters')
  else:
    log(f'building {tfds_name} into {data_dir} with {params.to_metadata()}')
    tfds.disable_progress_bar()
    builder.download_and_prepare()
    built = True
  return _summary(builder, time.perf_counter() - start, built)


def prepare_real(
  name: str,
  manual_dir: str | None,
  data_dir: str = DEFAULT_DATA_DIR,
  *,
  det_json: str | None = None,
  det_score_threshold: float | None = None,
  annotation_files: dict | None = None,
  image_dirs: dict | None = None,
  options: dict | None = None,
  overwrite: bool = False,
  log: Callable[[str], None] = _print,
) -> dict:
  """Builds the real dataset `name` (a `builders.REAL_DATASETS` entry) from its raw layout in `manual_dir`.

  Args:
    name: prepare name, e.g. 'coco_keypoints', 'interhand', '3dpw'.
    manual_dir: raw dataset directory (official layout; see the builder's module docstring).
    data_dir: tfds data directory.
    det_json: detection results json adding the `<split>_det` split; det_score_threshold: its minimum score
      (default `real.DEFAULT_DET_SCORE_THRESHOLD`).
    annotation_files / image_dirs: {split: path} overrides of the layout.
    options: builder-specific options (MPII 'headboxes', AP-10K 'ap10k_split').
    overwrite: rebuild when the existing preparation was made from other raw-source settings.
    log: receives progress and summary lines.
  Returns:
    summary dict as `prepare_synthetic`'s, plus `skipped` {split: {reason: count}} and `skipped_lines`.
  Raises:
    RawDataError (a ValueError): unusable raw data (one line naming the file, record and field).
    ValueError: prepared from other settings and `overwrite` is False.
  """
  if name not in builders.REAL_DATASETS:
    raise ValueError(f'unknown real dataset {name!r}; known: {", ".join(builders.REAL_DATASETS)}')
  entry = builders.BUILDERS[name]
  cls = builders.builder_class(entry.tfds_name)
  threshold = real.DEFAULT_DET_SCORE_THRESHOLD if det_score_threshold is None else float(det_score_threshold)

  def make():
    return cls(
      data_dir=data_dir,
      manual_dir=manual_dir,
      annotation_files=annotation_files,
      image_dirs=image_dirs,
      det_json=det_json,
      det_score_threshold=threshold,
      options=options,
      log=log,
    )

  builder = make()
  built = False
  start = time.perf_counter()
  if builders.is_prepared(builder) and builder.stored_source != builder.source_settings():
    if not overwrite:
      raise ValueError(
        f'{entry.tfds_name} in {data_dir} was prepared from {builder.stored_source}; pass '
        f'--overwrite to rebuild it from {builder.source_settings()}, or use another --data_dir'
      )
    log(f'removing {builder.data_path} (prepared from other raw-source settings)')
    shutil.rmtree(builder.data_path)
    builder = make()
  if builders.is_prepared(builder):
    log(f'{entry.tfds_name} is already prepared in {builder.data_path} from these settings')
    skipped = dict(builder.info.metadata.get('skipped', {}))
    lines = [
      f'{split}: {count} {reason.replace("_", " ")}'
      for split, reasons in sorted(skipped.items())
      for reason, count in sorted(reasons.items())
    ]
  else:
    log(f'building {entry.tfds_name} into {data_dir} from {manual_dir}')
    tfds.disable_progress_bar()
    builder.download_and_prepare()
    built = True
    skipped, lines = builder.skipped.summary(), builder.skipped.lines()
  return {
    **_summary(builder, time.perf_counter() - start, built),
    'skipped': skipped,
    'skipped_lines': lines,
  }


def _parse_split_paths(values, flag: str) -> dict[str, str]:
  out = {}
  for value in values or ():
    split, sep, path = value.partition('=')
    if not sep or not split or not path:
      raise ValueError(f'{flag} expects SPLIT=PATH (e.g. validation=annotations/val.json), got {value!r}')
    out[split] = path
  return out


def _run_real(args) -> dict:
  options = {}
  if args.headboxes:
    options['headboxes'] = args.headboxes
  if args.ap10k_split is not None:
    options['ap10k_split'] = args.ap10k_split
  if args.label_only:
    options['label_only'] = True
  if args.dataset3d is not None:
    options['dataset3d'] = args.dataset3d
  options.update(_parse_options(args.option))
  if args.manual_dir is None and not args.ann_file:
    raise ValueError(f'{args.dataset} needs --manual_dir=<directory with the raw dataset in its official layout>')
  return prepare_real(
    args.dataset,
    args.manual_dir,
    args.data_dir,
    det_json=args.det_json,
    det_score_threshold=args.det_score_threshold,
    annotation_files=_parse_split_paths(args.ann_file, '--ann_file'),
    image_dirs=_parse_split_paths(args.image_dir, '--image_dir'),
    options=options,
    overwrite=args.overwrite,
  )


def _parse_options(values) -> dict:
  """`--option KEY=VALUE` flags -> {key: value}; a value that parses as JSON (numbers, true/false) is parsed."""
  out = {}
  for value in values or ():
    key, sep, text = value.partition('=')
    if not sep or not key:
      raise ValueError(f'--option expects KEY=VALUE (e.g. near_duplicate_mm=50), got {value!r}')
    try:
      out[key] = json.loads(text)
    except ValueError:
      out[key] = text
  return out


def _parse_size(text: str) -> tuple[int, int]:
  try:
    height, width = (int(v) for v in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected H,W (two integers), got {text!r}') from None
  return height, width


def _overridden_by_flags(defaults, args):
  """`defaults` (SyntheticParams or a subclass) with the sizes given on the command line replacing its own."""
  flags = {
    'num_train_per_format': args.num_train,
    'num_val': args.num_val,
    'image_size': args.image_size,
    'difficulty': args.difficulty,
    'seed': args.seed,
  }
  return dataclasses.replace(defaults, **{key: value for key, value in flags.items() if value is not None})


def _run_synthetic(args) -> dict:
  defaults = synthetic.SyntheticParams()
  if args.config:
    settings = load_config(args.config).data.synthetic
    defaults = synthetic.SyntheticParams(
      num_train_per_format=settings.num_train_per_format,
      num_val=settings.num_val,
      image_size=tuple(settings.image_size),
      difficulty=settings.difficulty,
      seed=settings.seed,
    )
  params = _overridden_by_flags(defaults, args)
  return prepare_synthetic(args.data_dir, params, num_workers=args.num_workers, overwrite=args.overwrite)


def _run_synthetic3d(args) -> dict:
  from data_pipeline.builders import synthetic3d  # pylint: disable=g-import-not-at-top

  defaults = synthetic3d.Synthetic3DParams()
  if args.config:  # the config's data.synthetic3d sizes (configs/common.py: every config has the section)
    defaults = synthetic3d.Synthetic3DParams.from_settings(load_config(args.config).data.synthetic3d)
  params = _overridden_by_flags(defaults, args)
  return prepare_synthetic3d(args.data_dir, params, num_workers=args.num_workers, overwrite=args.overwrite)


def load_config(spec: str):
  """Loads `path/to/config.py[:arg]` and returns `get_config(arg)` (used for the synthetic sizes)."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise ValueError(f'config file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location('prepare_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


_RUNNERS = {
  'synthetic': _run_synthetic,
  'synthetic3d': _run_synthetic3d,
  **{name: _run_real for name in builders.REAL_DATASETS},
}


class _OneLineErrorParser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(2, f'error: {message} (see python -m data_pipeline.prepare --help)\n')


def main(argv: list[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (0 ok, 2 usage or parameter error)."""
  parser = _OneLineErrorParser(prog='python -m data_pipeline.prepare', description=__doc__.split('\n')[0])
  parser.add_argument('dataset', help=f'one of: {", ".join(builders.known_names())}')
  parser.add_argument('--data_dir', default=DEFAULT_DATA_DIR, help='tfds data directory')
  parser.add_argument(
    '--config',
    default=None,
    help='synthetic: take the sizes from config.data.synthetic of this config file[:arg]; the flags below override it',
  )
  parser.add_argument('--num_train', type=int, default=None, help='synthetic: train examples per format')
  parser.add_argument('--num_val', type=int, default=None, help='synthetic: validation examples')
  parser.add_argument('--image_size', type=_parse_size, default=None, help='synthetic: image size H,W')
  parser.add_argument('--difficulty', type=float, default=None, help='synthetic: difficulty in [0, 1]')
  parser.add_argument('--seed', type=int, default=None, help='synthetic: generator seed')
  parser.add_argument('--num_workers', type=int, default=None, help='generator processes (default: all cores)')
  parser.add_argument('--overwrite', action='store_true', help='rebuild if prepared with other parameters')
  parser.add_argument('--manual_dir', default=None, help='real datasets: the raw dataset directory (official layout)')
  parser.add_argument(
    '--det_json', default=None, help='real datasets: COCO detection results for the detector-box eval split'
  )
  parser.add_argument(
    '--det_score_threshold',
    type=float,
    default=None,
    help='real datasets: minimum detection score (default 0.0, as the reference)',
  )
  parser.add_argument(
    '--ann_file',
    action='append',
    default=None,
    metavar='SPLIT=PATH',
    help='real datasets: annotation file of a split instead of the layout\'s (repeatable)',
  )
  parser.add_argument(
    '--image_dir',
    action='append',
    default=None,
    metavar='SPLIT=DIR',
    help='real datasets: image directory of a split instead of the layout\'s (repeatable)',
  )
  parser.add_argument(
    '--headboxes',
    default=None,
    help='mpii: head boxes of the validation persons (mpii_gt_val.mat, or .json/.npy (N,2,2))',
  )
  parser.add_argument('--ap10k_split', type=int, default=None, help='ap10k: which official split (1, 2, 3)')
  parser.add_argument(
    '--label_only',
    action='store_true',
    help='3D datasets: keep examples whose image is missing as records without image bytes (labels only)',
  )
  parser.add_argument(
    '--dataset3d',
    default=None,
    help='generic3d: the 3D dataset name (its format; see data_pipeline/builders/generic3d.py)',
  )
  parser.add_argument(
    '--option',
    action='append',
    default=None,
    metavar='KEY=VALUE',
    help='builder-specific option (repeatable; e.g. panoptic: cameras=00_03,00_06, validation_sequences=..., '
    'min_confidence=0.1; 3D datasets: near_duplicate_mm=100, near_duplicates_all_splits=true)',
  )
  args = parser.parse_args(argv)

  runner = _RUNNERS.get(args.dataset)
  if runner is None:
    print(
      f'error: unknown dataset {args.dataset!r}; known datasets: {", ".join(builders.known_names())}', file=sys.stderr
    )
    return 2
  try:
    if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
      raise NotADirectoryError(20, 'it is a file')
    os.makedirs(args.data_dir, exist_ok=True)
  except OSError as e:
    print(
      f'error: cannot use --data_dir={args.data_dir}: {e.strerror}; pass a directory you can write to', file=sys.stderr
    )
    return 2
  try:
    summary = runner(args)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if summary.get('skipped_lines'):
    print('skipped:', flush=True)
    for line in summary['skipped_lines']:
      print(f'  {line}', flush=True)
  elif 'skipped' in summary:
    print('skipped: nothing', flush=True)
  splits = ', '.join(f'{name} {count}' for name, count in sorted(summary['splits'].items()))
  rate = f', {summary["examples_per_s"]:.1f} examples/s' if summary['built'] else ''
  print(
    f'done: {summary["path"]}: {sum(summary["splits"].values())} examples ({splits}); '
    f'{summary["bytes"] / 2**20:.1f} MiB; {summary["seconds"]:.1f} s{rate}',
    flush=True,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
