"""Ablation sweeps as one command: a sweep file's points run here (one after another or N at a time), as ONE SLURM
array job, or one after another on a TPU VM slice; re-running a sweep skips its finished points and resumes the
unfinished ones; `collect` writes one results table (CSV and Markdown) and a plot of the main metric.

  python -m launch.sweep SWEEP[:ARG] [--run=print|local|slurm|tpu] [--workdir_root=workdirs/sweeps] [--parallel=N]
      [--only=NAME|INDEX,...] [--tpu=NAME --zone=ZONE] [--sbatch_args='...'] [--config.KEY=VALUE ...]
  python -m launch.sweep collect SWEEP[:ARG] [--workdir_root=workdirs/sweeps] [--metric=KEY] [--config.KEY=VALUE ...]

A sweep file defines `get_sweep(arg='')` (the older `get_sweep()` works too) returning a `Sweep` or, as before, a
tuple `(config_spec, [{config_key: value, ...}, ...])`; `product`, `zip_`, `seeds` and `around` build the points.
`--config.KEY=VALUE` arguments apply to every point. The points live under ROOT = <workdir_root>/<sweep name>
(the file's name, plus `_<arg>` when given), each in ROOT/<its overrides>; ROOT/sweep.json lists them, and
`collect` writes ROOT/results.csv, ROOT/results.md and ROOT/results.png. docs/SWEEPS.md describes it all.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import hashlib
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARRAY_SCRIPT = os.path.join(REPO, 'launch', 'slurm_array.sbatch')
TPU_SCRIPT = os.path.join(REPO, 'launch', 'tpu_vm.sh')
POINTS_FILE = 'sweep.json'
LOG_FILE = 'sweep.log'  # in each point's workdir: every attempt's stdout and stderr, appended
ATTEMPTS_FILE = 'sweep_attempts.jsonl'  # in each point's workdir: start / child / end records of every attempt
# A point started on another host counts as running while its log or metrics changed within this many seconds.
STALE_AFTER_S = 3600.0
STATUSES = ('finished', 'running', 'stopped', 'failed', 'not started')


class SweepError(Exception):
  """A mistake in a sweep or its command line: printed as one `error: ...` line (exit status 2)."""


def fail(message: str):
  """Raises SweepError(message) (main prints it as one `error: ...` line)."""
  raise SweepError(message)


# --- building points --------------------------------------------------------------------------------------------


def _merge(*dicts: dict) -> dict:
  out: dict = {}
  for d in dicts:
    clash = set(out) & set(d)
    if clash:
      raise ValueError(f'config key(s) {sorted(clash)} given twice in one point')
    out.update(d)
  return out


def _axis(key: str, values) -> list[dict]:
  if isinstance(values, (str, bytes)) or not hasattr(values, '__iter__'):
    raise ValueError(f"the values of '{key}' must be a list or tuple (got {values!r})")
  return [{key: v} for v in values]


def product(*point_lists, **axes) -> list[dict]:
  """Every combination of the given axes ({config key: values}) and point lists (lists of {key: value}, e.g. from
  `zip_`), in order, the last varying fastest: `product(**{'optim.lr': [1e-3, 2e-3], 'seed': [0, 1]})` has 4 points."""
  factors = [list(p) for p in point_lists] + [_axis(k, v) for k, v in axes.items()]
  return [_merge(*combo) for combo in itertools.product(*factors)]


def zip_(*point_lists, **axes) -> list[dict]:
  """The i-th value of every axis ({config key: values}) and the i-th point of every point list together:
  `zip_(**{'posebh.weights.ppc': [1e-7, 5e-7], 'posebh.weights.ppd': [1e-8, 5e-8]})` has 2 points. All must have
  the same length."""
  columns = [list(p) for p in point_lists] + [_axis(k, v) for k, v in axes.items()]
  lengths = sorted({len(c) for c in columns})
  if len(lengths) > 1:
    raise ValueError(f'zip_ of lists of different lengths {lengths}')
  return [_merge(*row) for row in zip(*columns)]


def seeds(points: list[dict], n) -> list[dict]:
  """Each point repeated for every seed (`n`: a count, seeds 0..n-1, or a list of seeds), as `--config.seed=S`."""
  values = list(range(n)) if isinstance(n, int) else list(n)
  return [_merge(p, {'seed': s}) for p in points for s in values]


def _identity(point: dict) -> str:
  return repr(sorted((k, repr(v)) for k, v in point.items()))


def union(*point_lists) -> list[dict]:
  """The points of all lists, in order, each distinct point once."""
  seen, out = set(), []
  for point in itertools.chain(*point_lists):
    if _identity(point) not in seen:
      seen.add(_identity(point))
      out.append(dict(point))
  return out


def around(default: dict, *variations) -> list[dict]:
  """One factor at a time, as the papers' ablation tables: the `default` point, then every point of every
  variation (lists of {key: value}, e.g. from `product` or `zip_`) with the other keys of `default` at their
  default values; a point equal to one before it (the default again) appears once. Every point sets every key
  of `default`, so that equal settings are equal points."""
  return union([dict(default)], *[[{**default, **p} for p in variation] for variation in variations])


# --- sweep files --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sweep:
  """What a sweep file's `get_sweep` returns.

  config: the config spec every point trains (`configs/<file>.py[:args]`).
  points: one {config key: value} dict per point (its overrides; they also name its workdir).
  fixed: overrides for every point that do not name workdirs (`--config.KEY=VALUE` on the command line wins).
  metric: the main metric (plotted, listed first); '' = the first eval metric the runs write.
  required: {config key: what to pass}: keys that must be set (non-empty) in `fixed` or on the command line.
  setup: optional `setup(overrides, workdir, fixed) -> (steps, extra overrides)`: commands each point runs
    before training (`{'args': [python arguments], 'creates': path}`, skipped when `creates` exists), and more
    overrides for its training command; `fixed` holds the command-line strings of the fixed overrides.
  name: the sweep's directory name under --workdir_root ('' = the file's name, plus `_<arg>`).
  """

  config: str
  points: list
  fixed: dict = dataclasses.field(default_factory=dict)
  metric: str = ''
  required: dict = dataclasses.field(default_factory=dict)
  setup: Callable | None = None
  name: str = ''


SCALES = ('full', 'demo')


def scale(arg: str) -> str:
  """The scale a paper-ablation sweep file's argument asks for: '' → 'full' (B/16 on the real datasets), 'demo'
  → 'demo' (the synthetic data on a CPU); anything else raises ValueError."""
  arg = (arg or '').strip()
  if arg in ('', 'full'):
    return 'full'
  if arg == 'demo':
    return 'demo'
  raise ValueError(f"unknown argument '{arg}': use :demo for the demo scale, or nothing for full scale")


def split_spec(spec: str) -> tuple[str, str]:
  """(path, argument) of a sweep spec 'configs/sweeps/<name>.py[:arg]'."""
  head, sep, arg = spec.partition('.py:')
  return (head + '.py', arg) if sep else (spec, '')


def _import_file(path: str, module_name: str):
  if REPO not in sys.path:  # sweep and config files import configs.* and launch.*
    sys.path.insert(0, REPO)
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    fail(f'{path} is not a Python file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9.+\-_=]+', '_', text).strip('_')


def load_sweep(spec: str) -> Sweep:
  """The `Sweep` of a sweep spec 'path.py[:arg]' (its `get_sweep(arg)`, or `get_sweep()` without an argument);
  user mistakes raise SweepError with one line."""
  path, arg = split_spec(spec)
  if not os.path.isfile(path):
    fail(f'sweep file {path} does not exist (sweeps: {", ".join(sorted(_known_sweeps())) or "none"})')
  try:
    module = _import_file(path, 'sweep_file')
  except SweepError:
    raise
  except Exception as e:  # a sweep file that does not even import: one line naming it
    fail(f'cannot load sweep file {path}: {type(e).__name__}: {e}')
  get = getattr(module, 'get_sweep', None)
  if not callable(get):
    fail(f'{path} defines no get_sweep(arg) function; see docs/SWEEPS.md')
  takes_arg = bool(inspect.signature(get).parameters)
  if arg and not takes_arg:
    fail(f"{path} takes no argument (got ':{arg}'); drop it")
  try:
    result = get(arg) if takes_arg else get()
  except ValueError as e:
    fail(f'{spec}: {e}')
  if dataclasses.is_dataclass(result) and type(result).__name__ == 'Sweep':  # also launch.sweep's when run as __main__
    sweep = Sweep(**{f.name: getattr(result, f.name) for f in dataclasses.fields(Sweep)})
  elif isinstance(result, dict):
    sweep = Sweep(**result)
  elif isinstance(result, tuple) and len(result) == 2:
    sweep = Sweep(config=result[0], points=result[1])
  else:
    fail(f'{path}: get_sweep must return a launch.sweep.Sweep or (config_spec, points) (got {type(result).__name__})')
  if not isinstance(sweep.config, str) or not sweep.config:
    fail(f'{spec}: the sweep names no config spec')
  if not all(isinstance(p, dict) and all(isinstance(k, str) for k in p) for p in sweep.points):
    fail(f'{spec}: every point must be a dict {{config key: value}}')
  sweep.points = [dict(p) for p in sweep.points]
  if not sweep.points:
    fail(f'{spec}: the sweep has no points')
  if not sweep.name:
    stem = os.path.splitext(os.path.basename(path))[0]
    sweep.name = stem + (f'_{_slug(arg.replace(",", "_"))}' if arg else '')
  return sweep


def _known_sweeps() -> list[str]:
  directory = os.path.join(REPO, 'configs', 'sweeps')
  if not os.path.isdir(directory):
    return []
  return [n for n in os.listdir(directory) if n.endswith('.py') and not n.startswith('_')]


# --- the config the points override --------------------------------------------------------------------------------


def load_config(config_spec: str):
  """The ConfigDict of a config spec 'configs/<file>.py[:args]', as `posebh_jax.main --config=` builds it (its
  `get_config(args)`, or `get_config()` without args); SweepError when it cannot be loaded."""
  path, _, arg = config_spec.partition(':')
  if not os.path.isfile(path):
    fail(f'config file {path} of the sweep does not exist')
  try:
    module = _import_file(path, 'sweep_config')
    return module.get_config(arg) if arg else module.get_config()
  except SweepError:
    raise
  except Exception as e:  # the config's own check of its arguments, or a broken file
    message = ' '.join(str(e).split()) or type(e).__name__
    fail(f'cannot load --config={config_spec}: {message}')


def _flat_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for key in config.keys():
    value = config[key]
    full = f'{prefix}{key}'
    keys.append(full)
    if hasattr(value, 'keys') and hasattr(value, 'lock'):
      keys += _flat_keys(value, full + '.')
  return keys


def check_keys(config, config_spec: str, overrides: dict, where: str, check_values: bool = True):
  """Raises SweepError (one line) when a key of `overrides` is not in `config` (with the closest known keys), or,
  with `check_values`, when its value has a type the config field does not accept (tried by setting it: pass a
  copy of the config)."""
  for key, value in overrides.items():
    node, parts = config, key.split('.')
    for i, part in enumerate(parts):
      if not (hasattr(node, 'keys') and part in node.keys()):
        close = difflib.get_close_matches(key, _flat_keys(config), n=2, cutoff=0.6)
        hint = f'; did you mean {" or ".join(close)}?' if close else ''
        fail(f"unknown config key '{key}' in {where}: {config_spec} has no such key{hint}")
      if i < len(parts) - 1:
        node = node[part]
    if check_values:
      try:
        node[parts[-1]] = value
      except (TypeError, ValueError, AttributeError) as e:
        fail(f"bad value {value!r} for config key '{key}' in {where}: {' '.join(str(e).split())}")


# --- points: names, workdirs, commands -------------------------------------------------------------------------------


def cli_value(value) -> str:
  """A value as `--config.KEY=` text that ml_collections parses back to it (tuples as `(a,b)`, floats by repr)."""
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    items = ','.join(repr(v) if isinstance(v, str) else cli_value(v) for v in value)
    return f'({items}{"," if len(value) == 1 else ""})'
  return str(value)


def _name_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '_'.join(_name_value(v) for v in value)
  text = repr(value) if isinstance(value, float) else str(value)
  if '/' in text:  # a path: its last component
    text = os.path.basename(text.rstrip('/')) or text
  return re.sub(r'[^A-Za-z0-9.+\-_]+', '_', text)


def point_name(overrides: dict) -> str:
  """A point's directory name from its overrides: 'key=value' by key, comma-separated, a key by its last
  component unless another key of the point ends the same ('base' for no overrides; long names shortened and
  made unique with a hash)."""
  if not overrides:
    return 'base'
  lasts = [k.split('.')[-1] for k in overrides]
  parts = []
  for key, value in sorted(overrides.items()):
    label = key.split('.')[-1] if lasts.count(key.split('.')[-1]) == 1 else key
    parts.append(f'{label}={_name_value(value)}')
  name = ','.join(parts)
  if len(name) > 120:
    name = name[:100] + '-' + hashlib.sha1(name.encode()).hexdigest()[:10]
  return name


@dataclasses.dataclass
class Point:
  """One point of a planned sweep: its position, name, workdir, overrides, and the commands it runs (python
  arguments, without the python executable)."""

  index: int
  name: str
  workdir: str
  overrides: dict
  config: str
  override_args: list  # the trainer's --config.KEY=VALUE arguments (fixed, then the point's)
  setup: list  # [{'args': [...], 'creates': path}]

  @property
  def args(self) -> list[str]:
    """The trainer's python arguments."""
    return ['-m', 'posebh_jax.main', f'--config={self.config}', f'--workdir={self.workdir}'] + self.override_args

  def as_json(self) -> dict:
    """The point as sweep.json lists it."""
    return dict(
      index=self.index,
      name=self.name,
      workdir=self.workdir,
      overrides=self.overrides,
      args=self.args,
      setup=self.setup,
    )


