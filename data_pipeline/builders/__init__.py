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
}
REAL_DATASETS = tuple(name for name in BUILDERS if name != 'synthetic')


def known_names() -> tuple[str, ...]:
  """Returns the dataset names accepted by `python -m data_pipeline.prepare`, sorted."""
  return tuple(sorted(BUILDERS))


def entry_for_tfds_name(tfds_name: str) -> BuilderEntry | None:
  """Returns the registry entry whose tfds name is `tfds_name`, or None."""
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
