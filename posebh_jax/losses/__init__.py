"""Pure loss functions."""
from posebh_jax.losses.heatmap import joints_mse, multi_dataset_heatmap_loss