def parse_cli_overrides(extra: list[str]) -> dict[str, str]:
  """{key: value text} of `--config.KEY=VALUE` arguments; SweepError for anything else."""
  out = {}
  for arg in extra:
    if not arg.startswith('--config.') or '=' not in arg:
      fail(f"unexpected argument '{arg}'; overrides for every point are --config.KEY=VALUE")
    key, _, value = arg[len('--config.') :].partition('=')
    out[key] = value
  return out


def _config_value(config, key: str):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def plan(sweep: Sweep, root: str, cli: dict[str, str], config=None, require: bool = True) -> list[Point]:
  """The sweep's points under `root`, with `cli` ({key: text} from the command line) added to every point; checks
  every key against the config (loaded unless given) and, with `require`, that the sweep's required keys are set
  (collecting needs only the workdirs)."""
  import copy

  config = load_config(sweep.config) if config is None else config
  trial = copy.deepcopy(config)
  check_keys(trial, sweep.config, sweep.fixed, 'the sweep\'s fixed overrides')
  check_keys(trial, sweep.config, {k: None for k in cli}, 'the command line', check_values=False)
  check_keys(trial, sweep.config, {k: None for k in sweep.required}, 'the sweep\'s required keys', check_values=False)
  for index, overrides in enumerate(sweep.points):
    check_keys(trial, sweep.config, overrides, f'point {index} ({point_name(overrides)})')
  swept = set().union(*sweep.points)
  clash = sorted(set(cli) & swept)
  if clash:
    fail(f'--config.{clash[0]} is swept by this sweep: it cannot also be set for every point')
  fixed = {k: cli_value(v) for k, v in sweep.fixed.items() if k not in swept}
  fixed.update(cli)
  for key, why in sweep.required.items() if require else ():
    value = fixed[key] if key in fixed else _config_value(config, key)
    if not str(value).strip():
      fail(f'this sweep needs --config.{key}=... ({why})')
  names = [point_name(p) for p in sweep.points]
  seen: dict[str, int] = {}
  for index, (name, overrides) in enumerate(zip(names, sweep.points)):
    if name in seen:
      if _identity(sweep.points[seen[name]]) == _identity(overrides):
        fail(f'points {seen[name]} and {index} of the sweep are the same ({name})')
      names[index] = f'{name}-{hashlib.sha1(_identity(overrides).encode()).hexdigest()[:8]}'
    seen.setdefault(name, index)
  points = []
  for index, (name, overrides) in enumerate(zip(names, sweep.points)):
    workdir = os.path.join(root, name)
    steps, extra = sweep.setup(dict(overrides), workdir, dict(fixed)) if sweep.setup else ([], {})
    args = [f'--config.{k}={v}' for k, v in fixed.items()]
    args += [f'--config.{k}={cli_value(v)}' for k, v in sorted(overrides.items())]
    args += [f'--config.{k}={cli_value(v)}' for k, v in extra.items()]
    points.append(Point(index, name, workdir, dict(overrides), sweep.config, args, [dict(s) for s in steps]))
  return points


