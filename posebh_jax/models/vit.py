"""ViTPose++ multi-dataset model: a plain ViT backbone whose FFN has dataset-specific expert channels, and one
deconvolution heatmap head per dataset.

Routing without masking: a batch holds a fixed number of examples of each dataset. Examples are arranged as
`(groups, per_group, ...)` where `groups` is the number of batch shards of the device mesh, and inside every group
the datasets occupy the same static slice. Each dataset's expert and head therefore run on a static slice that lives
on the same device shard as its examples: no gather, no all-six-experts-then-mask.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0

Dtype = Any


def accumulation_dtype(dtype: Dtype) -> Dtype:
  """The dtype that normalisation statistics, the backbone's output and heatmaps are kept in for a model that
  computes in `dtype`: float32, or float64 for a float64 model (used to check sharding without float32 rounding)."""
  return jnp.promote_types(dtype, jnp.float32)


def _logical(init_fn, names):
  return nn.with_logical_partitioning(init_fn, names)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


@dataclasses.dataclass(frozen=True)
class Composition:
  """Per-group example counts of each dataset, in expert order.

  Attributes:
    names: dataset names in expert order (all experts the model has).
    per_group: examples of each dataset in one batch group (0 for datasets absent from this batch).
    groups: number of batch groups (= batch shards of the mesh).
  """
  names: tuple[str, ...]
  per_group: tuple[int, ...]
  groups: int

  @property
  def group_size(self) -> int:
    return sum(self.per_group)

  def offsets(self) -> tuple[int, ...]:
    return tuple(int(v) for v in np.cumsum((0,) + self.per_group[:-1]))

  def stack_count(self) -> int:
    """The per-group count when two or more datasets are present and all have that same count (the usual fixed
    mixture: their experts and heads can run stacked along a dataset axis), else 0."""
    counts = [count for count in self.per_group if count]
    return counts[0] if len(counts) > 1 and len(set(counts)) == 1 else 0

  def present(self):
    """Yields (expert_index, name, offset_in_group, count_in_group) for datasets in this batch."""
    for index, (name, offset, count) in enumerate(zip(self.names, self.offsets(), self.per_group)):
      if count:
        yield index, name, offset, count


def make_composition(names: Sequence[str], counts: Mapping[str, int], groups: int) -> Composition:
  """Builds a Composition from global per-dataset counts (each must be a multiple of `groups`)."""
  per_group = []
  for name in names:
    count = int(counts.get(name, 0))
    if count % groups:
      raise ValueError(f"dataset '{name}' has {count} examples per batch, not a multiple of the {groups} batch "
                       "shards; change the batch size or the mixture weights")
    per_group.append(count // groups)
  return Composition(tuple(names), tuple(per_group), groups)


def group_by_dataset(arrays: Mapping[str, jax.Array], comp: Composition) -> jax.Array:
  """Arranges per-dataset arrays `{name: (n_d, ...)}` into one `(groups * group_size, ...)` array."""
  parts = []
  for _, name, _, count in comp.present():
    x = arrays[name]
    parts.append(x.reshape((comp.groups, count) + x.shape[1:]))
  grouped = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
  return grouped.reshape((comp.groups * comp.group_size,) + grouped.shape[2:])


def dataset_slice(x: jax.Array, comp: Composition, offset: int, count: int) -> jax.Array:
  """The `(groups * count, ...)` examples of one dataset out of a grouped `(groups * group_size, ...)` array."""
  grouped = x.reshape((comp.groups, comp.group_size) + x.shape[1:])
  part = grouped[:, offset:offset + count]
  return part.reshape((comp.groups * count,) + x.shape[1:])


class DenseParameters(nn.Module):
  """The kernel (in, features) and bias (features,) of an `nn.Dense` with the same name, returned instead of
  applied, so that the MoE FFN can fuse the shared fc2 with the experts (parameter tree unchanged)."""
  in_features: int
  features: int
  names: tuple[str, str]
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param('kernel', _logical(nn.initializers.truncated_normal(0.02), self.names),
                        (self.in_features, self.features), self.param_dtype)
    bias = self.param('bias', _logical(nn.initializers.zeros, self.names[1:]), (self.features,), self.param_dtype)
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
    hidden = nn.Dense(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype, name='fc1',
                      kernel_init=_logical(nn.initializers.truncated_normal(0.02), ('embed', 'mlp')),
                      bias_init=_logical(nn.initializers.zeros, ('mlp',)))(x)
    hidden = nn.gelu(hidden, approximate=False)  # in `dtype`, as fc1 computes
    hidden = _constrain(hidden, ('batch', 'seq', 'mlp'))
    shared_dim = self.dim - self.expert_dim if self.num_experts else self.dim
    shared_kernel, shared_bias = DenseParameters(self.hidden_dim, shared_dim, ('mlp', 'embed'),
                                                 self.param_dtype, name='fc2')()
    shared_kernel, shared_bias = shared_kernel.astype(self.dtype), shared_bias.astype(self.dtype)
    if not self.num_experts:
      return hidden @ shared_kernel + shared_bias
    expert_kernel = self.param('expert_kernel', _logical(nn.initializers.truncated_normal(0.02),
                                                         ('expert', 'mlp', 'embed')),
                               (self.num_experts, self.hidden_dim, self.expert_dim), self.param_dtype)
    expert_bias = self.param('expert_bias', _logical(nn.initializers.zeros, ('expert', 'embed')),
                             (self.num_experts, self.expert_dim), self.param_dtype)
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
      kernels = jnp.concatenate([
          jnp.broadcast_to(_constrain(shared_kernel, ('mlp', None)), (len(present),) + shared_kernel.shape),
          _constrain(expert_kernel.astype(self.dtype), (None, 'mlp', None))], axis=-1)
      biases = jnp.concatenate([
          jnp.broadcast_to(_constrain(shared_bias, (None,)), (len(present), shared_dim)),
          _constrain(expert_bias.astype(self.dtype), (None, None))], axis=-1)
      per_dataset = hidden.reshape((comp.groups, len(present), count) + hidden.shape[1:])
      out = jnp.einsum('gdnth,dhc->gdntc', per_dataset, kernels) + biases[None, :, None, None, :]
      return out.reshape(hidden.shape[:-1] + (self.dim,))
    # Unequal counts (or stacking off): one matmul per dataset with its assembled fc2 (the plain FFN's FLOPs),
    # outputs concatenated along the batch; fewer kernels than fc2's shared columns over the whole batch plus thin
    # per-dataset expert matmuls concatenated along the features (the FFN alone, forward + backward at the demo's
    # shapes on XLA's CPU: 1.03x the plain FFN's time against 1.19x; the whole demo step: within the VM's noise).
    # The weights are gathered whole before the concatenation, as above (else its gradient, a split, needs
    # collective permutes).
    shared_kernel = _constrain(shared_kernel, ('mlp', None))
    shared_bias = _constrain(shared_bias, (None,))
    grouped = hidden.reshape((comp.groups, comp.group_size) + hidden.shape[1:])
    parts = []
    for index, _, offset, count in present:
      kernel = jnp.concatenate([shared_kernel, _constrain(expert_kernel[index].astype(self.dtype), ('mlp', None))],
                               axis=-1)
      bias = jnp.concatenate([shared_bias, _constrain(expert_bias[index].astype(self.dtype), (None,))], axis=-1)
      parts.append(jnp.einsum('gnth,hc->gntc', grouped[:, offset:offset + count], kernel) + bias)
    out = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return out.reshape(hidden.shape[:-1] + (self.dim,))


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection; (B, N, D) → (B, N, D)."""
  dim: int
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    head_dim = self.dim // self.num_heads
    qkv = nn.Dense(3 * self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name='qkv',
                   kernel_init=_logical(nn.initializers.truncated_normal(0.02), ('embed', 'qkv')),
                   bias_init=_logical(nn.initializers.zeros, ('qkv',)))(x)
    qkv = qkv.reshape(x.shape[:2] + (3, self.num_heads, head_dim))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = jax.nn.dot_product_attention(q, k, v)
    out = out.reshape(x.shape[:2] + (self.dim,))
    return nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name='proj',
                    kernel_init=_logical(nn.initializers.truncated_normal(0.02), ('qkv', 'embed')),
                    bias_init=_logical(nn.initializers.zeros, ('embed',)))(out)


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
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                                     scale_init=_logical(nn.initializers.ones, ('embed',)),
                                     bias_init=_logical(nn.initializers.zeros, ('embed',)))
    branch = Attention(self.dim, self.num_heads, self.dtype, self.param_dtype, name='attn')(norm('norm1')(x))
    if self.train:
      branch = drop_path(branch, drop_rate, self.make_rng('dropout'))
    x = _constrain(x + branch, ('batch', 'seq', 'embed'))
    branch = MoEFeedForward(self.dim, int(self.dim * self.mlp_ratio), self.expert_dim, self.num_experts,
                            self.dtype, self.param_dtype, self.stack_equal_datasets, name='mlp')(
                                norm('norm2')(x), self.comp)
    if self.train:
      branch = drop_path(branch, drop_rate, self.make_rng('dropout'))
    x = _constrain(x + branch, ('batch', 'seq', 'embed'))
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
    x = PatchEmbed(self.width, self.patch_size, self.patch_padding, self.dtype, self.param_dtype,
                   name='patch_embed')(x)
    batch, grid_h, grid_w, _ = x.shape
    x = x.reshape(batch, grid_h * grid_w, self.width)
    pos_embed = self.param('pos_embed', _logical(nn.initializers.truncated_normal(0.02), (None, 'seq', 'embed')),
                           (1, grid_h * grid_w, self.width), self.param_dtype)
    x = _constrain(x + pos_embed.astype(self.dtype), ('batch', 'seq', 'embed'))
    drop_rates = np.linspace(0.0, self.drop_path, self.depth).astype(np.float32)
    block_cls = Block
    if self.remat:
      block_cls = nn.remat(Block, prevent_cse=not self.scan)
    kwargs = dict(dim=self.width, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, expert_dim=self.expert_dim,
                  num_experts=self.num_experts, comp=comp, train=train, dtype=self.dtype,
                  param_dtype=self.param_dtype, stack_equal_datasets=self.stack_equal_datasets)
    if self.scan:
      scanned = nn.scan(block_cls, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                        in_axes=0, length=self.depth, metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = scanned(**kwargs, name='blocks')(x, jnp.asarray(drop_rates))
    else:
      for index in range(self.depth):
        x, _ = block_cls(**kwargs, name=f'block_{index}')(x, float(drop_rates[index]))
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name='norm',
                     scale_init=_logical(nn.initializers.ones, ('embed',)),
                     bias_init=_logical(nn.initializers.zeros, ('embed',)))(x)
    return x.reshape(batch, grid_h, grid_w, self.width).astype(accumulation_dtype(self.dtype))


