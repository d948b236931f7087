"""2D datasets that supervise the shared MeTRAbs head ('metrabs2d', 'heatmap_metrabs'): the crop camera of a 2D
example, the prefix matrix over the head's joints, the model's several heads per dataset (a shared head run once
on every dataset that names it), and the one-line configuration errors."""

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, demo
from data_pipeline import transforms
from posebh_jax import evaluator
from posebh_jax import tasks as tasks_lib
from posebh_jax.errors import UserError
from posebh_jax.losses import metrabs as metrabs_losses
from posebh_jax.models import composition as composition_lib
from posebh_jax.models import pose_model
from posebh_jax.skeletons import get_format
from posebh_jax.skeletons import registry3d

_JOINT = 'tiny,task=joint'


def _record(keypoints, height=240, width=320):
  image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
  ok, jpeg = cv2.imencode('.png', image)
  assert ok
  return {
    'image': jpeg.tobytes(),
    'bbox': np.array([100.0, 60.0, 80.0, 120.0], np.float32),
    'keypoints': keypoints,
    'height': np.int64(height),
    'width': np.int64(width),
  }


@pytest.mark.parametrize('flip', [False, True])
def test_crop_camera_projects_the_scene_onto_the_crop_keypoints(flip):
  """A 2D example's crop camera K_crop = A K (M): the people's 3D points (mirrored and relabelled left/right when the
  crop is flipped) project through it onto the crop keypoints the transform returns (closed form)."""
  fmt = get_format('coco')
  rng = np.random.default_rng(1)
  fov = 55.0
  camera = transforms.assumed_intrinsics((240, 320), fov)
  points = np.stack([rng.uniform(-300, 300, 17), rng.uniform(-500, 500, 17), rng.uniform(3500, 4500, 17)], -1)
  pixels = points @ camera.T
  keypoints = np.concatenate([pixels[:, :2] / pixels[:, 2:], np.full((17, 1), 2.0)], -1).astype(np.float32)
  aug = dict(
    scale_factor=0.3,
    rotation=30.0,
    rotation_prob=1.0,
    flip_prob=float(flip),
    half_body_prob=0.0,
    half_body_min_keypoints=8,
  )
  transform = transforms.TopDownTrainTransform(
    'coco', 'udp', (64, 48), (16, 12), 2.0, 1.25, aug, half_body=False, camera_fov_deg=fov, with_heatmaps=False
  )
  example = transform.random_map(_record(keypoints), np.random.default_rng(3))
  assert set(example) == {'image', 'intrinsics', 'keypoints2d', 'keypoints2d_valid'}
  assert transform.record_fields == ('image', 'bbox', 'keypoints', 'height', 'width')
  intrinsics = example['intrinsics'].astype(np.float64)
  assert np.linalg.det(intrinsics) > 0  # a proper camera, also for the flipped crop
  scene = points * np.array([-1.0, 1.0, 1.0]) if flip else points
  scene = scene[fmt.flip_index] if flip else scene
  projected = scene @ intrinsics.T
  projected = projected[:, :2] / projected[:, 2:]
  inside = example['keypoints2d_valid']
  assert inside.sum() >= 5
  np.testing.assert_allclose(projected[inside], example['keypoints2d'][inside], atol=2e-3)


def test_prefix_matrix_over_given_joints_matches_the_merged_one():
  """Over the 555 merged names the new argument reproduces the default; over a subset it keeps those columns
  and renormalises each row (a second computation)."""
  names = registry3d.merged_joint_names()
  full = registry3d.prefix_matrix('coco')
  np.testing.assert_array_equal(registry3d.prefix_matrix('coco', names), full)
  subset = [i for i, n in enumerate(names) if n.endswith('_h36m') or n.endswith('_smpl')]
  part = registry3d.prefix_matrix('coco', [names[i] for i in subset])
  expected = (full[:, subset] > 0) / np.maximum((full[:, subset] > 0).sum(-1, keepdims=True), 1)
  np.testing.assert_allclose(part, expected, rtol=1e-6)
  assert part[get_format('coco').index('left_shoulder')].sum() == pytest.approx(1.0)


