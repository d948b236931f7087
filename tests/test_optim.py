"""Optimizer: layer-wise lr decay, weight-decay mask, frozen groups without state, schedule."""

import pytest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from posebh_jax import optim


def _params():
  return {
    'backbone': {
      'patch_embed': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))},
      'pos_embed': jnp.ones((1, 3, 2)),
      'block_0': {'mlp': {'fc1': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}}},
      'block_1': {'mlp': {'fc1': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}}},
      'norm': {'scale': jnp.ones((2,))},
    },
    'head_a': {'final': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}},
  }


def _config(**overrides):
  config = ml_collections.ConfigDict(
    dict(
      lr=1e-3,
      weight_decay=0.1,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip=0.0,
      layer_decay=0.5,
      warmup_steps=0,
      warmup_ratio=0.001,
      decay_epochs=(),
      decay_factor=0.1,
      frozen=(),
      schedule='step',
      final_lr_ratio=0.0,
    )
  )
  config.update(overrides)
  return config


def test_layer_decay_scales_first_adam_step():
  """First AdamW step moves each weight by lr * rate^(L+1-layer) * (sign(g) + wd * w) (closed form)."""
  params = _params()
  tx, _, _ = optim.build_optimizer(_config(), params, depth=2, steps_per_epoch=1)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  adam_step = 1.0 / (1.0 + 1e-8 / 0.3)  # m/(sqrt(v)+eps) after one step with bias correction
  expect = {
    ('backbone', 'patch_embed', 'kernel'): 1e-3 * 0.5**3 * (adam_step + 0.1),
    ('backbone', 'patch_embed', 'bias'): 1e-3 * 0.5**3 * adam_step,
    ('backbone', 'pos_embed'): 1e-3 * 0.5**3 * adam_step,
    ('backbone', 'block_0', 'mlp', 'fc1', 'kernel'): 1e-3 * 0.5**2 * (adam_step + 0.1),
    ('backbone', 'block_1', 'mlp', 'fc1', 'bias'): 1e-3 * 0.5 * adam_step,
    ('backbone', 'norm', 'scale'): 1e-3 * adam_step,
    ('head_a', 'final', 'kernel'): 1e-3 * (adam_step + 0.1),
  }
  for path, value in expect.items():
    leaf = updates
    for key in path:
      leaf = leaf[key]
    np.testing.assert_allclose(np.asarray(leaf), -value, rtol=1e-5, err_msg=str(path))


def test_frozen_parameters_get_no_update_and_no_adam_state():
  params = _params()
  tx, _, frozen = optim.build_optimizer(_config(frozen=('^backbone/',)), params, depth=2, steps_per_epoch=1)
  state = tx.init(params)
  adam_leaves = [x for x in jax.tree.leaves(state) if hasattr(x, 'shape') and x.size > 1]
  trainable_size = sum(x.size for x in jax.tree.leaves(params['head_a']))
  assert sum(x.size for x in adam_leaves) == 2 * trainable_size  # mu and nu of the head only
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates['backbone']))
  assert float(jnp.abs(updates['head_a']['final']['kernel']).max()) > 0
  assert frozen['backbone']['norm']['scale'] and not frozen['head_a']['final']['bias']


def test_scanned_blocks_get_per_layer_multipliers():
  params = {'backbone': {'blocks': {'mlp': {'kernel': jnp.ones((3, 2, 2))}}}}
  ids = optim.layer_ids(params, depth=3)
  np.testing.assert_array_equal(np.asarray(ids['backbone']['blocks']['mlp']['kernel']).reshape(-1), [1, 2, 3])


def test_schedule_warmup_and_steps():
  schedule = optim.learning_rate_schedule(
    1.0, warmup_steps=10, warmup_ratio=0.001, decay_steps=[20, 30], decay_factor=0.1
  )
  np.testing.assert_allclose(float(schedule(0)), 0.001, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(5)), 0.001 + 0.999 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(15)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(25)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(35)), 0.01, rtol=1e-5)