def select(points: list[Point], only: str) -> list[Point]:
  """The points named (or numbered) in the comma-separated `only` ('' = all)."""
  if not only:
    return points
  by_name = {p.name: p for p in points}
  chosen = []
  for item in filter(None, (s.strip() for s in only.split(','))):
    if item.isdigit() and int(item) < len(points):
      chosen.append(points[int(item)])
    elif item in by_name:
      chosen.append(by_name[item])
    else:
      fail(f"--only: no point '{item}' (points 0-{len(points) - 1}, or their names: {points[0].name}, ...)")
  return list({p.index: p for p in chosen}.values())


def write_points_file(root: str, spec: str, sweep: Sweep, points: list[Point], extra: dict | None = None) -> str:
  """Writes ROOT/sweep.json: the sweep and every point with its arguments (the SLURM array task i runs point i);
  keeps the earlier file's submissions. Returns its path."""
  path = os.path.join(root, POINTS_FILE)
  previous = read_points_file(path) or {}
  record = dict(
    sweep=spec,
    name=sweep.name,
    config=sweep.config,
    metric=sweep.metric,
    written=datetime.datetime.now().isoformat(timespec='seconds'),
    submissions=previous.get('submissions', []),
    points=[p.as_json() for p in points],
  )
  record.update(extra or {})
  os.makedirs(root, exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)
  return path


def read_points_file(path: str) -> dict | None:
  """The contents of a sweep.json (None when absent or unreadable)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# --- what a point's workdir says about it ------------------------------------------------------------------------------


def mark(workdir: str, event: str, **fields):
  """Appends an attempt record (`start`, `child` or `end`, with time, host and `fields`) to the point's
  sweep_attempts.jsonl."""
  os.makedirs(workdir, exist_ok=True)
  record = {'event': event, 'time': time.time(), 'host': socket.gethostname(), **fields}
  with open(os.path.join(workdir, ATTEMPTS_FILE), 'a') as f:
    f.write(json.dumps(record) + '\n')


def _read_jsonl(path: str) -> list[dict]:
  try:
    with open(path) as f:
      lines = f.readlines()
  except OSError:
    return []
  out = []
  for line in lines:
    try:
      out.append(json.loads(line))
    except ValueError:  # a line cut short by a crash
      continue
  return out


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the finished checkpoints in workdir/checkpoints (orbax writes into a temporary name first)."""
  try:
    names = os.listdir(os.path.join(workdir, 'checkpoints'))
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


_TOTAL_STEPS = re.compile(r'steps/epoch \| (\d+) steps')


