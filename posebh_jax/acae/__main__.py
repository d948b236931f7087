"""python -m posebh_jax.acae --workdir=<a 3D or joint run> [--data_dir=DIR] [--config.<key>=VALUE ...]

Fits the affine-combining autoencoder on the run's own 3D predictions (`posebh_jax.acae.fit`) and writes
`<workdir>/acae/`. The config is the run's config.json; `--config.acae.<key>=...` (or any other key) overrides it
for this command only, and `--data_dir` is short for `--config.data.data_dir`. User errors end with one line,
`error: ...`, and exit status 2.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from data_pipeline.errors import DatasetNotFoundError
from posebh_jax import workdir as workdir_lib
from posebh_jax.acae import defaults
from posebh_jax.errors import UserError

_USAGE = 'usage: python -m posebh_jax.acae --workdir=<a 3D or joint run> [--data_dir=DIR] [--config.acae.<key>=VALUE]'


def _workdir_argument(argv) -> str | None:
  """The value of --workdir in `argv` (`--workdir=DIR` or `--workdir DIR`), read before the flags are defined: the
  run's config.json is what `--config.*` overrides."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith('--workdir='):
      return arg.split('=', 1)[1]
    if arg == '--workdir' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_run_config(workdir: str):
  """The config of the run in `workdir` (its config.json, JSON lists as tuples). Raises UserError when there is
  none or it is not a run config; a missing `acae` section (a run made before it existed) or key gets the defaults
  (`posebh_jax/acae/defaults.py`)."""
  hint = 'pass the --workdir of a 3D or joint run of `python -m posebh_jax.main`'
  path = os.path.join(os.path.abspath(os.path.expanduser(workdir)), 'config.json')
  if not os.path.isfile(path):  # the fit writes into the run directory itself, not one above `workdir`
    raise UserError(f'{path} does not exist; {hint}')
  config = workdir_lib.load_run_config(workdir, hint)
  # A run made before config.acae existed (or with fewer keys) gets the defaults.
  acae = dict(defaults.ACAE)
  acae.update(config.get('acae', {}) or {})
  config['acae'] = acae
  return config


def _define_and_parse_flags(argv, config) -> None:
  """Defines the flags (`--config` holding the run's `config`) and parses `argv`, which must be `sys.argv`:
  ml_collections reads the `--config.*` overrides from it when the flag is defined. A bad flag or override ends
  with one line."""
  try:
    config_flags.DEFINE_config_dict('config', config, 'The run config; --config.acae.<key>=... overrides.')
    flags.DEFINE_string('workdir', None, 'The 3D or joint run (its config.json and latest checkpoint).')
    flags.DEFINE_string('data_dir', '', "Prepared datasets (default: the run config's data.data_dir).")
    flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    raise UserError(' '.join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or type(e).__name__) from None
  except (AttributeError, KeyError) as e:
    overrides = ' '.join(a.split('=')[0] for a in argv[1:] if a.startswith('--config.'))
    detail = str(e).strip().strip('"').strip("'")
    raise UserError(f"unknown config key {detail!r} in {overrides}; see the run's config.json for the keys") from None
  except (TypeError, ValueError) as e:
    overrides = ' '.join(a for a in argv[1:] if a.startswith('--config.'))
    raise UserError(
      f'bad config value in {overrides}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}'
    ) from None


def main() -> int:
  """The command on `sys.argv`; returns the exit status."""
  argv = list(sys.argv)
  try:
    workdir = _workdir_argument(argv)
    if not workdir:
      raise UserError(f'pass --workdir=<a 3D or joint run>; {_USAGE}')
    config = load_run_config(workdir)
    _define_and_parse_flags(argv, config)
    config = flags.FLAGS.config
    if flags.FLAGS.data_dir:
      config.data.data_dir = flags.FLAGS.data_dir
    if 'float64' in (config.model.dtype, config.model.param_dtype):
      import jax  # pylint: disable=g-import-not-at-top

      jax.config.update('jax_enable_x64', True)  # before any array exists, as posebh_jax.main does
    # Imported only now, after the 64-bit switch.
    from posebh_jax.acae import fit  # pylint: disable=g-import-not-at-top

    logging.set_verbosity(logging.WARNING)
    fit.run(config, os.path.abspath(os.path.expanduser(workdir)), log=lambda line: print(line, flush=True))
  except (UserError, DatasetNotFoundError) as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
