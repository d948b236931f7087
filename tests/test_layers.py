"""The package graph: the import-linter contracts in pyproject.toml hold, name every top-level module of the
library, and catch a deliberately added upward import."""

import os
import shutil
import subprocess
import sys
import tomllib

from conftest import REPO

_PACKAGES = ('posebh_jax', 'data_pipeline', 'configs', 'launch', 'benchmarks')


def _lint_imports(root):
  """Runs import-linter on the tree at `root` (its pyproject.toml); returns the finished process."""
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  return subprocess.run(
    [lint, '--no-cache'], cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, timeout=300
  )


def _layers():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    contracts = tomllib.load(f)['tool']['importlinter']['contracts']
  layers = next(c for c in contracts if c['type'] == 'layers')['layers']
  return {name.strip() for layer in layers for name in layer.split('|')}


def test_contracts_hold():
  result = _lint_imports(REPO)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert 'broken' not in result.stdout.split('Contracts:')[-1].replace('0 broken', '')


def test_every_top_level_module_of_the_library_is_in_a_layer():
  modules = {
    f'posebh_jax.{name[:-3] if name.endswith(".py") else name}'
    for name in os.listdir(os.path.join(REPO, 'posebh_jax'))
    if (name.endswith('.py') and name != '__init__.py')
    or os.path.isfile(os.path.join(REPO, 'posebh_jax', name, '__init__.py'))
  }
  assert modules - _layers() == set(), 'add these modules to a layer of the contract in pyproject.toml'


def test_an_upward_import_breaks_the_contract(tmp_path):
  for name in _PACKAGES:
    shutil.copytree(os.path.join(REPO, name), tmp_path / name, ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(REPO, 'pyproject.toml'), tmp_path)
  derived = tmp_path / 'data_pipeline' / 'derived.py'
  derived.write_text(derived.read_text() + '\nfrom posebh_jax import train  # an upward import\n')
  result = _lint_imports(str(tmp_path))
  assert result.returncode == 1, result.stdout[-3000:]
  assert 'data_pipeline.derived -> posebh_jax.train' in result.stdout, result.stdout[-3000:]