def total_steps(workdir: str) -> int | None:
  """The run's total steps: config.json's total_steps when > 0, else the trainer's `| N steps` line in the log
  (epoch-based runs); None when neither says."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      total = int(json.load(f).get('total_steps', -1))
    if total > 0:
      return total
  except (OSError, ValueError, TypeError, AttributeError):
    pass
  found = _TOTAL_STEPS.findall(_read_text(os.path.join(workdir, LOG_FILE)))
  return int(found[-1]) if found else None


def _read_text(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def run_metrics(workdir: str) -> dict:
  """From metrics.jsonl: {'eval': {key: last value} of every eval/ key, 'eval_step': the last evaluation's step,
  'train/loss': the last logged loss, 'step': the last logged step}."""
  evals: dict = {}
  eval_step = step = loss = None
  for record in _read_jsonl(os.path.join(workdir, 'metrics.jsonl')):
    values = {k: v for k, v in record.items() if k.startswith('eval/')}
    if values:
      evals.update(values)
      eval_step = record.get('step')
    if 'train/loss' in record:
      loss, step = record['train/loss'], record.get('step')
  return {'eval': evals, 'eval_step': eval_step, 'train/loss': loss, 'step': step}


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _sessions(records: list[dict]) -> list[dict]:
  sessions: list[dict] = []
  for record in records:
    if record.get('event') == 'start':
      sessions.append({'start': record, 'pids': [record.get('pid')], 'end': None})
    elif sessions and record.get('event') == 'child':
      sessions[-1]['pids'].append(record.get('pid'))
    elif sessions and record.get('event') == 'end':
      sessions[-1]['end'] = record
  return sessions


def _last_change(workdir: str) -> float | None:
  times = []
  for name in (LOG_FILE, 'metrics.jsonl', ATTEMPTS_FILE):
    try:
      times.append(os.path.getmtime(os.path.join(workdir, name)))
    except OSError:
      pass
  return max(times) if times else None


def _alive(session: dict, workdir: str, now: float, stale_after: float) -> bool:
  if session['start'].get('host') == socket.gethostname():
    return any(_pid_alive(pid) for pid in session['pids'] if pid)
  changed = _last_change(workdir)
  return changed is not None and now - changed < stale_after


_ERROR_LINE = re.compile(r'^(error:|\w*(Error|Exception)\b|Killed|Segmentation fault)')


def last_error_line(workdir: str) -> str:
  """The last attempt's error in the point's log: its last `error: ...` line, else its last exception line, else
  its last line ('' without a log)."""
  text = _read_text(os.path.join(workdir, LOG_FILE))
  start = text.rfind('\n[sweep] attempt ')
  lines = [
    line.strip()
    for line in (text[start:] if start >= 0 else text).splitlines()
    if line.strip() and not line.startswith('[sweep]')
  ]
  for pattern in (lambda s: s.startswith('error:'), lambda s: bool(_ERROR_LINE.match(s))):
    found = [line for line in lines if pattern(line)]
    if found:
      return found[-1][:300]
  return lines[-1][:300] if lines else ''


@dataclasses.dataclass
class PointState:
  """Where a point stands: status (one of STATUSES), detail (the error line of a failed point, ...), steps
  reached, total steps, wall time over its attempts (seconds), and the arguments of its last attempt."""

  status: str
  detail: str = ''
  steps: int | None = None
  total: int | None = None
  wall_s: float | None = None
  last_args: list | None = None


def _exit_text(rc) -> str:
  if isinstance(rc, int) and (rc < 0 or rc > 128):
    number = -rc if rc < 0 else rc - 128
    try:
      return f'killed by {signal.Signals(number).name}'
    except ValueError:
      return f'killed by signal {number}'
  return f'exit status {rc}'


def point_state(workdir: str, now: float | None = None, stale_after: float = STALE_AFTER_S) -> PointState:
  """The status of the point in `workdir`, from its files alone (docs/SWEEPS.md): 'finished' (the latest
  checkpoint is at the run's total steps), 'running' (an attempt without an end whose process is alive on this
  host, or, started on another host, whose log or metrics changed within `stale_after` s), 'stopped' (the last
  attempt exited 0 before the end: preempted or interrupted, resumable), 'failed' (the last attempt exited
  non-zero, or vanished without an exit status: detail = its last error line), 'not started'."""
  now = time.time() if now is None else now
  sessions = _sessions(_read_jsonl(os.path.join(workdir, ATTEMPTS_FILE)))
  checkpoints = checkpoint_steps(workdir)
  total = total_steps(workdir)
  metric_step = run_metrics(workdir)['step']
  steps = max([s for s in [metric_step, checkpoints[-1] if checkpoints else None] if s is not None], default=None)
  finished = total is not None and bool(checkpoints) and checkpoints[-1] >= total
  wall = None
  for session in sessions:
    start = session['start'].get('time', now)
    if session['end'] is not None:
      end = session['end'].get('time', start)
    else:
      end = now if _alive(session, workdir, now, stale_after) else (_last_change(workdir) or start)
    wall = (wall or 0.0) + max(end - start, 0.0)
  last = sessions[-1] if sessions else None
  state = PointState('not started', steps=steps, total=total, wall_s=wall)
  if last is not None:
    state.last_args = (last['end'] or {}).get('args') or last['start'].get('args')
  if last is not None and last['end'] is None and _alive(last, workdir, now, stale_after):
    state.status = 'running'
    where = last['start'].get('job') or f'pid {last["pids"][-1]} on {last["start"].get("host")}'
    state.detail = f'since {_clock(last["start"].get("time", now))} ({where})'
  elif finished:
    state.status = 'finished'
  elif last is None:
    if os.path.exists(os.path.join(workdir, 'config.json')):
      state.status, state.detail = 'stopped', 'no sweep record (started outside the sweep?); re-run to resume'
  elif last['end'] is None:
    state.status = 'failed'
    state.detail = f'interrupted without an exit status: {last_error_line(workdir) or "(empty log)"}'
  elif last['end'].get('rc') == 0:
    where = f'at step {steps}' if steps is not None else 'before its first checkpoint'
    state.status, state.detail = 'stopped', f'stopped {where}; re-run the sweep to resume'
  else:
    state.status = 'failed'
    state.detail = last_error_line(workdir) or _exit_text(last['end'].get('rc'))
  return state


def _clock(t: float) -> str:
  return datetime.datetime.fromtimestamp(t).strftime('%Y-%m-%d %H:%M')


def is_done(point: Point, state: PointState) -> bool:
  """Whether a re-run skips the point: finished, by this very command (a changed command, e.g. more steps, runs
  again: the trainer resumes, or repeats its last evaluation when there is nothing left to train)."""
  return state.status == 'finished' and state.last_args == point.args


# --- running points ----------------------------------------------------------------------------------------------------


class _Children:
  """The subprocesses the sweep runs, for passing SIGTERM / Ctrl-C on: each trainer then checkpoints at its next
  step and exits 0, and no further point starts."""

  def __init__(self):
    self.lock = threading.Lock()
    self.procs: set = set()
    self.stop = threading.Event()

  def start(self, argv, **kwargs):
    with self.lock:
      if self.stop.is_set():
        return None
      proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
      self.procs.add(proc)
      return proc

  def done(self, proc):
    with self.lock:
      self.procs.discard(proc)

  def terminate(self, signum=None, frame=None):
    del frame
    first = not self.stop.is_set()
    self.stop.set()
    with self.lock:
      for proc in self.procs:
        try:
          proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
          pass
    if signum is not None:
      print(
        f'[sweep] {signal.Signals(signum).name}: '
        + (
          'stopping the running points at their next step (they checkpoint); re-run the sweep to resume'
          if first
          else 'again: the running points stop at once'
        ),
        flush=True,
      )

  def install(self):
    """Passes SIGTERM and SIGINT on to the children (main thread only); returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
      return {}
    return {s: signal.signal(s, self.terminate) for s in (signal.SIGTERM, signal.SIGINT)}