class PatchEmbed(nn.Module):
  """Non-overlapping patch projection (a conv with kernel = stride = patch, zero padding `padding` per side),
  computed as patch extraction by reshape and one matmul; (n, H, W, 3) float → (n, h, w, D) in `dtype`.

  Parameters are those of `nn.Conv` (kernel (p, p, 3, D), bias (D,)), and the result is bit-identical to it on
  CPU, but its backward pass is a plain matmul, which XLA's CPU backend runs ~1.5× faster than the gradient of a
  strided convolution.
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
    kernel = self.param('kernel', _logical(nn.initializers.lecun_normal(), (None, None, None, 'embed')),
                        (p, p, channels, self.features), self.param_dtype)
    bias = self.param('bias', _logical(nn.initializers.zeros, ('embed',)), (self.features,), self.param_dtype)
    x = images.astype(self.dtype)
    if self.padding:
      x = jnp.pad(x, ((0, 0), (self.padding,) * 2, (self.padding,) * 2, (0, 0)))
    n, height, width, _ = x.shape
    grid_h, grid_w = height // p, width // p  # like a VALID conv, a remainder smaller than a patch is dropped
    x = x[:, :grid_h * p, :grid_w * p].reshape(n, grid_h, p, grid_w, p, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, grid_h, grid_w, p * p * channels)
    return x @ kernel.astype(self.dtype).reshape(p * p * channels, self.features) + bias.astype(self.dtype)


class Deconv4x4Stride2(nn.Module):
  """Transposed convolution, kernel 4, stride 2, padding 1, no bias (PyTorch ConvTranspose2d semantics:
  out[o] = Σ_i x[i] · w[o + 1 − 2i]); (n, h, w, C_in) → (n, 2h, 2w, C_out), or with `phase_major` the same
  outputs as (4, n·h·w, C_out) grouped by output phase (see `deconv4x4_stride2_phases`).

  Each output phase (o = 2m + r) sees a 2×2 input window, so the layer is one matmul per phase of the windows'
  stacked channels (n·h·w, 4·C_in) with the phase's four kernel taps (4·C_in, C_out), computed as one batched
  matmul over the four phases: the same multiply-adds as the transposed convolution. XLA's CPU backend runs
  per-phase matmuls 1.6–2× faster (forward + backward) than four 2×2 convolutions, and ~20× faster in the backward
  pass than the dilated-input form it uses for `conv_transpose` (benchmarked at the demo's and ViTPose's head
  shapes; `benchmarks/head_kernels.py`).
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.normal(0.001)

  # For output phase r (o = 2m + r) the two contributing inputs are padded positions (m + r, m + r + 1)
  # with kernel taps (3, 1) for r = 0 and (2, 0) for r = 1.
  _TAPS = ((3, 1), (2, 0))
  # The four (row, column) offsets of a phase's 2×2 window, in the order its taps are stacked.
  _WINDOW_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))

  @nn.compact
  def __call__(self, x, phase_major: bool = False):
    kernel = self.param('kernel', self.kernel_init, (4, 4, x.shape[-1], self.features), self.param_dtype)
    phases = deconv4x4_stride2_phases(x[None].astype(self.dtype), kernel[None].astype(self.dtype))[0]
    return phases if phase_major else interleave_phases(phases[None], *x.shape[:3])[0]


