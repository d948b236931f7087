"""Benchmark helpers that need no accelerator: the profiler-trace summary on a hand-made perfetto trace, the
rounding-sensitivity twin runs."""

import gzip
import json

import numpy as np
import pytest

from benchmarks import trace_summary


def _trace(path):
  events = [
    {'ph': 'M', 'name': 'process_name', 'pid': 1, 'args': {'name': '/device:GPU:0'}},
    {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 7, 'args': {'name': 'Stream #14(Compute)'}},
    {'ph': 'M', 'name': 'process_name', 'pid': 2, 'args': {'name': '/host:CPU'}},
    {'ph': 'M', 'name': 'thread_name', 'pid': 2, 'tid': 3, 'args': {'name': 'python3'}},
    {'ph': 'X', 'name': 'PjitFunction(jit(train_step))', 'pid': 2, 'tid': 3, 'ts': 0, 'dur': 9000},
  ]
  # Two steps: each runs gemm twice (300 us each) and one reduce (400 us).
  for step in range(2):
    base = step * 2000
    events += [
      {'ph': 'X', 'name': 'gemm', 'pid': 1, 'tid': 7, 'ts': base, 'dur': 300},
      {'ph': 'X', 'name': 'gemm', 'pid': 1, 'tid': 7, 'ts': base + 400, 'dur': 300},
      {'ph': 'X', 'name': 'input_reduce_fusion', 'pid': 1, 'tid': 7, 'ts': base + 800, 'dur': 400},
    ]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)


def test_trace_summary_counts_device_time_per_step(tmp_path):
  path = str(tmp_path / 'step.trace.json.gz')
  _trace(path)
  threads = trace_summary.load_device_threads(path)
  assert list(threads) == ['/device:GPU:0 / Stream #14(Compute)']  # host events are left out
  text = trace_summary.summarise(path, steps=2)
  lines = text.splitlines()
  assert '3 events, 1.00 ms per step' in lines[1]
  assert lines[2].split()[:3] == ['0.600', 'ms', '2x'] and lines[2].endswith('gemm')
  assert lines[3].split()[:3] == ['0.400', 'ms', '1x'] and '40.0%' in lines[3]


_HLO = '''HloModule jit_train_step

%fused_reduce.7 (param_0.1: f32[8,4]) -> f32[4] {
  %param_0.1 = f32[8,4]{1,0} parameter(0), metadata={scheduling_name="param_0.1"}
  ROOT %reduce.3 = f32[4]{0} reduce(%param_0.1, %c), dimensions={0}, metadata={op_name="jit(train_step)/transpose(jvp(PoseModel))/PoseModel._own_heads/head_coco/bn_0/reduce_sum"}
}

ENTRY %main.9 (p: f32[8,4]) -> f32[4] {
  %loop_add_fusion.3 = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%fused_add.3, metadata={op_name="jit(train_step)/jvp(PoseModel)/PoseModel.features/backbone/block_11/add" scheduling_name="loop_add_fusion.3"}
  %loop_add_fusion.4 = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%fused_add.4, metadata={deduplicated_name="loop_add_fusion.3" scheduling_name="loop_add_fusion.4"}
  ROOT %input_reduce_fusion.7 = f32[4]{0} fusion(%loop_add_fusion.4), kind=kInput, calls=%fused_reduce.7, metadata={scheduling_name="input_reduce_fusion.7"}
}
'''


def _kernel_trace(path, kernels):
  events = [
    {'ph': 'M', 'name': 'process_name', 'pid': 1, 'args': {'name': '/device:GPU:0'}},
    {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 7, 'args': {'name': 'Stream #14(Compute)'}},
    {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 8, 'args': {'name': 'XLA Ops'}},
    # An 'XLA Ops' thread repeats the kernels' time: only the stream threads are counted.
    {'ph': 'X', 'name': 'loop_add_fusion.3', 'pid': 1, 'tid': 8, 'ts': 0, 'dur': 5000},
  ]
  events += [
    {'ph': 'X', 'name': name, 'pid': 1, 'tid': 7, 'ts': 10 * i, 'dur': dur, 'args': {'hlo_op': op}}
    for i, (name, dur, op) in enumerate(kernels)
  ]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)