def _run_logged(argv: list[str], log, children: _Children, workdir: str, env=None) -> int:
  """Runs `argv` with stdout and stderr into `log` (an open file); records its pid; returns its exit status
  (-signal when killed; 130 when the sweep is stopping and it did not start)."""
  log.write(f'[sweep] $ {shlex.join(argv)}\n')
  log.flush()
  proc = children.start(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
  if proc is None:
    return 130
  mark(workdir, 'child', pid=proc.pid)
  try:
    return proc.wait()
  finally:
    children.done(proc)


def run_setup(point: Point, python: str, log, children: _Children, env=None) -> int:
  """Runs the point's setup steps whose `creates` path does not exist yet, in order; the first failure's exit
  status, or 0."""
  for step in point.setup:
    creates = step.get('creates', '')
    if creates and os.path.exists(creates):
      log.write(f'[sweep] setup: {creates} exists; skipping {shlex.join(step["args"])}\n')
      continue
    rc = _run_logged([python] + list(step['args']), log, children, point.workdir, env)
    if rc != 0:
      return rc
  return 0


def _header(point: Point, how: str) -> str:
  now = datetime.datetime.now().isoformat(timespec='seconds')
  return f'\n[sweep] attempt {now} on {socket.gethostname()} ({how}): point {point.index} {point.name}\n'


def run_point(point: Point, command: list[str], python: str, children: _Children, env=None) -> int:
  """One attempt at a point: its setup steps, then `command` (the trainer, or the TPU launcher), with the output
  appended to <workdir>/sweep.log and start / end records in sweep_attempts.jsonl; returns the exit status."""
  os.makedirs(point.workdir, exist_ok=True)
  with open(os.path.join(point.workdir, LOG_FILE), 'a') as log:
    log.write(_header(point, 'local'))
    mark(point.workdir, 'start', pid=os.getpid(), args=point.args)
    rc = run_setup(point, python, log, children, env)
    if rc == 0:
      rc = _run_logged(command, log, children, point.workdir, env)
    log.write(f'[sweep] {_exit_text(rc)}\n')
  mark(point.workdir, 'end', rc=rc, args=point.args)
  return rc


def _todo(points: list[Point], verb: str, queued: set[str] = frozenset()) -> list[Point]:
  """The points a launch runs: not finished by the same command, not running, not waiting in a SLURM queue
  (`queued`: their workdirs); prints what it skips."""
  todo = []
  for point in points:
    state = point_state(point.workdir)
    if point.workdir in queued:
      print(f'[sweep] skip {point.name}: queued or running in an earlier array job of this sweep')
    elif is_done(point, state):
      print(f'[sweep] skip {point.name}: finished ({state.steps} steps)')
    elif state.status == 'running':
      print(f'[sweep] skip {point.name}: running {state.detail}')
    else:
      if state.status == 'finished':  # by another command, e.g. fewer steps: the trainer resumes or re-evaluates
        print(f'[sweep] {verb} {point.name}: finished at step {state.steps} by another command than this one')
      elif state.status != 'not started':
        print(f'[sweep] {verb} {point.name}: {state.status} at step {state.steps}; {state.detail}'.rstrip('; '))
      todo.append(point)
  return todo


def run_local(points: list[Point], python: str, parallel: int, command_of=None, queued=frozenset()) -> dict[str, int]:
  """Runs the points here, `parallel` at a time (each trainer sees all local devices), skipping finished ones
  and those `queued` in SLURM; SIGTERM / Ctrl-C stops them at their next step (they checkpoint). Returns
  {name: exit status} of those run."""
  todo = _todo(points, 'resume', queued)
  env = dict(os.environ)
  # As launch/local.sh: huge pages for XLA's per-step CPU buffer (posebh_jax.metrics.cpu_allocator_hint).
  env.setdefault('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
  children = _Children()
  previous = children.install()
  results: dict[str, int] = {}
  count = len(todo)

  def one(position: int, point: Point) -> int:
    if children.stop.is_set():
      return 130
    command = command_of(point) if command_of else [python] + point.args
    print(f'[sweep] [{position}/{count}] {point.name}: started (log {point.workdir}/{LOG_FILE})', flush=True)
    start = time.time()
    rc = run_point(point, command, python, children, env)
    state = point_state(point.workdir)
    detail = f': {state.detail}' if state.status != 'finished' and state.detail else ''
    print(
      f'[sweep] [{position}/{count}] {point.name}: {state.status} in {time.time() - start:.0f}s{detail}', flush=True
    )
    return rc

  try:
    with futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
      jobs = {pool.submit(one, i + 1, p): p for i, p in enumerate(todo)}
      pending = set(jobs)
      while pending:  # short waits: the main thread stays free to take signals
        done, pending = futures.wait(pending, timeout=0.5)
        for job in done:
          results[jobs[job].name] = job.result()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  return results


def _ranges(indices: list[int]) -> str:
  """'0-3,5,7-8' for [0, 1, 2, 3, 5, 7, 8]."""
  parts, indices = [], sorted(indices)
  start = prev = indices[0]
  for i in indices[1:] + [None]:
    if i is not None and i == prev + 1:
      prev = i
      continue
    parts.append(f'{start}-{prev}' if prev > start else f'{start}')
    if i is not None:
      start = prev = i
  return ','.join(parts)


def _queued(points_file: str) -> set[str]:
  """The workdirs of the points that this sweep's earlier array jobs (the submissions in its sweep.json) still have
  queued or running, by `squeue` (empty without squeue or without submissions)."""
  submissions = [s for s in (read_points_file(points_file) or {}).get('submissions', []) if s.get('job')]
  if not submissions or shutil.which('squeue') is None:
    return set()
  try:
    out = subprocess.run(
      ['squeue', '-h', '-r', '-j', ','.join(str(s['job']) for s in submissions), '-o', '%i'],
      capture_output=True,
      text=True,
      timeout=60,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return set()
  tasks = set(re.findall(r'(\d+)_(\d+)\b', out))
  workdirs = set()
  for submission in submissions:
    listed = (read_points_file(submission.get('points_file', '')) or {}).get('points', [])
    for job, task in tasks:
      if job == str(submission['job']) and int(task) < len(listed):
        workdirs.add(listed[int(task)]['workdir'])
  return workdirs


def submit_slurm(spec: str, sweep: Sweep, root: str, points: list[Point], all_points: list[Point], args) -> int:
  """Submits the unfinished points as ONE array job (`sbatch --array=...` of launch/slurm_array.sbatch; task i
  runs point i of this submission's copy of ROOT/sweep.json, ROOT/slurm/sweep-<k>.json, which later changes of
  the sweep leave alone; `--parallel=N` → at most N tasks at a time); returns 0."""
  if shutil.which('sbatch') is None:
    fail('sbatch not found: --run=slurm submits from a SLURM login node')
  points_file = os.path.join(root, POINTS_FILE)
  todo = _todo(points, 'resubmit', _queued(points_file))
  if not todo:
    print('[sweep] nothing to submit')
    return 0
  points_file = write_points_file(root, spec, sweep, all_points)
  record = read_points_file(points_file) or {}
  os.makedirs(os.path.join(root, 'slurm'), exist_ok=True)
  task_file = os.path.join(root, 'slurm', f'sweep-{len(record.get("submissions", [])) + 1}.json')
  shutil.copyfile(points_file, task_file)
  array = _ranges([p.index for p in todo]) + (f'%{args.parallel}' if args.parallel else '')
  command = [
    'sbatch',
    f'--array={array}',
    f'--job-name=sweep-{sweep.name}'[:64],
    f'--output={os.path.join(root, "slurm", "%A_%a.out")}',
    *shlex.split(args.sbatch_args),
    ARRAY_SCRIPT,
    task_file,
  ]
  print(f'[sweep] $ {shlex.join(command)}', flush=True)
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    lines = (result.stderr or result.stdout).strip().splitlines()
    fail(f'sbatch failed ({_exit_text(result.returncode)}): {lines[-1] if lines else "no output"}')
  job = re.search(r'(\d+)', result.stdout or '')
  record.setdefault('submissions', []).append(
    dict(
      job=job.group(1) if job else '',
      array=array,
      points_file=task_file,
      time=datetime.datetime.now().isoformat(timespec='seconds'),
    )
  )
  with open(points_file, 'w') as f:
    json.dump(record, f, indent=1)
  print(
    f'[sweep] submitted array job {job.group(1) if job else "?"}: {len(todo)} point(s); '
    f'`python -m launch.sweep collect {spec} --workdir_root={args.workdir_root}` shows where they stand'
  )
  return 0


def tpu_command(point: Point, tpu: str, zone: str) -> list[str]:
  """launch/tpu_vm.sh for a point; its arguments shell-quoted, because the script pastes them into the command
  line it runs over ssh on every worker."""
  quoted = [shlex.quote(a) for a in [point.config, point.workdir] + point.override_args]
  return ['bash', TPU_SCRIPT, tpu, zone] + quoted


# --- collection ------------------------------------------------------------------------------------------------------

# A metric is better when lower if its name (the part after the last '/') matches this: losses, errors,
# MPJPE-like distances in mm, end-point errors, inconsistencies; higher otherwise (AP, AR, PCK, PCKh, AUC, ...).
_LOWER_IS_BETTER = re.compile(r'loss|err|mpjpe|epe|nme|mse|mae|incons|dist', re.IGNORECASE)


def higher_is_better(metric: str) -> bool:
  """Whether a larger value of `metric` is better, by its name (docs/SWEEPS.md): False for losses, errors and
  distances (loss, error, MPJPE, PA-MPJPE, MPJPE-abs, EPE, NME, MSE, inconsistency), True for the rest."""
  return not _LOWER_IS_BETTER.search(metric.rsplit('/', 1)[-1])


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _best(rows: list[dict], metric: str) -> set[int]:
  """Indices of the finished rows with the best value of `metric`; none when fewer than two distinct values."""
  values = {i: r['metrics'].get(metric) for i, r in enumerate(rows) if r['state'].status == 'finished'}
  values = {i: v for i, v in values.items() if _finite(v)}
  if len(set(values.values())) < 2:
    return set()
  best = (max if higher_is_better(metric) else min)(values.values())
  return {i for i, v in values.items() if v == best}


def _short_keys(keys: list[str]) -> dict[str, str]:
  lasts = [k.split('.')[-1] for k in keys]
  return {k: (k.split('.')[-1] if lasts.count(k.split('.')[-1]) == 1 else k) for k in keys}


def _fmt(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (tuple, list)):
    return ','.join(_fmt(v) for v in value)
  return str(value)


def _fmt_time(seconds) -> str:
  if seconds is None:
    return ''
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def summary_metrics(workdir: str) -> set[str]:
  """The metrics of the trainer's last `eval at step N: ...` line in the point's log: each dataset's headline
  metrics as its task names them (AP and PCKh, MPJPE, ...)."""
  lines = [
    line for line in _read_text(os.path.join(workdir, LOG_FILE)).splitlines() if line.startswith('eval at step ')
  ]
  return set(re.findall(r'(eval/[^=,]+)=', lines[-1])) if lines else set()


def _markdown_metrics(metrics: list[str], main: str, pattern: str, headline: set[str]) -> list[str]:
  if pattern:
    chosen = [m for m in metrics if re.search(pattern, m)]
  elif headline & set(metrics):  # the trainer's own summary metrics
    chosen = [m for m in metrics if m in headline or not m.startswith('eval/')]
  else:  # each evaluated dataset's first metric
    chosen, seen = [], set()
    for m in metrics:
      prefix = m.rsplit('/', 1)[0]
      if m.startswith('eval/') and prefix not in seen:
        seen.add(prefix)
        chosen.append(m)
    chosen += [m for m in metrics if not m.startswith('eval/')]
  if main in metrics:
    chosen = [main] + [m for m in chosen if m != main]
  return chosen


def collect(sweep: Sweep, points: list[Point], root: str, metric: str = '', columns: str = '') -> dict:
  """Writes ROOT/results.csv (every metric), ROOT/results.md (each dataset's headline metric, or those matching
  `columns`) and ROOT/results.png (the main metric against each swept value): one row per point with its
  overrides, status, steps, wall time and final metrics, the best value of each metric marked. Returns
  {'rows', 'metric', 'csv', 'md', 'png' (None without a value to plot)}."""
  rows = []
  for point in points:
    state = point_state(point.workdir)
    found = run_metrics(point.workdir)
    values = dict(found['eval'])
    if found['train/loss'] is not None:
      values['train/loss'] = found['train/loss']
    rows.append({'point': point, 'state': state, 'metrics': values, 'eval_step': found['eval_step']})
  metrics = list(dict.fromkeys(m for r in rows for m in r['metrics'] if m.startswith('eval/')))
  metrics += ['train/loss'] if any('train/loss' in r['metrics'] for r in rows) else []
  main = metric or sweep.metric or (metrics[0] if metrics else '')
  keys = list(dict.fromkeys(k for p in points for k in p.overrides))
  best = {m: _best(rows, m) for m in metrics}
  os.makedirs(root, exist_ok=True)

  csv_path = os.path.join(root, 'results.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(
      ['point', *keys, 'status', 'detail', 'steps', 'total_steps', 'wall_time_s', 'eval_step', *metrics, 'best']
    )
    for i, row in enumerate(rows):
      state, point = row['state'], row['point']
      writer.writerow(
        [
          point.name,
          *[cli_value(point.overrides[k]) if k in point.overrides else '' for k in keys],
          state.status,
          state.detail,
          '' if state.steps is None else state.steps,
          '' if state.total is None else state.total,
          '' if state.wall_s is None else f'{state.wall_s:.1f}',
          '' if row['eval_step'] is None else row['eval_step'],
          *[repr(row['metrics'][m]) if m in row['metrics'] else '' for m in metrics],
          ';'.join(m for m in metrics if i in best[m]),
        ]
      )

  headline = set().union(*(summary_metrics(p.workdir) for p in points))
  md_metrics = _markdown_metrics(metrics, main, columns, headline)
  short = _short_keys(keys)
  counts = {s: sum(r['state'].status == s for r in rows) for s in STATUSES}
  title = sweep.name or os.path.basename(os.path.normpath(root))
  lines = [
    f'# Sweep {title}',
    '',
    f'`{sweep.config}`, {len(rows)} points: '
    + ', '.join(f'{n} {s}' for s, n in counts.items() if n)
    + f'. Collected {datetime.datetime.now().isoformat(timespec="seconds")}.',
    '',
    'Bold: the best value among the finished points (higher is better, except for losses, errors and '
    'distances such as MPJPE). Every metric of every point: results.csv.',
    '',
  ]
  header = [short[k] for k in keys] + ['status', 'steps', 'wall time'] + md_metrics
  lines.append('| ' + ' | '.join(h.replace('|', '\\|') for h in header) + ' |')
  lines.append('|' + '---|' * len(header))
  for i, row in enumerate(rows):
    state, point = row['state'], row['point']
    status = state.status + (f': {state.detail}' if state.detail and state.status != 'finished' else '')
    steps = '' if state.steps is None else f'{state.steps}' + (f'/{state.total}' if state.total else '')
    cells = [_fmt(point.overrides.get(k)) for k in keys] + [status, steps, _fmt_time(state.wall_s)]
    for m in md_metrics:
      text = _fmt(row['metrics'].get(m))
      cells.append(f'**{text}**' if i in best[m] else text)
    lines.append('| ' + ' | '.join(c.replace('|', '\\|').replace('\n', ' ') for c in cells) + ' |')
  md_path = os.path.join(root, 'results.md')
  png_path = os.path.join(root, 'results.png')
  drawn = plot(rows, keys, main, png_path, title) if main else False
  if drawn:
    lines += ['', f'![{main}](results.png)']
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return {'rows': rows, 'metric': main, 'csv': csv_path, 'md': md_path, 'png': png_path if drawn else None}


def _numeric(values) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _linked_axes(rows: list[dict], keys: list[str]) -> list[list[str]]:
  """The swept keys (not the seed) grouped into plot axes: keys that change together across the points (a zipped
  pair such as (β, γ)) share one axis, named by its first key."""
  axes: dict = {}
  for key in keys:
    values = [repr(r['point'].overrides.get(key)) for r in rows]
    if key == 'seed' or len(set(values)) < 2:
      continue
    pattern = tuple(values.index(v) for v in values)  # which points share a value: the key's partition
    axes.setdefault(pattern, []).append(key)
  return list(axes.values())


def plot(rows: list[dict], keys: list[str], metric: str, path: str, title: str = '') -> bool:
  """Draws `metric` against each swept key (one panel each; keys zipped together share one), the points that
  differ only in that key joined by a line (seeds averaged, each seed a small dot), unfinished points hollow;
  writes `path` (PNG). False when no point has a value of `metric`."""
  have = [r for r in rows if _finite(r['metrics'].get(metric))]
  if not have:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = _linked_axes(rows, keys) or [['seed'] if 'seed' in keys else ['(point)']]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.9), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    key = panel[0]

    def x_of(row, key=key):
      return row['point'].overrides.get(key) if key != '(point)' else row['point'].index

    xs = [x_of(r) for r in have]
    numeric = _numeric(xs)
    position: dict = {}
    if not numeric:
      order = [_fmt(x_of(r)) for r in rows]
      labels = sorted({_fmt(x) for x in xs}, key=order.index)  # strings: in the sweep's order
      if all(isinstance(x, (tuple, list)) and _numeric(x) for x in xs):  # number tuples: by value
        labels = [_fmt(x) for x in sorted({tuple(x) for x in xs})]
      position = {label: i for i, label in enumerate(labels)}
      ax.set_xticks(range(len(labels)), labels, rotation=20 if max(map(len, labels)) > 8 else 0)
    others = [k for k in keys if k not in panel and k != 'seed']
    short = _short_keys(others)
    groups: dict = {}
    for row in have:
      groups.setdefault(tuple(repr(row['point'].overrides.get(k)) for k in others), []).append(row)
    labelled = 0
    for group in groups.values():
      by_x: dict = {}
      for row in group:
        by_x.setdefault(repr(x_of(row)), []).append(row)
      line = []
      for members in by_x.values():
        x = x_of(members[0]) if numeric else position[_fmt(x_of(members[0]))]
        line.append((x, sum(m['metrics'][metric] for m in members) / len(members)))
        if len(members) > 1:  # seeds: each one a small dot around their mean
          for m in members:
            ax.plot([x], [m['metrics'][metric]], '.', ms=3, color='0.4')
      line.sort(key=lambda item: item[0])
      all_finished = all(m['state'].status == 'finished' for m in group)
      style = dict(ms=6, mfc=None if all_finished else 'none')
      if len(line) > 1:
        label = ', '.join(f'{short[k]}={_fmt(group[0]["point"].overrides.get(k))}' for k in others)
        ax.plot(*zip(*line), '-o', label=label or None, **style)
        labelled += 1
      else:  # a point whose other settings no other point shares: no line to draw
        ax.plot(*zip(*line), 's', color='0.55', **style)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
      ax.set_xscale('log')
    ax.set_xlabel(' / '.join(panel))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if 1 < labelled <= 8 or (labelled == 1 and len(groups) > 1):
      ax.legend(fontsize=7)
  fig.suptitle(f'{title}: {metric}' if title else metric, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def print_summary(result: dict, root: str):
  """Prints how many points have each status, where the results are, and one line per point (its status, main
  metric and, unless finished, the detail)."""
  rows = result['rows']
  counts = {s: sum(r['state'].status == s for r in rows) for s in STATUSES}
  print(
    f'[sweep] {root}: '
    + ', '.join(f'{n} {s}' for s, n in counts.items() if n)
    + f' | results {result["md"]}, {result["csv"]}'
    + (f', {result["png"]}' if result['png'] else '')
  )
  main = result['metric']
  for row in rows:
    state = row['state']
    value = row['metrics'].get(main)
    text = f' {main}={_fmt(value)}' if value is not None else ''
    detail = f': {state.detail}' if state.detail and state.status != 'finished' else ''
    print(f'[sweep]   {row["point"].name}: {state.status}{text}{detail}')


# --- internal commands of launch/slurm_array.sbatch ----------------------------------------------------------------------


def _task_point(points_file: str = '', index: str = '') -> dict:
  if not points_file or not index:
    fail('usage: python -m launch.sweep _point|_setup|_mark ... POINTS_FILE INDEX')
  record = read_points_file(points_file)
  if record is None:
    fail(f'cannot read the points file {points_file}')
  points = record.get('points', [])
  if not index.isdigit() or int(index) >= len(points):
    fail(f'{points_file} has no point {index} (points 0-{len(points) - 1})')
  return points[int(index)]


def internal(command: str, argv: list[str]) -> int:
  """The helpers launch/slurm_array.sbatch calls: `_point FILE I` (prints point I's workdir and trainer
  arguments, NUL-separated), `_setup FILE I` (runs its setup steps), `_mark start|end FILE I [--rc=N]
  [--pid=N]` (its attempt records), `_link_run BASE DEST` (DEST: a run directory with BASE's config.json and
  checkpoints as symlinks, for per-point ACAE fits)."""
  if command == '_point':
    point = _task_point(*argv[:2])
    sys.stdout.write('\0'.join([point['workdir']] + point['args']) + '\0')
    return 0
  if command == '_setup':
    point = _task_point(*argv[:2])
    item = Point(point['index'], point['name'], point['workdir'], point['overrides'], '', [], point['setup'])
    children = _Children()
    children.install()
    sys.stdout.flush()
    rc = run_setup(item, sys.executable, sys.stdout, children)
    return 128 - rc if rc < 0 else rc  # a step killed by signal N: 128 + N, as a shell reports it
  if command == '_mark':
    event, rest = argv[0], argv[3:]
    point = _task_point(*argv[1:3])
    options = dict(a[2:].split('=', 1) for a in rest if a.startswith('--') and '=' in a)
    job = os.environ.get('SLURM_ARRAY_JOB_ID')
    job = f'{job}_{os.environ.get("SLURM_ARRAY_TASK_ID")}' if job else os.environ.get('SLURM_JOB_ID', '')
    fields: dict[str, Any] = {'args': point['args'], 'job': f'slurm job {job}' if job else ''}
    if 'rc' in options:
      fields['rc'] = int(options['rc'])
    if 'pid' in options:
      fields['pid'] = int(options['pid'])
    mark(point['workdir'], event, **fields)
    return 0
  if command == '_link_run':
    base, dest = (os.path.abspath(p) for p in argv[:2])
    if not os.path.isfile(os.path.join(base, 'config.json')) or not os.path.isdir(os.path.join(base, 'checkpoints')):
      fail(f'{base} is not a trained run (no config.json and checkpoints/)')
    os.makedirs(dest, exist_ok=True)
    for name in ('config.json', 'checkpoints'):
      link = os.path.join(dest, name)
      if not os.path.lexists(link):
        os.symlink(os.path.join(base, name), link)
    return 0
  fail(f'unknown internal command {command}')


# --- command line ----------------------------------------------------------------------------------------------------


def _parser(collecting: bool):
  import argparse

  parser = argparse.ArgumentParser(
    prog='python -m launch.sweep' + (' collect' if collecting else ''),
    description=__doc__.split('\n\n')[0],
    allow_abbrev=False,
  )
  parser.add_argument('sweep', help='configs/sweeps/<name>.py[:arg]')
  parser.add_argument('--workdir_root', default='workdirs/sweeps', help='the sweep lives in <this>/<sweep name>')
  parser.add_argument('--metric', default='', help='the main metric (default: the sweep\'s, else the first eval one)')
  parser.add_argument('--columns', default='', help='regex of the metrics results.md shows (default: headlines)')
  parser.add_argument('--python', default=sys.executable)
  if not collecting:
    parser.add_argument('--run', choices=['print', 'local', 'slurm', 'tpu'], default='print')
    parser.add_argument('--parallel', type=int, default=0, help='local: points at a time; slurm: array tasks at a time')
    parser.add_argument('--only', default='', help='comma-separated point names or indices (default: all)')
    parser.add_argument('--tpu', default='', help='--run=tpu: the TPU VM name')
    parser.add_argument('--zone', default='', help='--run=tpu: its zone')
    parser.add_argument('--sbatch_args', default='', help="--run=slurm: more sbatch options, e.g. '--time=24:00:00'")
  return parser


def main(argv=None) -> int:
  """The command line (module docstring); returns the exit status: 0 when every point run finished."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    if argv and argv[0].startswith('_'):
      return internal(argv[0], argv[1:])
    collecting = bool(argv) and argv[0] == 'collect'
    args, extra = _parser(collecting).parse_known_args(argv[1:] if collecting else argv)
    cli = parse_cli_overrides(extra)
    sweep = load_sweep(args.sweep)
    root = os.path.join(args.workdir_root, sweep.name)
    all_points = plan(sweep, root, cli, require=not collecting)
    if collecting:
      print_summary(collect(sweep, all_points, root, args.metric, args.columns), root)
      return 0
    points = select(all_points, args.only)
    if args.parallel < 0:
      fail(f'--parallel must be at least 1 (got {args.parallel})')
    if args.run == 'print':
      for point in points:
        for step in point.setup:
          print(shlex.join([args.python] + list(step['args'])))
        print(shlex.join([args.python] + point.args))
      return 0
    if args.run == 'slurm':
      return submit_slurm(args.sweep, sweep, root, points, all_points, args)
    command_of = None
    if args.run == 'tpu':
      if not args.tpu or not args.zone:
        fail('--run=tpu needs --tpu=NAME and --zone=ZONE (the TPU VM slice)')
      if args.parallel > 1:
        fail('--run=tpu runs one point at a time on the slice; drop --parallel')
      if any(p.setup for p in points):
        fail('--run=tpu runs posebh_jax.main only, and this sweep\'s points have setup steps; use --run=local')
      command_of = lambda p: tpu_command(p, args.tpu, args.zone)  # noqa: E731
    queued = _queued(os.path.join(root, POINTS_FILE))  # (before sweep.json is rewritten: its submissions)
    try:
      os.makedirs(root, exist_ok=True)
      write_points_file(root, args.sweep, sweep, all_points)
    except OSError as e:
      fail(
        f'cannot write {root}: {e.strerror}; every point keeps its log and records in its workdir'
        + (' (--run=tpu: mount the bucket here at the same path, or run the sweep on the TPU VM)' if command_of else '')
      )
    results = run_local(points, args.python, args.parallel or 1, command_of, queued)
    summary = collect(sweep, all_points, root, args.metric, args.columns)
    print_summary(summary, root)
    chosen = {p.name for p in points}
    unfinished = [r for r in summary['rows'] if r['point'].name in chosen and r['state'].status != 'finished']
    return 1 if unfinished or any(rc != 0 for rc in results.values()) else 0
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  # Sweep files import launch.sweep: let them find this module rather than load a second copy.
  sys.modules.setdefault('launch.sweep', sys.modules[__name__])
  sys.exit(main())