def deconv4x4_stride2_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """E transposed convolutions of `Deconv4x4Stride2` at once: x (E, n, h, w, C_in), kernels (E, 4, 4, C_in, C_out)
  → (E, 4, n·h·w, C_out), the outputs grouped by phase p = 2·r_y + r_x (row (i·h + y)·w + x of phase p is output
  pixel (2y + r_y, 2x + r_x) of example i; `interleave_phases` assembles the images). One matmul batched over
  (E, phase). With the normalisation that follows working on the phase-grouped rows and only its output
  interleaved, the heads' forward + backward + AdamW took 1.3× (one head) to 1.7× (six stacked heads) less time
  on an H100 than with four per-phase matmuls whose outputs were interleaved right away (README, Performance)."""
  e, n, h, w, in_channels = x.shape
  padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  windows, taps = [], []
  for ry in (0, 1):
    for rx in (0, 1):
      windows.append(jnp.concatenate([padded[:, :, ry + dy:ry + dy + h, rx + dx:rx + dx + w]
                                      for dy, dx in Deconv4x4Stride2._WINDOW_OFFSETS], axis=-1))
      # Stacked on a new axis, not concatenated along C_in: with C_in sharded (fsdp) the gradient of a
      # concatenation is a split that needs collective permutes (32 of them in an 8-device demo:tiny step).
      taps.append(jnp.stack([kernel[:, Deconv4x4Stride2._TAPS[ry][dy], Deconv4x4Stride2._TAPS[rx][dx]]
                             for dy, dx in Deconv4x4Stride2._WINDOW_OFFSETS], axis=1).reshape(e, 4 * in_channels, -1))
  windows = jnp.stack(windows, axis=1).reshape(e, 4, n * h * w, 4 * in_channels)
  return jnp.einsum('epmk,epko->epmo', windows, jnp.stack(taps, axis=1))


