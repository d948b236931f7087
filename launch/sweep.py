"""Expands a sweep file into one command per point and runs or prints them.

  python -m launch.sweep configs/sweeps/demo_lr.py [--run local|slurm|print] [--workdir_root=workdirs/sweeps]

A sweep file defines `get_sweep()` returning `(base_config_spec, [ {config_key: value, ...}, ... ])`. Each point
gets its own workdir named from its overrides, so re-running the sweep resumes unfinished points.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys


def load_sweep(path: str):
  """Returns (config_spec, list of override dicts) from a sweep file."""
  if not os.path.exists(path):
    raise SystemExit(f'error: sweep file {path} does not exist')
  spec = importlib.util.spec_from_file_location('sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_sweep()


def point_name(overrides: dict) -> str:
  return ','.join(f'{k.split(".")[-1]}={v}' for k, v in sorted(overrides.items())).replace('/', '_') or 'base'


def commands(config_spec: str, points, workdir_root: str, python: str) -> list[list[str]]:
  """One argv per point: `python -m posebh_jax.main --config=... --workdir=ROOT/<point> --config.k=v ...`."""
  out = []
  for overrides in points:
    argv = [
      python,
      '-m',
      'posebh_jax.main',
      f'--config={config_spec}',
      f'--workdir={os.path.join(workdir_root, point_name(overrides))}',
    ]
    argv += [f'--config.{k}={v}' for k, v in sorted(overrides.items())]
    out.append(argv)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('sweep')
  parser.add_argument('--run', choices=['print', 'local', 'slurm'], default='print')
  parser.add_argument('--workdir_root', default='workdirs/sweeps')
  parser.add_argument('--python', default=sys.executable)
  args = parser.parse_args(argv)
  config_spec, points = load_sweep(args.sweep)
  for argv_point in commands(config_spec, points, args.workdir_root, args.python):
    line = shlex.join(argv_point)
    if args.run == 'print':
      print(line)
    elif args.run == 'local':
      print(f'running: {line}', flush=True)
      subprocess.run(argv_point, check=True)
    else:
      workdir = argv_point[4].split('=', 1)[1]
      subprocess.run(['sbatch', 'launch/slurm.sbatch', config_spec, workdir] + argv_point[5:], check=True)


if __name__ == '__main__':
  main()
