"""transformers' `VitPoseForPoseEstimation` (VitPose and VitPose++: `model.safetensors` beside its `config.json`) →
this project's model.

What transformers computes, and what it becomes here:
- `backbone.embeddings.patch_embeddings.projection`: a conv with kernel = stride = patch and zero padding 2 →
  `backbone/patch_embed` (config.model.patch_padding must be 2).
- `backbone.embeddings.position_embeddings` (1, 1 + h·w, D): transformers adds slot 0 to every patch position as
  well as the patch's own slot (as the official ViTPose does), so `pos_embed` = slots 1.. + slot 0.
- per layer: `layernorm_before` → `norm1`; `attention.attention.{query,key,value}` → the fused `attn/qkv` (columns
  [q | k | v], each head-major, as transformers splits heads); `attention.output.dense` → `attn/proj`;
  `layernorm_after` → `norm2`; `mlp.fc1` → `mlp/fc1`; `mlp.fc2` → `mlp/fc2` (the D − P shared columns with
  experts); `mlp.experts.E` → row of `mlp/expert_kernel` / `expert_bias` of the dataset `OFFICIAL_DATASET_ORDER[E]`
  (or the E-th of `--source_datasets`), matched by name; `backbone.layernorm` → `backbone/norm`.
- `head.{deconv1,batchnorm1,deconv2,batchnorm2,conv}` (the classic decoder) → `head_<dataset>/upsample/{deconv_0,
  bn_0, deconv_1, bn_1}` and `final`, copied into every head of the config with as many keypoints as the checkpoint's
  (VitPose++ on the hub carries one head, COCO's). The simple decoder (ReLU, bilinear upsampling, 3×3 conv) is not a
  head this project builds.
"""

from __future__ import annotations

import re

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.importers.common import (
  OFFICIAL_DATASET_ORDER,
  Conversion,
  conv_kernel,
  deconv_kernel,
  dense_kernel,
  put_bias,
  put_dense,
  put_layer_norm,
  require,
  resample_grid,
  show_value,
)

_LAYOUT = 'the transformers checkpoint'  # how messages name the source

_PATCH = 'backbone.embeddings.patch_embeddings.projection'
_POS = 'backbone.embeddings.position_embeddings'
_LAYER = 'backbone.encoder.layer.'
# transformers hard-codes these in VitPoseBackbonePatchEmbeddings and VitPoseClassicDecoder.
_PATCH_PADDING = 2
_HEAD_CHANNELS = 256
_HEAD_DECONVS = 2
_OUR_LAYER_NORM_EPS = 1e-6


def accepts(arrays, meta) -> bool:
  """Whether {name: array} is a transformers `VitPoseForPoseEstimation` (or bare `VitPoseBackbone`) state dict."""
  del meta
  return f'{_PATCH}.weight' in arrays


def convert(arrays, meta, target, source_datasets=None) -> Conversion:
  """Maps a transformers VitPose / VitPose++ state dict ({name: NumPy array}, meta with the config.json as
  'config') onto `target` (importers.common.Target). `source_datasets`: the datasets of the checkpoint's experts in
  `dataset_index` order (default: OFFICIAL_DATASET_ORDER). Returns the Conversion; raises UserError for the simple
  decoder and for an architecture that disagrees with the config (naming the config key)."""
  hf_config = dict((meta or {}).get('config') or {})
  backbone_config = dict(hf_config.get('backbone_config') or {})
  arch = _architecture(arrays, hf_config, backbone_config)
  conversion = Conversion(kind='transformers VitPose++' if arch['num_experts'] > 1 else 'transformers VitPose')
  if not hf_config:
    conversion.notes.append(
      'no config.json beside the weights: the number of attention heads, the activation and the LayerNorm epsilon '
      f'are taken from the config (config.model.num_heads={target.config.model.num_heads}), not checked'
    )
  _check_architecture(arch, target)
  eps = backbone_config.get('layer_norm_eps')
  if eps is not None and not np.isclose(float(eps), _OUR_LAYER_NORM_EPS, rtol=1e-3, atol=0.0):
    conversion.notes.append(
      f'the checkpoint\'s LayerNorms use epsilon {eps:g}, this model\'s {_OUR_LAYER_NORM_EPS:g} (as the official '
      'ViTPose): outputs differ only where a token\'s features have a variance near that size'
    )
  _embeddings(arrays, arch, target, conversion)
  experts = _expert_datasets(arch['num_experts'], source_datasets) if arch['num_experts'] > 1 else ()
  for index in range(arch['depth']):
    _layer(arrays, index, arch, experts, target, conversion)
  for name in arrays:
    match = re.match(re.escape(_LAYER) + r'(\d+)\.', name)
    if match and int(match.group(1)) >= arch['depth']:
      conversion.ignored[name] = (
        f'a layer after the output stage stage{arch["depth"]} (backbone_config.out_indices); '
        'VitPoseForPoseEstimation never uses it'
      )
  put_layer_norm(arrays, 'backbone.layernorm', ('params', 'backbone', 'norm'), conversion, _LAYOUT)
  if experts:
    _expert_notes(experts, target, conversion)
  if 'head.deconv1.weight' in arrays:
    _head(arrays, target, conversion)
  else:
    conversion.notes.append('the checkpoint has no head (a bare VitPoseBackbone): every head starts fresh')
  return conversion


