"""Shared fixtures and helpers of the end-to-end tests, which run `python -m ...` in subprocesses so that the
device count (XLA_FLAGS) can differ between runs."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for the whole test session, shared by this process and every subprocess
# it starts: the suite compiles the same tiny models many times (1 vs 8 devices, resumed runs, evals), and a
# cache hit turns a ~20 s CPU compile into well under a second. The cache key covers the program, the device
# assignment and the compile options, so a hit is the executable that would have been compiled anyway.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix='posebh_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE_DIR
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


def run_module(args, devices: int = 1, timeout: int = 600):
  """Runs `python <args>` from the repository root on `devices` simulated CPU devices; returns the result."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def train(workdir, data_dir, *overrides, devices=1, config='configs/demo.py:tiny'):
  """`posebh_jax.main` with `config` on `data_dir`; asserts success and returns the result."""
  result = run_module(
    [
      '-m',
      'posebh_jax.main',
      f'--config={config}',
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
      *overrides,
    ],
    devices=devices,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def require_reference(module_name: str, hint: str = ''):
  """Imports a reference toolkit that tests compare against (xtcocotools, ...), installed best effort by the
  Makefile's reference step. Where it does not import, the test is skipped, except under CI (CI=true), where a
  missing reference fails the run instead of silently dropping the comparisons. `hint`: how to install it (default:
  the requirements file). Returns the module. Usable at module level (the whole file is skipped)."""
  import importlib

  try:
    return importlib.import_module(module_name)
  except (ImportError, ValueError) as err:  # ValueError: a wheel built against another numpy ABI
    message = (
      f"reference toolkit {module_name} does not import ({err}); "
      f"{hint or 'pip install -r requirements-reference.txt (the Makefile reference step)'}"
    )
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def pycocotools_keypoint_eval(gt, results, sigmas, img_ids=None):
  """Plain pycocotools keypoint evaluation (the reference the project's evaluation is tested against); returns the
  finished COCOeval (`.stats`: the 10 summary numbers). Inputs are not modified; nothing is printed."""
  import contextlib
  import copy
  import io

  import numpy as np
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    coco_eval = COCOeval(coco_gt, coco_dt, 'keypoints')
    coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    if img_ids is not None:
      coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return coco_eval


def records(workdir) -> list[dict]:
  """The rows of a workdir's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def losses(workdir) -> dict[int, float]:
  """{step: train/loss} from a workdir's metrics.jsonl."""
  return {r['step']: r['train/loss'] for r in records(workdir) if 'train/loss' in r}


def train_loss_steps(workdir) -> list[int]:
  """The steps of a workdir's metrics.jsonl train/loss rows, in file order (a resumed run appends its rows)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['step'] for r in map(json.loads, f) if 'train/loss' in r]


def assert_resumed(stdout: str, workdir, step: int, total: int) -> None:
  """The run that printed `stdout` resumed from `workdir`'s checkpoint at `step` and trained only the steps
  after it: it printed so, and metrics.jsonl has one train/loss row for each step 1..total, in order (a run that
  silently restarted from step 0 gives the same losses but logs steps 1..step twice)."""
  assert f'resumed from {workdir}/checkpoints at step {step}' in stdout, stdout[-2000:]
  assert train_loss_steps(workdir) == list(range(1, total + 1))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A tiny synthetic dataset built with the demo:tiny config's settings (shared by the e2e test files)."""
  path = tmp_path_factory.mktemp('tfds')
  result = run_module(
    ['-m', 'data_pipeline.prepare', 'synthetic', f'--data_dir={path}', '--config=configs/demo.py:tiny']
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return str(path)


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """The six training datasets prepared from the tiny official-format samples in $POSEBH_REALDATA (read there)
  into one tmp tfds data_dir, with a fake APT-36K raw layout (it has no sample): for end-to-end tests with
  `configs.common.data_config(sources='real')` (COCO and COCO-WholeBody get their `validation_det` split from the
  sample's detections). Returns {'data_dir': str, 'summaries': {prepare name: prepare summary}}."""
  from data_pipeline import prepare
  from realdata_samples import SAMPLES, make_fake_apt36k, require_realdata

  require_realdata()
  path = tmp_path_factory.mktemp('tfds_real')
  raw_apt36k = tmp_path_factory.mktemp('raw_apt36k')
  make_fake_apt36k(str(raw_apt36k))
  options = {name: SAMPLES[name] for name in ('coco_keypoints', 'aic', 'mpii', 'ap10k', 'coco_wholebody')}
  options['apt36k'] = dict(manual_dir=str(raw_apt36k))
  summaries = {
    name: prepare.prepare_real(name, data_dir=str(path), log=lambda line: None, **kwargs)
    for name, kwargs in options.items()
  }
  return {'data_dir': str(path), 'summaries': summaries}


@pytest.fixture(scope='session')
def posebh_workdir(tmp_path_factory, data_dir):
  """A 2-step tiny PoseBH run (configs/demo.py:tiny,posebh; no eval), shared by the picture and domain-transfer
  tests."""
  workdir = tmp_path_factory.mktemp('posebh_run')
  train(
    workdir, data_dir, '--config.total_steps=2', '--config.eval_every_steps=0', config='configs/demo.py:tiny,posebh'
  )
  return str(workdir)


# The files with the longest tests, longest first (the suite's --durations): `make test` runs files on two workers
# (--dist loadfile), and starting these first keeps one long file from running alone at the end.
LONG_FILES = (
  'test_cluster.py',
  'test_posebh_stages_e2e.py',
  'test_posebh_e2e.py',
  'test_train_e2e.py',
  'test_metrabs_task.py',
  'test_weights_checkpoint.py',
  'test_synthetic_mdt.py',
  'test_task_interface.py',
  'test_model.py',
  'test_transfer.py',
  'test_real_e2e.py',
  'test_viz.py',
  'test_joint_task.py',
  'test_benchmarks.py',
)


def pytest_collection_modifyitems(session, config, items):
  """Runs the `LONG_FILES` first (in that order), every other file after them in collection order."""
  del session, config
  rank = {name: index for index, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
