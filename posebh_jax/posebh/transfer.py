"""Domain transfer (docs/METHOD.md §2): the PoseBH prototype terms for skeletons new to a trained PoseBH model.

The new datasets' prototypes are appended to the old ones in the global (J, M, F) table. During transfer the
prototype terms (PHM, PPC, PPD) and the momentum update see only the new datasets' samples and only their own
prototype rows: the rows are gathered into a small local table, `posebh_objective` runs on it with local offsets,
and the updated rows are scattered back. The old rows are therefore never read by the update nor written, and
the pixel mask ("the most similar prototype class must be the pixel's own") compares among the new skeleton's
keypoints only: a fresh prototype could never win against the trained old ones, so a global comparison would
mask out every pixel of the new skeleton and its prototypes would never move.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from posebh_jax.posebh.objective import posebh_objective


def prototype_rows(datasets: Sequence[str], offsets: Mapping[str, int], num_keypoints: Mapping[str, int]) -> np.ndarray:
  """Global prototype rows (keypoint indices) of `datasets`, in their order: int32 (Σ K_d,)."""
  return np.concatenate([np.arange(offsets[d], offsets[d] + num_keypoints[d]) for d in datasets]).astype(np.int32)


def transfer_objective(
  outputs: Mapping,
  batch: Mapping,
  extra: Mapping,
  phase,
  cfg,
  offsets: Mapping[str, int],
  num_keypoints: Mapping[str, int],
):
  """`posebh_objective` restricted to `phase.prototype_datasets` and their prototype rows.

  Args: as `posebh.objective.posebh_objective` (outputs of `PoseModel.posebh_outputs` for every dataset of the
    batch, the batch, extra {'prototypes', 'cluster_prototypes'} (J, M, F), the phase, config.posebh, global
    offsets and K per dataset). The phase must have css and cps off.
  Returns: (weighted total float32 scalar, {term: value}, new extra): only the new datasets' prototype rows can
    differ from `extra`.
  """
  if phase.css or phase.cps:
    raise ValueError('transfer phases run without CSS and CPS')
  datasets = tuple(d for d in phase.prototype_datasets if d in outputs['embeddings'])
  rows = prototype_rows(datasets, offsets, num_keypoints)
  local_offsets = dict(zip(datasets, np.cumsum([0] + [num_keypoints[d] for d in datasets[:-1]]).tolist()))
  local_extra = {'prototypes': extra['prototypes'][rows], 'cluster_prototypes': extra['prototypes'][rows]}
  local_outputs = {
    'heatmaps': {d: outputs['heatmaps'][d] for d in datasets},
    'embeddings': {d: outputs['embeddings'][d] for d in datasets},
    'cross': {},
  }
  total, metrics, new_local = posebh_objective(
    local_outputs,
    {d: batch[d] for d in datasets},
    local_extra,
    phase,
    cfg,
    local_offsets,
    {d: num_keypoints[d] for d in datasets},
  )
  new_extra = dict(extra)
  new_extra['prototypes'] = jnp.asarray(extra['prototypes']).at[jnp.asarray(rows)].set(new_local['prototypes'])
  return total, metrics, new_extra
