"""Orbax checkpoints of the train state together with the grain data-iterator state."""
from __future__ import annotations

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

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


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
  steps = [int(d) for d in (os.listdir(path) if os.path.isdir(path) else []) if d.isdigit()
           and os.path.isdir(os.path.join(path, d, 'state'))]
  if not steps:
    raise FileNotFoundError(f'no checkpoint under {path} (expected a workdir, its checkpoints/ directory or '
                            'checkpoints/<step>)')
  return path, max(steps)


def read_state(path: str) -> tuple[dict, int]:
  """Reads a checkpointed train state (any run of this project) onto the first local device, as saved.

  Returns (state dict with params, batch_stats, extra, …, step)."""
  directory, step = resolve_checkpoint(path)
  # Only the state item: the data iterator of another run is not wanted here.
  manager = ocp.CheckpointManager(directory, item_handlers={'state': ocp.StandardCheckpointHandler()})
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # orbax warns once per item it is not asked for (the data iterator)
  try:
    metadata = manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    # Saved shardings may name devices this process lacks (another topology): restore onto one device instead.
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata,
                            is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  finally:
    absl_logger.setLevel(level)
    manager.close()
  return restored['state'], step
