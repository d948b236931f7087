"""MAE / timm ViT weights (`patch_embed.proj`, `pos_embed`, `blocks.N.*`, `norm`) → this model's backbone only;
the heads keep their fresh initialisation.

- `patch_embed.proj` → `backbone/patch_embed` (timm and MAE do not pad the patch projection; this model pads by
  config.model.patch_padding, as ViTPose does when it starts from MAE weights).
- `pos_embed` (1, 1 + h·w, D) with a class-token slot: timm and MAE add slot 0 to the class token only, so it is
  dropped and the h·w patch slots (resampled bicubically when the grid differs, e.g. 14×14 at 224 px) become
  `backbone/pos_embed`. `cls_token` has no counterpart (this model has no class token).
- `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}` → `block_N/{norm1, attn/qkv, attn/proj, norm2,
  mlp/fc1, mlp/fc2}` (timm's fused qkv has this model's column order: [q | k | v], each head-major); BEiT-style
  `attn.q_bias` / `attn.v_bias` become the qkv bias with zeros for k.
- With experts (ViTPose++) the full-width fc2 is split as the official ViTPose++ initialisation does
  (mmcv_custom/checkpoint.py with part_features): its first D − P output columns → the shared `mlp/fc2`, the last P
  columns → every dataset's expert.
- `norm` (or, where a global-pool model has none, `fc_norm`) → `backbone/norm`.
- MAE's decoder (`decoder_*`), `mask_token` and a classifier `head.*` are ignored, with the reason listed.
"""

from __future__ import annotations

import re

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.importers.common import Conversion, conv_kernel, dense_kernel, put_bias, put_dense, put_layer_norm
from posebh_jax.importers.common import require, resample_grid, show_value

_LAYOUT = 'the ViT checkpoint'  # how messages name the source

_BLOCK = re.compile(r'blocks\.(\d+)\.')
# Source names deliberately left out: (pattern, reason).
_IGNORED = (
  (re.compile(r'decoder_'), "MAE's pixel decoder (pre-training only)"),
  (re.compile(r'mask_token$'), "MAE's mask token (pre-training only)"),
  (re.compile(r'head\.'), 'the classification head (this model has pose heads)'),
  (re.compile(r'cls_token$'), 'the class token (this model has none; no patch reads it)'),
)


def accepts(arrays, meta) -> bool:
  """Whether {name: array} is a timm / MAE ViT state dict (top-level `patch_embed.proj` and `blocks.N`)."""
  del meta
  return 'patch_embed.proj.weight' in arrays and any(_BLOCK.match(name) for name in arrays)


def convert(arrays, meta, target, source_datasets=None) -> Conversion:
  """Maps a timm / MAE ViT state dict ({name: NumPy array}) onto the backbone of `target` (importers.common.Target).
  `meta` and `source_datasets` are unused (the source has no experts or heads). Returns the Conversion; raises
  UserError naming the config key when width, depth, patch size or MLP ratio disagree with the config."""
  del meta, source_datasets
  kind = 'MAE ViT' if any(name.startswith('decoder_') or name == 'mask_token' for name in arrays) else 'timm ViT'
  conversion = Conversion(kind=f'{kind} (backbone only)')
  width, num_blocks = _check_architecture(arrays, target)
  model = target.config.model
  conversion.notes.append(
    f'a state dict does not record the number of attention heads: config.model.num_heads={model.num_heads} is '
    'assumed (MAE ViT-B/L/H: 12/16/16)'
  )
  for name in arrays:
    for pattern, reason in _IGNORED:
      if pattern.match(name):
        conversion.ignored[name] = reason
  backbone = ('params', 'backbone')
  conversion.put(
    backbone + ('patch_embed', 'kernel'), conv_kernel(arrays['patch_embed.proj.weight']), 'patch_embed.proj.weight'
  )
  put_bias(arrays, 'patch_embed.proj.bias', backbone + ('patch_embed', 'bias'), width, conversion)
  if int(model.patch_padding):
    conversion.notes.append(
      f'the source projects patches without padding; this model pads by config.model.patch_padding='
      f'{model.patch_padding} (as ViTPose does from MAE weights)'
    )
  if 'pos_embed' in arrays:
    _pos_embed(arrays, target, conversion)
  expert_dim = int(model.expert_dim) if model.use_experts else 0
  for index in range(num_blocks):
    _block(arrays, index, width, expert_dim, target, conversion)
  if expert_dim:
    conversion.notes.append(
      f'each fc2 split as the official ViTPose++ initialisation does: its first {width - expert_dim} output columns '
      f'→ the shared fc2, the last {expert_dim} → every expert ({", ".join(target.names)})'
    )
  if 'norm.weight' in arrays:
    put_layer_norm(arrays, 'norm', backbone + ('norm',), conversion, _LAYOUT)
    for name in ('fc_norm.weight', 'fc_norm.bias'):
      if name in arrays:
        conversion.ignored[name] = "the pooled features' norm (the backbone's final norm is `norm`)"
  elif 'fc_norm.weight' in arrays:
    put_layer_norm(arrays, 'fc_norm', backbone + ('norm',), conversion, _LAYOUT)
    conversion.notes.append('the backbone norm comes from fc_norm (a global-pool model without `norm`)')
  else:
    conversion.notes.append('the source has no final norm: backbone/norm starts fresh (scale 1, bias 0)')
  return conversion


