"""ViTPose++'s mixture-of-experts FFN: dataset-specific expert channels on static per-dataset slices."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.models.composition import Composition
from posebh_jax.models.partitioning import BATCH, MLP, SEQ, Dtype, constrain, param_axes


class DenseParameters(nn.Module):
  """The kernel (in, features) and bias (features,) of an `nn.Dense` with the same name, returned instead of
  applied, so that the MoE FFN can fuse the shared fc2 with the experts (parameter tree unchanged)."""

  in_features: int
  features: int
  names: tuple[str, str]
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param(
      'kernel',
      param_axes(nn.initializers.truncated_normal(0.02), self.names),
      (self.in_features, self.features),
      self.param_dtype,
    )
    bias = self.param('bias', param_axes(nn.initializers.zeros, self.names[1:]), (self.features,), self.param_dtype)
    return kernel, bias


class MoEFeedForward(nn.Module):
  """ViTPose++ FFN: shared fc1 (D→hidden), GELU, fc2 split into shared D−P channels and a P-channel expert per
  dataset. Input and output (B, N, D); B arranged by `comp`."""

  dim: int
  hidden_dim: int
  expert_dim: int
  num_experts: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  stack_equal_datasets: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, comp: Composition) -> jax.Array:
    hidden = nn.Dense(
      self.hidden_dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='fc1',
      kernel_init=param_axes(nn.initializers.truncated_normal(0.02), ('embed', 'mlp')),
      bias_init=param_axes(nn.initializers.zeros, ('mlp',)),
    )(x)
    hidden = nn.gelu(hidden, approximate=False)  # in `dtype`, as fc1 computes
    hidden = constrain(hidden, (BATCH, SEQ, MLP))
    shared_dim = self.dim - self.expert_dim if self.num_experts else self.dim
    shared_kernel, shared_bias = DenseParameters(
      self.hidden_dim, shared_dim, ('mlp', 'embed'), self.param_dtype, name='fc2'
    )()
    shared_kernel, shared_bias = shared_kernel.astype(self.dtype), shared_bias.astype(self.dtype)
    if not self.num_experts:
      return hidden @ shared_kernel + shared_bias
    expert_kernel = self.param(
      'expert_kernel',
      param_axes(nn.initializers.truncated_normal(0.02), ('expert', 'mlp', 'embed')),
      (self.num_experts, self.hidden_dim, self.expert_dim),
      self.param_dtype,
    )
    expert_bias = self.param(
      'expert_bias',
      param_axes(nn.initializers.zeros, ('expert', 'embed')),
      (self.num_experts, self.expert_dim),
      self.param_dtype,
    )
    present = list(comp.present())
    count = comp.stack_count() if self.stack_equal_datasets else 0
    if count:
      # Equal counts: each dataset's full fc2 (shared columns, then its expert's) is assembled from the small
      # weights, and fc2 runs as one batched matmul over a dataset axis: the FLOPs of the plain FFN's fc2 in one
      # kernel, instead of a shared matmul, a thin expert matmul and a concatenation of their outputs.
      indices = [index for index, _, _, _ in present]
      if indices != list(range(self.num_experts)):  # else no gather (whose gradient is a scatter-add on a GPU)
        expert_kernel, expert_bias = expert_kernel[np.asarray(indices)], expert_bias[np.asarray(indices)]
      # Whole (not fsdp-sharded) output columns before the concatenation: the gradient of a concatenation along
      # a sharded axis is a split that needs collective permutes; gathered weights are what the matmul uses anyway.
      kernels = jnp.concatenate(
        [
          jnp.broadcast_to(constrain(shared_kernel, ('mlp', None)), (len(present),) + shared_kernel.shape),
          constrain(expert_kernel.astype(self.dtype), (None, 'mlp', None)),
        ],
        axis=-1,
      )
      biases = jnp.concatenate(
        [
          jnp.broadcast_to(constrain(shared_bias, (None,)), (len(present), shared_dim)),
          constrain(expert_bias.astype(self.dtype), (None, None)),
        ],
        axis=-1,
      )
      per_dataset = hidden.reshape((comp.groups, len(present), count) + hidden.shape[1:])
      out = jnp.einsum('gdnth,dhc->gdntc', per_dataset, kernels) + biases[None, :, None, None, :]
      return out.reshape(hidden.shape[:-1] + (self.dim,))
    # Unequal counts (or stacking off): one matmul per dataset with its assembled fc2 (the plain FFN's FLOPs),
    # outputs concatenated along the batch: fewer kernels, and faster on XLA's CPU, than fc2's shared columns over
    # the whole batch plus thin per-dataset expert matmuls concatenated along the features (docs/MEASUREMENTS.md).
    # The weights are gathered whole before the concatenation, as above (else its gradient, a split, needs
    # collective permutes).
    shared_kernel = constrain(shared_kernel, ('mlp', None))
    shared_bias = constrain(shared_bias, (None,))
    grouped = hidden.reshape((comp.groups, comp.group_size) + hidden.shape[1:])
    parts = []
    for index, _, offset, count in present:
      kernel = jnp.concatenate(
        [shared_kernel, constrain(expert_kernel[index].astype(self.dtype), ('mlp', None))], axis=-1
      )
      bias = jnp.concatenate([shared_bias, constrain(expert_bias[index].astype(self.dtype), (None,))], axis=-1)
      parts.append(jnp.einsum('gnth,hc->gntc', grouped[:, offset : offset + count], kernel) + bias)
    out = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return out.reshape(hidden.shape[:-1] + (self.dim,))
