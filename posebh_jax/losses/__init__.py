"""Pure loss functions."""

from posebh_jax.losses.heatmap import joints_mse

__all__ = ['joints_mse']
