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


BUILDERS: dict[str, BuilderEntry] = {
    'synthetic': BuilderEntry('synthetic', 'posebh_synthetic', 'data_pipeline.builders.synthetic',
                              'PosebhSynthetic'),
}


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