def _check_architecture(arrays, target) -> tuple[int, int]:
  """(width, number of blocks) of the source; UserError naming the config key on a disagreement."""
  model = target.config.model
  proj = np.shape(arrays['patch_embed.proj.weight'])
  if len(proj) != 4 or proj[1] != 3:
    raise UserError(f'patch_embed.proj.weight has shape {proj}, not (width, 3, patch, patch) of an RGB ViT')
  width, patch = int(proj[0]), tuple(int(p) for p in proj[2:])
  indices = {int(m.group(1)) for m in map(_BLOCK.match, arrays) if m}
  num_blocks = max(indices) + 1
  hidden = int(np.shape(arrays.get('blocks.0.mlp.fc1.weight', np.zeros((0, 1))))[0])
  checks = (
    ('width (embed_dim)', width, 'config.model.width', int(model.width)),
    ('patch size', patch[0] if patch[0] == patch[1] else patch, 'config.model.patch_size', int(model.patch_size)),
    ('depth (blocks)', num_blocks, 'config.model.depth', int(model.depth)),
    ('mlp_ratio', hidden / width, 'config.model.mlp_ratio', float(model.mlp_ratio)),
  )
  for what, theirs, key, ours in checks:
    if theirs != ours:
      raise UserError(
        f'the ViT checkpoint has {what} = {show_value(theirs)} but {key} is {show_value(ours)}: set {key}={show_value(theirs)}'
      )
  return width, num_blocks


def _pos_embed(arrays, target, conversion: Conversion) -> None:
  """Patch slots of `pos_embed` (class slot dropped), resampled to the target's token grid."""
  table = np.asarray(arrays['pos_embed'], np.float32)
  if table.ndim != 3:
    raise UserError(f'pos_embed has shape {table.shape}, not (1, tokens, width)')
  tokens = table.shape[1]
  square = lambda n: int(round(n**0.5)) ** 2 == n
  has_class_slot = ('cls_token' in arrays and not square(tokens)) or (square(tokens - 1) and not square(tokens))
  patches = table[:, 1:] if has_class_slot else table
  if has_class_slot and np.any(table[:, 0] != 0):
    conversion.notes.append(
      "pos_embed's class-token slot is not zero: dropped, as timm computes (the official ViTPose loader would add "
      'it to every patch)'
    )
  count = patches.shape[1]
  grid = tuple(target.grid) if count == target.grid[0] * target.grid[1] else None
  if grid is None:
    side = int(round(count**0.5))
    if side * side != count:
      raise UserError(
        f'pos_embed has {count} patch positions, neither a square grid nor the {target.grid[0]}x{target.grid[1]} '
        'token grid of config.data.image_size / config.model.patch_size'
      )
    grid = (side, side)
    patches = resample_grid(patches, grid, tuple(target.grid))
    conversion.notes.append(
      f'position embeddings resampled (bicubic) from a {side}x{side} to the {target.grid[0]}x{target.grid[1]} token '
      f'grid of image_size {tuple(target.config.data.image_size)}'
    )
  conversion.put(('params', 'backbone', 'pos_embed'), patches, 'pos_embed')


def _block(arrays, index: int, width: int, expert_dim: int, target, conversion: Conversion) -> None:
  source = f'blocks.{index}.'
  block = ('params', 'backbone', f'block_{index}')
  put_layer_norm(arrays, f'{source}norm1', block + ('norm1',), conversion, _LAYOUT)
  put_layer_norm(arrays, f'{source}norm2', block + ('norm2',), conversion, _LAYOUT)
  qkv = f'{source}attn.qkv'
  require(arrays, [f'{qkv}.weight'], _LAYOUT)
  conversion.put(block + ('attn', 'qkv', 'kernel'), dense_kernel(arrays[f'{qkv}.weight']), f'{qkv}.weight')
  if f'{qkv}.bias' in arrays:
    conversion.put(block + ('attn', 'qkv', 'bias'), arrays[f'{qkv}.bias'], f'{qkv}.bias')
  elif f'{source}attn.q_bias' in arrays:
    q_bias, v_bias = f'{source}attn.q_bias', f'{source}attn.v_bias'
    require(arrays, [v_bias], _LAYOUT)
    bias = np.concatenate([arrays[q_bias], np.zeros(width, np.float32), arrays[v_bias]])
    conversion.put(block + ('attn', 'qkv', 'bias'), bias, q_bias, v_bias)
  else:
    put_bias(arrays, f'{qkv}.bias', block + ('attn', 'qkv', 'bias'), 3 * width, conversion)
  for ours, theirs in (('attn', 'proj'), ('mlp', 'fc1')):
    put_dense(arrays, f'{source}{ours}.{theirs}', block + (ours, theirs), conversion, _LAYOUT)
  fc2 = f'{source}mlp.fc2'
  require(arrays, [f'{fc2}.weight', f'{fc2}.bias'], _LAYOUT)
  kernel, bias = dense_kernel(arrays[f'{fc2}.weight']), np.asarray(arrays[f'{fc2}.bias'])
  if not expert_dim:
    conversion.put(block + ('mlp', 'fc2', 'kernel'), kernel, f'{fc2}.weight')
    conversion.put(block + ('mlp', 'fc2', 'bias'), bias, f'{fc2}.bias')
    return
  shared = width - expert_dim
  num_experts = len(target.names)
  conversion.put(block + ('mlp', 'fc2', 'kernel'), kernel[:, :shared], f'{fc2}.weight')
  conversion.put(block + ('mlp', 'fc2', 'bias'), bias[:shared], f'{fc2}.bias')
  experts = np.broadcast_to(kernel[:, shared:], (num_experts,) + kernel[:, shared:].shape)
  conversion.put(block + ('mlp', 'expert_kernel'), np.array(experts), f'{fc2}.weight')
  conversion.put(block + ('mlp', 'expert_bias'), np.tile(bias[shared:], (num_experts, 1)), f'{fc2}.bias')
