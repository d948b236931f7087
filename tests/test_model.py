"""Model: MoE routing by dataset slices (and stacked), model split equality, logical sharding annotations."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from posebh_jax.models import composition, heatmap_head, moe, pose_model, vit


def _model_config(**overrides):
  """configs.common's model config (the one source of its keys and defaults), tiny."""
  config = common.model_config('S/16')
  config.update(dict(width=32, depth=2, num_heads=2, drop_path=0.0, expert_dim=8, head_channels=16, dtype='float32'))
  config.update(overrides)
  return config


def _images(counts, size=(64, 48), seed=0):
  rng = np.random.RandomState(seed)
  return {name: jnp.asarray(rng.randint(0, 255, (n,) + size + (3,)), jnp.uint8) for name, n in counts.items()}


def _randomise(variables, seed=1):
  """Replaces the tiny init values by O(1) random ones so that comparisons are not trivially near zero."""
  variables = dict(nn.unbox(variables))
  leaves, tree = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  variables['params'] = jax.tree.unflatten(
    tree, [0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  )
  return variables


@pytest.mark.parametrize('scan', [False, True])
def test_split_model_equals_multi_dataset_model(scan):
  model = pose_model.build_model(_model_config(scan=scan), ['a', 'b', 'c'], [5, 7, 3], num_groups=2)
  images = _images({'a': 4, 'b': 2, 'c': 2})
  variables = _randomise(model.init(jax.random.key(0), images))
  outputs = model.apply(variables, images)
  for name in ('a', 'b', 'c'):
    single, single_variables = pose_model.split_dataset_variables(model, variables, name)
    assert not single.use_experts
    single_out = single.apply(single_variables, {name: images[name]})[name]
    np.testing.assert_allclose(single_out, outputs[name], rtol=1e-4, atol=1e-5)


def test_expert_only_touches_its_own_examples():
  """Changing dataset b's expert changes b's outputs and leaves a's identical (no masking tricks)."""
  model = pose_model.build_model(_model_config(), ['a', 'b'], [5, 7], num_groups=2)
  images = _images({'a': 2, 'b': 4})
  variables = _randomise(model.init(jax.random.key(0), images))
  base = model.apply(variables, images)
  changed = jax.tree.map(lambda x: x, variables)
  kernel = changed['params']['backbone']['block_0']['mlp']['expert_kernel']
  changed['params']['backbone']['block_0']['mlp']['expert_kernel'] = kernel.at[1].add(1.0)
  out = model.apply(changed, images)
  np.testing.assert_array_equal(out['a'], base['a'])
  assert np.abs(out['b'] - base['b']).max() > 1e-3


def test_grouped_layout_matches_per_example_results():
  """The output for an example does not depend on the number of groups or on its batch neighbours."""
  images = _images({'a': 4, 'b': 4})
  config = _model_config()
  one = pose_model.build_model(config, ['a', 'b'], [5, 7], num_groups=1)
  four = pose_model.build_model(config, ['a', 'b'], [5, 7], num_groups=4)
  variables = _randomise(one.init(jax.random.key(0), images))
  out_one, out_four = one.apply(variables, images), four.apply(variables, images)
  single = one.apply(variables, {'b': images['b'][2:3]})['b']
  for name in ('a', 'b'):
    np.testing.assert_allclose(out_one[name], out_four[name], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(single[0], out_one['b'][2], rtol=1e-5, atol=1e-6)


def test_moe_ffn_equals_dense_reference():
  """MoE FFN output = concat(fc2_shared(h), h @ W_expert[d]) computed with plain NumPy."""
  comp = composition.make_composition(['a', 'b'], {'a': 2, 'b': 2}, groups=2)
  layer = moe.MoEFeedForward(dim=8, hidden_dim=16, expert_dim=3, num_experts=2)
  x = jax.random.normal(jax.random.key(0), (4, 5, 8))
  variables = _randomise(layer.init(jax.random.key(1), x, comp))
  out = np.asarray(layer.apply(variables, x, comp))
  p = jax.tree.map(np.asarray, variables['params'])
  h = np.asarray(jax.nn.gelu(np.asarray(x) @ p['fc1']['kernel'] + p['fc1']['bias'], approximate=False))
  shared = h @ p['fc2']['kernel'] + p['fc2']['bias']
  # grouped layout (groups=2, per group: 1 of a then 1 of b): rows 0,1 are group 0 and rows 2,3 group 1.
  dataset_of_row = [0, 1, 0, 1]
  expected = np.stack(
    [
      np.concatenate([shared[i], h[i] @ p['expert_kernel'][d] + p['expert_bias'][d]], -1)
      for i, d in enumerate(dataset_of_row)
    ]
  )
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_composition_rejects_counts_not_divisible_by_groups():
  with pytest.raises(ValueError, match='multiple of the 4 batch shards'):
    composition.make_composition(['a'], {'a': 6}, groups=4)


def test_parameters_carry_logical_axis_names():
  model = pose_model.build_model(_model_config(), ['a', 'b'], [5, 7])
  variables = model.init(jax.random.key(0), _images({'a': 1, 'b': 1}))
  specs = nn.get_partition_spec(variables)['params']['backbone']['block_0']
  assert tuple(specs['mlp']['fc1']['kernel']) == ('embed', 'mlp')
  assert tuple(specs['mlp']['expert_kernel']) == ('expert', 'mlp', 'embed')
  assert tuple(specs['attn']['qkv']['kernel']) == ('embed', 'qkv')


def test_phase_deconvolution_equals_direct_transposed_convolution():
  """Deconv4x4Stride2 against a direct NumPy scatter: out[2i-1+ky, 2j-1+kx] += x[i,j] · w[ky,kx]."""
  layer = heatmap_head.Deconv4x4Stride2(features=3, kernel_init=nn.initializers.normal(1.0))
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 4, 6)))
  variables = layer.init(jax.random.key(1), x)
  out = np.asarray(layer.apply(variables, x))
  kernel = np.asarray(variables['params']['kernel'])
  expected = np.zeros((2, 10 + 2, 8 + 2, 3))  # one pixel of margin on each side for the -1 offset
  for i in range(5):
    for j in range(4):
      for ky in range(4):
        for kx in range(4):
          expected[:, 2 * i + ky, 2 * j + kx] += x[:, i, j] @ kernel[ky, kx]
  np.testing.assert_allclose(out, expected[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_batched_phase_deconvolutions_equal_direct_transposed_convolutions():
  """deconv4x4_stride2_phases over E=3 kernels at once, interleaved, against the NumPy scatter of each kernel;
  and its phase grouping: phase 2·ry + rx, row (i·h + y)·w + x holds output pixel (2y + ry, 2x + rx) of example i."""
  rng = np.random.RandomState(0)
  x = rng.randn(3, 2, 3, 4, 5).astype(np.float32)
  kernels = rng.randn(3, 4, 4, 5, 2).astype(np.float32)
  phases = np.asarray(heatmap_head.deconv4x4_stride2_phases(jnp.asarray(x), jnp.asarray(kernels)))
  images = np.asarray(heatmap_head.interleave_phases(jnp.asarray(phases), 2, 3, 4))
  for e in range(3):
    expected = np.zeros((2, 6 + 2, 8 + 2, 2))
    for i in range(3):
      for j in range(4):
        for ky in range(4):
          for kx in range(4):
            expected[:, 2 * i + ky, 2 * j + kx] += x[e, :, i, j] @ kernels[e, ky, kx]
    np.testing.assert_allclose(images[e], expected[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
  for ry in (0, 1):
    for rx in (0, 1):
      np.testing.assert_array_equal(phases[:, 2 * ry + rx].reshape(3, 2, 3, 4, 2), images[:, :, ry::2, rx::2])


@pytest.mark.parametrize('padding,size', [(0, (64, 48)), (2, (68, 50))])
def test_patch_embed_equals_strided_convolution(padding, size):
  """PatchEmbed (reshape + matmul) against flax's strided nn.Conv with the same parameters, including a padding
  that leaves a remainder smaller than a patch (dropped, as a VALID convolution does)."""
  layer = vit.PatchEmbed(features=8, patch_size=16, padding=padding)
  images = np.asarray(jax.random.uniform(jax.random.key(0), (2, *size, 3)) * 255)
  variables = nn.meta.unbox(layer.init(jax.random.key(1), images))
  variables['params']['bias'] = np.linspace(-1, 1, 8).astype(np.float32)
  conv = nn.Conv(8, (16, 16), strides=(16, 16), padding=[(padding, padding)] * 2)
  expected = conv.apply(variables, images)
  out = layer.apply(variables, images)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_pointwise_head_conv_equals_flax_conv():
  layer = heatmap_head.Conv1x1(features=5)
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 6, 4, 7)))
  variables = nn.meta.unbox(layer.init(jax.random.key(1), x))
  variables['params']['bias'] = np.arange(5, dtype=np.float32)
  expected = nn.Conv(5, (1, 1)).apply(variables, x)
  np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


def test_stacked_heads_and_batched_experts_equal_one_dataset_after_another():
  """With equal per-dataset counts the experts run as one batched matmul and the heads as one stacked computation
  (heatmap_head.stacked_heads); `stack_equal_datasets='never'` runs one dataset after another on static slices. Training
  outputs, BatchNorm running statistics and gradients must agree, and inference with a subset of the datasets
  (the stacked path then gathers the present experts) too."""
  names, keypoints, groups = ['a', 'b', 'c'], [5, 7, 3], 2
  stacked = pose_model.build_model(_model_config(stack_equal_datasets='always'), names, keypoints, num_groups=groups)
  loop = pose_model.build_model(_model_config(stack_equal_datasets='never'), names, keypoints, num_groups=groups)
  assert stacked.stack_equal_datasets and not loop.stack_equal_datasets
  images = _images({name: 2 * groups for name in names})
  variables = _randomise(stacked.init(jax.random.key(0), images))
  variables['batch_stats'] = jax.tree.map(lambda x: x + 0.5, nn.unbox(variables['batch_stats']))

  def loss_and_stats(model, params):
    outputs, updates = model.apply(
      {'params': params, 'batch_stats': variables['batch_stats']},
      images,
      train=True,
      mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(2)},
    )
    return sum(jnp.sum(jnp.sin(out)) for out in outputs.values()), (outputs, updates['batch_stats'])

  # Compiled: run op by op, these two forward-backward passes took ~50 s of per-primitive compilation.
  results = [
    jax.jit(jax.value_and_grad(functools.partial(loss_and_stats, model), has_aux=True))(variables['params'])
    for model in (stacked, loop)
  ]
  (_, (out_stacked, stats_stacked)), grads_stacked = results[0]
  (_, (out_loop, stats_loop)), grads_loop = results[1]
  for name in names:
    np.testing.assert_allclose(out_stacked[name], out_loop[name], rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), stats_stacked, stats_loop)
  for got, want in zip(jax.tree.leaves(grads_stacked), jax.tree.leaves(grads_loop)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(np.abs(want).max()) + 1e-6)
  subset = {'a': images['a'], 'c': images['c']}
  inference_stacked, inference_loop = stacked.apply(variables, subset), loop.apply(variables, subset)
  for name in subset:
    np.testing.assert_allclose(inference_stacked[name], inference_loop[name], rtol=1e-5, atol=1e-5)


