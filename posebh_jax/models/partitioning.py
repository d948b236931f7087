"""Logical partitioning shared by the model modules, and the dtype that statistics are kept in.

Parameter axes ('embed', 'mlp', 'qkv', 'channels', 'expert', 'layers') and activation axes ('activation_batch',
'activation_seq', 'activation_embed', 'activation_mlp') are named apart, as MaxText does, so that the config's
`logical_axis_rules` shard weights and activations independently (e.g. fsdp over 'embed' without touching the
activations' feature axis).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Activation axes (rules in config.logical_axis_rules).
BATCH = 'activation_batch'
SEQ = 'activation_seq'
EMBED = 'activation_embed'
MLP = 'activation_mlp'


def accumulation_dtype(dtype: Dtype) -> Dtype:
  """The dtype that normalisation statistics, the backbone's output and heatmaps are kept in for a model that
  computes in `dtype`: float32, or float64 for a float64 model (used to check sharding without float32 rounding)."""
  return jnp.promote_types(dtype, jnp.float32)


def param_axes(init_fn, names):
  """`init_fn` whose parameter carries the logical parameter axes `names`."""
  return nn.with_logical_partitioning(init_fn, names)


def constrain(x: jax.Array, names) -> jax.Array:
  """Sharding constraint on `x` by logical axis names (activation axes for activations)."""
  return nn.with_logical_constraint(x, names)
