"""The MeTRAbs head (docs/METHOD.md §3.2): ghost BatchNorm on the backbone's feature map, one 1×1 convolution to J
2D-heatmap channels and D_z·J volumetric channels, and soft-argmax to crop-pixel 2D and metric root-relative 3D
joints; `MetrabsHeadSpec` is what the MeTRAbs task gives the model.

Coordinates (for an (H, W) px crop and an (h, w) feature grid, stride (s_y, s_x) = (H / h, W / w)):
  - Crop pixels have their centres at integer coordinates, so the crop covers [-0.5, W - 0.5] × [-0.5, H - 0.5].
    Feature cell (i, j) covers the crop pixels' area [j s_x - 0.5, (j + 1) s_x - 0.5] × [i s_y - 0.5, (i + 1) s_y
    - 0.5]: the cells tile the crop exactly, as the heatmap heads' output grid does. (The backbone's patches with
    padding are offset from this by a constant the 1×1 convolution cannot see; the head learns around it.)
  - Soft-argmax: softmax over the cells (h·w for the 2D heatmap; h·w·D_z jointly for a volumetric heatmap), then
    the expectation of the cells' centres in normalised coordinates: u = (j + 0.5) / w, v = (i + 0.5) / h,
    d = (k + 0.5) / D_z, each in (0, 1) (a linspace of cell centres; a uniform heatmap gives 0.5).
  - `coords2d` (crop px) = (u W - 0.5, v H - 0.5): cell (i, j)'s centre is crop pixel ((j + 0.5) s_x - 0.5,
    (i + 0.5) s_y - 0.5).
  - `coords3d_rel` (mm, camera-frame axes: x right, y down, z forward) = ((u - 0.5) W m, (v - 0.5) H m,
    (d - 0.5) B) with B = `box_size_mm` (2200) and m = B / max(H, W) mm per crop pixel: a cube of side B centred on
    the crop's centre in x, y (the crop's longer side spans B) and on depth offset 0. The coordinates are relative
    to an unknown reference point: only differences between joints mean something, and the absolute pose adds a
    translation solved by least squares (`losses.metrabs.absolute_from_head`).

Ghost BatchNorm (`GhostBatchNorm`): in training the n examples are split, in order, into n / v virtual batches of
v = min(`virtual_batch`, n) consecutive examples (n must be a multiple of v), and each virtual batch is normalised
with its own per-channel mean and biased variance over (v, h, w); the running statistics move towards the mean over
the virtual batches of their means and of their variances (momentum as `nn.BatchNorm`). In evaluation every example
is normalised with the running statistics. With v = n it is `nn.BatchNorm` in training (two-pass variance).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from posebh_jax.models.partitioning import Dtype, accumulation_dtype, param_axes

DEPTH_BINS = 8
BOX_SIZE_MM = 2200.0


def cell_centres(count: int, dtype: Dtype = jnp.float32) -> jax.Array:
  """The normalised centres (count,) = (k + 0.5) / count of `count` equal cells tiling [0, 1]."""
  return (jnp.arange(count, dtype=dtype) + 0.5) / count


def soft_argmax_2d(logits: jax.Array) -> jax.Array:
  """Soft-argmax of 2D heatmap logits (n, h, w, J) → normalised (u, v) (n, J, 2) float32 (float64 for float64
  logits): softmax over the h·w cells, then the expectation of the cell centres (`cell_centres`); u along w, v
  along h."""
  dtype = accumulation_dtype(logits.dtype)
  n, h, w, j = logits.shape
  probs = jax.nn.softmax(logits.astype(dtype).reshape(n, h * w, j), axis=1).reshape(n, h, w, j)
  u = jnp.einsum('nwj,w->nj', jnp.sum(probs, 1), cell_centres(w, dtype))
  v = jnp.einsum('nhj,h->nj', jnp.sum(probs, 2), cell_centres(h, dtype))
  return jnp.stack([u, v], -1)


def soft_argmax_3d(logits: jax.Array) -> jax.Array:
  """Soft-argmax of volumetric heatmap logits (n, h, w, D_z, J) → normalised (u, v, d) (n, J, 3) float32 (float64
  for float64 logits): softmax over the h·w·D_z cells jointly, then the expectation of the cell centres."""
  dtype = accumulation_dtype(logits.dtype)
  n, h, w, depth, j = logits.shape
  probs = jax.nn.softmax(logits.astype(dtype).reshape(n, h * w * depth, j), axis=1).reshape(n, h, w, depth, j)
  u = jnp.einsum('nwj,w->nj', jnp.sum(probs, (1, 3)), cell_centres(w, dtype))
  v = jnp.einsum('nhj,h->nj', jnp.sum(probs, (2, 3)), cell_centres(h, dtype))
  d = jnp.einsum('ndj,d->nj', jnp.sum(probs, (1, 2)), cell_centres(depth, dtype))
  return jnp.stack([u, v, d], -1)


def normalized_to_crop_px(uv: jax.Array, image_size_hw) -> jax.Array:
  """Normalised (u, v) (..., 2) → crop pixels (..., 2) = (u W - 0.5, v H - 0.5) of an (H, W) crop."""
  height, width = image_size_hw
  return uv * jnp.asarray([width, height], uv.dtype) - 0.5


def normalized_to_metric(uvd: jax.Array, image_size_hw, box_size_mm: float = BOX_SIZE_MM) -> jax.Array:
  """Normalised (u, v, d) (..., 3) → relative metric coordinates (..., 3) mm = ((u - 0.5) W m, (v - 0.5) H m,
  (d - 0.5) B) with B = `box_size_mm`, m = B / max(H, W) (module docstring)."""
  height, width = image_size_hw
  per_px = box_size_mm / max(height, width)
  extent = jnp.asarray([width * per_px, height * per_px, box_size_mm], uvd.dtype)
  return (uvd - 0.5) * extent


class GhostBatchNorm(nn.Module):
  """BatchNorm over virtual batches (module docstring): (n, ..., C) → the same shape in `dtype`.

  Parameters `scale`, `bias` (C,) with logical axis 'embed' (it normalises backbone features); running statistics
  `batch_stats/mean`, `batch_stats/var` (C,) in the accumulation dtype, as `nn.BatchNorm` names them. Statistics
  and the normalisation are computed in float32 (float64 for a float64 model). Running statistics are not updated
  while the module is initialised (as `nn.BatchNorm`)."""

  virtual_batch: int = 16
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    channels = x.shape[-1]
    acc = accumulation_dtype(self.dtype)
    scale = self.param('scale', param_axes(nn.initializers.ones, ('embed',)), (channels,), self.param_dtype)
    bias = self.param('bias', param_axes(nn.initializers.zeros, ('embed',)), (channels,), self.param_dtype)
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((channels,), acc))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((channels,), acc))
    x = x.astype(acc)
    if train:
      n = x.shape[0]
      size = min(self.virtual_batch, n)
      if n % size:
        raise ValueError(f'ghost BatchNorm: batch of {n} is not a multiple of the virtual batch size {size}')
      groups = x.reshape((n // size, size) + x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = jnp.mean(groups, axes, keepdims=True)
      centred = groups - mean
      var = jnp.mean(jnp.square(centred), axes, keepdims=True)
      y = (centred * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        batch_mean = jnp.mean(mean.reshape(-1, channels), 0)
        batch_var = jnp.mean(var.reshape(-1, channels), 0)
        running_mean.value = self.momentum * running_mean.value + (1.0 - self.momentum) * batch_mean
        running_var.value = self.momentum * running_var.value + (1.0 - self.momentum) * batch_var
    else:
      y = (x - running_mean.value) * jax.lax.rsqrt(running_var.value + self.epsilon)
    return (y * scale.astype(acc) + bias.astype(acc)).astype(self.dtype)


class PointwiseLogits(nn.Module):
  """1×1 convolution with bias, (n, h, w, C) → (n, h, w, K) logits in float32 (float64 for a float64 model): the
  multiply in `dtype` with float32 accumulation. Kernel (1, 1, C, K) with logical axes (None, None, 'embed',
  None), initialised N(0, `init_std`²); bias (K,) zeros."""

  features: int
  init_std: float = 0.001
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel',
      param_axes(nn.initializers.normal(self.init_std), (None, None, 'embed', None)),
      (1, 1, x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = self.param('bias', param_axes(nn.initializers.zeros, (None,)), (self.features,), self.param_dtype)
    acc = accumulation_dtype(self.dtype)
    logits = jnp.einsum(
      'nhwc,ck->nhwk', x.astype(self.dtype), kernel[0, 0].astype(self.dtype), preferred_element_type=acc
    )
    return logits + bias.astype(acc)


class MetrabsHead(nn.Module):
  """The MeTRAbs head: backbone features (n, h, w, D) → a dict of float32 (float64 for a float64 model) arrays:

    `coords2d` (n, J, 2): crop pixels (x, y) of the 2D heatmaps' soft-argmax (module docstring);
    `coords3d_rel` (n, J, 3): mm, root-relative (up to a common offset) camera-frame coordinates of the volumetric
      heatmaps' soft-argmax in the `box_size_mm` box;
    with `return_heatmaps` also `heatmap2d` (n, h, w, J) and `heatmap3d` (n, h, w, D_z, J): the softmax
      probabilities.

  Channel layout of the 1×1 convolution's J (1 + D_z) outputs: channels [0, J) are the 2D heatmaps, channel
  J + k·J + j is depth bin k of joint j's volume. Submodules `ghost_bn` (`GhostBatchNorm`) and `final`
  (`PointwiseLogits`)."""

  num_keypoints: int
  image_size_hw: tuple[int, int]
  depth_bins: int = DEPTH_BINS
  box_size_mm: float = BOX_SIZE_MM
  virtual_batch: int = 16
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  init_std: float = 0.001
  return_heatmaps: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    x = GhostBatchNorm(
      self.virtual_batch, self.bn_momentum, self.bn_epsilon, self.dtype, self.param_dtype, name='ghost_bn'
    )(features, train)
    j, depth = self.num_keypoints, self.depth_bins
    logits = PointwiseLogits(j * (1 + depth), self.init_std, self.dtype, self.param_dtype, name='final')(x)
    n, h, w, _ = logits.shape
    logits2d = logits[..., :j]
    logits3d = logits[..., j:].reshape(n, h, w, depth, j)
    out = {
      'coords2d': normalized_to_crop_px(soft_argmax_2d(logits2d), self.image_size_hw),
      'coords3d_rel': normalized_to_metric(soft_argmax_3d(logits3d), self.image_size_hw, self.box_size_mm),
    }
    if self.return_heatmaps:
      out['heatmap2d'] = jax.nn.softmax(logits2d.reshape(n, h * w, j), axis=1).reshape(n, h, w, j)
      out['heatmap3d'] = jax.nn.softmax(logits3d.reshape(n, h * w * depth, j), axis=1).reshape(n, h, w, depth, j)
    return out


@dataclasses.dataclass(frozen=True)
class MetrabsHeadSpec:
  """What the MeTRAbs task asks of the model: one `MetrabsHead` predicting `num_keypoints` joints (J, e.g. the 555
  merged joints) on `image_size_hw` (H, W) px crops. Never stacked with other heads (`stack_key` None).

  `head_name`: datasets whose specs have the same non-empty `head_name` share one head module `head_<head_name>`
  in `PoseModel` (the MeTRAbs task: 'metrabs', one head over the config's 3D joints that every 3D dataset
  supervises on its own joints); '' gives the dataset its own head `head_<dataset>`."""

  num_keypoints: int
  image_size_hw: tuple[int, int]
  depth_bins: int = DEPTH_BINS
  box_size_mm: float = BOX_SIZE_MM
  virtual_batch: int = 16
  bn_momentum: float = 0.9
  init_std: float = 0.001
  return_heatmaps: bool = False
  head_name: str = ''

  def __post_init__(self):
    object.__setattr__(self, 'image_size_hw', tuple(int(s) for s in self.image_size_hw))

  def build(self, dtype: Dtype, param_dtype: Dtype, name: str) -> MetrabsHead:
    """The head module; `(n, h, w, D)` features → the `MetrabsHead` output dict."""
    return MetrabsHead(
      num_keypoints=self.num_keypoints,
      image_size_hw=self.image_size_hw,
      depth_bins=self.depth_bins,
      box_size_mm=self.box_size_mm,
      virtual_batch=self.virtual_batch,
      bn_momentum=self.bn_momentum,
      init_std=self.init_std,
      return_heatmaps=self.return_heatmaps,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
    )

  @property
  def stack_key(self) -> Any:
    """None: the head always runs on its own."""
    return None

  def batch_error(self, count: int) -> str | None:
    """Why `count` examples per global batch cannot train the head (ghost BatchNorm splits them into virtual batches
    of `virtual_batch`: a larger count must be a multiple), or None."""
    if count > self.virtual_batch and count % self.virtual_batch:
      return (
        f'its {count} examples per batch are not a multiple of config.metrabs.virtual_batch={self.virtual_batch} '
        '(ghost BatchNorm); change the batch size, the mixture weights or the virtual batch'
      )
    return None

  def forward_flops(self, width: int, grid_hw) -> float:
    """Forward FLOPs of the head for one example on a `grid_hw` feature map of `width` channels: the 1×1
    convolution to J (1 + D_z) channels and the soft-argmax expectations (2 per 2D cell and joint, 3 per volume
    cell and joint); BatchNorm and the softmax's exponentials are not counted."""
    h, w = grid_hw
    j = self.num_keypoints
    macs = h * w * width * j * (1 + self.depth_bins) + h * w * j * (2 + 3 * self.depth_bins)
    return 2.0 * macs
