"""A dataset that runs more than one head on its examples (e.g. a 2D dataset with its own heatmap head that also
supervises the shared MeTRAbs head through its 2D term)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class MultiHeadSpec:
  """Head spec of a dataset with several heads: `parts` = ((output key, head spec), ...).

  `PoseModel` runs every part's head on the dataset's examples and returns {output key: that head's output} for
  the dataset. A part whose spec has a `head_name` runs the shared module `head_<head_name>` (with the other
  datasets that share it); the part without one (at most one) is the dataset's own `head_<dataset>`, the same
  module a single-head dataset has (so that a 2D run's checkpoint initialises it)."""

  parts: tuple[tuple[str, Any], ...]

  def __post_init__(self):
    keys = [key for key, _ in self.parts]
    if not self.parts or len(set(keys)) != len(keys):
      raise ValueError(f'MultiHeadSpec needs distinct output keys, got {keys}')
    own = [key for key, spec in self.parts if not getattr(spec, 'head_name', '')]
    if len(own) > 1:
      raise ValueError(f"MultiHeadSpec: at most one part can be the dataset's own head, got {own}")

  def part(self, key: str):
    """The head spec of output `key`."""
    return dict(self.parts)[key]

  @property
  def num_keypoints(self) -> int:
    """The first part's keypoint count."""
    return self.parts[0][1].num_keypoints

  @property
  def stack_key(self) -> None:
    """None: the model stacks the parts' heads one by one, never the set."""
    return None

  def forward_flops(self, width: int, grid_hw) -> float:
    """Forward FLOPs of every part's head for one example."""
    return float(sum(spec.forward_flops(width, grid_hw) for _, spec in self.parts))


def head_parts(dataset: str, spec) -> list[tuple[str | None, str, Any]]:
  """[(output key or None for a single-head dataset, head module key, head spec)] of dataset `dataset`: the module
  is `head_<module key>`, the spec's `head_name` when set, else the dataset's name."""
  if isinstance(spec, MultiHeadSpec):
    return [(key, getattr(part, 'head_name', '') or dataset, part) for key, part in spec.parts]
  return [(None, getattr(spec, 'head_name', '') or dataset, spec)]