def interleave_phases(phases: jax.Array, n: int, h: int, w: int) -> jax.Array:
  """(E, 4, n·h·w, C) phase-grouped outputs of `deconv4x4_stride2_phases` → images (E, n, 2h, 2w, C)."""
  e, channels = phases.shape[0], phases.shape[-1]
  images = phases.reshape(e, 2, 2, n, h, w, channels).transpose(0, 3, 4, 1, 5, 2, 6)
  return images.reshape(e, n, 2 * h, 2 * w, channels)


class Upsampler(nn.Module):
  """ViTPose deconvolution stack: num × [ConvTranspose 4×4 s2 (no bias) → BN → ReLU]; (n,h,w,C) → (n,2^num h,…)
  in `dtype`. BatchNorm and ReLU act on the phase-grouped deconvolution outputs (per-channel operations: the
  same statistics and values), which are interleaved into images afterwards.

  Submodules `deconv_{i}` and `bn_{i}` (setup-style, so that `stacked_heads` can reach their variables)."""
  channels: int = 256
  num_layers: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # ViTPose's N(0, 0.001²). The kernels feed BatchNorm, so their scale only sets how far an Adam step (±lr per
  # element at first) turns them: at 0.001 the first steps replace the initialisation (README, "8 devices vs 1").
  deconv_init_std: float = 0.001

  def setup(self):
    init = _logical(nn.initializers.normal(self.deconv_init_std), (None, None, 'embed', 'channels'))
    self.deconv = [Deconv4x4Stride2(self.channels, self.dtype, self.param_dtype, kernel_init=init)
                   for _ in range(self.num_layers)]
    self.bn = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=accumulation_dtype(self.dtype),
                            param_dtype=self.param_dtype,
                            scale_init=_logical(nn.initializers.ones, ('channels',)),
                            bias_init=_logical(nn.initializers.zeros, ('channels',)))
               for _ in range(self.num_layers)]

  def __call__(self, x, train: bool = False):
    for deconv, norm in zip(self.deconv, self.bn):
      n, h, w, _ = x.shape
      # (4, n·h·w, C): normalised as is (no merged reshape, which would reshard a batch-sharded n).
      phases = nn.relu(norm(deconv(x, phase_major=True), use_running_average=not train)).astype(self.dtype)
      x = interleave_phases(phases[None], n, h, w)[0]
    return x


