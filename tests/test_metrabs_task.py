"""The MeTRAbs task: one shared 3D head that every 3D dataset supervises on its own joints (beside unchanged 2D
heads), and the tiny 3D demo trained and evaluated through `posebh_jax.main`."""

import json
import math

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import records as _records
from conftest import run_module as _run_module
from conftest import train as _train
from configs import common, demo
from posebh_jax import tasks as tasks_lib
from posebh_jax.evaluation import pose3d
from posebh_jax.models import pose_model
from posebh_jax.tasks import metrabs as metrabs_task_lib
from test_consistency3d import write_acae

_CONFIG = 'configs/demo.py:tiny,task=3d'
# The trained runs of this module: the mission's shape, the six 2D datasets (the human ones also supervising the 3D
# head) and the three 3D formats in one model and one batch.
_JOINT = 'configs/demo.py:tiny,task=joint'
_FORMATS = ('syn_smpl', 'syn_h36m', 'syn_markers')


def _model(config):
  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(config.model, names, head_specs=[tasks[n].head_spec() for n in names])
  return model, tasks


def _mixed_config():
  """The tiny 2D demo's datasets and the three synthetic 3D datasets in one config."""
  config = demo.get_config('tiny')
  with config.unlocked():
    common.add_synthetic3d(config)
  return config


def _images(config, count=2):
  image_h, image_w = config.data.image_size
  rng = np.random.default_rng(0)
  return {n: jnp.asarray(rng.integers(0, 256, (count, image_h, image_w, 3), np.uint8)) for n in config.data.order}


def test_shared_head_one_parameter_set_used_by_every_3d_dataset():
  config = _mixed_config()
  model, tasks = _model(config)
  images = _images(config)
  variables = nn.unbox(model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, images, train=False))
  heads = sorted(k for k in variables['params'] if k.startswith('head_'))
  assert heads == sorted([f'head_{n}' for n in common.TRAIN_DATASETS] + ['head_metrabs'])
  joints = sum(tasks[f].num_keypoints for f in _FORMATS)
  assert joints == 24 + 17 + 33
  assert variables['params']['head_metrabs']['final']['kernel'].shape[-1] == joints * (1 + config.metrabs.depth_bins)

  # The 2D heads' parameter trees are those of the 2D-only model.
  plain, _ = _model(demo.get_config('tiny'))
  plain_shapes = nn.unbox(jax.eval_shape(lambda: plain.init(jax.random.key(0), _images(demo.get_config('tiny')))))[
    'params'
  ]
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  for name in common.TRAIN_DATASETS:
    assert shapes(plain_shapes[f'head_{name}']) == shapes(variables['params'][f'head_{name}'])

  # Every 3D dataset's output is its own slice of the shared head's joints and moves with that one parameter set.
  outputs = model.apply(variables, images)
  for name in _FORMATS:
    assert outputs[name]['coords3d_rel'].shape == (2, joints, 3)
    own = tasks[name].own_joints(outputs[name])
    assert own['coords2d'].shape == (2, tasks[name].num_keypoints, 2)
  params = dict(variables['params'])
  params['head_metrabs'] = jax.tree.map(lambda p: p + 0.01, params['head_metrabs'])
  moved = model.apply(dict(variables, params=params), images)
  for name in _FORMATS:
    assert not np.allclose(moved[name]['coords3d_rel'], outputs[name]['coords3d_rel'])
  for name in common.TRAIN_DATASETS:
    np.testing.assert_array_equal(moved[name], outputs[name])