# ------------------------------------------------------------------------------------------------ architecture
def _architecture(arrays, hf_config: dict, backbone_config: dict) -> dict:
  """The source's architecture from its config.json where given, else from the parameter shapes. Raises UserError
  for the simple decoder."""
  if hf_config.get('use_simple_decoder') or ('head.conv.weight' in arrays and 'head.deconv1.weight' not in arrays):
    raise UserError(
      "this transformers VitPose has the simple decoder (use_simple_decoder: ReLU, bilinear 4x upsampling, 3x3 conv), "
      'a head this project does not build: convert a classic-decoder checkpoint (use_simple_decoder=false, as the '
      'VitPose++ ones are) or the official ViTPose .pth of the same model instead'
    )
  patch = np.shape(arrays[f'{_PATCH}.weight'])  # (D, C, ph, pw)
  layers = {int(m.group(1)) for m in (re.match(re.escape(_LAYER) + r'(\d+)\.', n) for n in arrays) if m}
  num_layers = int(backbone_config.get('num_hidden_layers', max(layers) + 1 if layers else 0))
  expert_indices = {
    int(m.group(1)) for m in (re.match(re.escape(_LAYER) + r'0\.mlp\.experts\.(\d+)\.weight$', n) for n in arrays) if m
  }
  num_experts = int(backbone_config.get('num_experts', len(expert_indices) or 1))
  hidden = np.shape(arrays.get(f'{_LAYER}0.mlp.fc1.weight', np.zeros((0, 1))))[0]
  part = np.shape(arrays[f'{_LAYER}0.mlp.experts.0.weight'])[0] if 0 in expert_indices else 0
  image_size = backbone_config.get('image_size')
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  return dict(
    width=int(backbone_config.get('hidden_size', patch[0])),
    patch=tuple(int(p) for p in patch[2:]),
    channels=int(patch[1]),
    num_heads=backbone_config.get('num_attention_heads'),
    hidden=int(hidden),
    mlp_ratio=float(backbone_config.get('mlp_ratio', hidden / patch[0])),
    num_layers=num_layers,
    depth=_output_depth(backbone_config, num_layers),
    num_experts=num_experts,
    part_features=int(backbone_config.get('part_features', part)) if num_experts > 1 else 0,
    hidden_act=backbone_config.get('hidden_act', 'gelu'),
    image_size=tuple(image_size) if image_size else None,
  )


def _output_depth(backbone_config: dict, num_layers: int) -> int:
  """The number of layers whose output the head reads: the last of `out_indices` (stage k = after layer k)."""
  indices = backbone_config.get('out_indices')
  if not indices:
    return num_layers
  last = int(indices[-1])
  return last + num_layers + 1 if last < 0 else last


def _check_architecture(arch: dict, target) -> None:
  """One-line UserError naming the config key where the checkpoint's architecture and the config's disagree."""
  model = target.config.model
  if arch['channels'] != 3:
    raise UserError(f'the checkpoint takes {arch["channels"]}-channel images; this model takes RGB (3 channels)')
  if arch['hidden_act'] != 'gelu':
    raise UserError(
      f"the checkpoint's backbone uses hidden_act={arch['hidden_act']!r}; this model's FFN uses exact GELU ('gelu')"
    )
  if arch['depth'] < 1:
    raise UserError(f'the checkpoint has no transformer layers before its output stage (depth {arch["depth"]})')
  patch_h, patch_w = arch['patch']
  checks = [
    ('hidden_size', arch['width'], 'config.model.width', int(model.width)),
    ('patch_size', patch_h, 'config.model.patch_size', int(model.patch_size)),
    ('the patch padding (fixed in transformers)', _PATCH_PADDING, 'config.model.patch_padding', model.patch_padding),
    ('mlp_ratio', arch['mlp_ratio'], 'config.model.mlp_ratio', float(model.mlp_ratio)),
    ('output depth (num_hidden_layers / out_indices)', arch['depth'], 'config.model.depth', int(model.depth)),
  ]
  if arch['num_heads'] is not None:
    checks.append(('num_attention_heads', int(arch['num_heads']), 'config.model.num_heads', int(model.num_heads)))
  checks.append(('experts (num_experts > 1)', arch['num_experts'] > 1, 'config.model.use_experts', model.use_experts))
  if arch['num_experts'] > 1:
    checks.append(('part_features', arch['part_features'], 'config.model.expert_dim', int(model.expert_dim)))
  checks += [
    ('decoder channels (fixed in transformers)', _HEAD_CHANNELS, 'config.model.head_channels', model.head_channels),
    ('decoder deconvolutions (fixed)', _HEAD_DECONVS, 'config.model.head_num_deconv', model.head_num_deconv),
  ]
  if patch_h != patch_w:
    raise UserError(f'the checkpoint has non-square patches {arch["patch"]}; config.model.patch_size is square')
  for what, theirs, key, ours in checks:
    if theirs != ours:
      raise UserError(
        f'the transformers checkpoint has {what} = {show_value(theirs)} but {key} is {show_value(ours)}: set {key}='
        f'{show_value(theirs)} (or choose the config of that variant)'
      )