def _model_and_variables(config, count=8):
  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(config.model, names, head_specs=[tasks[n].head_spec() for n in names])
  image_h, image_w = config.data.image_size
  rng = np.random.default_rng(0)
  images = {n: jnp.asarray(rng.integers(0, 256, (count, image_h, image_w, 3), np.uint8)) for n in names}
  init = jax.jit(lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x, train=False))
  return model, tasks, images, nn.unbox(init(images))


def test_joint_model_heads_and_shared_head_run_once_on_all_its_datasets():
  """The joint demo's model: every 2D dataset its own heatmap head, one `head_metrabs` for the 3D formats and the
  human 2D datasets. The shared head runs once on all their examples in training (ghost BatchNorm's virtual batches
  cover the datasets in order, one running-statistics update): its outputs equal the head applied by hand to the
  concatenated features, and the 2D heads' outputs equal their own heads on their slices."""
  config = demo.get_config(_JOINT)
  model, tasks, images, variables = _model_and_variables(config)
  heads = sorted(k for k in variables['params'] if k.startswith('head_'))
  assert heads == sorted([f'head_{n}' for n in common.TRAIN_DATASETS] + ['head_metrabs'])
  outputs, updates = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
  )(variables, images)
  assert set(outputs['coco']) == {'heatmaps', 'metrabs'} and outputs['ap10k'].ndim == 4
  assert set(outputs['syn_h36m']) == {'coords2d', 'coords3d_rel'}

  features = jax.jit(lambda v, x: model.apply(v, x, False, method=pose_model.PoseModel.features)[0])(variables, images)
  comp = composition_lib.make_composition(config.data.order, {n: len(x) for n, x in images.items()}, 1)
  users = [n for n in config.data.order if n in demo.HUMAN_2D or n.startswith('syn_')]
  parts = [(offset, count) for _, name, offset, count in comp.present() if name in users]
  # One batch group: each dataset's examples are one contiguous range; the head's input is them in dataset order.
  assert comp.groups == 1
  shared = jnp.concatenate([features[offset : offset + count] for offset, count in parts])
  head = tasks['syn_h36m'].head_spec().build(model.dtype, model.param_dtype, 'head_metrabs')
  by_hand, by_hand_updates = jax.jit(lambda v, x: head.apply(v, x, True, mutable=['batch_stats']))(
    {'params': variables['params']['head_metrabs'], 'batch_stats': variables['batch_stats']['head_metrabs']}, shared
  )
  pieces = np.split(np.asarray(by_hand['coords3d_rel']), np.cumsum([c for _, c in parts])[:-1])
  for name, piece in zip(users, pieces):
    got = outputs[name]['metrabs' if name in demo.HUMAN_2D else 'coords3d_rel']
    got = got['coords3d_rel'] if name in demo.HUMAN_2D else got
    np.testing.assert_allclose(got, piece, rtol=1e-5, atol=1e-3, err_msg=name)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
    updates['batch_stats']['head_metrabs'],
    by_hand_updates['batch_stats'],
  )
  # The 2D heads: each dataset's own heatmap head on its own examples (eval mode: no batch statistics).
  mixed_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  for _, name, offset, count in comp.present():
    if name.startswith('syn_'):
      continue
    spec = tasks[name].head_spec()
    spec = spec.part('heatmaps') if name in demo.HUMAN_2D else spec
    own = spec.build(model.dtype, model.param_dtype, f'head_{name}')
    expected = own.apply(
      {'params': variables['params'][f'head_{name}'], 'batch_stats': variables['batch_stats'][f'head_{name}']},
      composition_lib.dataset_slice(features, comp, offset, count),
      False,
    )
    got = mixed_eval[name]['heatmaps'] if name in demo.HUMAN_2D else mixed_eval[name]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_heatmap_metrabs_loss_is_the_heatmap_loss_plus_the_weighted_2d_term():
  config = demo.get_config(_JOINT)
  task = tasks_lib.build_tasks(config)['coco']
  rng = np.random.default_rng(4)
  n, k, j = 4, 17, task.head_prefix_matrix.shape[1]
  image_h, image_w = config.data.image_size
  heat_h, heat_w = config.data.heatmap_size
  output = {
    'heatmaps': jnp.asarray(rng.random((n, heat_h, heat_w, k)), jnp.float32),
    'metrabs': {
      'coords2d': jnp.asarray(rng.uniform(0, 48, (n, j, 2)), jnp.float32),
      'coords3d_rel': jnp.asarray(rng.normal(0, 300, (n, j, 3)), jnp.float32),
    },
  }
  intrinsics = np.tile(transforms.assumed_intrinsics((image_h, image_w), 55.0)[None], (n, 1, 1)).astype(np.float32)
  batch = {
    'heatmaps': rng.random((n, heat_h, heat_w, k)).astype(np.float32),
    'target_weights': np.ones((n, k), np.float32),
    'intrinsics': intrinsics,
    'keypoints2d': rng.uniform(0, 48, (n, k, 2)).astype(np.float32),
    'keypoints2d_valid': rng.random((n, k)) > 0.3,
  }
  total, terms = jax.jit(task.loss)(output, batch)
  heat = np.mean((np.asarray(output['heatmaps'], np.float64) - batch['heatmaps']) ** 2)
  assert float(terms['heatmap']) == pytest.approx(heat, rel=1e-5)
  pred = metrabs_losses.absolute_from_head(
    output['metrabs']['coords2d'], output['metrabs']['coords3d_rel'], intrinsics, (image_h, image_w)
  )
  expected_2d = metrabs_losses.loss_2d(
    pred, batch['keypoints2d'], batch['keypoints2d_valid'], intrinsics, task.head_prefix_matrix, (image_h, image_w)
  )
  assert float(terms['2d']) == pytest.approx(float(expected_2d), rel=1e-6)
  assert float(total) == pytest.approx(heat + config.metrabs.loss_2d_weight * float(expected_2d), rel=1e-5)


