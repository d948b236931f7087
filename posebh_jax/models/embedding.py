"""PoseBH keypoint embedding module (supplement §1): ViTPose++ upsampling layers, one SiLU residual block and a
conv3×3→BN→SiLU→conv1×1 output, mapping backbone features to a per-pixel keypoint embedding."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from posebh_jax.models.heatmap_head import Upsampler
from posebh_jax.models.partitioning import param_axes

Dtype = Any

# He-normal (fan_out), the usual init for convolutions followed by BN and a ReLU-like activation.
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class KeypointEmbedding(nn.Module):
  """Backbone features (n, h, w, D) → embedding map (n, 2^num_deconv·h, 2^num_deconv·w, embed_dim) float32,
  not normalised.

  Attributes:
    channels: width of the upsampling layers (256).
    num_deconv: number of ConvTranspose 4×4 s2 → BN → ReLU layers (2: 16×12 → 64×48).
    hidden: width of the residual block and of the last 3×3 conv (64).
    embed_dim: F, the embedding width (64).
  """

  channels: int = 256
  num_deconv: int = 2
  hidden: int = 64
  embed_dim: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _conv(self, features, kernel, name, use_bias=False, init=_CONV_INIT):
    return nn.Conv(
      features,
      (kernel, kernel),
      padding='SAME',
      use_bias=use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
      kernel_init=param_axes(init, (None, None, None, 'channels')),
      bias_init=param_axes(nn.initializers.zeros, ('channels',)),
    )

  def _bn(self, name, train):
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=jnp.float32,
      param_dtype=self.param_dtype,
      name=name,
      scale_init=param_axes(nn.initializers.ones, ('channels',)),
      bias_init=param_axes(nn.initializers.zeros, ('channels',)),
    )

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
    """features (n, h, w, D) → embeddings float32 (n, 4h, 4w, F) for num_deconv=2."""
    x = Upsampler(self.channels, self.num_deconv, self.dtype, self.param_dtype, name='upsample')(features, train)
    x = x.astype(self.dtype)
    # Residual block (conv→BN→SiLU→conv→BN) + (1×1 conv→BN) shortcut, then SiLU.
    y = nn.silu(self._bn('res_bn1', train)(self._conv(self.hidden, 3, 'res_conv1')(x)))
    y = self._bn('res_bn2', train)(self._conv(self.hidden, 3, 'res_conv2')(y.astype(self.dtype)))
    shortcut = self._bn('res_bn_short', train)(self._conv(self.hidden, 1, 'res_short')(x))
    x = nn.silu(y + shortcut).astype(self.dtype)
    x = nn.silu(self._bn('out_bn', train)(self._conv(self.hidden, 3, 'out_conv')(x)))
    x = self._conv(self.embed_dim, 1, 'embed', use_bias=True, init=nn.initializers.lecun_normal())(x.astype(self.dtype))
    return x.astype(jnp.float32)
