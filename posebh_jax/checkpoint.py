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

  def restore_model(self, step: int, abstract_state: Any) -> dict:
    """Restores only the model's variables (`MODEL_ITEMS` of `abstract_state`, into their shardings) of `step`:
    what evaluation and inference need, from a training checkpoint or from the converter's weights-only one."""
    return restore_model_variables(self.directory, step, abstract_state)

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


def checkpoint_source(path: str, run_dir: str) -> str:
  """Where a saved run's weights are read from: `path` where it names checkpoints itself (a workdir, its
  `checkpoints/` or one step's directory), else `run_dir`, the run directory found at or above it. Raises
  FileNotFoundError (`resolve_checkpoint`'s, about `run_dir`) when that holds no checkpoint either."""
  try:
    resolve_checkpoint(path)
    return path
  except FileNotFoundError:
    resolve_checkpoint(run_dir)
    return run_dir


def read_state(path: str, items: tuple[str, ...] | None = None) -> tuple[dict, int]:
  """Reads a checkpointed train state (any run of this project, or a weights-only checkpoint) onto the first local
  device, as saved; with `items` only those top-level entries (e.g. `MODEL_ITEMS`) are read.

  Returns (state dict with params, batch_stats, extra, …, step)."""
  directory, step = resolve_checkpoint(path)
  metadata = state_metadata(directory, step)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  # Saved shardings may name devices this process lacks (another topology): restore onto one device instead.
  abstract = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    dict(metadata) if items is None else {k: metadata[k] for k in items if k in metadata},
    is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'),
  )
  return _restore_into(directory, step, abstract, partial=items is not None), step


# The parts of a train state that evaluation, inference and `init_from` read; a weights-only checkpoint (the
# converter's, `inference.write_weights`) holds just these and `step`.
MODEL_ITEMS = ('params', 'batch_stats', 'extra')


def restore_model_variables(directory: str, step: int, abstract_state: Any) -> dict:
  """{params, batch_stats, extra} of the checkpoint `directory/<step>` restored into the ShapeDtypeStructs (with
  shardings) of `abstract_state`'s same entries; the rest of the saved state (optimizer moments) is not read."""
  wanted = {key: abstract_state[key] for key in MODEL_ITEMS if key in abstract_state}
  return _restore_into(directory, step, wanted, partial=True)


def _restore_into(directory: str, step: int, abstract: Any, partial: bool) -> dict:
  """The saved state of `directory/<step>` restored into `abstract` (ShapeDtypeStructs with shardings); with
  `partial`, only the entries `abstract` has."""
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype), abstract)
  with _state_only_manager(directory, ocp.PyTreeCheckpointHandler()) as manager:
    args = ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args, partial_restore=partial)
    return dict(manager.restore(step, args=ocp.args.Composite(state=args))['state'])


def state_metadata(directory: str, step: int) -> Any:
  """The saved state's tree of orbax array metadata (`.shape`, `.dtype`) at `directory/<step>`, read without
  restoring anything."""
  with _state_only_manager(directory, ocp.StandardCheckpointHandler()) as manager:
    return manager.item_metadata(step)['state']


@contextlib.contextmanager
def _state_only_manager(directory: str, handler):
  """A CheckpointManager over `directory` that handles only the state item (the data iterator of another run is
  not wanted), with orbax's once-per-unrequested-item warning silenced."""
  manager = ocp.CheckpointManager(directory, item_handlers={'state': handler})
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield manager
  finally:
    absl_logger.setLevel(level)
    manager.close()
