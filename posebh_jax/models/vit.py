"""The ViT backbone (no class token) whose FFN has ViTPose++'s dataset-specific expert channels.

Examples arrive grouped by dataset (`models.composition`), so that each dataset's experts run on a static slice.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.models.composition import Composition
from posebh_jax.models.moe import MoEFeedForward
from posebh_jax.models.partitioning import BATCH, EMBED, SEQ, Dtype, accumulation_dtype, constrain, param_axes

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection; (B, N, D) → (B, N, D)."""

  dim: int
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    head_dim = self.dim // self.num_heads
    qkv = nn.Dense(
      3 * self.dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='qkv',
      kernel_init=param_axes(nn.initializers.truncated_normal(0.02), ('embed', 'qkv')),
      bias_init=param_axes(nn.initializers.zeros, ('qkv',)),
    )(x)
    qkv = qkv.reshape(x.shape[:2] + (3, self.num_heads, head_dim))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = jax.nn.dot_product_attention(q, k, v)
    out = out.reshape(x.shape[:2] + (self.dim,))
    return nn.Dense(
      self.dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='proj',
      kernel_init=param_axes(nn.initializers.truncated_normal(0.02), ('qkv', 'embed')),
      bias_init=param_axes(nn.initializers.zeros, ('embed',)),
    )(out)


def drop_path(x: jax.Array, rate: jax.Array | float, rng: jax.Array) -> jax.Array:
  """Stochastic depth: zeroes whole examples of a residual branch with probability `rate`, rescales the rest."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.maximum(keep, 1e-6).astype(x.dtype), jnp.zeros_like(x))


class Block(nn.Module):
  """Pre-norm transformer block with the MoE FFN. Call signature fits `nn.scan`: (x, drop_rate) → (x, None)."""

  dim: int
  num_heads: int
  mlp_ratio: float
  expert_dim: int
  num_experts: int
  comp: Composition
  train: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  stack_equal_datasets: bool = True

  @nn.compact
  def __call__(self, x, drop_rate):
    norm = lambda name: nn.LayerNorm(
      epsilon=1e-6,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
      scale_init=param_axes(nn.initializers.ones, ('embed',)),
      bias_init=param_axes(nn.initializers.zeros, ('embed',)),
    )
    branch = Attention(self.dim, self.num_heads, self.dtype, self.param_dtype, name='attn')(norm('norm1')(x))
    if self.train:
      branch = drop_path(branch, drop_rate, self.make_rng('dropout'))
    x = constrain(x + branch, (BATCH, SEQ, EMBED))
    branch = MoEFeedForward(
      self.dim,
      int(self.dim * self.mlp_ratio),
      self.expert_dim,
      self.num_experts,
      self.dtype,
      self.param_dtype,
      self.stack_equal_datasets,
      name='mlp',
    )(norm('norm2')(x), self.comp)
    if self.train:
      branch = drop_path(branch, drop_rate, self.make_rng('dropout'))
    x = constrain(x + branch, (BATCH, SEQ, EMBED))
    return x, None


class ViTBackbone(nn.Module):
  """ViT without cls token. Input images uint8/float (B, H, W, 3) RGB in [0, 255], arranged by `comp`;
  output feature map (B, H/16, W/16, D) in float32 (float64 for a float64 model)."""

  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_padding: int = 2
  drop_path: float = 0.0
  expert_dim: int = 0
  num_experts: int = 0
  remat: bool = False
  scan: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  stack_equal_datasets: bool = True

  @nn.compact
  def __call__(self, images, comp: Composition, train: bool = False):
    x = (images.astype(accumulation_dtype(self.dtype)) - IMAGENET_MEAN) / IMAGENET_STD
    x = PatchEmbed(self.width, self.patch_size, self.patch_padding, self.dtype, self.param_dtype, name='patch_embed')(x)
    batch, grid_h, grid_w, _ = x.shape
    x = x.reshape(batch, grid_h * grid_w, self.width)
    pos_embed = self.param(
      'pos_embed',
      param_axes(nn.initializers.truncated_normal(0.02), (None, 'seq', 'embed')),
      (1, grid_h * grid_w, self.width),
      self.param_dtype,
    )
    x = constrain(x + pos_embed.astype(self.dtype), (BATCH, SEQ, EMBED))
    drop_rates = np.linspace(0.0, self.drop_path, self.depth).astype(np.float32)
    block_cls = Block
    if self.remat:
      block_cls = nn.remat(Block, prevent_cse=not self.scan)
    kwargs = dict(
      dim=self.width,
      num_heads=self.num_heads,
      mlp_ratio=self.mlp_ratio,
      expert_dim=self.expert_dim,
      num_experts=self.num_experts,
      comp=comp,
      train=train,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      stack_equal_datasets=self.stack_equal_datasets,
    )
    if self.scan:
      scanned = nn.scan(
        block_cls,
        variable_axes={'params': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=0,
        length=self.depth,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )
      x, _ = scanned(**kwargs, name='blocks')(x, jnp.asarray(drop_rates))
    else:
      for index in range(self.depth):
        x, _ = block_cls(**kwargs, name=f'block_{index}')(x, float(drop_rates[index]))
    x = nn.LayerNorm(
      epsilon=1e-6,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='norm',
      scale_init=param_axes(nn.initializers.ones, ('embed',)),
      bias_init=param_axes(nn.initializers.zeros, ('embed',)),
    )(x)
    return x.reshape(batch, grid_h, grid_w, self.width).astype(accumulation_dtype(self.dtype))


class PatchEmbed(nn.Module):
  """Non-overlapping patch projection (a conv with kernel = stride = patch, zero padding `padding` per side),
  computed as patch extraction by reshape and one matmul; (n, H, W, 3) float → (n, h, w, D) in `dtype`.

  Parameters are those of `nn.Conv` (kernel (p, p, 3, D), bias (D,)), and the result is bit-identical to it on
  CPU, but its backward pass is a plain matmul, which XLA's CPU backend runs faster than the gradient of a strided
  convolution (docs/MEASUREMENTS.md).
  """

  features: int
  patch_size: int = 16
  padding: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    channels = images.shape[-1]
    kernel = self.param(
      'kernel',
      param_axes(nn.initializers.lecun_normal(), (None, None, None, 'embed')),
      (p, p, channels, self.features),
      self.param_dtype,
    )
    bias = self.param('bias', param_axes(nn.initializers.zeros, ('embed',)), (self.features,), self.param_dtype)
    x = images.astype(self.dtype)
    if self.padding:
      x = jnp.pad(x, ((0, 0), (self.padding,) * 2, (self.padding,) * 2, (0, 0)))
    n, height, width, _ = x.shape
    grid_h, grid_w = height // p, width // p  # like a VALID conv, a remainder smaller than a patch is dropped
    x = x[:, : grid_h * p, : grid_w * p].reshape(n, grid_h, p, grid_w, p, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, grid_h, grid_w, p * p * channels)
    return x @ kernel.astype(self.dtype).reshape(p * p * channels, self.features) + bias.astype(self.dtype)
