"""Registry of the tfds builders this project prepares, by the name used on the `prepare` command line.

Builder modules are imported lazily (`builder_class`) so that reading a prepared dataset does not import
every builder's dependencies; importing a builder module registers its class with tfds.
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class BuilderEntry:
  """One preparable dataset: `prepare_name` (CLI), `tfds_name` (on disk), and the module defining it."""

  prepare_name: str
  tfds_name: str
  module: str
  class_name: str


_COCO = 'data_pipeline.builders.coco_family'
_ANIMALS = 'data_pipeline.builders.animals'

BUILDERS: dict[str, BuilderEntry] = {
  'synthetic': BuilderEntry('synthetic', 'posebh_synthetic', 'data_pipeline.builders.synthetic', 'PosebhSynthetic'),
  'synthetic3d': BuilderEntry(
    'synthetic3d', 'posebh_synthetic3d', 'data_pipeline.builders.synthetic3d', 'PosebhSynthetic3d'
  ),
  # Real datasets (`python -m data_pipeline.prepare <name> --manual_dir=<raw dir>`); training sets first.
  'coco_keypoints': BuilderEntry('coco_keypoints', 'coco_keypoints', _COCO, 'CocoKeypoints'),
  'aic': BuilderEntry('aic', 'aic', _COCO, 'Aic'),
  'mpii': BuilderEntry('mpii', 'mpii', 'data_pipeline.builders.mpii', 'Mpii'),
  'ap10k': BuilderEntry('ap10k', 'ap10k', _ANIMALS, 'Ap10k'),
  'apt36k': BuilderEntry('apt36k', 'apt36k', _ANIMALS, 'Apt36k'),
  'coco_wholebody': BuilderEntry('coco_wholebody', 'coco_wholebody', _COCO, 'CocoWholebody'),
  'ochuman': BuilderEntry('ochuman', 'ochuman', _COCO, 'Ochuman'),
  'crowdpose': BuilderEntry('crowdpose', 'crowdpose', _COCO, 'Crowdpose'),
  'halpe': BuilderEntry('halpe', 'halpe', _COCO, 'Halpe'),
  'interhand': BuilderEntry('interhand', 'interhand26m', 'data_pipeline.builders.interhand', 'Interhand26m'),
  '3dpw': BuilderEntry('3dpw', 'pw3d', 'data_pipeline.builders.pw3d', 'Pw3d'),
  # 3D datasets (the records3d layout; `data_pipeline.builders.real3d`).
  'h36m': BuilderEntry('h36m', 'h36m', 'data_pipeline.builders.h36m', 'H36m'),
  'mpi_inf_3dhp': BuilderEntry('mpi_inf_3dhp', 'mpi_inf_3dhp', 'data_pipeline.builders.mpi_inf_3dhp', 'MpiInf3dhp'),
  'panoptic': BuilderEntry('panoptic', 'panoptic', 'data_pipeline.builders.panoptic', 'Panoptic'),
  'pw3d_3d': BuilderEntry('pw3d_3d', 'pw3d_3d', 'data_pipeline.builders.pw3d_3d', 'Pw3d3D'),
  # One tfds config per 3D dataset name (`--dataset3d`): tfds name 'generic3d/<dataset>'.
  'generic3d': BuilderEntry('generic3d', 'generic3d', 'data_pipeline.builders.generic3d', 'Generic3D'),
}
SYNTHETIC_DATASETS = ('synthetic', 'synthetic3d')
REAL_DATASETS = tuple(name for name in BUILDERS if name not in SYNTHETIC_DATASETS)


def known_names() -> tuple[str, ...]:
  """Returns the dataset names accepted by `python -m data_pipeline.prepare`, sorted."""
  return tuple(sorted(BUILDERS))


def entry_for_tfds_name(tfds_name: str) -> BuilderEntry | None:
  """Returns the registry entry whose tfds name is `tfds_name` (a config suffix '/<config>' is ignored:
  'generic3d/aspset'), or None."""
  tfds_name = tfds_name.split('/', 1)[0]
  for entry in BUILDERS.values():
    if entry.tfds_name == tfds_name:
      return entry
  return None


def builder_class(tfds_name: str):
  """Imports and returns the builder class for `tfds_name` (registering it with tfds), or None if unknown."""
  entry = entry_for_tfds_name(tfds_name)
  if entry is None:
    return None
  return getattr(importlib.import_module(entry.module), entry.class_name)


def is_prepared(builder) -> bool:
  """Whether a tfds builder's data is complete on disk (quietly: tfds warns about missing folders)."""
  return builder.data_path.exists() and builder.is_prepared()
