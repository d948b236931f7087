"""The run directory's own files besides checkpoints and metrics: `config.json` written at start, read back to
compare a resumed run's config with the one that started it, and by `init_from` to learn a source run's datasets."""

from __future__ import annotations

import json
import os

import jax
from flax import traverse_util


def write_config(config, workdir: str):
  """Writes `config` as `workdir/config.json` (process 0)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def run_directory(path: str) -> str | None:
  """The run directory (the one holding `config.json`) of `path`: a workdir, its `checkpoints/` directory or one
  step's directory; None when none of them holds a config.json."""
  path = os.path.abspath(os.path.expanduser(path))
  for candidate in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    if os.path.isfile(os.path.join(candidate, 'config.json')):
      return candidate
  return None


def read_run_config(workdir: str) -> dict | None:
  """The config.json a previous run wrote into `workdir` (None when there is none or it cannot be read)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def run_dataset_order(workdir: str) -> tuple[str, ...] | None:
  """data.order of the run in `workdir`, from its config.json (None when absent)."""
  try:
    return tuple(read_run_config(workdir)['data']['order'])
  except (TypeError, KeyError):  # no readable config.json (None), or one without data.order
    return None


def run_expert_names(workdir: str) -> tuple[str, ...] | None:
  """The MoE experts of the run in `workdir`, in expert order: each dataset's `expert` (or its own name), first
  appearances (runs before shared experts: the dataset names). None without a readable config.json."""
  try:
    data = read_run_config(workdir)['data']
    names = [data['datasets'].get(n, {}).get('expert', '') or n for n in data['order']]
  except (TypeError, KeyError, AttributeError):
    return None
  return tuple(dict.fromkeys(names))


def config_changes(before: dict | None, config) -> list[str]:
  """'key: old -> new' for every leaf that differs between a run's config.json and `config` (model keys first)."""
  if before is None:
    return []
  after = json.loads(config.to_json_best_effort())
  flat_before, flat_after = traverse_util.flatten_dict(before, sep='.'), traverse_util.flatten_dict(after, sep='.')
  changed = [
    f'{key}: {flat_before.get(key)!r} -> {flat_after.get(key)!r}'
    for key in sorted(set(flat_before) | set(flat_after))
    if flat_before.get(key) != flat_after.get(key)
  ]
  return sorted(changed, key=lambda line: not line.startswith('model.'))
