"""The task interface: what differs between kinds of datasets (2D heatmaps, 3D MeTRAbs, distillation, ...).

Each dataset of `config.data` names its task (`config.data.datasets.<name>.task`). A task instance serves one
dataset and supplies everything the trainer and the evaluator need without knowing which kind it is:

  batch_fields()      the per-example arrays a train batch of the dataset carries besides `image`
  train_transform()   the grain transform that makes them from a stored record
  head_spec()         the head the model builds for the dataset (`models.*HeadSpec`: build, stack_key, forward_flops)
  loss(output, batch, step)  its loss terms on its own slice of the batch (step: the traced train step)
  predict(...)        its test-time prediction (e.g. flip test) inside the jit'd eval function
  evaluate(context)   its evaluation on the dataset's eval split: metrics, result files, pictures

The trainer sums the present datasets' losses over their static slices of the batch; add-on objectives (PoseBH's
prototypes and CSS) act on top of the tasks' outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import numpy as np

from posebh_jax import skeletons


@dataclasses.dataclass
class EvalContext:
  """What a task's `evaluate` gets from the evaluator.

  Attributes:
    config: the run's config.
    name: the dataset being evaluated.
    predict: host images uint8 (n, H, W, 3), n a multiple of the batch shards → the task's `predict` output for
      them as host NumPy arrays (every process gets the whole batch's output).
    batch_size: eval batch size (a multiple of the batch shards).
    workdir: the run's directory (results go to `workdir/eval`, pictures to `workdir/viz`).
    step: the train step being evaluated.
    write_files: whether this process writes files (process 0).
  """

  config: Any
  name: str
  predict: Callable[[np.ndarray], Any]
  batch_size: int
  workdir: str
  step: int
  write_files: bool


class Task:
  """One dataset's task. Subclasses set `kind` and implement the methods below; one instance per dataset."""

  kind: ClassVar[str] = ''
  # False for a dataset that only trains (e.g. 2D labels for the 3D head): evaluation leaves it out.
  evaluates: ClassVar[bool] = True

  def __init__(self, name: str, config):
    """Args: the dataset `name` (a key of `config.data.datasets`) and the run's `config`."""
    self.name = name
    self.config = config
    self.entry = config.data.datasets[name]
    self.format = skeletons.get_format(self.entry.format)

  @property
  def num_keypoints(self) -> int:
    """The dataset's skeleton size K."""
    return self.format.num_keypoints

  @classmethod
  def validate(cls, config, name: str) -> None:
    """Checks dataset `name`'s config entry (and what the task needs of the rest); raises UserError (one line)."""
    del config, name

  def batch_fields(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{field: (per-example shape, dtype)} of a train batch besides `image`."""
    raise NotImplementedError

  def train_transform(self):
    """The grain transform: stored record → {'image': uint8 (H, W, 3), **batch_fields}."""
    raise NotImplementedError

  def head_spec(self):
    """The head spec (frozen dataclass with `build`, `stack_key`, `forward_flops`) of this dataset's head."""
    raise NotImplementedError

  def loss(
    self, output: jax.Array, batch: Mapping[str, jax.Array], step: jax.Array | None = None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total scalar, {term name: scalar} of its parts, empty when it has one) on this dataset's examples; `step` is
    the train step (an int32 scalar traced inside the step function; terms that start later switch on it)."""
    raise NotImplementedError

  def predict(self, apply: Callable, variables, images: jax.Array, flip: bool):
    """Test-time output for `images` (n, H, W, 3) uint8; `apply(variables, images)` runs the model's head for this
    dataset. Traced inside jit."""
    del flip
    return apply(variables, images)

  def evaluate(self, context: EvalContext) -> dict[str, float]:
    """Evaluates on the dataset's eval split; returns {metric: value} (logged as eval/<dataset>/<metric>)."""
    raise NotImplementedError

  def output_formats(self) -> tuple[str, ...]:
    """The skeleton formats this dataset's test-time output can be read in (heatmap tasks: `to_format`); the first
    is the head's own (the dataset's format, except for a student that predicts a unified skeleton)."""
    return (self.format.name,)

  def set_run_length(self, steps_per_epoch: int, total_steps: int) -> None:
    """Told by the trainer before the step is traced: the run's steps per epoch and total steps (for loss terms
    scheduled over the run, e.g. distillation's decaying teacher weight)."""
    del steps_per_epoch, total_steps

  def summary_metrics(self) -> tuple[str, ...]:
    """The metric names the progress line prints for this dataset."""
    return ()
