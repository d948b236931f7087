"""Entry point: python -m posebh_jax.main --config=configs/<name>.py[:args] --workdir=DIR [--mode=train|eval]
[--config.key=value ...]. Trains (resuming from DIR's latest checkpoint) or evaluates it."""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data_pipeline.errors import DatasetNotFoundError
from posebh_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config file, e.g. configs/b16.py:runlocal.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, eval results and pictures.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (default; resumes) or eval (latest checkpoint).')
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0 for multi-process runs (SLURM/TPU set it automatically).'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index in a multi-process run.')


# Errors a user can fix (DataConfigError is a UserError): printed as one line, exit status 2.
_USER_ERRORS = (UserError, DatasetNotFoundError)


def _load_config():
  """The --config value; a config file that cannot be loaded (missing, or raising) ends with one line."""
  try:
    config = _CONFIG.value
    if config is not None:
      config.get('seed')  # a file that failed to load gives a placeholder that raises on first use
    return config
  except (OSError, flags.Error) as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    print(
      f'error: cannot load --config={flags.FLAGS["config"].serialize().split("=", 1)[-1]}: '
      f'{lines[-1] if lines else type(e).__name__}',
      file=sys.stderr,
    )
    sys.exit(2)


def _check_workdir(path: str, create: bool):
  """A --workdir that is a file or cannot be created ends with one line (instead of a traceback at the first
  write, after the model has been built); so does a URL, which the writers would take for a local path."""
  if '://' in path:
    print(
      f'error: --workdir={path}: the workdir must be a filesystem path that every process sees (metrics, '
      'evaluation files and pictures are written with local file calls); mount the bucket on every host '
      '(e.g. `gcsfuse --implicit-dirs BUCKET /mnt/BUCKET`) and pass a path under the mount',
      file=sys.stderr,
    )
    sys.exit(2)
  if os.path.exists(path) and not os.path.isdir(path):
    print(f'error: --workdir={path} is a file; pass a directory', file=sys.stderr)
    sys.exit(2)
  if create:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      print(f'error: cannot create --workdir={path}: {e.strerror}; pass a directory you can write to', file=sys.stderr)
      sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options are --config, --workdir, --mode')
  config = _load_config()
  if config is None or _WORKDIR.value is None:
    print('error: pass --config=configs/<name>.py and --workdir=DIR', file=sys.stderr)
    sys.exit(2)
  _check_workdir(_WORKDIR.value, create=_MODE.value == 'train')
  import jax

  try:
    if _COORDINATOR.value or _NUM_PROCESSES.value:
      jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
      )
    elif (
      any(k in os.environ for k in ('SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES'))
      and int(os.environ.get('SLURM_NTASKS', '2')) > 1
    ):
      jax.distributed.initialize()
  except (ValueError, RuntimeError) as e:
    reason = str(e).strip().splitlines()[0].rstrip('.') if str(e).strip() else type(e).__name__
    print(
      f'error: cannot join the multi-process run: {reason}; pass --coordinator_address=HOST:PORT (process '
      "0's), --num_processes=N and --process_id=0..N-1 to every process, or start it under SLURM or on TPU VMs, "
      'where they are read from the environment',
      file=sys.stderr,
    )
    sys.exit(2)
  if 'float64' in (config.model.dtype, config.model.param_dtype):
    jax.config.update('jax_enable_x64', True)  # before any array exists; float32 models never turn it on
  # Imported only now: the library's modules come after jax.distributed.initialize and the 64-bit switch above.
  from posebh_jax import train  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, _WORKDIR.value)
    else:
      train.evaluate_only(config, _WORKDIR.value)
  except _USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing; a bad --config override ends with one line instead of a usage dump."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    message = ' '.join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or type(e).__name__
    hint = (
      ' (check the --config.<key> name and value against the config file)'
      if any(a.startswith('--config.') for a in argv[1:])
      and 'config' in message
      and 'parsing config file' not in message
      else ''
    )
    print(f'error: {message}{hint}', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    # ml_collections raises these (with a traceback) for an override naming a key the config does not have.
    overrides = ' '.join(a.split('=')[0] for a in argv[1:] if a.startswith('--config.'))
    detail = str(e).strip().strip('"').strip("'")
    print(
      f'error: unknown config key ({detail}) in {overrides}; run with --config=<file> and no overrides, '
      'then look at workdir/config.json for the valid keys',
      file=sys.stderr,
    )
    sys.exit(2)
  except (TypeError, ValueError) as e:
    overrides = ' '.join(a for a in argv[1:] if a.startswith('--config.'))
    print(
      f'error: bad config value in {overrides}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}',
      file=sys.stderr,
    )
    sys.exit(2)


def run():
  """Console entry point."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
