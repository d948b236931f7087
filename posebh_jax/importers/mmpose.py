"""Official ViTPose / ViTPose++ / PoseBH checkpoints (mmpose 0.x parameter names) onto this project's model.

Source names (a `.pth` state dict, unwrapped from `state_dict` by `convert.read_source`):

  backbone.patch_embed.proj.{weight,bias}       conv p×p, stride p, 2 pixels of zero padding per side
  backbone.pos_embed                            (1, 1 + h·w, D); slot 0 (a class-token slot) is added to every patch
  backbone.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}
  backbone.blocks.N.mlp.experts.E.{weight,bias} ViTPose++: expert E's P output channels follow fc2's D − P
  backbone.last_norm.{weight,bias}
  keypoint_head.*, associate_keypoint_heads.H.* deconv_layers.{0,1,3,4} (ConvTranspose2d, BatchNorm2d), final_layer
  proto_head.*                                  PoseBH: deconv_layers, neck (one residual block), head, kpt_prototype

Datasets are matched by name: `keypoint_head` and expert 0 belong to the first dataset of the source order
(`--source_datasets`, default `common.OFFICIAL_DATASET_ORDER`), `associate_keypoint_heads.H` and expert H+1 to the
(H+2)-th; the prototypes' rows are the source datasets' keypoints one dataset after another. Of the source's datasets,
those the config lacks are left out (listed in a note) when the config shares at least one dataset with the source;
when it shares none the conversion stops with an error, because then every head would be thrown away and every head
of the config start fresh, which is what a wrong dataset order (or a missing `--source_datasets`) looks like.
Datasets of the config that the source lacks start fresh (their head, expert and prototype rows; noted).

A source without experts (single-dataset ViTPose, or a ViTPose++ model split per dataset) needs
`config.model.use_experts=False`, and a source with experts a config with them. A PoseBH proto head converted into a
config without PoseBH (`config.posebh.enabled=False`) is left unused, so the converter stops unless
`--allow_unused` (then only the pose model is kept).
"""

from __future__ import annotations

import re

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.importers.common import OFFICIAL_DATASET_ORDER
from posebh_jax.importers.common import Conversion
from posebh_jax.importers.common import conv_kernel
from posebh_jax.importers.common import deconv_kernel
from posebh_jax.importers.common import dense_kernel

# Official ViTPose variants: width → attention heads (not readable from the weights; checked against the config).
_OFFICIAL_NUM_HEADS = {384: 12, 768: 12, 1024: 16, 1280: 16}
# The official patch embedding pads 4 + 2·(ratio // 2 − 1) = 2 pixels per side (ratio 1, every released model).
_OFFICIAL_PATCH_PADDING = 2
_BN_EPS = 1e-5


def accepts(arrays, meta) -> bool:
  """Whether {name: array} (and meta) holds mmpose 0.x ViTPose names (`backbone.patch_embed.proj.weight` or
  `backbone.blocks.<N>.`)."""
  del meta
  return 'backbone.patch_embed.proj.weight' in arrays or any(n.startswith('backbone.blocks.') for n in arrays)


def convert(arrays, meta, target, source_datasets=None) -> Conversion:
  """Maps an official ViTPose / ViTPose++ / PoseBH state dict onto `target` (importers.common.Target).

  Args:
    arrays: {mmpose name: float32 NumPy array}.
    meta: unused (the official checkpoints' own meta is not kept by `convert.read_source`).
    target: the config's model, flattened.
    source_datasets: the source's datasets in head / expert order, or None for the official order.
  Returns: a Conversion in this project's layout (kernels transposed, class-token slot folded, experts stacked by
  dataset name, conv biases folded into BatchNorm means); raises UserError for a source that cannot fit the config.
  """
  del meta
  mapper = _Mapper(arrays, target, tuple(source_datasets) if source_datasets else OFFICIAL_DATASET_ORDER)
  return mapper.run()