def test_trace_attribution_maps_kernels_to_model_scopes_and_diffs_two_steps(tmp_path):
  from benchmarks import trace_attribution

  names = trace_attribution.hlo_op_names(_HLO)
  assert names['loop_add_fusion.3'] == 'jvp(PoseModel)/PoseModel.features/backbone/block_11/add'
  assert names['loop_add_fusion.4'] == names['loop_add_fusion.3']  # through deduplicated_name
  # No op path of its own: its called computation's root's.
  assert names['input_reduce_fusion.7'].endswith('head_coco/bn_0/reduce_sum')
  first, second = str(tmp_path / 'a.trace.json.gz'), str(tmp_path / 'b.trace.json.gz')
  # Two steps; kernels named like the trace names them (`_7` for `.7`), a cuBLAS kernel, one unknown.
  _kernel_trace(
    first,
    [
      ('loop_add_fusion_3', 100, ''),
      ('loop_add_fusion_4', 300, ''),
      ('input_reduce_fusion_7', 200, ''),
      ('nvjet_sm90_tst_128x160', 1000, 'command_buffer_1'),
      ('memcpy32_post', 50, ''),
    ]
    * 2,
  )
  _kernel_trace(second, [('loop_add_fusion_3', 100, ''), ('nvjet_sm90_tst_128x160', 1000, '')] * 2)
  hlo_path = str(tmp_path / 'a.hlo.txt.gz')
  with gzip.open(hlo_path, 'wt') as f:
    f.write(_HLO)
  table = trace_attribution.attribute(first, trace_attribution.read_hlo(first), steps=2)
  assert table == {
    'jvp(PoseModel)/PoseModel.features/backbone/block_N/add': (0.4, 2.0),
    'transpose(jvp(PoseModel))/PoseModel._own_heads/head_*/bn_0/reduce_sum': (0.2, 1.0),
    trace_attribution.LIBRARY: (1.0, 1.0),
    trace_attribution.UNKNOWN: (0.05, 1.0),
  }
  other = trace_attribution.attribute(second, _HLO, steps=2)
  lines = trace_attribution.report(table, other).splitlines()
  assert lines[0].startswith('total 1.650 vs 1.100 ms per step (difference +0.550)')
  assert lines[2].split()[:3] == ['+0.300', '0.400', '0.100'] and lines[2].endswith('block_N/add')
  with pytest.raises(SystemExit, match='no HLO for'):
    trace_attribution.read_hlo(second)


def test_rounding_sensitivity_perturbation_has_the_stated_size():
  import jax
  import numpy as np

  from benchmarks.rounding_sensitivity import perturbed

  params = {'a': np.full((200, 300), 2.0, np.float32), 'b': {'c': np.full((5000,), -0.5, np.float32)}}
  out = jax.device_get(perturbed(params, seed=0, size=1e-3))
  for before, after in ((params['a'], out['a']), (params['b']['c'], out['b']['c'])):
    relative = (after - before) / before
    assert abs(relative.mean()) < 1e-4 and 0.95e-3 < relative.std() < 1.05e-3
  assert not np.array_equal(out['a'][0], out['a'][1])  # independent per element


def test_rounding_sensitivity_unperturbed_twin_repeats_the_run_bitwise(data_dir):
  """With no perturbation the twin is the same run: a deterministic step gives identical losses and parameters."""
  from benchmarks.rounding_sensitivity import set_override, twin_losses
  from configs import demo

  config = demo.get_config('tiny')
  with config.unlocked():
    set_override(config, f'data.data_dir={data_dir}')
    set_override(config, 'eval_every_steps=0')
  losses, twin, moved = twin_losses(config, steps=3, perturbation=0.0)
  assert losses.shape == (3,) and np.all(np.isfinite(losses))
  np.testing.assert_array_equal(losses, twin)
  assert moved[0][0] == 0.0 and len(moved) > 10
  with pytest.raises(ValueError, match='no key'):
    set_override(config, 'optim.epsilon=1e-5')


def _tiny_task_config(task, batch):
  """benchmarks.train_step's 3D / joint step config on the tiny demo model (configs/demo.py:tiny's sizes)."""
  from benchmarks import train_step

  config = train_step._task_config('demo', 'float32', batch, False, task)
  config.model.update(dict(width=32, depth=2, num_heads=2, expert_dim=8, head_channels=16, patch_size=8))
  config.data.image_size = (64, 64) if task == '3d' else (64, 48)
  config.data.heatmap_size = (32, 32) if task == '3d' else (32, 24)
  return config


