"""The static per-dataset composition of a batch.

A batch holds a fixed number of examples of each dataset. Examples are arranged as `(groups, per_group, ...)` where
`groups` is the number of batch shards of the device mesh, and inside every group the datasets occupy the same
static slice. Each dataset's expert and head therefore run on a static slice that lives on the same device shard as
its examples: no gather, no all-experts-then-mask.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Composition:
  """Per-group example counts of each dataset, in expert order.

  Attributes:
    names: dataset names in model order (every dataset the model has).
    per_group: examples of each dataset in one batch group (0 for datasets absent from this batch).
    groups: number of batch groups (= batch shards of the mesh).
    experts: the MoE expert index of each dataset (datasets may share one); empty: each its own, in order.
  """

  names: tuple[str, ...]
  per_group: tuple[int, ...]
  groups: int
  experts: tuple[int, ...] = ()

  @property
  def group_size(self) -> int:
    return sum(self.per_group)

  def offsets(self) -> tuple[int, ...]:
    return tuple(int(v) for v in np.cumsum((0,) + self.per_group[:-1]))

  def stack_count(self) -> int:
    """The per-group count when two or more datasets are present and all have that same count (the usual fixed
    mixture: their experts and heads can run stacked along a dataset axis), else 0."""
    counts = [count for count in self.per_group if count]
    return counts[0] if len(counts) > 1 and len(set(counts)) == 1 else 0

  def present(self):
    """Yields (expert_index, name, offset_in_group, count_in_group) for datasets in this batch."""
    experts = self.experts or range(len(self.names))
    for expert, name, offset, count in zip(experts, self.names, self.offsets(), self.per_group):
      if count:
        yield expert, name, offset, count


def make_composition(
  names: Sequence[str], counts: Mapping[str, int], groups: int, experts: Sequence[int] = ()
) -> Composition:
  """Builds a Composition from global per-dataset counts (each must be a multiple of `groups`) and the datasets'
  expert indices (`Composition.experts`)."""
  per_group = []
  for name in names:
    count = int(counts.get(name, 0))
    if count % groups:
      raise ValueError(
        f"dataset '{name}' has {count} examples per batch, not a multiple of the {groups} batch "
        "shards; change the batch size or the mixture weights"
      )
    per_group.append(count // groups)
  return Composition(tuple(names), tuple(per_group), groups, tuple(int(e) for e in experts))


def group_by_dataset(arrays: Mapping[str, jax.Array], comp: Composition) -> jax.Array:
  """Arranges per-dataset arrays `{name: (n_d, ...)}` into one `(groups * group_size, ...)` array."""
  parts = []
  for _, name, _, count in comp.present():
    x = arrays[name]
    parts.append(x.reshape((comp.groups, count) + x.shape[1:]))
  grouped = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
  return grouped.reshape((comp.groups * comp.group_size,) + grouped.shape[2:])


def dataset_slice(x: jax.Array, comp: Composition, offset: int, count: int) -> jax.Array:
  """The `(groups * count, ...)` examples of one dataset out of a grouped `(groups * group_size, ...)` array."""
  grouped = x.reshape((comp.groups, comp.group_size) + x.shape[1:])
  part = grouped[:, offset : offset + count]
  return part.reshape((comp.groups * count,) + x.shape[1:])


def datasets_slice(x: jax.Array, comp: Composition, parts: Sequence[tuple[int, int]]) -> jax.Array:
  """The examples of several datasets, `parts` = ((offset_in_group, count_in_group), ...), out of a grouped
  `(groups * group_size, ...)` array: `(groups * Σ count, ...)`, dataset after dataset, each in its global batch
  order (`dataset_slice`). The order does not depend on the number of batch shards, so that a module that mixes
  examples (ghost BatchNorm's consecutive virtual batches) computes the same on 1 device as on 8."""
  pieces = [dataset_slice(x, comp, offset, count) for offset, count in parts]
  return jnp.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]


def split_datasets(y: jax.Array, groups: int, counts: Sequence[int]) -> list[jax.Array]:
  """Inverse of `datasets_slice` for its output (or any array with the same leading layout): `(groups * Σ counts,
  ...)` → one `(groups * count, ...)` array per count."""
  bounds = np.cumsum([groups * count for count in counts])[:-1]
  return list(jnp.split(y, [int(b) for b in bounds], axis=0))
