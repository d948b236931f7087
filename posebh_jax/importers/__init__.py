"""Importers of other projects' checkpoints (see `importers.common` for the interface and `posebh_jax.convert` for
the command): official ViTPose / ViTPose++ / PoseBH (mmpose 0.x names), `transformers`' VitPose / VitPose++, and
MAE / timm ViT weights (backbone only)."""

from __future__ import annotations

from posebh_jax.errors import UserError
from posebh_jax.importers import mmpose
from posebh_jax.importers import timm_vit
from posebh_jax.importers import transformers_vitpose

# Tried in order; the first whose `accepts` says yes converts.
IMPORTERS = (transformers_vitpose, mmpose, timm_vit)


def find_importer(arrays, meta):
  """The importer module for a source's {name: array} and meta; UserError naming a few names when none fits."""
  for importer in IMPORTERS:
    if importer.accepts(arrays, meta):
      return importer
  names = sorted(arrays)[:5]
  raise UserError(
    f'the checkpoint is none of the known layouts (official ViTPose/ViTPose++/PoseBH, transformers VitPose, MAE/timm '
    f'ViT); its first names are {names}'
  )
