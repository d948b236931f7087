"""Device mesh from the config, parameter shardings from logical axis rules, global batches from local data."""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from posebh_jax.errors import UserError

MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves `{'data': -1, 'fsdp': 1, 'model': 1}` against the device count; one -1 is filled automatically.
  Raises UserError (one line) when the sizes cannot match the devices."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  unknown = [i for i, s in enumerate(sizes) if s == -1]
  if len(unknown) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f'config.mesh {dict(mesh_config)}: give each axis a positive size and at most one -1')
  known = math.prod(s for s in sizes if s != -1)
  if unknown:
    if num_devices % known:
      raise UserError(
        f'config.mesh {dict(mesh_config)}: the fixed axes ({known} devices) do not divide the '
        f'{num_devices} devices; set config.mesh sizes whose product divides {num_devices}'
      )
    sizes[unknown[0]] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(
      f'config.mesh {dict(mesh_config)} has {math.prod(sizes)} devices but {num_devices} are '
      'available; set one axis to -1 (e.g. --config.mesh.data=-1)'
    )
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
  """A (data, fsdp, model) mesh with Auto axis types over all (or the given) devices."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_config, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def num_batch_groups(mesh: jax.sharding.Mesh) -> int:
  """Number of batch shards (data × fsdp): the `groups` of the model's static per-dataset layout."""
  return mesh.shape['data'] * mesh.shape['fsdp']


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(boxed_tree: Any, mesh: jax.sharding.Mesh, rules) -> Any:
  """NamedShardings for a tree of (abstract) flax-boxed values using logical axis rules; unboxed leaves are
  replicated. Dimensions whose size does not divide the mesh axes fall back to replication."""
  specs = nn.get_partition_spec(boxed_tree)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = nn.unbox(boxed_tree)

  def fit(spec, leaf):
    if not isinstance(spec, P):
      return NamedSharding(mesh, P())
    dims = []
    for size, axes in zip(leaf.shape, tuple(spec) + (None,) * (len(leaf.shape) - len(spec))):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      shards = math.prod(mesh.shape[a] for a in names)
      dims.append(axes if shards > 1 and size % shards == 0 else None)
    return NamedSharding(mesh, P(*dims))

  return jax.tree.map(fit, mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P) or x is None)


def put_global(host_array, sharding: NamedSharding) -> jax.Array:
  """An array that every process holds whole (the same values everywhere, e.g. an eval batch every process read)
  → a global jax.Array with `sharding`; each process places only its own devices' shards."""
  host_array = np.asarray(host_array)
  if jax.process_count() == 1:
    return jax.device_put(host_array, sharding)
  return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def fetch_global(tree: Any) -> Any:
  """Global arrays → numpy arrays with every value on every process (`jax.device_get` fails on an array sharded
  over devices of other processes: those are gathered across processes first)."""
  from jax.experimental import multihost_utils

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)


def global_batch(local_batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Assembles per-process numpy arrays (leading dim = this process's share) into global arrays sharded over
  the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