def _locked_copy(config, **changes):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in changes.items():
      target = config
      *parents, key = path.split('.')
      for parent in parents:
        target = target[parent]
      target[key] = value
  return config


@pytest.mark.parametrize(
  'arg, changes, message',
  [
    ('tiny', {'data.datasets.coco.task': 'metrabs2d'}, "no dataset of config.data.order has task 'metrabs3d'"),
    (_JOINT, {'data.datasets.ap10k.task': 'heatmap_metrabs'}, 'only human 2D formats can supervise it'),
    (_JOINT, {'eval_datasets': ('coco',), 'data.datasets.coco.task': 'metrabs2d'}, 'has no evaluation'),
  ],
)
def test_one_line_configuration_errors(arg, changes, message):
  config = _locked_copy(demo.get_config(arg), **changes)
  with pytest.raises(UserError, match=message) as error:
    evaluator.validate_config(config)
    tasks_lib.build_tasks(config)
  assert '\n' not in str(error.value)


def test_ghost_batchnorm_count_error_names_the_shared_head():
  config = demo.get_config(_JOINT)
  tasks = tasks_lib.build_tasks(config)
  specs = {n: t.head_spec() for n, t in tasks.items()}
  counts = {n: 8 for n in config.data.order}
  pose_model.check_head_batches(specs, counts)  # 7 x 8 = 56 examples: 7 virtual batches of 8
  counts['syn_smpl'] = 12
  with pytest.raises(UserError, match=r'head_metrabs \(datasets .*syn_smpl.*\): its 60 examples per batch'):
    pose_model.check_head_batches(specs, counts)


def test_metrabs2d_dataset_is_left_out_of_evaluation():
  config = _locked_copy(demo.get_config(_JOINT), **{'data.datasets.mpii.task': 'metrabs2d'})
  names = evaluator.evaluated_datasets(config)
  assert 'mpii' not in names and 'coco' in names and 'syn_h36m' in names
  task = tasks_lib.build_tasks(config)['mpii']
  assert set(task.batch_fields()) == {'intrinsics', 'keypoints2d', 'keypoints2d_valid'}


