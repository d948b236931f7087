"""The distillation step's setup for `benchmarks/train_step.py --distill`: the unified-skeleton student with two
frozen teachers in its step, and the student's plain step (no teachers) on the same batch.

The student is `configs/common.add_distill`'s model (plain ViT of the benchmarked variant, one 21-keypoint head
shared by COCO and MPII, half the batch each); the teachers are two models of the same variant and input size
(one COCO head, one MPII head, plain ViTs) with random weights, written as weights-only checkpoints in a temporary
directory. The plain step is the same ViT with a 21-keypoint head per dataset (the same FLOPs as the shared head)
trained on the ground-truth MSE alone: what the student costs without its teachers.
"""

from __future__ import annotations

import os
import tempfile

import flax.linen as nn
import jax
import numpy as np

from configs import common
from posebh_jax import inference
from posebh_jax.models import pose_model
from posebh_jax.tasks import build_tasks

TEACHER_FORMATS = ('coco', 'mpii')


def write_random_teacher(config, directory: str, seed: int) -> str:
  """A weights-only run of `config` (its model, its datasets' heads) with random weights in `directory`."""
  tasks = build_tasks(config)
  order = tuple(config.data.order)
  model = pose_model.build_model(
    config.model, order, head_specs=[tasks[n].head_spec() for n in order], experts=pose_model.dataset_experts(config)
  )
  image = np.zeros((1,) + tuple(config.data.image_size) + (3,), np.uint8)
  init = jax.jit(lambda key: model.init(key, {n: image for n in order}, train=False))
  variables = nn.unbox(init(jax.random.key(seed)))
  inference.write_weights(directory, config, {'params': variables['params'], 'batch_stats': variables['batch_stats']})
  return directory


def distill_configs(base_config):
  """(student config, plain config, teacher directory) for `base_config`, a `train_step._config` whose model,
  input size, dtype and batch size they keep."""
  root = tempfile.mkdtemp(prefix='posebh_teachers_')
  teachers = {}
  for index, fmt in enumerate(TEACHER_FORMATS):
    teacher = base_config.copy_and_resolve_references()
    teacher.data = common.data_config('synthetic', (fmt,))
    teacher.data.image_size, teacher.data.heatmap_size = base_config.data.image_size, base_config.data.heatmap_size
    teacher.model.use_experts = False
    teachers[fmt] = write_random_teacher(teacher, os.path.join(root, fmt), index)
  student = base_config.copy_and_resolve_references()
  common.add_distill(student, 'synthetic', teachers)
  student.data.order = ('coco', 'mpii')  # Halpe is evaluated only: not part of a train step
  plain = student.copy_and_resolve_references()
  for name in plain.data.order:
    plain.data.datasets[name].task = 'heatmap'
    plain.data.datasets[name].format = 'unified21'
  return student, plain, root