def _expert_datasets(num_experts: int, source_datasets) -> tuple[str, ...]:
  """The dataset of each source expert, in `dataset_index` order."""
  if source_datasets:
    if len(source_datasets) != num_experts:
      raise UserError(
        f'--source_datasets names {len(source_datasets)} datasets but the checkpoint has {num_experts} experts: '
        'name one dataset per expert, in dataset_index order'
      )
    return tuple(source_datasets)
  if num_experts > len(OFFICIAL_DATASET_ORDER):
    raise UserError(
      f'the checkpoint has {num_experts} experts, more than the official order '
      f'{",".join(OFFICIAL_DATASET_ORDER)}: pass --source_datasets with one dataset per expert'
    )
  return OFFICIAL_DATASET_ORDER[:num_experts]


# ---------------------------------------------------------------------------------------------------- mapping
def _embeddings(arrays, arch: dict, target, conversion: Conversion) -> None:
  conversion.put(
    ('params', 'backbone', 'patch_embed', 'kernel'), conv_kernel(arrays[f'{_PATCH}.weight']), f'{_PATCH}.weight'
  )
  put_bias(arrays, f'{_PATCH}.bias', ('params', 'backbone', 'patch_embed', 'bias'), arch['width'], conversion)
  if _POS not in arrays:
    return
  table = np.asarray(arrays[_POS], np.float32)
  if table.ndim != 3 or table.shape[1] < 2:
    raise UserError(f'{_POS} has shape {table.shape}, not (1, 1 + patches, hidden_size)')
  pos_embed = table[:, 1:] + table[:, :1]  # transformers adds slot 0 to every patch position
  grid = None
  if arch['image_size']:
    grid = (arch['image_size'][0] // arch['patch'][0], arch['image_size'][1] // arch['patch'][1])
  if grid and grid[0] * grid[1] == pos_embed.shape[1] and grid != tuple(target.grid):
    pos_embed = resample_grid(pos_embed, grid, tuple(target.grid))
    conversion.notes.append(
      f'position embeddings resampled (bicubic) from the checkpoint\'s {grid[0]}x{grid[1]} token grid (image_size '
      f'{tuple(arch["image_size"])}) to the {target.grid[0]}x{target.grid[1]} grid of config.data.image_size '
      f'{tuple(target.config.data.image_size)}'
    )
  conversion.put(('params', 'backbone', 'pos_embed'), pos_embed, _POS)


def _layer(arrays, index: int, arch: dict, experts: tuple[str, ...], target, conversion: Conversion) -> None:
  source = f'{_LAYER}{index}.'
  block = ('params', 'backbone', f'block_{index}')
  width = arch['width']
  attention = f'{source}attention.attention.'
  parts = [f'{attention}{part}' for part in ('query', 'key', 'value')]
  require(arrays, [f'{p}.weight' for p in parts], _LAYOUT)
  kernel = np.concatenate([dense_kernel(arrays[f'{p}.weight']) for p in parts], axis=1)
  conversion.put(block + ('attn', 'qkv', 'kernel'), kernel, *(f'{p}.weight' for p in parts))
  if all(f'{p}.bias' in arrays for p in parts):
    bias = np.concatenate([np.asarray(arrays[f'{p}.bias']) for p in parts])
    conversion.put(block + ('attn', 'qkv', 'bias'), bias, *(f'{p}.bias' for p in parts))
  else:
    conversion.put(block + ('attn', 'qkv', 'bias'), np.zeros(3 * width, np.float32))
    conversion.origin[block + ('attn', 'qkv', 'bias')] = f'{attention}* (qkv_bias=False: zeros)'
  put_dense(arrays, f'{source}attention.output.dense', block + ('attn', 'proj'), conversion, _LAYOUT)
  put_layer_norm(arrays, f'{source}layernorm_before', block + ('norm1',), conversion, _LAYOUT)
  put_layer_norm(arrays, f'{source}layernorm_after', block + ('norm2',), conversion, _LAYOUT)
  put_dense(arrays, f'{source}mlp.fc1', block + ('mlp', 'fc1'), conversion, _LAYOUT)
  put_dense(arrays, f'{source}mlp.fc2', block + ('mlp', 'fc2'), conversion, _LAYOUT)
  if not experts:
    return
  kernel_path, bias_path = block + ('mlp', 'expert_kernel'), block + ('mlp', 'expert_bias')
  if kernel_path not in target.flat:
    return  # merge reports the missing path
  kernels, biases = np.array(target.flat[kernel_path]), np.array(target.flat[bias_path])
  names = []
  for source_index, dataset in enumerate(experts):
    if dataset not in target.names:
      continue  # left unused: merge lists it unless --allow_unused
    expert = f'{source}mlp.experts.{source_index}'
    require(arrays, [f'{expert}.weight', f'{expert}.bias'], _LAYOUT)
    weight, bias = np.asarray(arrays[f'{expert}.weight']), np.asarray(arrays[f'{expert}.bias'])
    row = target.names.index(dataset)
    if weight.shape != kernels.shape[1:][::-1] or bias.shape != biases.shape[1:]:
      raise UserError(
        f'{expert}.weight has shape {weight.shape} but an expert of this config is {kernels.shape[1:][::-1]} '
        '(out, in): set config.model.expert_dim and config.model.mlp_ratio to match the checkpoint'
      )
    kernels[row], biases[row] = dense_kernel(weight), bias
    names += [f'{expert}.weight', f'{expert}.bias']
  if names:
    conversion.put(kernel_path, kernels, *names[0::2])
    conversion.put(bias_path, biases, *names[1::2])


def _expert_notes(experts: tuple[str, ...], target, conversion: Conversion) -> None:
  mapped = [f'{index}->{name}' for index, name in enumerate(experts) if name in target.names]
  fresh = [name for name in target.names if name not in experts]
  conversion.notes.append(f'experts by dataset_index: {", ".join(mapped) or "none"}')
  if fresh:
    conversion.notes.append(f'experts starting fresh (not in the checkpoint): {", ".join(fresh)}')
  unused = [f'{index} ({name})' for index, name in enumerate(experts) if name not in target.names]
  if unused:
    conversion.notes.append(f'experts of datasets this config lacks: {", ".join(unused)}')


def _head(arrays, target, conversion: Conversion) -> None:
  """Copies the classic decoder into every head with the checkpoint head's keypoint count."""
  names = [
    f'head.{n}'
    for n in ('deconv1.weight', 'deconv2.weight', 'conv.weight', 'conv.bias')
    + tuple(f'batchnorm{i}.{p}' for i in (1, 2) for p in ('weight', 'bias', 'running_mean', 'running_var'))
  ]
  require(arrays, names, _LAYOUT)
  for index in (1, 2):
    tracked = f'head.batchnorm{index}.num_batches_tracked'
    if tracked in arrays:
      conversion.ignored[tracked] = 'a BatchNorm update counter (eval uses the running statistics)'
  num_keypoints = int(np.shape(arrays['head.conv.weight'])[0])
  receivers = [name for name in target.names if target.num_keypoints[name] == num_keypoints]
  if not receivers:
    conversion.notes.append(
      f'no dataset of config.data.order has the checkpoint head\'s {num_keypoints} keypoints: the head is not used'
    )
    return
  for dataset in receivers:
    head = f'head_{dataset}'
    for index in (0, 1):
      conversion.put(
        ('params', head, 'upsample', f'deconv_{index}', 'kernel'),
        deconv_kernel(arrays[f'head.deconv{index + 1}.weight']),
        f'head.deconv{index + 1}.weight',
      )
      norm = f'head.batchnorm{index + 1}'
      for ours, theirs, collection in (
        ('scale', 'weight', 'params'),
        ('bias', 'bias', 'params'),
        ('mean', 'running_mean', 'batch_stats'),
        ('var', 'running_var', 'batch_stats'),
      ):
        conversion.put(
          (collection, head, 'upsample', f'bn_{index}', ours), arrays[f'{norm}.{theirs}'], f'{norm}.{theirs}'
        )
    conversion.put(('params', head, 'final', 'kernel'), conv_kernel(arrays['head.conv.weight']), 'head.conv.weight')
    conversion.put(('params', head, 'final', 'bias'), arrays['head.conv.bias'], 'head.conv.bias')
  fresh = [name for name in target.names if name not in receivers]
  conversion.notes.append(
    f'the checkpoint\'s one head ({num_keypoints} keypoints) copied '
    f'into the heads of {", ".join(receivers)}' + (f'; fresh heads: {", ".join(fresh)}' if fresh else '')
  )