def test_flip_test_is_mirror_consistent():
  """The flip-test prediction of a mirrored crop is the mirrored flip-test prediction of the crop (x → W - 1 - x in
  px, x → -x in 3D, joints swapped by the format's flip_index): the flip test maps the mirrored pass back right."""
  config = demo.get_config('tiny,task=3d')
  model, tasks = _model(config)
  images = _images(config)
  variables = nn.unbox(model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, images, train=False))
  # Head weights large enough that the prediction is far from symmetric.
  variables['params']['head_metrabs']['final']['kernel'] *= 300.0
  width = config.data.image_size[1]
  for name in _FORMATS:
    task = tasks[name]
    apply = lambda v, x, name=name: model.apply(v, {name: x})[name]
    plain = task.predict(apply, variables, images[name], flip=True)
    mirrored = task.predict(apply, variables, images[name][:, :, ::-1], flip=True)
    flip_index = np.asarray(task.format.flip_index)
    expected_2d = np.asarray(plain['coords2d'])[:, flip_index] * [-1.0, 1.0] + [width - 1.0, 0.0]
    expected_3d = np.asarray(plain['coords3d_rel'])[:, flip_index] * [-1.0, 1.0, 1.0]
    np.testing.assert_allclose(mirrored['coords2d'], expected_2d, atol=1e-3)
    np.testing.assert_allclose(mirrored['coords3d_rel'], expected_3d, atol=1e-2)
    assert np.ptp(np.asarray(plain['coords3d_rel'])[..., 0]) > 10.0  # not a degenerate (constant) prediction


@pytest.fixture(scope='module')
def data3d_dir(data_dir):
  """The tiny joint demo's data: the session's tiny synthetic 2D data plus the synthetic 3D datasets prepared
  beside it (once per test process)."""
  result = _run_module(
    ['-m', 'data_pipeline.prepare', 'synthetic3d', f'--config={_JOINT}', f'--data_dir={data_dir}', '--num_workers=1']
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return data_dir


# The trained runs' datasets: a human 2D dataset with its heatmap head and the 3D head's 2D term, an animal one with
# its heatmap head only, and two 3D formats (a subset of the tiny joint demo's nine: the same kinds of every part at
# less than half the compile and step time). Batch 32: 8 each; the shared head sees 24, three virtual batches of 8.
_ORDER = ('coco', 'ap10k', 'syn_smpl', 'syn_h36m')
_RUN_FORMATS = ('syn_smpl', 'syn_h36m')
# float64: the 8-device run matches the 1-device run to rounding (see tests/test_train_e2e.py). Both runs are compiled
# fast (`conftest.FAST_COMPILE`): 3 steps each, whose time is mostly compilation.
_RUN = (
  f"--config.data.order=({','.join(repr(n) for n in _ORDER)})",
  '--config.batch_size=32',
  '--config.total_steps=3',
  '--config.eval_every_steps=3',
  '--config.metrabs.abs_loss_start_step=2',
  '--config.model.dtype=float64',
  '--config.model.param_dtype=float64',
)


def _run_config():
  """The tiny joint demo config with the trained runs' datasets (`_ORDER`)."""
  config = demo.get_config('tiny,task=joint').copy_and_resolve_references()
  with config.unlocked():
    config.data.order = _ORDER
  return config


@pytest.fixture(scope='module')
def acae_dir(tmp_path_factory):
  """A random column-normalised ACAE over the tiny joint demo's 3D head joints: the module's runs train with the
  output-regularisation variant (a) on top of the joint demo."""
  names = metrabs_task_lib.head_joint_names(_run_config())
  return write_acae(tmp_path_factory.mktemp('acae'), names)


@pytest.fixture(scope='module')
def run_flags(acae_dir):
  return (*_RUN, '--config.consistency.variant=regularize', f'--config.consistency.acae={acae_dir}')


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory, data3d_dir, run_flags):
  workdir = tmp_path_factory.mktemp('one') / 'run'
  _train(workdir, data3d_dir, *run_flags, config=_JOINT, fast_compile=True)
  return workdir