def test_stacking_choice_is_checked_and_auto_follows_the_backend():
  assert pose_model.resolve_stacking('always') and not pose_model.resolve_stacking('never')
  assert pose_model.resolve_stacking('auto') == (jax.default_backend() != 'cpu')
  with pytest.raises(ValueError, match="stack_equal_datasets is 'sometimes'; use one of auto, always, never"):
    pose_model.build_model(_model_config(stack_equal_datasets='sometimes'), ['a'], [5])


_SHARDED_ROUTING_STEPS = '''
import json
import sys
import jax
import numpy as np
from configs import demo
from posebh_jax import sharding as sharding_lib, trainer as trainer_lib

config = demo.get_config('tiny')
config.data.order = ('coco', 'ap10k', 'mpii')  # three heads and experts keep the two compilations short
for name in config.data.order:
  config.data.datasets[name].weight = 1.0
stacking = sys.argv[1]
config.model.stack_equal_datasets = stacking
# Stacked: equal counts. Per dataset: an unequal mixture (as the demo's), whose fc2 is assembled per dataset.
counts = {name: 8 for name in config.data.order} if stacking == 'always' else {'coco': 16, 'ap10k': 8, 'mpii': 8}
config.batch_size = sum(counts.values())
losses = {}
for label, devices, shape in (('one', jax.devices()[:1], (1, 1)), ('eight', jax.devices(), (4, 2))):
  config.mesh.data, config.mesh.fsdp = shape
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  task = trainer_lib.Trainer(config, mesh, steps_per_epoch=100, counts=counts)
  struct = task.batch_structure(counts)
  rng = np.random.RandomState(0)
  batch = {n: {'image': rng.randint(0, 255, s['image'].shape).astype(np.uint8),
               'heatmaps': rng.rand(*s['heatmaps'].shape).astype(np.float32),
               'target_weights': np.ones(s['target_weights'].shape, np.float32)} for n, s in struct.items()}
  batch = sharding_lib.global_batch(batch, mesh)
  state, step = task.init_state(0), task.compile_train_step(struct)
  # A gradient split along a sharded axis (of a concatenation of sharded weights) shows up as permutes.
  losses[label + '_permutes'] = sum('collective-permute' in line for line in step.as_text().splitlines())
  losses[label] = []
  for _ in range(3):
    state, metrics = step(state, batch)
    # The loss starts near mean(target^2) whatever the heads see; the gradient norm depends on the routing.
    losses[label].append([float(metrics['train/loss']), float(metrics['train/grad_norm'])])
print(json.dumps(losses))
'''


