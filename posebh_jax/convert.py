"""Pretrained weights in: python -m posebh_jax.convert --from=<file or dir> --to=<dir> --config=configs/<name>.py[:args]
[--config.key=value ...] [--source_datasets=a,b,...] [--allow_unused] [--overwrite]

Reads an official ViTPose / ViTPose++ / PoseBH checkpoint (`.pth`, mmpose 0.x names), a `transformers` VitPose /
VitPose++ checkpoint (`model.safetensors` beside its `config.json`, or the directory holding them) or MAE / timm ViT
weights (backbone only), maps it onto the model that `--config` builds, and writes `<to>/config.json` and
`<to>/checkpoints/0`: a weights-only checkpoint that `--config.init_from=<to>`, `python -m posebh_jax.main
--mode=eval --workdir=<to>` and `posebh_jax.inference.Predictor.load('<to>')` read. Parameters the source does not
have keep their fresh initialisation (listed); source parameters nothing uses end the run (listed) unless
`--allow_unused`. A name or shape that does not fit ends with one `error:` line naming the parameter, both shapes and
the config key that would fix it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping

import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from posebh_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config of the model to fill, e.g. configs/b16.py.')
_FROM = flags.DEFINE_string('from', None, 'Source: a .pth/.pt/.bin/.safetensors/.npz file or a transformers directory.')
_TO = flags.DEFINE_string('to', None, 'Output directory (config.json + checkpoints/0).')
_SOURCE_DATASETS = flags.DEFINE_list(
  'source_datasets',
  None,
  "The source's datasets in its head / expert order (default: the official ViTPose++ order "
  'coco,aic,mpii,ap10k,apt36k,coco_wholebody).',
)
_ALLOW_UNUSED = flags.DEFINE_bool('allow_unused', False, 'Write the checkpoint even when source parameters are unused.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing checkpoint in --to.')

# How many names a message lists before it says how many more there are.
_LISTED = 8


def _print(message: str) -> None:
  print(message, flush=True)


# ------------------------------------------------------------------------------------------------ reading sources
def read_source(path: str) -> tuple[dict, dict]:
  """Reads the checkpoint at `path` as ({name: NumPy array}, meta). `meta` has 'config' (a transformers
  config.json as a dict, when one lies beside the weights or in the directory) and 'format'.

  `.safetensors` and `.npz` are read without torch; `.pth` / `.pt` / `.bin` need torch (a one-line error says how
  to install it). A state dict nested under `state_dict`, `model` or `module` is unwrapped."""
  path = os.path.expanduser(path)
  meta: dict = {}
  if os.path.isdir(path):
    candidates = [f for f in ('model.safetensors', 'pytorch_model.bin') if os.path.isfile(os.path.join(path, f))]
    if not candidates:
      raise UserError(f'--from={path} is a directory without model.safetensors or pytorch_model.bin')
    path = os.path.join(path, candidates[0])
  if not os.path.isfile(path):
    raise UserError(f'--from={path}: no such file')
  config_path = os.path.join(os.path.dirname(os.path.abspath(path)), 'config.json')
  if os.path.isfile(config_path):
    try:
      with open(config_path) as f:
        meta['config'] = json.load(f)
    except ValueError:
      pass
  suffix = os.path.splitext(path)[1].lower()
  if suffix == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    try:
      arrays = load_file(path)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f'--from={path} cannot be read as safetensors: {_first_line(e)}') from None
    meta['format'] = 'safetensors'
  elif suffix == '.npz':
    with np.load(path) as data:
      arrays = {k: data[k] for k in data.files}
    meta['format'] = 'npz'
  else:
    arrays = _read_torch(path)
    meta['format'] = 'torch'
  return arrays, meta


def _read_torch(path: str) -> dict:
  """A torch checkpoint's state dict as NumPy arrays (torch is an optional dependency, imported only here)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(
      f'reading {os.path.basename(path)} needs PyTorch: pip install torch (the CPU build is enough: pip install '
      'torch --index-url https://download.pytorch.org/whl/cpu), or convert it to .safetensors first'
    ) from None
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception:  # pylint: disable=broad-except
    # Official mmpose checkpoints carry their config objects in `meta`, which the safe loader refuses.
    try:
      loaded = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f'--from={path} cannot be read by torch.load: {_first_line(e)}') from None
  for key in ('state_dict', 'model', 'module'):
    if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
      loaded = loaded[key]
      break
  if not isinstance(loaded, Mapping):
    raise UserError(f'--from={path} holds a {type(loaded).__name__}, not a state dict')
  out = {}
  for name, value in loaded.items():
    if hasattr(value, 'detach'):
      name = name[len('module.') :] if name.startswith('module.') else name
      out[name] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
  return out


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------------------------- building the target
def build_target(config):
  """(Target of the model `config` builds, freshly initialised; the full fresh state for writing)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from posebh_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from posebh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from posebh_jax import train  # pylint: disable=g-import-not-at-top
  from posebh_jax.importers.common import Target  # pylint: disable=g-import-not-at-top

  train.validate_config(config)
  _, _, _, trainer = train.build(config, steps_per_epoch=1)
  state = trainer.init_state(config.seed)
  variables = {
    key: jax.tree.map(np.asarray, sharding_lib.fetch_global(state[key])) for key in ('params', 'batch_stats', 'extra')
  }
  flat = {}
  for key, tree in variables.items():
    for path, value in traverse_util.flatten_dict(tree).items():
      flat[(key,) + tuple(path)] = value
  flat = unscan(flat, config.model.depth)
  grid = flops_lib.token_grid(config.model, config.data.image_size)
  return Target(config, trainer.names, dict(trainer.num_keypoints), flat, tuple(grid))


def unscan(flat: dict, depth: int) -> dict:
  """Scanned blocks (`backbone/blocks/...` with a leading layer axis) as `backbone/block_<i>/...` entries."""
  out = {}
  for path, value in flat.items():
    if len(path) > 2 and path[1:3] == ('backbone', 'blocks'):
      for index in range(depth):
        out[path[:2] + (f'block_{index}',) + path[3:]] = value[index]
    else:
      out[path] = value
  return out


def rescan(flat: dict, scanned: bool, depth: int) -> dict:
  """The inverse of `unscan` for a scanned model (block entries stacked along a new leading axis)."""
  if not scanned:
    return flat

  out, blocks = {}, {}
  for path, value in flat.items():
    if len(path) > 2 and path[1] == 'backbone' and path[2].startswith('block_'):
      blocks.setdefault(path[:2] + ('blocks',) + path[3:], {})[int(path[2][len('block_') :])] = value
    else:
      out[path] = value
  for path, by_index in blocks.items():
    out[path] = np.stack([by_index[i] for i in range(depth)])
  return out


# ----------------------------------------------------------------------------------------------- checking, merging
def config_key_for(path: tuple, target) -> str:
  """The config key that sets the shape of target parameter `path` (for mismatch messages)."""
  joined = '/'.join(path)
  if 'expert_kernel' in joined or 'expert_bias' in joined:
    return f'config.model.expert_dim and the dataset list config.data.order ({len(target.names)} experts)'
  if path[1] == 'backbone':
    if path[2] == 'pos_embed':
      return 'config.data.image_size / config.model.patch_size'
    if path[2] == 'patch_embed':
      return 'config.model.patch_size / config.model.width'
    if 'fc1' in path or ('fc2' in path and path[-1] == 'kernel'):
      return 'config.model.mlp_ratio / config.model.width'
    return 'config.model.width (and depth / num_heads of the variant)'
  if path[1].startswith('head_'):
    name = path[1][len('head_') :]
    if 'final' in path:
      return f'config.data.datasets.{name}.format (its keypoint count)'
    return 'config.model.head_channels / config.model.width'
  if path[1] == 'embedding' or path[0] == 'extra':
    return 'config.posebh.embed_dim / embed_hidden / prototypes_per_keypoint'
  return 'the model keys of config.model'


def merge(target, conversion, allow_unused: bool, source_names) -> tuple[dict, list[str], list[str]]:
  """Checks `conversion` against `target` and returns (filled flat dict, loaded groups, fresh groups).

  Raises UserError for a target path the model lacks, a shape that differs, or source names that nothing used
  (unless `allow_unused`)."""
  from posebh_jax.importers.common import guess_grid, resample_grid  # pylint: disable=g-import-not-at-top

  for path, value in conversion.arrays.items():
    origin = conversion.origin.get(path, '?')
    if path not in target.flat:
      raise UserError(_missing_message(path, origin, target))
    want = target.flat[path].shape
    if path[1:] == ('backbone', 'pos_embed') and value.shape != want and value.shape[-1] == want[-1]:
      source_grid = guess_grid(value.shape[1], target.grid)
      conversion.arrays[path] = resample_grid(value, source_grid, target.grid)
      conversion.notes.append(
        f'position embeddings resampled (bicubic) from a {source_grid[0]}x{source_grid[1]} to the '
        f'{target.grid[0]}x{target.grid[1]} token grid of image_size {tuple(target.config.data.image_size)}'
      )
      continue
    if value.shape != want:
      raise UserError(
        f'{origin} has shape {tuple(value.shape)} but this config\'s {"/".join(path)} is {tuple(want)}: set '
        f'{config_key_for(path, target)} to match the checkpoint'
      )
  unused = sorted(set(source_names) - conversion.used - set(conversion.ignored))
  if unused and not allow_unused:
    listed = ', '.join(unused[:_LISTED]) + (f' and {len(unused) - _LISTED} more' if len(unused) > _LISTED else '')
    raise UserError(
      f'{len(unused)} parameter(s) of the checkpoint fit nothing in this config ({listed}); choose the config that '
      'has them (datasets, PoseBH, depth) or pass --allow_unused to leave them out'
    )
  if unused:
    conversion.notes.append(f'left out (--allow_unused): {", ".join(unused)}')
  filled = dict(target.flat)
  loaded, fresh = set(), set()
  for path, value in target.flat.items():
    group = _group(path)
    if path in conversion.arrays:
      filled[path] = np.asarray(conversion.arrays[path], value.dtype)
      loaded.add(group)
    elif path[0] == 'params':
      fresh.add(group)
  return filled, sorted(loaded), sorted(fresh - loaded) + [f'{g} (partly)' for g in sorted(fresh & loaded)]


def _group(path: tuple) -> str:
  if path[0] == 'extra':
    return f'extra/{path[1]}'
  return path[1] if len(path) > 1 else path[0]


def _missing_message(path: tuple, origin: str, target) -> str:
  """The one-line error for a converted parameter whose target path the config's model lacks."""
  if path[1] == 'backbone' and len(path) > 2 and path[2].startswith('block_'):
    return (
      f'{origin} is transformer block {path[2][len("block_") :]}, but config.model.depth is {target.depth}: set '
      'config.model.depth (the variant) to the checkpoint\'s'
    )
  if path[1].startswith('head_'):
    return (
      f"{origin} is the head of dataset '{path[1][len('head_') :]}', which config.data.order "
      f'{list(target.names)} lacks: add it to the dataset list or pass --source_datasets'
    )
  if path[1] == 'embedding' or path[0] == 'extra':
    return f'{origin} is part of PoseBH; set config.posebh.enabled=True (a PoseBH config) to keep it'
  if 'expert_kernel' in path or 'expert_bias' in path:
    return f'{origin} is an expert, but config.model.use_experts is False: use a ViTPose++ config'
  return f'{origin} maps to {"/".join(path)}, which this config\'s model does not have'


