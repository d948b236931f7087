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


# XLA's CPU backend at optimisation level 0 (LLVM's): PoseBH's tiny stage-2 train step compiled in 14.2 s instead of
# 23.1 s and ran about 2x slower, with the same losses to float rounding (not bit for bit: ~1e-7 relative in
# float32). For runs of a few steps, whose time is mostly compilation: a test compiles the runs it compares alike,
# and none of its checks may rest on the default compilation's rounding.
FAST_COMPILE = '--xla_backend_optimization_level=0'


def run_module(args, devices: int = 1, timeout: int = 600, fast_compile: bool = False):
  """Runs `python <args>` from the repository root on `devices` simulated CPU devices; returns the result.
  `fast_compile`: with `FAST_COMPILE`."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}' + (f' {FAST_COMPILE}' if fast_compile else '')
  return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def train(workdir, data_dir, *overrides, devices=1, config='configs/demo.py:tiny', fast_compile=False):
  """`posebh_jax.main` with `config` on `data_dir` (`fast_compile`: see `run_module`); asserts success and returns
  the result."""
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
    fast_compile=fast_compile,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def write_random_weights(workdir, config, seed: int, scale: float, step: int = 0) -> str:
  """A weights-only checkpoint (`inference.write_weights`) of `config`'s model (every dataset's head and expert)
  with random weights, built from the initialisation's shapes without compiling or running it (seconds instead of
  a training run): every parameter N(0, scale²) drawn with NumPy's generator of `seed`, BatchNorm's running means 0
  and variances 1 (what the initialisation gives them). Returns `workdir` as a string."""
  import flax.linen as nn
  import jax
  import numpy as np

  from posebh_jax import inference
  from posebh_jax.models import pose_model
  from posebh_jax.tasks import build_tasks

  tasks = build_tasks(config)
  order = tuple(config.data.order)
  net = pose_model.build_model(
    config.model,
    order,
    posebh_config=config.posebh,
    head_specs=[tasks[n].head_spec() for n in order],
    experts=pose_model.dataset_experts(config),
  )
  images = {n: np.zeros((1,) + tuple(config.data.image_size) + (3,), np.uint8) for n in order}
  init = lambda: nn.unbox(net.init(jax.random.key(seed), images, train=False, method=pose_model.PoseModel.init_all))
  shapes = jax.eval_shape(init)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.normal(0.0, scale, s.shape).astype(s.dtype), shapes['params'])
  batch_stats = jax.tree_util.tree_map_with_path(
    lambda path, s: (np.ones if jax.tree_util.keystr(path).endswith("['var']") else np.zeros)(s.shape, s.dtype),
    shapes.get('batch_stats', {}),
  )
  inference.write_weights(str(workdir), config, {'params': params, 'batch_stats': batch_stats}, step=step)
  return str(workdir)


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
  """A 2-step tiny PoseBH run (configs/demo.py:tiny,posebh; no eval; compiled fast: `FAST_COMPILE`), shared by the
  picture and domain-transfer tests."""
  workdir = tmp_path_factory.mktemp('posebh_run')
  overrides = ('--config.total_steps=2', '--config.eval_every_steps=0')
  train(workdir, data_dir, *overrides, config='configs/demo.py:tiny,posebh', fast_compile=True)
  return str(workdir)


# The files that take longest, longest first (their tests' durations added up; measured one file at a time on the
# 2-core VM): `make test` runs whole files on two workers (--dist loadfile), and starting these first keeps a long
# file from running alone at the end while the other worker idles.
LONG_FILES = (
  'test_train_e2e.py',
  'test_posebh_e2e.py',
  'test_cluster.py',
  'test_metrabs_task.py',
  'test_sweep.py',
  'test_synthetic_mdt.py',
  'test_posebh_stages_e2e.py',
  'test_weights_checkpoint.py',
  'test_distill_task.py',
  'test_task_interface.py',
  'test_model.py',
  'test_transfer.py',
  'test_real_e2e.py',
  'test_viz.py',
  'test_joint_task.py',
  'test_benchmarks.py',
)


def pytest_configure(config):
  """Keeps the file order of `pytest_collection_modifyitems` under pytest-xdist: by default (--loadscope-reorder)
  --dist loadfile hands out files by their number of tests, most first, which put the long files (one to three
  tests each) last."""
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
  """Runs the `LONG_FILES` first (in that order), every other file after them in collection order."""
  del session, config
  rank = {name: index for index, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