@pytest.mark.parametrize('task,batch,shared,virtual', [('3d', 12, 12, 16), ('joint', 24, 20, 4)])
def test_train_step_3d_and_joint_setups_build_their_trainers(task, batch, shared, virtual):
  """The 3D and joint steps of benchmarks.train_step: their compositions, the virtual batch lowered to divide the
  shared head's examples where it must, the trainers they build and (joint) a random batch of its structure."""
  import jax

  from benchmarks import train_step
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import trainer as trainer_lib

  config = _tiny_task_config(task, batch)
  counts, total = train_step.task_step_setup(config, batch, jax.device_count())
  assert sum(counts.values()) == batch and total == shared
  assert config.metrabs.virtual_batch == virtual
  three_d = [n for n in counts if config.data.datasets[n].task == 'metrabs3d']
  assert three_d == list(train_step.common.SYNTHETIC_3D_FORMATS)
  if task == '3d':
    assert counts == {n: batch // 3 for n in three_d} and tuple(config.data.image_size) == (64, 64)
    trainer = trainer_lib.Trainer(config, sharding_lib.make_mesh(config.mesh), steps_per_epoch=10, counts=counts)
    assert trainer.flops_per_batch() > 0 and set(trainer.batch_structure()) == set(three_d)
    return
  assert list(counts) == list(train_step.common.TRAIN_DATASETS) + three_d
  assert all(counts[n] == 2 for n in train_step.common.TRAIN_DATASETS) and all(counts[n] == 4 for n in three_d)
  # Building the trainer checks every task's config and the ghost-BatchNorm count; the joint step itself trains in
  # tests/test_metrabs_task.py (a CPU compile here would cost ~20 s of the suite's budget).
  trainer = trainer_lib.Trainer(config, sharding_lib.make_mesh(config.mesh), steps_per_epoch=10, counts=counts)
  structure = trainer.batch_structure()
  assert set(structure['coco']) >= {'heatmaps', 'intrinsics', 'keypoints2d'} and 'intrinsics' not in structure['ap10k']
  batch = train_step._random_batch(structure)
  assert jax.tree.map(np.shape, batch) == jax.tree.map(lambda s: tuple(s.shape), structure)


def test_train_step_random_batch_is_plausible():
  """`_random_batch` follows the batch structure: valid cameras, 3D joints ahead of them projecting into the crop."""
  from benchmarks import train_step
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import trainer as trainer_lib

  config = _tiny_task_config('joint', 9)
  counts, _ = train_step.task_step_setup(config, 9, 1)
  mesh = sharding_lib.make_mesh(config.mesh)
  struct = trainer_lib.Trainer(config, mesh, steps_per_epoch=10, counts=counts).batch_structure()
  batch = train_step._random_batch(struct)
  for name, fields in struct.items():
    assert set(batch[name]) == set(fields)
    for key, s in fields.items():
      assert batch[name][key].shape == s.shape and batch[name][key].dtype == s.dtype, (name, key)
  smpl = batch['syn_smpl']
  assert np.all(smpl['joints3d'][..., 2] > 2500) and np.all(np.abs(smpl['joints3d'][..., :2]) <= 800)
  assert np.all((smpl['joints2d'] > 0) & (smpl['joints2d'] < 48)) and 0.5 < smpl['valid'].mean() < 1
  coco = batch['coco']
  np.testing.assert_allclose(coco['intrinsics'][:, :2, 2], [[23.5, 31.5]] * counts['coco'])
  assert np.all(coco['keypoints2d'][..., 0] < 48) and np.all(coco['keypoints2d'][..., 1] < 64)


def _project_parameter_count(config) -> int:
  """Parameters of the project's model for `config` (shapes only, nothing compiled)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from posebh_jax import tasks as tasks_lib
  from posebh_jax.models import pose_model

  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(
    config.model, names, head_specs=[tasks[n].head_spec() for n in names], experts=pose_model.dataset_experts(config)
  )
  image_h, image_w = config.data.image_size
  dummy = {n: jnp.zeros((1, image_h, image_w, 3), jnp.uint8) for n in names}
  keys = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(keys, dummy, method=pose_model.PoseModel.init_all)))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes['params']))


def _torch_reference_batch(config, seed=0):
  """A host batch of `config`'s six datasets (one example each, two for COCO) in the project's layout, with target
  weights of 0 and random positive values (so that the weighting shows in the loss)."""
  from posebh_jax import tasks as tasks_lib

  rng = np.random.default_rng(seed)
  tasks = tasks_lib.build_tasks(config)
  (image_h, image_w), (heat_h, heat_w) = config.data.image_size, config.data.heatmap_size
  batch = {}
  for name in config.data.order:
    n, k = (2 if name == 'coco' else 1), tasks[name].num_keypoints
    batch[name] = {
      'image': rng.integers(0, 256, (n, image_h, image_w, 3), dtype=np.uint8),
      'heatmaps': rng.random((n, heat_h, heat_w, k), dtype=np.float32),
      'target_weights': (rng.random((n, k)) * (rng.random((n, k)) > 0.3)).astype(np.float32),
    }
  return batch


def test_torch_reference_step_matches_the_projects_loss_and_parameter_count(monkeypatch):
  """benchmarks/torch_reference.py on configs/demo.py:tiny: its parameter count is the project model's (plus the
  class-token slot of transformers' position embeddings) for the demo's head and for transformers' own decoder;
  its loss is the project's `joints_mse` (JAX) summed over datasets on the same heatmaps; routed experts give
  the dense ones' heatmaps; a step trains; a missing transformers is a one-line error naming the Makefile step."""
  from conftest import require_reference

  torch = require_reference('torch')
  require_reference('transformers')
  from benchmarks import torch_reference
  from configs import demo
  from posebh_jax.losses import joints_mse

  config = demo.get_config('tiny')
  batch = _torch_reference_batch(config)
  names = tuple(config.data.order)
  for head_channels in (torch_reference.CLASSIC_DECODER_CHANNELS, 16):  # transformers' decoder / the demo's head
    config.model.head_channels = head_channels
    step = torch_reference.TorchTrainStep(config, batch, warmup=0)
    heads = step.model.heads
    assert (type(heads[0]).__name__ == 'VitPoseClassicDecoder') == (head_channels == 256)
    assert step.model.attention  # transformers' dispatch ran (None: its eager fallback, another model's speed)
    ours = _project_parameter_count(config)
    assert torch_reference.parameter_count(step.model) == ours + config.model.width, head_channels
  assert step.model.backbone.embeddings.patch_embeddings.projection.padding == (config.model.patch_padding,) * 2
  # The loss against the project's joints_mse on the torch model's heatmaps (train mode: batch statistics).
  routed = torch_reference.TorchTrainStep(config, batch, experts='routed', warmup=0)
  with torch.no_grad():
    loss, losses = step.forward_loss(step.images, step.dataset_index)
    pixels = ((step.images.float() - step.mean) / step.std).permute(0, 3, 1, 2)
    dense_maps = step.model(pixels, step.dataset_index)
    routed_maps = routed.model(pixels, routed.dataset_index)
  expected = [
    float(joints_mse(h.numpy().transpose(0, 2, 3, 1), batch[n]['heatmaps'], batch[n]['target_weights']))
    for n, h in zip(names, dense_maps)
  ]
  heat_h, heat_w = config.data.heatmap_size
  assert [tuple(h.shape) for h in dense_maps] == [
    batch[n]['heatmaps'].shape[:1] + (batch[n]['heatmaps'].shape[-1], heat_h, heat_w) for n in names
  ]
  np.testing.assert_allclose([float(v) for v in losses], expected, rtol=1e-5)
  np.testing.assert_allclose(float(loss), sum(expected), rtol=1e-5)
  for dense_map, routed_map in zip(dense_maps, routed_maps):
    np.testing.assert_allclose(dense_map.numpy(), routed_map.numpy(), rtol=1e-4, atol=1e-5)
  # Layer-wise lr decay: the embeddings' group at layer_decay^(depth + 1), the heads' at the base lr.
  lrs = sorted(group['lr'] for group in step.optimizer.param_groups)
  np.testing.assert_allclose([lrs[0], lrs[-1]], [config.optim.lr * config.optim.layer_decay**3, config.optim.lr])
  before = [p.detach().clone() for p in step.params]
  assert step.run(2) > 0 and np.isfinite(float(step.loss))
  assert all(not torch.equal(a, b.detach()) for a, b in zip(before, step.params) if b.ndim >= 2)
  monkeypatch.setitem(__import__('sys').modules, 'transformers', None)
  with pytest.raises(SystemExit, match=r'make \.venv/\.reference') as error:
    torch_reference.require_torch()
  assert '\n' not in str(error.value)
