"""The run directory's own files besides checkpoints and metrics: `config.json` written at start, read back to
compare a resumed run's config with the one that started it, by `init_from` to learn a source run's datasets, and by
everything that rebuilds a saved run's model (`load_run_config`: inference, teachers, pictures, the ACAE fit)."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from flax import traverse_util

from posebh_jax.errors import UserError

_NO_RUN_HINT = (
  'pass a workdir of `python -m posebh_jax.main`, a directory that `python -m posebh_jax.convert` wrote, or one of '
  'their checkpoints/<step> directories'
)


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


def find_run_directory(path: str, hint: str = _NO_RUN_HINT) -> str:
  """`run_directory(path)`; raises UserError (one line ending with `hint`) when there is none."""
  found = run_directory(path)
  if found is None:
    raise UserError(f'{os.path.abspath(os.path.expanduser(path))}: no config.json here or above it; {hint}')
  return found


def load_run_config(path: str, hint: str = _NO_RUN_HINT) -> ml_collections.ConfigDict:
  """The config that a run (or the converter) wrote to config.json in `path`'s run directory (`run_directory`),
  JSON lists as tuples (as the config files write them). Raises UserError (one line) when there is none (ending
  with `hint`), it is not JSON, or it has no model or data section."""
  run_dir = find_run_directory(path, hint)
  config = read_run_config(run_dir)
  if config is None:
    raise UserError(f'{run_dir}/config.json cannot be read as JSON')
  if not isinstance(config, dict) or 'model' not in config or 'data' not in config:
    raise UserError(f'{run_dir}/config.json is not a run config (no model or data section)')
  return ml_collections.ConfigDict(_tuples(config))


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


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
