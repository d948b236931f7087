"""Prepares a dataset as tfds ArrayRecord files (once, before training).

  python -m data_pipeline.prepare synthetic [--num_train N] [--num_val N] [--data_dir DIR]
      [--image_size H,W] [--difficulty D] [--seed S] [--num_workers N] [--overwrite]

`--num_train` is per train format. An existing preparation with the same parameters is kept; one with
different parameters is rebuilt only with `--overwrite`. No TensorFlow is needed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import time
from typing import Callable

from data_pipeline import builders

DEFAULT_DATA_DIR = 'data/tfds'


def _print(line: str) -> None:
    print(line, flush=True)


def _directory_bytes(path) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(os.fspath(path)).rglob('*') if f.is_file())


def prepare_synthetic(data_dir: str = DEFAULT_DATA_DIR, params=None, num_workers: int | None = None,
                      overwrite: bool = False, log: Callable[[str], None] = _print) -> dict:
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
    import tensorflow_datasets as tfds
    from data_pipeline.builders import synthetic

    params = params or synthetic.SyntheticParams()
    builder = synthetic.PosebhSynthetic(data_dir=data_dir, params=params, num_workers=num_workers, log=log)
    built = False
    start = time.perf_counter()
    if builders.is_prepared(builder) and builder.params != params:
        if not overwrite:
            raise ValueError(
                f'{synthetic.TFDS_NAME} in {data_dir} was built with {builder.params.to_metadata()}; pass '
                f'--overwrite to rebuild it with {params.to_metadata()}, or use another --data_dir')
        log(f'removing {builder.data_path} (built with other parameters)')
        shutil.rmtree(builder.data_path)
        builder = synthetic.PosebhSynthetic(data_dir=data_dir, params=params, num_workers=num_workers, log=log)
    if builders.is_prepared(builder):
        log(f'{synthetic.TFDS_NAME} is already prepared in {builder.data_path} with these parameters')
    else:
        log(f'building {synthetic.TFDS_NAME} into {data_dir} with {params.to_metadata()}')
        tfds.disable_progress_bar()
        builder.download_and_prepare()
        built = True
    seconds = time.perf_counter() - start
    splits = {name: int(info.num_examples) for name, info in builder.info.splits.items()}
    total = sum(splits.values())
    return {
        'path': str(builder.data_path),
        'splits': splits,
        'bytes': _directory_bytes(builder.data_path),
        'seconds': seconds,
        'examples_per_s': total / seconds if built and seconds > 0 else 0.0,
        'built': built,
    }


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected H,W (two integers), got {text!r}') from None
    return height, width


def _run_synthetic(args) -> dict:
    from data_pipeline.builders import synthetic

    defaults = synthetic.SyntheticParams()
    if args.config:
        settings = load_config(args.config).data.synthetic
        defaults = synthetic.SyntheticParams(
            num_train_per_format=settings.num_train_per_format, num_val=settings.num_val,
            image_size=tuple(settings.image_size), difficulty=settings.difficulty, seed=settings.seed)
    params = synthetic.SyntheticParams(
        num_train_per_format=args.num_train if args.num_train is not None else defaults.num_train_per_format,
        num_val=args.num_val if args.num_val is not None else defaults.num_val,
        image_size=args.image_size or defaults.image_size,
        difficulty=args.difficulty if args.difficulty is not None else defaults.difficulty,
        seed=args.seed if args.seed is not None else defaults.seed,
    )
    return prepare_synthetic(args.data_dir, params, num_workers=args.num_workers, overwrite=args.overwrite)


def load_config(spec: str):
    """Loads `path/to/config.py[:arg]` and returns `get_config(arg)` (used for the synthetic sizes)."""
    import importlib.util
    path, _, arg = spec.partition(':')
    if not os.path.exists(path):
        raise ValueError(f'config file {path} does not exist')
    module_spec = importlib.util.spec_from_file_location('prepare_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


_RUNNERS = {'synthetic': _run_synthetic}


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f'error: {message} (see python -m data_pipeline.prepare --help)\n')


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 usage or parameter error)."""
    parser = _OneLineErrorParser(prog='python -m data_pipeline.prepare', description=__doc__.split('\n')[0])
    parser.add_argument('dataset', help=f'one of: {", ".join(builders.known_names())}')
    parser.add_argument('--data_dir', default=DEFAULT_DATA_DIR, help='tfds data directory')
    parser.add_argument('--config', default=None,
                        help='synthetic: take the sizes from config.data.synthetic of this config file[:arg]; '
                             'the flags below override it')
    parser.add_argument('--num_train', type=int, default=None, help='synthetic: train examples per format')
    parser.add_argument('--num_val', type=int, default=None, help='synthetic: validation examples')
    parser.add_argument('--image_size', type=_parse_size, default=None, help='synthetic: image size H,W')
    parser.add_argument('--difficulty', type=float, default=None, help='synthetic: difficulty in [0, 1]')
    parser.add_argument('--seed', type=int, default=None, help='synthetic: generator seed')
    parser.add_argument('--num_workers', type=int, default=None, help='generator processes (default: all cores)')
    parser.add_argument('--overwrite', action='store_true', help='rebuild if prepared with other parameters')
    args = parser.parse_args(argv)

    runner = _RUNNERS.get(args.dataset)
    if runner is None:
        print(f'error: unknown dataset {args.dataset!r}; known datasets: {", ".join(builders.known_names())}',
              file=sys.stderr)
        return 2
    try:
        summary = runner(args)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    splits = ', '.join(f'{name} {count}' for name, count in sorted(summary['splits'].items()))
    rate = f', {summary["examples_per_s"]:.1f} examples/s' if summary['built'] else ''
    print(f'done: {summary["path"]}: {sum(summary["splits"].values())} examples ({splits}); '
          f'{summary["bytes"] / 2**20:.1f} MiB; {summary["seconds"]:.1f} s{rate}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