def _block_count(names, prefix: str) -> int:
  """Number of consecutive `prefix<i>.` indices present among `names`, from 0."""
  pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
  indices = {int(m.group(1)) for m in map(pattern.match, names) if m}
  count = 0
  while count in indices:
    count += 1
  if indices and max(indices) >= count:
    raise UserError(f'the checkpoint has {prefix}<i> entries {sorted(indices)} with gaps; it is not a complete model')
  return count


class _Mapper:
  """One conversion: reads `arrays`, fills a Conversion for `target`."""

  def __init__(self, arrays, target, source_order: tuple[str, ...]):
    self.arrays = arrays
    self.target = target
    self.config = target.config
    self.order = source_order
    names = list(arrays)
    self.depth = _block_count(names, 'backbone.blocks.')
    self.num_experts = _block_count(names, 'backbone.blocks.0.mlp.experts.') if self.depth else 0
    self.num_heads = ('keypoint_head.final_layer.weight' in arrays) + _block_count(names, 'associate_keypoint_heads.')
    self.has_proto = any(n.startswith('proto_head.') for n in names)
    kind = 'PoseBH' if self.has_proto else ('ViTPose++' if self.num_experts else 'ViTPose')
    self.conversion = Conversion(kind=f'official {kind} (mmpose)')

  # ---------------------------------------------------------------------------------------------------- helpers
  def get(self, name: str) -> np.ndarray:
    if name not in self.arrays:
      raise UserError(f'the checkpoint lacks {name}, which an official ViTPose model has; it is incomplete')
    return np.asarray(self.arrays[name])

  def put(self, path: tuple, value, *names: str) -> None:
    self.conversion.put(path, value, *names)

  def ignore(self, name: str, reason: str) -> None:
    self.conversion.ignored[name] = reason

  def note(self, text: str) -> None:
    self.conversion.notes.append(text)

  # ------------------------------------------------------------------------------------------------------ run
  def run(self) -> Conversion:
    for name in self.arrays:
      if name.endswith('.num_batches_tracked'):
        self.ignore(name, "BatchNorm's batch counter (no counterpart)")
    self._check_backbone()
    datasets = self._source_datasets()
    self._backbone(datasets)
    head_prefixes = ['keypoint_head.'] + [f'associate_keypoint_heads.{h}.' for h in range(self.num_heads - 1)]
    keypoints = {}
    mapped = []
    for prefix, name in zip(head_prefixes, datasets):
      keypoints[name] = self.get(prefix + 'final_layer.weight').shape[0]
      if name in self.target.names:
        self._heatmap_head(prefix, ('head_' + name,))
        mapped.append(f'{prefix.rstrip(".")} → head_{name}')
      else:
        for source_name in self.arrays:
          if source_name.startswith(prefix):
            self.ignore(source_name, f"head of dataset '{name}', which config.data.order lacks")
    if mapped:
      self.note('heads: ' + ', '.join(mapped))
    if self.has_proto:
      self._proto_head(datasets, keypoints)
    left_out = [name for name in datasets if name not in self.target.names]
    if left_out:
      parts = 'heads, experts and prototype rows' if self.has_proto else 'heads and experts'
      self.note(f'left out the {parts} of {", ".join(left_out)} (not in config.data.order {list(self.target.names)})')
    missing = [name for name in self.target.names if name not in datasets]
    if missing and datasets:
      parts = 'heads, experts and prototype rows' if self.has_proto else 'heads and experts'
      self.note(f'no weights in the checkpoint for {", ".join(missing)}: their {parts} start fresh')
    return self.conversion

  # ------------------------------------------------------------------------------------------------ checks
  def _check_backbone(self) -> None:
    model = self.config.model
    if not self.depth:
      return
    if self.depth != self.target.depth:
      raise UserError(
        f'the checkpoint has {self.depth} transformer blocks but config.model.depth is {self.target.depth}: set '
        'config.model.depth (the variant) to the checkpoint\'s'
      )
    if self.num_experts and not model.use_experts:
      raise UserError(
        f'the checkpoint is a ViTPose++ model with {self.num_experts} experts per block, but '
        'config.model.use_experts is False: use a ViTPose++ config (config.model.use_experts=True)'
      )
    if not self.num_experts and model.use_experts:
      raise UserError(
        'the checkpoint has no experts (a single-dataset ViTPose, full-width fc2), but config.model.use_experts is '
        'True: set config.model.use_experts=False (and one dataset in config.data.order)'
      )
    if self.num_experts:
      part = self.get('backbone.blocks.0.mlp.experts.0.weight').shape[0]
      if part != model.expert_dim:
        raise UserError(
          f'the checkpoint\'s experts have {part} output channels (part_features) but config.model.expert_dim is '
          f'{model.expert_dim}: set config.model.expert_dim={part}'
        )
    if model.patch_padding != _OFFICIAL_PATCH_PADDING:
      raise UserError(
        f'official ViTPose pads the patch embedding by {_OFFICIAL_PATCH_PADDING} pixels per side but '
        f'config.model.patch_padding is {model.patch_padding}: set config.model.patch_padding='
        f'{_OFFICIAL_PATCH_PADDING}'
      )

  def _source_datasets(self) -> tuple[str, ...]:
    """The source's dataset names, one per head / expert, after checking them against the config."""
    count = max(self.num_heads, self.num_experts)
    if count > len(self.order):
      raise UserError(
        f'the checkpoint has {count} heads/experts but the source dataset order names {len(self.order)} '
        f'({",".join(self.order)}): pass --source_datasets with one name per head, in the checkpoint\'s order'
      )
    datasets = self.order[:count]
    if len(set(datasets)) != len(datasets):
      raise UserError(f'--source_datasets names a dataset twice: {",".join(self.order)}')
    if datasets and not set(datasets) & set(self.target.names):
      origin = '--source_datasets' if self.order != OFFICIAL_DATASET_ORDER else 'the official order'
      raise UserError(
        f'the checkpoint\'s heads are for {",".join(datasets)} ({origin}), none of which is in config.data.order '
        f'{list(self.target.names)}: pass --source_datasets with the checkpoint\'s datasets in head order, or put '
        'them in config.data.order'
      )
    return datasets

  # ------------------------------------------------------------------------------------------------ backbone
  def _backbone(self, datasets) -> None:
    arrays = self.arrays
    model = self.config.model
    if 'backbone.patch_embed.proj.weight' in arrays:
      weight = self.get('backbone.patch_embed.proj.weight')
      self.put(('params', 'backbone', 'patch_embed', 'kernel'), conv_kernel(weight), 'backbone.patch_embed.proj.weight')
      self.put(
        ('params', 'backbone', 'patch_embed', 'bias'),
        self.get('backbone.patch_embed.proj.bias'),
        'backbone.patch_embed.proj.bias',
      )
    if 'backbone.pos_embed' in arrays:
      pos = self.get('backbone.pos_embed')
      if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] < 2:
        raise UserError(f'backbone.pos_embed has shape {pos.shape}; official ViTPose has (1, 1 + h·w, D)')
      self.put(('params', 'backbone', 'pos_embed'), pos[:, 1:] + pos[:, :1], 'backbone.pos_embed')
      self.note(
        'class-token slot of backbone.pos_embed folded into the position embeddings (ViTPose adds it to every patch)'
      )
    width = arrays['backbone.patch_embed.proj.weight'].shape[0] if 'backbone.patch_embed.proj.weight' in arrays else 0
    if _OFFICIAL_NUM_HEADS.get(width, model.num_heads) != model.num_heads and width == model.width:
      self.note(
        f'config.model.num_heads is {model.num_heads} but official ViTPose models of width {width} have '
        f'{_OFFICIAL_NUM_HEADS[width]} (the weights cannot tell; outputs differ when it is wrong)'
      )
    for index in range(self.depth):
      self._block(index, datasets)
    for ours, theirs in (('scale', 'weight'), ('bias', 'bias')):
      name = f'backbone.last_norm.{theirs}'
      if name in arrays:
        self.put(('params', 'backbone', 'norm', ours), self.get(name), name)
    if self.num_experts:
      described = ', '.join(
        f'{e} → {name}' if name in self.target.names else f'{e} ({name}: left out)'
        for e, name in enumerate(datasets[: self.num_experts])
      )
      self.note(f'experts by dataset name: {described}')

  def _block(self, index: int, datasets) -> None:
    src = f'backbone.blocks.{index}.'
    dst = ('params', 'backbone', f'block_{index}')
    for norm in ('norm1', 'norm2'):
      self.put(dst + (norm, 'scale'), self.get(src + norm + '.weight'), src + norm + '.weight')
      self.put(dst + (norm, 'bias'), self.get(src + norm + '.bias'), src + norm + '.bias')
    for layer in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'):
      path = dst + tuple(layer.split('.'))
      weight = self.get(src + layer + '.weight')
      self.put(path + ('kernel',), dense_kernel(weight), src + layer + '.weight')
      if src + layer + '.bias' in self.arrays:
        self.put(path + ('bias',), self.get(src + layer + '.bias'), src + layer + '.bias')
      else:  # qkv_bias=False
        self.put(path + ('bias',), np.zeros(weight.shape[0], np.float32), src + layer + '.weight')
    if not self.num_experts:
      return
    kernel_path, bias_path = dst + ('mlp', 'expert_kernel'), dst + ('mlp', 'expert_bias')
    kernels = np.array(self.target.flat[kernel_path], np.float32)
    biases = np.array(self.target.flat[bias_path], np.float32)
    first = self.get(f'{src}mlp.experts.0.weight')
    if first.shape != (kernels.shape[2], kernels.shape[1]):
      # Another width / mlp_ratio: recorded in the source's shape, for `convert.merge` to report (fc1 first).
      names = [f'{src}mlp.experts.{e}.{s}' for e in range(self.num_experts) for s in ('weight', 'bias')]
      self.put(kernel_path, np.zeros((len(kernels),) + first.shape[::-1], np.float32), *names[::2])
      self.put(bias_path, np.zeros((len(kernels), first.shape[0]), np.float32), *names[1::2])
      return
    used = []
    for expert in range(self.num_experts):
      prefix = f'{src}mlp.experts.{expert}.'
      name = datasets[expert]
      if name not in self.target.names:
        for suffix in ('weight', 'bias'):
          self.ignore(prefix + suffix, f"expert of dataset '{name}', which config.data.order lacks")
        continue
      row = self.target.names.index(name)
      kernels[row] = dense_kernel(self.get(prefix + 'weight'))
      biases[row] = self.get(prefix + 'bias')
      used += [prefix + 'weight', prefix + 'bias']
    self.put(kernel_path, kernels, *used[::2])
    self.put(bias_path, biases, *used[1::2])

  # ----------------------------------------------------------------------------------------------- heads
  def _upsample(self, prefix: str, dst: tuple) -> None:
    """`<prefix>deconv_layers.{3i, 3i+1}` → `<dst>/upsample/{deconv_i, bn_i}` (and their running statistics)."""
    pattern = re.compile(re.escape(prefix) + r'deconv_layers\.(\d+)\.weight$')
    indices = sorted(int(m.group(1)) for m in map(pattern.match, self.arrays) if m)
    count = len(indices) // 2
    if indices != sorted([3 * i for i in range(count)] + [3 * i + 1 for i in range(count)]):
      raise UserError(
        f'{prefix}deconv_layers has weights at {indices}; ViTPose\'s are [ConvTranspose2d, BatchNorm2d, ReLU] × n'
      )
    if count != self.config.model.head_num_deconv:
      raise UserError(
        f'{prefix}deconv_layers has {count} deconvolution layers but config.model.head_num_deconv is '
        f'{self.config.model.head_num_deconv}: set config.model.head_num_deconv={count}'
      )
    for i in range(count):
      conv, norm = f'{prefix}deconv_layers.{3 * i}.', f'{prefix}deconv_layers.{3 * i + 1}.'
      if conv + 'bias' in self.arrays:
        raise UserError(f'{conv}bias: this model\'s deconvolutions have no bias (ViTPose\'s have none)')
      self.put(dst + ('upsample', f'deconv_{i}', 'kernel'), deconv_kernel(self.get(conv + 'weight')), conv + 'weight')
      self._batch_norm(norm, dst[1:] + ('upsample', f'bn_{i}'))

  def _batch_norm(self, src: str, dst: tuple, conv_bias: tuple[str, np.ndarray] | None = None) -> None:
    """BatchNorm2d `src` → params `dst`/{scale,bias} and batch_stats `dst`/{mean,var}. A conv bias before it is
    folded into the running mean (exact in inference; cancelled by batch statistics in training)."""
    self.put(('params',) + dst + ('scale',), self.get(src + 'weight'), src + 'weight')
    self.put(('params',) + dst + ('bias',), self.get(src + 'bias'), src + 'bias')
    mean, names = np.asarray(self.get(src + 'running_mean'), np.float64), [src + 'running_mean']
    if conv_bias is not None:
      mean = mean - np.asarray(conv_bias[1], np.float64)
      names.append(conv_bias[0])
    self.put(('batch_stats',) + dst + ('mean',), mean.astype(np.float32), *names)
    self.put(('batch_stats',) + dst + ('var',), self.get(src + 'running_var'), src + 'running_var')

  def _heatmap_head(self, prefix: str, dst: tuple) -> None:
    self._upsample(prefix, ('params',) + dst)
    weight = self.get(prefix + 'final_layer.weight')
    if weight.shape[2:] != (1, 1):
      raise UserError(
        f'{prefix}final_layer is a {weight.shape[2]}x{weight.shape[3]} conv; this model\'s heads end with a 1x1 '
        'conv (ViTPose\'s final_conv_kernel=1)'
      )
    self.put(('params',) + dst + ('final', 'kernel'), conv_kernel(weight), prefix + 'final_layer.weight')
    self.put(('params',) + dst + ('final', 'bias'), self.get(prefix + 'final_layer.bias'), prefix + 'final_layer.bias')

  # ------------------------------------------------------------------------------------------------- PoseBH
  def _proto_head(self, datasets, keypoints) -> None:
    proto_names = [n for n in self.arrays if n.startswith('proto_head.')]
    if ('params', 'embedding', 'embed', 'kernel') not in self.target.flat:
      self.note('the checkpoint has a PoseBH proto head, but config.posebh.enabled is False')
      return  # left unused: the converter stops unless --allow_unused
    if 'proto_head.neck.conv1.weight' not in self.arrays:
      raise UserError(
        "proto_head.neck is not PoseBH's one residual block (neck_type='res'); only that neck maps onto "
        'posebh_jax.models.embedding'
      )
    p, dst = 'proto_head.', ('params', 'embedding')
    self._upsample(p, dst)
    self._conv(p + 'neck.conv1.', dst + ('res_conv1',), 3)
    self._batch_norm(p + 'neck.bn1.', ('embedding', 'res_bn1'), self._bias(p + 'neck.conv1.'))
    self._conv(p + 'neck.conv2.', dst + ('res_conv2',), 3)
    self._batch_norm(p + 'neck.bn2.', ('embedding', 'res_bn2'), self._bias(p + 'neck.conv2.'))
    if p + 'neck.downsample.0.weight' in self.arrays:
      self._conv(p + 'neck.downsample.0.', dst + ('res_short',), 1)
      self._batch_norm(p + 'neck.downsample.1.', ('embedding', 'res_bn_short'), self._bias(p + 'neck.downsample.0.'))
    else:  # same width in and out: an identity shortcut, as a 1x1 identity conv and an identity BatchNorm
      channels = self.get(p + 'neck.conv1.weight').shape[0]
      self.put(dst + ('res_short', 'kernel'), np.eye(channels, dtype=np.float32)[None, None], p + 'neck.conv1.weight')
      self.put(dst + ('res_bn_short', 'scale'), np.ones(channels, np.float32), p + 'neck.conv1.weight')
      self.put(dst + ('res_bn_short', 'bias'), np.zeros(channels, np.float32), p + 'neck.conv1.weight')
      self.put(
        ('batch_stats', 'embedding', 'res_bn_short', 'mean'), np.zeros(channels, np.float32), p + 'neck.conv1.weight'
      )
      self.put(
        ('batch_stats', 'embedding', 'res_bn_short', 'var'),
        np.full(channels, 1.0 - _BN_EPS, np.float32),
        p + 'neck.conv1.weight',
      )
      self.note('the proto neck has an identity shortcut: written as an identity 1x1 conv and BatchNorm')
    self._conv(p + 'head.0.', dst + ('out_conv',), 3)
    self._batch_norm(p + 'head.1.', ('embedding', 'out_bn'), self._bias(p + 'head.0.'))
    weight = self.get(p + 'head.3.weight')
    self.put(dst + ('embed', 'kernel'), conv_kernel(weight), p + 'head.3.weight')
    self.put(dst + ('embed', 'bias'), self.get(p + 'head.3.bias'), p + 'head.3.bias')
    self.note(
      'proto_head → embedding (activation SiLU, as PoseBH\'s configs); the biases of neck.conv1, neck.conv2 and '
      'head.0 folded into the running means of the BatchNorms that follow'
    )
    self._prototypes(datasets, keypoints)
    for name in proto_names:
      if name.startswith(p + 'cluster_prototype.'):
        self.ignore(
          name, 'cluster prototypes (C, M, F) are recomputed per keypoint from the prototypes when CPS starts'
        )

  def _bias(self, conv: str):
    name = conv + 'bias'
    return (name, self.get(name)) if name in self.arrays else None

  def _conv(self, src: str, dst: tuple, size: int) -> None:
    """Conv2d `src` (bias folded elsewhere) → Flax kernel `dst`/kernel; a 1x1 kernel into a 3x3 target is placed
    at the centre (the same map with SAME padding)."""
    weight = self.get(src + 'weight')
    if weight.shape[2:] == (1, 1) and size == 3:
      padded = np.zeros(weight.shape[:2] + (3, 3), weight.dtype)
      padded[:, :, 1, 1] = weight[:, :, 0, 0]
      weight = padded
    self.put(dst + ('kernel',), conv_kernel(weight), src + 'weight')

  def _prototypes(self, datasets, keypoints) -> None:
    name = 'proto_head.kpt_prototype.prototypes'
    if name not in self.arrays:
      return
    source = self.get(name)
    path = ('extra', 'prototypes')
    fresh = np.array(self.target.flat[path], np.float32)
    if source.ndim != 3 or source.shape[1:] != fresh.shape[1:]:
      raise UserError(
        f'{name} has shape {tuple(source.shape)} (J, M, F) but this config\'s prototypes are {fresh.shape}: set '
        'config.posebh.prototypes_per_keypoint (M) and config.posebh.embed_dim (F) to the checkpoint\'s'
      )
    counts = [keypoints[d] for d in datasets if d in keypoints]
    if sum(counts) != source.shape[0]:
      raise UserError(
        f'{name} has {source.shape[0]} rows but the checkpoint\'s heads have {sum(counts)} keypoints '
        f'({", ".join(f"{d}: {keypoints[d]}" for d in datasets if d in keypoints)})'
      )
    source_offsets = dict(zip(datasets, np.cumsum([0] + counts[:-1]).tolist()))
    offset, copied = 0, []
    for dataset in self.target.names:
      count = self.target.num_keypoints[dataset]
      if dataset in source_offsets:
        if keypoints[dataset] != count:
          raise UserError(
            f"the checkpoint's '{dataset}' has {keypoints[dataset]} keypoints but this config's has {count}: set "
            f'config.data.datasets.{dataset}.format (its keypoint count)'
          )
        start = source_offsets[dataset]
        fresh[offset : offset + count] = source[start : start + count]
        copied.append(dataset)
      offset += count
    self.put(path, fresh, name)
    self.put(('extra', 'cluster_prototypes'), fresh, name)
    self.note(
      f'prototypes: rows of {", ".join(copied)} by dataset name; cluster_prototypes start equal to them '
      '(recomputed when CPS starts)'
    )
