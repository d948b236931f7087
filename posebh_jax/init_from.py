"""`config.init_from`: a fresh run's weights from another run's checkpoint (or one the converter wrote).

Backbone, heads (by dataset name), embedding module and prototypes (by dataset name) are copied; experts map by
dataset name too, so a run that adds a dataset (domain transfer) starts from the old ones. Everything else stays
freshly initialised. A parameter of another shape ends the run with one line naming it.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import traverse_util

from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import sharding as sharding_lib
from posebh_jax import skeletons
from posebh_jax import workdir as workdir_lib
from posebh_jax.models import pose_model
from posebh_jax.errors import UserError


def _print(message: str):
  if jax.process_index() == 0:
    print(message, flush=True)


def load_initial_weights(trainer, state, path: str):
  """`config.init_from`: copies backbone, heads (by dataset name), embedding module and prototypes (by dataset
  name) from another run's checkpoint into a fresh state; experts map by dataset name too, so a run that adds
  a dataset (domain transfer) starts from the old ones. Everything else stays freshly initialised."""
  try:
    source, source_step = checkpoint_lib.read_state(path)
  except FileNotFoundError as e:
    raise UserError(f'config.init_from: {e}') from None
  directory, _ = checkpoint_lib.resolve_checkpoint(path)
  source_names = workdir_lib.run_dataset_order(os.path.dirname(directory)) or trainer.names
  # Experts map by expert name (a dataset's own name unless it shares one, e.g. the 3D datasets' '3d').
  target_experts = tuple(dict.fromkeys(pose_model.dataset_experts(trainer.config)))
  source_experts = workdir_lib.run_expert_names(os.path.dirname(directory)) or target_experts
  loaded, fresh, mismatched = set(), set(), []
  # Domain transfer (config.transfer.init_like): a dataset new to the source run starts from an old one's
  # expert and head layers (those whose shapes match).
  like = {new: old for new, old in trainer.config.transfer.init_like if new not in source_names}

  def merge(target_tree, source_tree, what):
    target_flat = traverse_util.flatten_dict(sharding_lib.fetch_global(target_tree))
    source_flat = traverse_util.flatten_dict(jax.device_get(source_tree)) if source_tree else {}
    out = {}
    for key, value in target_flat.items():
      top = key[0]
      group = 'backbone' if top == 'backbone' else top
      if key not in source_flat and top.startswith('head_') and top[len('head_') :] in like:
        key_like = (f'head_{like[top[len("head_") :]]}',) + key[1:]
        if key_like in source_flat and np.shape(source_flat[key_like]) == np.shape(value):
          source_flat[key] = source_flat[key_like]
      expert_axis = (
        _dataset_axis(np.shape(value), np.shape(source_flat[key]), len(target_experts), len(source_experts))
        if key in source_flat and key[-1] in ('expert_kernel', 'expert_bias')
        else None
      )
      if key in source_flat and np.shape(source_flat[key]) == np.shape(value):
        out[key] = np.asarray(source_flat[key], value.dtype)
        loaded.add(group)
      elif expert_axis is not None:
        out[key] = _map_dataset_axis(
          np.array(value),
          np.asarray(source_flat[key]),
          expert_axis,
          tuple(like.get(n, n) for n in target_experts),
          source_experts,
        )
        loaded.add(group)
      elif key in source_flat:
        mismatched.append(
          f'{what}/{"/".join(key)} is {tuple(np.shape(source_flat[key]))} there and {tuple(np.shape(value))} here'
        )
        out[key] = value
      else:
        out[key] = value
        if what == 'params':
          fresh.add(group)
    return traverse_util.unflatten_dict(out)

  params = merge(state['params'], source.get('params'), 'params')
  batch_stats = merge(state['batch_stats'], source.get('batch_stats'), 'batch_stats')
  if mismatched:
    raise UserError(
      f'config.init_from: {path} holds another architecture than this config builds '
      f'({mismatched[0]}'
      + (f'; {len(mismatched) - 1} more differ' if len(mismatched) > 1 else '')
      + '); init_from copies weights of the same shapes: set the model keys as in that run'
    )
  extra = sharding_lib.fetch_global(state['extra'])
  source_extra = source.get('extra') or {}
  if 'prototypes' in extra and 'prototypes' in source_extra:
    source_counts = _run_keypoint_counts(os.path.dirname(directory), source_names, trainer.num_keypoints)
    source_offsets = dict(zip(source_names, np.cumsum([0] + [source_counts[n] for n in source_names])))
    protos = np.array(extra['prototypes'])
    copied = []
    for name in trainer.names:
      if name in source_offsets:
        a, b = trainer.keypoint_offsets[name], source_offsets[name]
        k = trainer.num_keypoints[name]
        if b + k <= source_extra['prototypes'].shape[0]:
          protos[a : a + k] = np.asarray(source_extra['prototypes'])[b : b + k]
          copied.append(name)
    extra = dict(extra, prototypes=protos, cluster_prototypes=protos.copy())
    loaded.add(f'prototypes of {",".join(copied)}')
  new_state = dict(state, params=params, batch_stats=batch_stats, extra=extra)
  _print(
    f'init_from {path} (step {source_step}): loaded {", ".join(sorted(loaded)) or "nothing"}; '
    f'fresh: {", ".join(sorted(fresh - loaded)) or "nothing"}'
    + (f'; partly fresh: {", ".join(sorted(fresh & loaded))}' if fresh & loaded else '')
  )
  with trainer.activate():
    placed = jax.device_put(new_state, trainer.state_shardings)
    # Adam moments start at zero either way; re-initialising keeps them consistent with the loaded params.
    return jax.jit(lambda st: dict(st, opt_state=trainer.tx.init(st['params'])), out_shardings=trainer.state_shardings)(
      placed
    )


def _run_keypoint_counts(workdir: str, names, known: dict[str, int]) -> dict[str, int]:
  """{dataset: keypoint count} of the run in `workdir` for `names`, from the formats in its config.json (a dataset
  this run does not train still occupies its rows of the source's prototypes); `known` fills in when absent."""
  formats = {}
  try:
    formats = {n: d.get('format', n) for n, d in workdir_lib.read_run_config(workdir)['data']['datasets'].items()}
  except (TypeError, KeyError, AttributeError):  # no readable config.json (None), or not in this shape
    pass
  counts = {}
  for name in names:
    if name in formats:
      counts[name] = skeletons.get_format(formats[name]).num_keypoints
    else:
      counts[name] = known[name] if name in known else skeletons.get_format(name).num_keypoints
  return counts


def _dataset_axis(target_shape, source_shape, num_target: int, num_source: int) -> int | None:
  """The axis of an expert parameter along which the target has `num_target` and the source `num_source`
  datasets while every other axis agrees; None when there is none (another architecture)."""
  if len(target_shape) != len(source_shape):
    return None
  for axis in range(len(target_shape)):
    others_agree = all(t == u for i, (t, u) in enumerate(zip(target_shape, source_shape)) if i != axis)
    if target_shape[axis] == num_target and source_shape[axis] == num_source and others_agree:
      return axis
  return None


def _map_dataset_axis(target: np.ndarray, source: np.ndarray, axis: int, target_names, source_names) -> np.ndarray:
  """Copies per-dataset slices (experts) from `source` into `target` by dataset name along their dataset `axis`
  (`_dataset_axis`); returns `target`."""
  for i, name in enumerate(target_names):
    if name in source_names:
      index = [slice(None)] * target.ndim
      src = list(index)
      index[axis], src[axis] = i, list(source_names).index(name)
      target[tuple(index)] = source[tuple(src)]
  return target
