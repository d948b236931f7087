"""Frozen teacher models that run inside the student's train step (distillation, docs/METHOD.md §4).

`config.distill.teachers` names one run per skeleton format ({'coco': 'workdirs/teacher_coco', ...}): a workdir of
`python -m posebh_jax.main`, its `checkpoints/` or `checkpoints/<step>` directory, or the converter's output (e.g.
official ViTPose COCO or MPII weights). Each teacher is that run's model cut down to the head of its first dataset
in that format (`pose_model.split_dataset_variables`: the dataset's MoE expert merged into fc2, the other heads
dropped), rebuilt with the student's batch layout, its variables placed on the student's mesh with the student's
logical sharding rules, and passed to the jit'd step as an argument (not donated, never updated).

Inside the step each teacher runs in inference mode (running BatchNorm statistics, no dropout) on every image of
the distillation datasets' examples (the student's crops, resized to the teacher's input size when it differs),
and its heatmaps (resized to the student's heatmap size when they differ) enter each dataset's batch as
'teacher_<format>' before the tasks' losses read them. A teacher of another input size, width or depth works; one of
another aspect ratio sees its crops stretched (the heatmaps are stretched back, so positions still agree).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import flops as flops_lib
from posebh_jax import sharding as sharding_lib
from posebh_jax import workdir as workdir_lib
from posebh_jax.errors import UserError
from posebh_jax.models import composition as composition_lib
from posebh_jax.models import pose_model
from posebh_jax.tasks import build_tasks
from posebh_jax.tasks.distill import DistillTask, active_teachers, teacher_field


@dataclasses.dataclass
class Teacher:
  """One frozen teacher.

  Attributes:
    name: the skeleton format it teaches (its key in `config.distill.teachers`).
    source: the path it was loaded from; step: its checkpoint's train step.
    dataset: the teacher run's dataset whose head is used.
    config: the teacher run's config.
    model: the single-dataset `PoseModel` (no experts) in the student's batch layout.
    variables: {'params', 'batch_stats'} as NumPy arrays (host), before placement.
  """

  name: str
  source: str
  step: int
  dataset: str
  config: ml_collections.ConfigDict
  model: pose_model.PoseModel
  variables: dict

  @property
  def image_size(self) -> tuple[int, int]:
    return tuple(int(v) for v in self.config.data.image_size)


def _train_hint(name: str, path: str) -> str:
  return (
    f'config.distill.teachers.{name} is {path!r}, which holds no trained run; train the {name} teacher first '
    f'(python -m posebh_jax.main --config=... --workdir={path}) or point it at a run or a converted checkpoint'
  )


def load_teacher(name: str, path: str, student_config, groups: int) -> Teacher:
  """Reads teacher `name` (a skeleton format) from `path` and builds its single-dataset model for a batch of
  `groups` shards, computing in the student's dtype (or `config.distill.teacher_dtype`). Raises UserError (one
  line) when the path holds no run, no checkpoint, or no heatmap dataset of that format."""
  if not path:
    raise UserError(f'config.distill.teachers.{name} is empty; set it to the teacher run (workdir or checkpoint)')
  run_dir = workdir_lib.run_directory(path)
  if run_dir is None:
    raise UserError(_train_hint(name, path))
  try:
    config = workdir_lib.load_run_config(run_dir)
  except UserError as e:
    raise UserError(f'config.distill.teachers.{name}: {e}') from None
  candidates = [
    n
    for n in config.data.order
    if config.data.datasets[n].format == name and config.data.datasets[n].get('task', 'heatmap') == 'heatmap'
  ]
  if not candidates:
    formats = sorted({config.data.datasets[n].format for n in config.data.order})
    raise UserError(
      f'config.distill.teachers.{name}: the run in {run_dir} has no heatmap dataset of format {name} '
      f'(its formats: {", ".join(formats)})'
    )
  dataset = candidates[0]
  try:
    source = checkpoint_lib.checkpoint_source(path, run_dir)
    state, step = checkpoint_lib.read_state(source, items=('params', 'batch_stats'))
  except FileNotFoundError:
    raise UserError(_train_hint(name, path)) from None
  tasks = build_tasks(config)
  full = pose_model.build_model(
    config.model,
    tuple(config.data.order),
    num_groups=1,
    head_specs=[tasks[n].head_spec() for n in config.data.order],
    experts=pose_model.dataset_experts(config),
  )
  single, variables = pose_model.split_dataset_variables(
    full, {'params': state['params'], 'batch_stats': state.get('batch_stats', {})}, dataset
  )
  dtype = student_config.distill.teacher_dtype or student_config.model.dtype
  model = single.clone(num_groups=groups, dtype=jnp.dtype(dtype), stack_equal_datasets=False)
  return Teacher(name, path, step, dataset, config, model, variables)


class Teachers:
  """The run's frozen teachers: their placed variables and shardings, and the function that adds their heatmaps
  to the train batch inside the step."""

  def __init__(self, config, mesh: jax.sharding.Mesh, rules, counts: Mapping[str, int], groups: int, tasks):
    """Args: the student's `config`, `mesh` and logical axis `rules`, the global per-dataset batch `counts`, the
    batch shards `groups`, and the student's {dataset: Task} (the 'distill' datasets get teacher outputs)."""
    self.config = config
    self.groups = groups
    self.datasets = tuple(n for n, task in tasks.items() if isinstance(task, DistillTask) and counts.get(n, 0))
    self.counts = {n: int(counts[n]) for n in self.datasets}
    self.heatmap_size = tuple(int(v) for v in config.data.heatmap_size)
    self.image_size = tuple(int(v) for v in config.data.image_size)
    self.teachers = [load_teacher(n, p, config, groups) for n, p in active_teachers(config).items()]
    shardings, placed = {}, {}
    replicated = sharding_lib.replicated(mesh)
    for teacher in self.teachers:
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(
          lambda t=teacher: t.model.init(
            jax.random.key(0), {t.dataset: jnp.zeros((groups,) + t.image_size + (3,), jnp.uint8)}, train=False
          )
        )
      variables = {'params': teacher.variables['params'], 'batch_stats': teacher.variables.get('batch_stats', {})}
      if jax.tree.structure(variables['params']) != jax.tree.structure(nn.unbox(boxed['params'])):
        raise UserError(
          f'config.distill.teachers.{teacher.name}: the parameters in {teacher.source} do not match its '
          "config.json's model"
        )
      params = sharding_lib.logical_shardings(boxed['params'], mesh, rules)
      stats = jax.tree.map(lambda _: replicated, variables['batch_stats'])
      shardings[teacher.name] = {'params': params, 'batch_stats': stats}
      placed[teacher.name] = jax.device_put(variables, shardings[teacher.name])
    self.shardings = shardings
    self.variables = placed

  def describe(self) -> str:
    """One line per teacher: format, source, step, the dataset whose head is used, its input size."""
    return '\n'.join(
      f'teacher {t.name}: {t.source} (step {t.step}, head {t.dataset}, input {t.image_size[0]}x{t.image_size[1]}, '
      f'{_count(t.variables["params"]) / 1e6:.1f}M parameters)'
      for t in self.teachers
    )

  def abstract(self):
    """ShapeDtypeStructs (with shardings) of `variables`, for lowering the step."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.variables)

  def add_outputs(self, variables, batch: Mapping[str, Mapping[str, jax.Array]]) -> dict:
    """`batch` with each distillation dataset's examples' teacher heatmaps float32 (n_d, h, w, K_teacher) under
    'teacher_<format>', h × w the student's heatmap size. Traced inside the train step; no gradient reaches them."""
    present = [n for n in self.datasets if n in batch]
    if not present:
      return dict(batch)
    comp = composition_lib.make_composition(present, self.counts, self.groups)
    images = composition_lib.group_by_dataset({n: batch[n]['image'] for n in present}, comp)
    out = {name: dict(fields) for name, fields in batch.items()}
    for teacher in self.teachers:
      heatmaps = self._run(teacher, variables[teacher.name], images)
      for _, name, offset, count in comp.present():
        out[name][teacher_field(teacher.name)] = composition_lib.dataset_slice(heatmaps, comp, offset, count)
    return out

  def _run(self, teacher: Teacher, variables, images: jax.Array) -> jax.Array:
    n = images.shape[0]
    x = images
    if teacher.image_size != self.image_size:
      x = jax.image.resize(images.astype(jnp.float32), (n,) + teacher.image_size + (3,), 'linear')
    heatmaps = teacher.model.apply(variables, {teacher.dataset: x}, train=False)[teacher.dataset]
    if tuple(heatmaps.shape[1:3]) != self.heatmap_size:
      heatmaps = jax.image.resize(heatmaps, (n,) + self.heatmap_size + heatmaps.shape[3:], 'linear')
    return jax.lax.stop_gradient(heatmaps.astype(jnp.float32))

  def forward_flops(self) -> float:
    """Analytic forward FLOPs of every teacher (backbone and head) on one global batch of the distillation
    datasets (the teachers run forward only)."""
    total = 0.0
    for teacher in self.teachers:
      model = teacher.config.model
      grid = flops_lib.token_grid(model, teacher.image_size)
      backbone = flops_lib.vit_forward_flops(
        model.width, model.depth, model.mlp_ratio, grid[0] * grid[1], model.patch_size
      )
      head = teacher.model.head_specs[0].forward_flops(model.width, grid)
      total += (backbone + head) * sum(self.counts.values())
    return total


def _count(tree) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def needs_teachers(tasks: Mapping[str, Any]) -> bool:
  """Whether any dataset's task is a distillation task (the run then loads `config.distill.teachers`)."""
  return any(isinstance(task, DistillTask) for task in tasks.values())


__all__: Sequence[str] = ('Teacher', 'Teachers', 'load_teacher', 'needs_teachers')