# ------------------------------------------------------------------------------------------------------ the command
def convert(config, source_path: str, out_dir: str, source_datasets=None, allow_unused: bool = False) -> dict:
  """Converts `source_path` into the model of `config` and writes it to `out_dir`. Returns a summary dict
  (kind, loaded, fresh, notes, checkpoint directory)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from posebh_jax import importers  # pylint: disable=g-import-not-at-top
  from posebh_jax import inference  # pylint: disable=g-import-not-at-top

  arrays, meta = read_source(source_path)
  importer = importers.find_importer(arrays, meta)
  target = build_target(config)
  conversion = importer.convert(arrays, meta, target, tuple(source_datasets) if source_datasets else None)
  filled, loaded, fresh = merge(target, conversion, allow_unused, arrays.keys())
  filled = rescan(filled, bool(config.model.scan), target.depth)
  variables = {key: {} for key in ('params', 'batch_stats', 'extra')}
  for key in variables:
    variables[key] = traverse_util.unflatten_dict({p[1:]: v for p, v in filled.items() if p[0] == key})
  directory = inference.write_weights(out_dir, config, variables)
  return {'kind': conversion.kind, 'loaded': loaded, 'fresh': fresh, 'notes': conversion.notes, 'directory': directory}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax's INFO lines around the checkpoint write
  try:
    config = _CONFIG.value
    if config is None or not _FROM.value or not _TO.value:
      raise UserError('pass --from=<checkpoint>, --to=<dir> and --config=configs/<name>.py')
    out_dir = os.path.abspath(_TO.value)
    if os.path.isdir(os.path.join(out_dir, 'checkpoints')) and os.listdir(os.path.join(out_dir, 'checkpoints')):
      if not _OVERWRITE.value:
        raise UserError(f'--to={out_dir} already holds a checkpoint; pass --overwrite to replace it')
      import shutil  # pylint: disable=g-import-not-at-top

      shutil.rmtree(os.path.join(out_dir, 'checkpoints'))
    if 'float64' in (config.model.dtype, config.model.param_dtype):
      import jax  # pylint: disable=g-import-not-at-top

      jax.config.update('jax_enable_x64', True)
    summary = convert(config, _FROM.value, out_dir, _SOURCE_DATASETS.value, _ALLOW_UNUSED.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  _print(f'{summary["kind"]}: loaded {", ".join(summary["loaded"]) or "nothing"}')
  if summary['fresh']:
    _print(f'fresh (not in the checkpoint): {", ".join(summary["fresh"])}')
  for note in summary['notes']:
    _print(f'note: {note}')
  _print(f'wrote {summary["directory"]}/0 and {out_dir}/config.json')


if __name__ == '__main__':
  app.run(main)
