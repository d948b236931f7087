"""Orbax checkpoints of the train state together with the grain data-iterator state."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Async, keep-N checkpoints in `DIR/checkpoints/<step>/{state,data_iter}`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'data_iter'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter=None) -> bool:
    """Starts an async save of `state` (and the iterator's state) at `step`; returns whether it saved."""
    items = {'state': ocp.args.StandardSave(state)}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, data_iter=None) -> Any:
    """Restores the state into the shardings of `abstract_state` (ShapeDtypeStructs with `.sharding`); restores
    the iterator in place when given. Returns the state."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state']

  def restore_state_only(self, step: int, abstract_state: Any) -> Any:
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored['state']

  def model_differences(self, step: int, abstract_state: Any) -> list[str]:
    """What keeps `step`'s saved params and batch stats from restoring into `abstract_state`'s: one line per
    parameter that is missing on either side or has another shape or dtype (empty when they match)."""
    saved = state_metadata(self.directory, step)
    differences = []
    for collection in ('params', 'batch_stats'):
      have = _shapes_by_path(saved.get(collection, {}))
      want = _shapes_by_path(abstract_state.get(collection, {}))
      for path in sorted(set(have) | set(want)):
        if path not in want:
          differences.append(f'{collection}/{path} is saved but not in this config\'s model')
        elif path not in have:
          differences.append(f'{collection}/{path} of this config\'s model is not saved')
        elif have[path] != want[path]:
          differences.append(
            f'{collection}/{path} is saved as {have[path][0]} {have[path][1]}, this config has '
            f'{want[path][0]} {want[path][1]}'
          )
    return differences

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _shapes_by_path(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{'backbone/block_0/attn/qkv/kernel': (shape, dtype name)} for arrays, ShapeDtypeStructs or orbax metadata."""
  is_leaf = lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype')
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return {
    '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): (tuple(leaf.shape), str(leaf.dtype))
    for path, leaf in flat
  }


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restoring directly into the mesh layout."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


def resolve_checkpoint(path: str) -> tuple[str, int]:
  """(checkpoints directory, step) for `path`: a workdir, its `checkpoints/` directory (latest step) or one
  step's directory. Raises FileNotFoundError with what was looked for."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  base = os.path.basename(path.rstrip('/'))
  if base.isdigit() and os.path.isdir(os.path.join(path, 'state')):
    return os.path.dirname(path), int(base)
  steps = [
    int(d)
    for d in (os.listdir(path) if os.path.isdir(path) else [])
    if d.isdigit() and os.path.isdir(os.path.join(path, d, 'state'))
  ]
  if not steps:
    raise FileNotFoundError(
      f'no checkpoint under {path} (expected a workdir, its checkpoints/ directory or checkpoints/<step>)'
    )
  return path, max(steps)


def read_state(path: str) -> tuple[dict, int]:
  """Reads a checkpointed train state (any run of this project) onto the first local device, as saved.

  Returns (state dict with params, batch_stats, extra, …, step)."""
  directory, step = resolve_checkpoint(path)
  with _state_only_manager(directory) as manager:
    metadata = manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    # Saved shardings may name devices this process lacks (another topology): restore onto one device instead.
    abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      metadata,
      is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'),
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored['state'], step


def state_metadata(directory: str, step: int) -> Any:
  """The saved state's tree of orbax array metadata (`.shape`, `.dtype`) at `directory/<step>`, read without
  restoring anything."""
  with _state_only_manager(directory) as manager:
    return manager.item_metadata(step)['state']


@contextlib.contextmanager
def _state_only_manager(directory: str):
  """A CheckpointManager over `directory` that handles only the state item (the data iterator of another run is
  not wanted), with orbax's once-per-unrequested-item warning silenced."""
  manager = ocp.CheckpointManager(directory, item_handlers={'state': ocp.StandardCheckpointHandler()})
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield manager
  finally:
    absl_logger.setLevel(level)
    manager.close()