def test_tiny_joint_demo_trains_evaluates_and_starts_abs_loss_late(one_device_run):
  """The tiny joint demo: every 3D dataset's loss is L_meanrel + L_proj (+ 0.1 L_abs from the start step on), every
  human 2D dataset's is its heatmap loss + 0.2 L_2d, the total is the datasets' sum; the 3D evaluation's written
  files give its logged metrics offline, and it draws its picture."""
  workdir = one_device_run
  config = _run_config()
  rows = _records(workdir)
  train_rows = {r['step']: r for r in rows if 'train/loss' in r}
  assert sorted(train_rows) == [1, 2, 3]
  for step, row in train_rows.items():
    # The row of step s is the loss at state step s - 1: L_abs counts from state step 2 (logged step 3) on.
    for name in _RUN_FORMATS:
      terms = {t: row[f'train/loss_{name}/{t}'] for t in ('meanrel', 'proj', 'abs', 'consistency')}
      assert all(math.isfinite(v) and v > 0 for v in terms.values()), (step, name, terms)
      expected = terms['meanrel'] + terms['proj'] + (0.1 * terms['abs'] if step >= 3 else 0.0) + terms['consistency']
      assert abs(row[f'train/loss_{name}'] - expected) <= 1e-5 * expected, (step, name, row)
    for name in ('coco',):
      heatmap, term_2d = row[f'train/loss_{name}/heatmap'], row[f'train/loss_{name}/2d']
      consistency = row[f'train/loss_{name}/consistency']
      assert heatmap > 0 and term_2d > 0 and consistency > 0, (step, name)
      expected = heatmap + config.metrabs.loss_2d_weight * term_2d + config.consistency.weight_2d * consistency
      assert abs(row[f'train/loss_{name}'] - expected) <= 1e-5 * expected, (step, name, row)
    total = sum(row[f'train/loss_{name}'] for name in config.data.order)
    assert abs(row['train/loss'] - total) <= 1e-5 * total
  final = [r for r in rows if 'eval/syn_h36m/MPJPE' in r][-1]
  assert final['step'] == 3
  for name in _RUN_FORMATS:
    for metric in pose3d.METRIC_NAMES:
      assert math.isfinite(final[f'eval/{name}/{metric}']), (name, metric, final)
    # The written files give the logged metrics offline.
    gt = workdir / 'eval' / f'{name}_gt.json'
    results = json.loads((workdir / 'eval' / f'{name}_results_step3.json').read_text())
    assert len(results) == 12
    offline = pose3d.get_evaluator3d(name).evaluate(str(gt), results)
    for metric, value in offline.items():
      assert value == pytest.approx(final[f'eval/{name}/{metric}'], rel=1e-9), metric
    # The evaluation's picture: one row per example, the crop x2 beside a square 3D view as tall as it.
    height, width = config.data.image_size
    picture = cv2.imread(str(workdir / 'viz' / f'{name}_step3.png'))
    assert picture is not None, f'{name}: no viz/{name}_step3.png'
    assert picture.shape == (config.viz_examples * 2 * height, 2 * width + 2 * height, 3)


def test_eight_devices_match_one_device(tmp_path, data3d_dir, one_device_run, run_flags):
  """A mixed 3D + 2D batch on 8 devices (4x2 data x fsdp), with the consistency variant (a): the shared head's ghost
  BatchNorm and the 3D losses are global-batch computations, the 2D heads per-dataset ones; 3 steps give the 1-device
  losses (every dataset's and its terms), and the sharded evaluation the 1-device metrics."""
  eight = tmp_path / 'eight'
  flags = (*run_flags, '--config.mesh.data=4', '--config.mesh.fsdp=2')
  _train(eight, data3d_dir, *flags, devices=8, config=_JOINT, fast_compile=True)
  one_rows, eight_rows = _records(one_device_run), _records(eight)
  train_keys = sorted({k for r in one_rows for k in r if k.startswith('train/loss')})
  for key in ('train/loss_coco/2d', 'train/loss_coco/consistency', 'train/loss_syn_h36m/consistency'):
    assert key in train_keys, train_keys
  for key in train_keys:
    one = [r[key] for r in one_rows if key in r]
    np.testing.assert_allclose([r[key] for r in eight_rows if key in r], one, rtol=1e-8, err_msg=key)
  one_eval = [r for r in one_rows if 'eval/syn_h36m/MPJPE' in r][-1]
  eight_eval = [r for r in eight_rows if 'eval/syn_h36m/MPJPE' in r][-1]
  eval_keys = [k for k in one_eval if k.startswith('eval/')]
  assert 'eval/coco/AP' in eval_keys and 'eval/syn_smpl/PA-MPJPE' in eval_keys, eval_keys
  for key in eval_keys:
    assert eight_eval[key] == pytest.approx(one_eval[key], rel=1e-6, abs=1e-6), key
