"""Heatmap regression losses."""

from __future__ import annotations


import jax
import jax.numpy as jnp


def joints_mse(pred: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """Target-weighted joints MSE: (1/K) Σ_k mean_{n,p} (w_k Ĥ_k − w_k H_k)².

  Args: pred, target float (n, h, w, K); weights (n, K). Returns a float32 scalar (float64 for float64 `pred`).
  """
  dtype = jnp.promote_types(pred.dtype, jnp.float32)
  w = weights.astype(dtype)[:, None, None, :]
  diff = (pred.astype(dtype) - target.astype(dtype)) * w
  return jnp.mean(jnp.square(diff))
