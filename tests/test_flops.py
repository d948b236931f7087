"""Analytic FLOPs against XLA's own count of the compiled forward pass."""

import jax
import jax.numpy as jnp

from configs import common
from posebh_jax import flops
from posebh_jax.models import pose_model


def test_analytic_forward_flops_match_xla_cost_analysis():
  config = common.model_config('S/16')
  config.update(dict(width=192, depth=2, num_heads=4, drop_path=0.0, expert_dim=16, head_channels=64, dtype='float32'))
  model = pose_model.build_model(config, ['a', 'b'], [17, 14])
  images = {'a': jnp.zeros((2, 128, 96, 3), jnp.uint8), 'b': jnp.zeros((2, 128, 96, 3), jnp.uint8)}
  variables = model.init(jax.random.key(0), images)
  compiled = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, images).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = cost['flops']
  grid = flops.token_grid(config, (128, 96))
  head_flops = {
    name: spec.forward_flops(config.width, grid) for name, spec in zip(model.dataset_names, model.head_specs)
  }
  analytic = flops.train_flops_per_batch(config, (128, 96), {'a': 2, 'b': 2}, head_flops) / 3.0
  # XLA also counts normalisation, softmax and activation flops, which the analytic count leaves out.
  assert 0.85 * xla_flops <= analytic <= 1.05 * xla_flops, (analytic, xla_flops)