@pytest.mark.parametrize('stacking', ['always', 'never'])
def test_routing_on_eight_devices_matches_one_device(stacking):
  """The experts and heads, stacked (equal counts) or one dataset after another (an unequal mixture), under a
  data×fsdp mesh of 8 simulated devices: the first train steps' losses and gradient norms equal one device's to
  float rounding, and the step has no collective permutes (the configs' `auto` stacks only on accelerators, so
  the end-to-end 8-vs-1 tests on the CPU take the per-dataset path too)."""
  from conftest import run_module

  # Compiled fast (`conftest.FAST_COMPILE`): 3 steps on each mesh, whose time is mostly compilation.
  result = run_module(['-c', _SHARDED_ROUTING_STEPS, stacking], devices=8, fast_compile=True)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = json.loads(result.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(losses['eight'], losses['one'], rtol=1e-5)
  assert losses['one'][2][0] != losses['one'][0][0]
  # The heads' and fc2's parameters are fsdp-sharded; their gradients need no collective permutes.
  assert losses['eight_permutes'] == 0


@pytest.mark.parametrize('std', [0.001, 0.02])
def test_head_deconv_init_std_sets_the_deconvolution_kernels_scale(std):
  """`model.head_deconv_init_std` is the std of every head's deconvolution kernels (and nothing else's)."""
  model = pose_model.build_model(_model_config(head_deconv_init_std=std), ('coco', 'mpii'), (17, 16))
  images = _images({'coco': 1, 'mpii': 1})
  params = nn.unbox(model.init({'params': jax.random.key(0)}, images, train=False))['params']
  for head in ('head_coco', 'head_mpii'):
    for layer in ('deconv_0', 'deconv_1'):
      kernel = np.asarray(params[head]['upsample'][layer]['kernel'])
      assert kernel.size >= 4096 and abs(kernel.std() / std - 1) < 0.05, (head, layer, kernel.std())
    assert abs(np.asarray(params[head]['final']['kernel']).std() / 0.001 - 1) < 0.1  # the 1×1 conv keeps 0.001


def test_float64_model_without_64_bit_mode_is_a_user_error():
  from posebh_jax.errors import UserError

  assert not jax.config.jax_enable_x64  # the test process runs in JAX's default 32-bit mode
  with pytest.raises(UserError, match='JAX_ENABLE_X64=1'):
    pose_model.build_model(_model_config(dtype='float64', param_dtype='float64'), ('coco',), (17,), num_groups=1)