def test_datasets_sharing_an_expert_equal_a_model_with_that_expert_copied():
  """`experts` names: datasets with equal names share one MoE expert. The shared model equals (stacked and
  unstacked) a one-expert-per-dataset model whose experts are the shared one copied, and the joint demo has seven
  experts (six 2D datasets + the 3D datasets' '3d')."""
  config = demo.get_config('tiny')
  names = ('coco', 'mpii', 'aic')
  specs = pose_model.heatmap_head_specs(config.model, (17, 16, 14))
  rng = np.random.default_rng(0)
  image_h, image_w = config.data.image_size
  images = {n: jnp.asarray(rng.integers(0, 256, (4, image_h, image_w, 3), np.uint8)) for n in names}
  for stacking in (True, False):
    shared = pose_model.build_model(config.model, names, head_specs=specs, experts=('x', 'y', 'x')).clone(
      stack_equal_datasets=stacking
    )
    separate = shared.clone(dataset_experts=())
    variables = nn.unbox(jax.jit(lambda x, m=shared: m.init(jax.random.key(0), x))(images))
    blocks = variables['params']['backbone']
    copied = jax.tree.map(lambda x: x, variables)
    for key, block in blocks.items():
      if not key.startswith('block_'):
        continue
      assert block['mlp']['expert_kernel'].shape[0] == 2
      for param in ('expert_kernel', 'expert_bias'):
        copied['params']['backbone'][key]['mlp'][param] = block['mlp'][param][np.array([0, 1, 0])]
    got = jax.jit(lambda v, x, m=shared: m.apply(v, x))(variables, images)
    expected = jax.jit(lambda v, x, m=separate: m.apply(v, x))(copied, images)
    for name in names:
      np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=f'{name} {stacking}')
  joint = demo.get_config(_JOINT)
  assert pose_model.expert_indices(pose_model.dataset_experts(joint)) == (0, 1, 2, 3, 4, 5, 6, 6, 6)


def _random_batch(structure, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, fields in structure.items():
    out[name] = {}
    for key, spec in fields.items():
      if spec.dtype == np.uint8:
        value = rng.integers(0, 256, spec.shape, np.uint8)
      elif spec.dtype == np.bool_:
        value = np.ones(spec.shape, bool)
      else:
        value = rng.random(spec.shape).astype(spec.dtype)
      out[name][key] = value
  return out


def test_bn_inference_phase_keeps_running_statistics_and_the_optimizer_moments():
  """`bn_inference_last_steps`: the run's last N steps are a phase whose heads' BatchNorm uses and keeps its running
  statistics; entering it keeps the optimizer's moments (the same optimizer), while the parameters still train."""
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import stages
  from posebh_jax import trainer as trainer_lib

  config = _locked_copy(demo.get_config('tiny'), bn_inference_last_steps=1, total_steps=2)
  with config.unlocked():
    config.data.order = ('coco', 'mpii')
  phases = stages.plan_phases(config, 10, 2)
  assert [(p.start_step, p.end_step, p.bn_inference) for p in phases] == [(0, 1, False), (1, 2, True)]
  mesh = sharding_lib.make_mesh(config.mesh)
  trainer = trainer_lib.Trainer(config, mesh, 10, {'coco': 4, 'mpii': 4})
  batch = _random_batch(trainer.batch_structure())
  state = trainer.init_state(0)
  initial_stats = jax.device_get(state['batch_stats'])
  state, _ = trainer.compile_train_step(batch)(state, batch)
  stats, moments = jax.device_get(state['batch_stats']), jax.device_get(state['opt_state'])
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), stats, initial_stats)))
  state = trainer.enter_phase(state, 1)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state['opt_state']), moments)
  params = jax.device_get(state['params'])
  state, _ = trainer.compile_train_step(batch)(state, batch)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state['batch_stats']), stats)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), jax.device_get(state['params']), params))
  assert any(changed)
  with pytest.raises(UserError, match='bn_inference_last_steps works in runs without PoseBH'):
    stages.plan_phases(_locked_copy(demo.get_config('tiny,posebh'), bn_inference_last_steps=1), 10, 20)