class Conv1x1(nn.Module):
  """A 1×1 convolution with bias, (n, h, w, C) → (n, h, w, K) in `dtype`; parameters as `nn.Conv`'s (kernel
  (1, 1, C, K) initialised N(0, 0.001²), bias (K,) zeros) but computed as a matmul, whose backward pass XLA's CPU
  backend runs faster than a convolution's."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', _logical(nn.initializers.normal(0.001), (None, None, 'channels', None)),
                        (1, 1, x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', _logical(nn.initializers.zeros, (None,)), (self.features,), self.param_dtype)
    return x.astype(self.dtype) @ kernel[0, 0].astype(self.dtype) + bias.astype(self.dtype)


class HeatmapHead(nn.Module):
  """One dataset's head: Upsampler then a 1×1 conv to K heatmaps; (n, h, w, D) → (n, 4h, 4w, K) float32 (float64 for
  a float64 model)."""
  num_keypoints: int
  channels: int = 256
  num_deconv: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  deconv_init_std: float = 0.001

  def setup(self):
    self.upsample = Upsampler(self.channels, self.num_deconv, self.dtype, self.param_dtype, self.deconv_init_std)
    self.final = Conv1x1(self.num_keypoints, self.dtype, self.param_dtype)

  def __call__(self, features, train: bool = False):
    return self.final(self.upsample(features, train)).astype(accumulation_dtype(self.dtype))


def _variable(module: nn.Module, collection: str, name: str) -> jax.Array:
  return nn.unbox(module.get_variable(collection, name))


def _stacked_batch_norm(norms: Sequence[nn.BatchNorm], x: jax.Array, train: bool) -> jax.Array:
  """`nn.BatchNorm` (feature axis last, fast variance) of each of `norms` on its own slice of x (E, ..., C),
  computed for all E at once; in training it updates each module's running statistics as `nn.BatchNorm` does.
  Returns float32 (float64 for float64 x), x's shape."""
  x = x.astype(accumulation_dtype(x.dtype))
  norm = norms[0]
  scale = jnp.stack([_variable(bn, 'params', 'scale') for bn in norms]).astype(x.dtype)
  bias = jnp.stack([_variable(bn, 'params', 'bias') for bn in norms]).astype(x.dtype)
  axes = tuple(range(1, x.ndim - 1))
  if train:
    mean = jnp.mean(x, axis=axes)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean))
    for index, bn in enumerate(norms):
      for stat, value in (('mean', mean[index]), ('var', var[index])):
        running = bn.get_variable('batch_stats', stat)
        bn.put_variable('batch_stats', stat, norm.momentum * running + (1.0 - norm.momentum) * value)
  else:
    mean = jnp.stack([_variable(bn, 'batch_stats', 'mean') for bn in norms])
    var = jnp.stack([_variable(bn, 'batch_stats', 'var') for bn in norms])
  expand = lambda v: v.reshape((v.shape[0],) + (1,) * len(axes) + (v.shape[1],))
  return (x - expand(mean)) * expand(jax.lax.rsqrt(var + norm.epsilon) * scale) + expand(bias)


def stacked_heads(heads: Sequence[HeatmapHead], x: jax.Array, train: bool = False) -> list[jax.Array]:
  """Runs each of `heads` (same channels and depth, parameters already created) on its own slice of
  x (E, n, h, w, D): the deconvolutions as batched matmuls over E and the BatchNorms in one pass, then each
  head's own 1×1 conv. Same results and running-statistics updates as `[heads[e](x[e], train)]`, with ~1/E of
  the kernels (the form a GPU wants for ViTPose++'s six heads). Returns [(n, 4h, 4w, K_e) float32]."""
  first = heads[0]
  for index in range(first.num_deconv):
    kernels = jnp.stack([_variable(head.upsample.deconv[index], 'params', 'kernel') for head in heads])
    _, n, h, w, _ = x.shape
    phases = deconv4x4_stride2_phases(x.astype(first.dtype), kernels.astype(first.dtype))
    phases = _stacked_batch_norm([head.upsample.bn[index] for head in heads], phases, train)
    x = interleave_phases(nn.relu(phases).astype(first.dtype), n, h, w)
  return [head.final(x[index]).astype(accumulation_dtype(first.dtype)) for index, head in enumerate(heads)]
