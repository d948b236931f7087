"""The in-training evaluator: every eval dataset of the config evaluated by its task on a train state."""

from __future__ import annotations

import os

import jax
from absl import logging

from posebh_jax import sharding as sharding_lib
from posebh_jax import tasks
from posebh_jax.errors import UserError
from posebh_jax.evaluation.registry import NMS_CHOICES
from posebh_jax.viz import formats as formats_viz


class Evaluator:
  """Runs every eval dataset of the config on a train state; returns `{'eval/<name>/<metric>': value}`.

  Each dataset is evaluated by its task (`Task.evaluate`: for 2D heatmaps the top-down protocol with rescoring,
  `config.eval_nms` and the official metric, exactly as `python -m posebh_jax.evaluate --topdown` computes it);
  this class gives it the prediction function (the model's head for that dataset, sharded over the mesh) and
  draws the all-formats picture."""

  def __init__(self, config, trainer, workdir: str):
    self.config = config
    self.trainer = trainer
    self.workdir = workdir
    self.names = evaluated_datasets(config)
    self._predict = {}

  def context(self, state, name: str, step: int) -> tasks.EvalContext:
    """The EvalContext of dataset `name` for `state` at `step`."""
    if name not in self._predict:
      self._predict[name] = self.trainer.predict_fn(name, self.config.eval_flip)
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    return tasks.EvalContext(
      config=self.config,
      name=name,
      predict=on_host(self._predict[name], variables, self.trainer.batch_sharding),
      batch_size=eval_batch_size(self.config, self.trainer.groups),
      workdir=self.workdir,
      step=step,
      write_files=jax.process_index() == 0,
    )

  def run(self, state, step: int) -> dict[str, float]:
    """Evaluates `state` on every eval dataset; returns {'eval/<dataset>/<metric>': value}."""
    out = {}
    for name in self.names:
      metrics = self.trainer.tasks[name].evaluate(self.context(state, name, step))
      out.update({f'eval/{name}/{k}': v for k, v in metrics.items()})
    if self.config.viz_formats and jax.process_count() == 1:
      self.draw_formats(state, step)
    return out

  def summary(self, metrics: dict[str, float]) -> str:
    """The entries of `{'eval/<dataset>/<metric>': value}` that each dataset's task names for the progress line."""
    shown = {f'eval/{name}/{metric}' for name, task in self.trainer.tasks.items() for metric in task.summary_metrics()}
    return ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items()) if k in shown)

  def draw_formats(self, state, step):
    """DIR/viz/formats_step<step>.png: every head's skeleton on the same validation images (posebh_jax.viz.formats).
    A failure is logged, never raised: a picture must not stop a run."""
    try:
      formats_viz.draw_state(self.config, state, os.path.join(self.workdir, 'viz', f'formats_step{step}.png'))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('formats picture at step %d failed: %s', step, e)


def on_host(predict, variables, batch_sharding):
  """`predict(variables, global images)` as a function of host images uint8 (n, H, W, 3) → host NumPy output. Every
  process reads the whole split; with several processes each computes its shards and all receive the whole
  batch's output."""

  def run(images):
    return sharding_lib.fetch_global(predict(variables, sharding_lib.put_global(images, batch_sharding)))

  return run


def eval_batch_size(config, groups: int) -> int:
  """config.eval_batch_size rounded down to a multiple of the batch shards `groups` (at least one per shard)."""
  return config.eval_batch_size - config.eval_batch_size % groups or groups


def evaluated_datasets(config) -> tuple[str, ...]:
  """`config.eval_datasets`, or, when empty, every dataset of `config.data.order` whose task evaluates."""
  if config.eval_datasets:
    return tuple(config.eval_datasets)
  return tuple(n for n in config.data.order if tasks.get_task_class(config.data.datasets[n].task).evaluates)


def validate_config(config) -> None:
  """Checks the evaluation keys of `config`; raises UserError (one line)."""
  order = tuple(config.data.order)
  for name in config.eval_datasets:
    if name not in order:
      raise UserError(f"config.eval_datasets names '{name}', which is not in config.data.order {list(order)}")
    kind = config.data.datasets[name].task
    if not tasks.get_task_class(kind).evaluates:
      raise UserError(f"config.eval_datasets names '{name}', whose task '{kind}' has no evaluation; leave it out")
  if config.eval_nms not in NMS_CHOICES:
    raise UserError(f"config.eval_nms is '{config.eval_nms}'; use one of {', '.join(NMS_CHOICES)}")
  if config.eval_batch_size < 1:
    raise UserError(f'config.eval_batch_size must be at least 1 (got {config.eval_batch_size})')
  if config.eval_every_steps < 0:
    raise UserError(
      f'config.eval_every_steps must be >= 0 (0: no evaluation during training; got {config.eval_every_steps})'
    )