def test_gradient_clipping_bounds_the_update_direction():
  """config.optim.grad_clip clips the global norm (over all leaves) before Adam. With b1 = b2 = 0 and eps = 1, Adam's
  first step is g / (|g| + 1) elementwise, which is not scale-invariant, so the clipped gradient shows in the update:
  the gradient (3, 4, 0 | 12) has global norm 13 and is clipped to norm 1, i.e. divided by 13."""
  params = {'head_a': {'final': {'kernel': jnp.zeros((3,)), 'bias': jnp.zeros((1,))}}}
  grads = {'head_a': {'final': {'kernel': jnp.array([3.0, 4.0, 0.0]), 'bias': jnp.array([12.0])}}}
  raw = np.array([3.0, 4.0, 0.0, 12.0])

  def first_update(**overrides):
    config = _config(lr=0.5, weight_decay=0.0, b1=0.0, b2=0.0, eps=1.0, layer_decay=1.0, **overrides)
    tx, _, _ = optim.build_optimizer(config, params, depth=2, steps_per_epoch=1)
    updates, _ = tx.update(grads, tx.init(params), params)
    return np.r_[np.asarray(updates['head_a']['final']['kernel']), np.asarray(updates['head_a']['final']['bias'])]

  def adam_closed_form(g):
    return -0.5 * g / (np.abs(g) + 1.0)

  clipped = raw * 1.0 / np.linalg.norm(raw)  # global norm 13 -> 1
  np.testing.assert_allclose(first_update(grad_clip=1.0), adam_closed_form(clipped), rtol=1e-6)
  np.testing.assert_allclose(first_update(grad_clip=0.0), adam_closed_form(raw), rtol=1e-6)  # 0: no clipping
  np.testing.assert_allclose(first_update(grad_clip=20.0), adam_closed_form(raw), rtol=1e-6)  # norm below the bound


def test_cosine_schedule_closed_form():
  schedule = optim.learning_rate_schedule(
    2.0,
    warmup_steps=10,
    warmup_ratio=0.0,
    decay_steps=[],
    decay_factor=0.1,
    kind='cosine',
    total_steps=110,
    final_ratio=0.1,
  )
  assert float(schedule(5)) == pytest.approx(1.0)
  assert float(schedule(10)) == pytest.approx(2.0)
  assert float(schedule(60)) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
  assert float(schedule(110)) == pytest.approx(0.2)
  assert float(schedule(500)) == pytest.approx(0.2)


def test_unknown_schedule_is_an_error():
  with pytest.raises(ValueError, match='cosine'):
    optim.learning_rate_schedule(1.0, 0, 0.0, [], 0.1, kind='linear')


def test_frozen_pattern_that_matches_nothing_is_a_user_error():
  """A mistyped pattern would freeze nothing and train everything without a word."""
  from posebh_jax.errors import UserError

  params = _params()
  with pytest.raises(UserError, match="frozen parameter pattern '\\^backbone/blocks_' .* matches no parameter"):
    optim.build_optimizer(_config(frozen=('^head_', '^backbone/blocks_')), params, depth=2, steps_per_epoch=1)


def test_backbone_lr_scale_multiplies_the_backbone_only():
  params = {
    'backbone': {'block_0': {'w': np.zeros(2)}, 'patch_embed': {'w': np.zeros(2)}},
    'head_coco': {'w': np.zeros(2)},
  }
  frozen = jax.tree.map(lambda _: False, params)
  plain = optim.lr_multipliers(params, 1, 0.5, frozen)
  scaled = optim.lr_multipliers(params, 1, 0.5, frozen, backbone_scale=0.1)
  assert scaled['head_coco']['w'] == plain['head_coco']['w'] == 1.0
  assert scaled['backbone']['block_0']['w'] == pytest.approx(0.1 * plain['backbone']['block_0']['w'])
  assert scaled['backbone']['patch_embed']['w'] == pytest.approx(0.1 * 0.25)
