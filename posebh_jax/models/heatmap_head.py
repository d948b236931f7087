"""The ViTPose deconvolution heatmap head, and the stacked form that runs several heads of the same shape at once."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from posebh_jax import flops as flops_lib
from posebh_jax.models.partitioning import Dtype, accumulation_dtype, param_axes


class Deconv4x4Stride2(nn.Module):
  """Transposed convolution, kernel 4, stride 2, padding 1, no bias (PyTorch ConvTranspose2d semantics:
  out[o] = Σ_i x[i] · w[o + 1 − 2i]); (n, h, w, C_in) → (n, 2h, 2w, C_out), or with `phase_major` the same
  outputs as (4, n·h·w, C_out) grouped by output phase (see `deconv4x4_stride2_phases`).

  Each output phase (o = 2m + r) sees a 2×2 input window, so the layer is one matmul per phase of the windows'
  stacked channels (n·h·w, 4·C_in) with the phase's four kernel taps (4·C_in, C_out), computed as one batched
  matmul over the four phases: the same multiply-adds as the transposed convolution. XLA's CPU backend runs
  per-phase matmuls faster (forward + backward) than four 2×2 convolutions, and much faster in the backward pass
  than the dilated-input form it uses for `conv_transpose` (`benchmarks/head_kernels.py`; docs/MEASUREMENTS.md).
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
  interleaved, the heads' step takes less time on a GPU than with four per-phase matmuls whose outputs are
  interleaved right away (docs/MEASUREMENTS.md)."""
  e, n, h, w, in_channels = x.shape
  padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  windows, taps = [], []
  for ry in (0, 1):
    for rx in (0, 1):
      windows.append(
        jnp.concatenate(
          [padded[:, :, ry + dy : ry + dy + h, rx + dx : rx + dx + w] for dy, dx in Deconv4x4Stride2._WINDOW_OFFSETS],
          axis=-1,
        )
      )
      # Stacked on a new axis, not concatenated along C_in: with C_in sharded (fsdp) the gradient of a
      # concatenation is a split that needs collective permutes (32 of them in an 8-device demo:tiny step).
      taps.append(
        jnp.stack(
          [
            kernel[:, Deconv4x4Stride2._TAPS[ry][dy], Deconv4x4Stride2._TAPS[rx][dx]]
            for dy, dx in Deconv4x4Stride2._WINDOW_OFFSETS
          ],
          axis=1,
        ).reshape(e, 4 * in_channels, -1)
      )
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
    init = param_axes(nn.initializers.normal(self.deconv_init_std), (None, None, 'embed', 'channels'))
    self.deconv = [
      Deconv4x4Stride2(self.channels, self.dtype, self.param_dtype, kernel_init=init) for _ in range(self.num_layers)
    ]
    self.bn = [
      nn.BatchNorm(
        momentum=0.9,
        epsilon=1e-5,
        dtype=accumulation_dtype(self.dtype),
        param_dtype=self.param_dtype,
        scale_init=param_axes(nn.initializers.ones, ('channels',)),
        bias_init=param_axes(nn.initializers.zeros, ('channels',)),
      )
      for _ in range(self.num_layers)
    ]

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
    kernel = self.param(
      'kernel',
      param_axes(nn.initializers.normal(0.001), (None, None, 'channels', None)),
      (1, 1, x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = self.param('bias', param_axes(nn.initializers.zeros, (None,)), (self.features,), self.param_dtype)
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


@dataclasses.dataclass(frozen=True)
class HeatmapHeadSpec:
  """What a heatmap task asks of the model: one `HeatmapHead` with K output channels.

  Head specs are the model's side of the task interface: `build` makes the Flax module, heads whose `stack_key`s
  are equal can run together through `run_stacked`, and `forward_flops` feeds the step's analytic FLOPs. Datasets
  whose specs have the same non-empty `head_name` share one head module `head_<head_name>` (e.g. the distillation
  student's one 21-keypoint head); empty: the dataset's own head."""

  num_keypoints: int
  channels: int = 256
  num_deconv: int = 2
  deconv_init_std: float = 0.001
  head_name: str = ''

  def build(self, dtype: Dtype, param_dtype: Dtype, name: str) -> HeatmapHead:
    """The head module; `(n, h, w, D)` features → `(n, 2^num_deconv h, 2^num_deconv w, K)` heatmaps."""
    return HeatmapHead(
      self.num_keypoints, self.channels, self.num_deconv, dtype, param_dtype, self.deconv_init_std, name=name
    )

  @property
  def stack_key(self):
    """Heads with equal keys (same channels and depth) can run as one stacked computation."""
    return ('heatmap', self.channels, self.num_deconv)

  @staticmethod
  def run_stacked(heads: Sequence[HeatmapHead], x: jax.Array, train: bool) -> list[jax.Array]:
    """`stacked_heads`: x (E, n, h, w, D) → [(n, 4h, 4w, K_e)]."""
    return stacked_heads(heads, x, train)

  def forward_flops(self, width: int, grid_hw) -> float:
    """Forward FLOPs of the head for one example on a `grid_hw` feature map of `width` channels."""
    return flops_lib.head_forward_flops(width, self.channels, self.num_deconv, grid_hw, self.num_keypoints)
