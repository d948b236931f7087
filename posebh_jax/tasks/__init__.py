"""Tasks by name: `config.data.datasets.<name>.task` picks one per dataset (see `tasks.base` for the interface).

A name with a dot is a module path (`my_project.my_task`) whose module defines `Task`, so that a project can add a
task without editing this package."""

from __future__ import annotations

import importlib

from posebh_jax.errors import UserError
from posebh_jax.tasks.base import EvalContext, Task
from posebh_jax.tasks.distill import DistillTask
from posebh_jax.tasks.heatmap import HeatmapTask
from posebh_jax.tasks.metrabs import MetrabsTask
from posebh_jax.tasks.metrabs2d import HeatmapMetrabsTask, Metrabs2DTask

TASKS: dict[str, type[Task]] = {
  task.kind: task for task in (HeatmapTask, MetrabsTask, Metrabs2DTask, HeatmapMetrabsTask, DistillTask)
}


def get_task_class(kind: str) -> type[Task]:
  """The Task class of `kind` (a name of `TASKS` or a module path whose module defines `Task`)."""
  if kind in TASKS:
    return TASKS[kind]
  if '.' in kind:
    try:
      module = importlib.import_module(kind)
    except ImportError as e:
      raise UserError(
        f"task module '{kind}' cannot be imported ({e}); check its name and that it is on the Python path"
      ) from None
    if not isinstance(getattr(module, 'Task', None), type) or not issubclass(module.Task, Task):
      raise UserError(f"task module '{kind}' defines no class Task (a subclass of posebh_jax.tasks.base.Task)")
    return module.Task
  raise UserError(f"unknown task '{kind}'; use one of {', '.join(TASKS)} or a module path that defines Task")


def build_tasks(config) -> dict[str, Task]:
  """{dataset: its Task instance} for `config.data.order`, each validated first."""
  out = {}
  for name in config.data.order:
    cls = get_task_class(config.data.datasets[name].task)
    cls.validate(config, name)
    out[name] = cls(name, config)
  return out


__all__ = [
  'DistillTask',
  'EvalContext',
  'HeatmapMetrabsTask',
  'HeatmapTask',
  'Metrabs2DTask',
  'MetrabsTask',
  'TASKS',
  'Task',
  'build_tasks',
  'get_task_class',
]
