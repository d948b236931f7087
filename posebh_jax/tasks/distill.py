"""Multi-teacher distillation into one unified-skeleton student (docs/METHOD.md §4, Khan et al.).

Every dataset with task 'distill' (COCO and MPII in the paper) trains the same student head, `head_unified21`, which
predicts the 21 keypoints of the 'unified21' skeleton (COCO's 17, then pelvis, thorax, upper neck, head top) on all
of them. A dataset's ground truth is placed at the unified keypoints its format maps to (`skeletons.format_mapping`);
the ones its format lacks get weight 0. The frozen teachers of `config.distill.teachers` ({format: run}) run inside
the train step on every image of the batch (`tasks.teachers.Teachers`), and their heatmaps arrive in each dataset's
batch as 'teacher_<format>'. The loss on a dataset's examples is

    L = w1 L_gt + Σ_t w_t s_t L_KD^t

with L_gt the target-weighted joints MSE over the 21 channels, L_KD^t the KL divergence between teacher t's and the
student's spatial distributions on the channels they share (`losses.distill.kd_loss`), and s_t = 1 − epoch /
decay_epochs for the decaying teachers (MPII's in the paper), 1 for the others.

Evaluation reads the 21 outputs in the dataset's own format (`to_format`, through the same mapping) and runs the
dataset's official protocol (COCO OKS AP, MPII PCKh, Halpe AP over the keypoints the mapping covers). Where the eval
split also holds another format's truth for the same people (the synthetic data's validation split holds every
format), it adds the student's PCKh@0.5 on the unified keypoints the dataset's format lacks ('PCKh_unlabelled':
pelvis, thorax, upper neck and head top on COCO's images, the face on MPII's), which no single-format model
predicts.
"""

from __future__ import annotations

import copy
from typing import Mapping

import grain
import jax.numpy as jnp
import numpy as np

from data_pipeline import pipeline
from posebh_jax import evaluation
from posebh_jax import skeletons
from posebh_jax.errors import UserError
from posebh_jax.losses import joints_mse
from posebh_jax.losses.distill import STUDENT_FORMAT, kd_loss, teacher_channel_indices
from posebh_jax.models.heatmap_head import HeatmapHeadSpec
from posebh_jax.tasks import base
from posebh_jax.tasks.heatmap import HeatmapTask

TEACHER_FIELD = 'teacher_{}'  # a dataset's batch field with teacher <format>'s heatmaps (added inside the step)


def teacher_field(teacher: str) -> str:
  """The batch field that carries teacher `teacher`'s heatmaps (n, h, w, K_teacher) inside the train step."""
  return TEACHER_FIELD.format(teacher)


def active_teachers(config) -> dict[str, str]:
  """{teacher format: its run path} of `config.distill.teachers` in config order (every entry, empty paths too)."""
  return {str(name): str(path) for name, path in config.distill.teachers.items()}


class UnifiedTargets(grain.transforms.RandomMap):
  """Wraps a dataset's top-down train transform: its heatmaps (h, w, K) and target weights (K,) placed at the
  student skeleton's keypoints ((h, w, K_student), (K_student,)), zero (weight 0) where the format has none."""

  def __init__(self, inner, source_format: str, target_format: str = STUDENT_FORMAT):
    self.inner, self.source_format, self.target_format = inner, source_format, target_format
    self.record_fields = pipeline.record_fields(inner)

  def random_map(self, element, rng: np.random.Generator):
    out = dict(self.inner.random_map(element, rng))
    for key in ('heatmaps', 'target_weights'):
      out[key] = skeletons.remap_keypoints(out[key], self.source_format, self.target_format, axis=-1)
    return out


class DistillTask(HeatmapTask):
  """A 2D dataset that trains the shared unified-skeleton student from its ground truth and the frozen teachers."""

  kind = 'distill'

  def __init__(self, name: str, config):
    super().__init__(name, config)
    self.student = skeletons.get_format(STUDENT_FORMAT)
    pairs = np.asarray(skeletons.format_mapping(self.format.name, STUDENT_FORMAT), np.int64).reshape(-1, 2)
    self.own_ids, self.student_ids = pairs[:, 0], pairs[:, 1]
    self.teachers = active_teachers(config)
    self.run_steps = (1, 1)  # (steps per epoch, total steps), set by the trainer
    self._unified_by_instance: dict[int, np.ndarray] = {}

  @classmethod
  def validate(cls, config, name: str) -> None:
    HeatmapTask.validate(config, name)
    fmt = config.data.datasets[name].format
    try:
      pairs = skeletons.format_mapping(fmt, STUDENT_FORMAT)
    except (KeyError, ValueError):
      pairs = ()
    if not len(pairs):
      raise UserError(
        f"config.data.datasets.{name}: format '{fmt}' has no mapping to the student's '{STUDENT_FORMAT}' skeleton; "
        'add one to posebh_jax/skeletons/formats.py MAPPINGS'
      )
    distill = config.distill
    teachers = active_teachers(config)
    if not teachers:
      raise UserError("config.distill.teachers is empty; name at least one teacher: {format: run directory}")
    for teacher in teachers:
      try:
        teacher_channel_indices(teacher)
      except (KeyError, ValueError):
        raise UserError(
          f"config.distill.teachers.{teacher}: '{teacher}' is not a skeleton format that maps to "
          f"'{STUDENT_FORMAT}'; use e.g. coco or mpii"
        ) from None
      if teacher not in distill.teacher_weights:
        raise UserError(f'config.distill.teacher_weights has no weight for teacher {teacher}; add one')
    unknown = sorted(set(distill.decaying_teachers) - set(teachers))
    if unknown:
      raise UserError(f'config.distill.decaying_teachers names {unknown}, which are not in config.distill.teachers')
    if not distill.temperature > 0:
      raise UserError(f'config.distill.temperature must be > 0 (got {distill.temperature})')

  # ------------------------------------------------------------------------------------------------ training
  def batch_fields(self):
    heat_h, heat_w = self.config.data.heatmap_size
    k = self.student.num_keypoints
    return {'heatmaps': ((heat_h, heat_w, k), np.float32), 'target_weights': ((k,), np.float32)}

  def train_transform(self):
    return UnifiedTargets(pipeline.train_transform(self.config.data, self.name), self.format.name)

  def head_spec(self) -> HeatmapHeadSpec:
    model = self.config.model
    return HeatmapHeadSpec(
      self.student.num_keypoints,
      model.head_channels,
      model.head_num_deconv,
      model.head_deconv_init_std,
      head_name=STUDENT_FORMAT,
    )

  def set_run_length(self, steps_per_epoch: int, total_steps: int) -> None:
    self.run_steps = (max(int(steps_per_epoch), 1), max(int(total_steps), 1))

  def decay_scale(self, step) -> jnp.ndarray:
    """s = 1 − epoch / decay_epochs clipped at 0 (fractional epochs: step / steps_per_epoch); `decay_epochs` <= 0:
    the run's length. A float32 scalar."""
    steps_per_epoch, total_steps = self.run_steps
    decay_epochs = float(self.config.distill.decay_epochs)
    decay_steps = decay_epochs * steps_per_epoch if decay_epochs > 0 else float(total_steps)
    step = jnp.zeros((), jnp.float32) if step is None else jnp.asarray(step, jnp.float32)
    return jnp.maximum(1.0 - step / decay_steps, 0.0)

  def loss(self, output, batch, step=None):
    """w1 L_gt + Σ_t w_t s_t L_KD^t on this dataset's examples; terms 'gt', 'kd_<t>' (unweighted) and, for a
    decaying teacher, 'kd_scale_<t>'."""
    distill = self.config.distill
    gt = joints_mse(output, batch['heatmaps'], batch['target_weights'])
    total, terms = distill.gt_weight * gt, {'gt': gt}
    scale = self.decay_scale(step)
    for teacher in self.teachers:
      teacher_ids, student_ids = teacher_channel_indices(teacher)
      kd = kd_loss(
        output[..., student_ids],
        batch[teacher_field(teacher)][..., teacher_ids],
        distill.temperature,
        scale_by_temperature_squared=distill.scale_by_temperature_squared,
      )
      weight = distill.teacher_weights[teacher]
      if teacher in distill.decaying_teachers:
        weight = weight * scale
        terms[f'kd_scale_{teacher}'] = scale
      total = total + weight * kd
      terms[f'kd_{teacher}'] = kd
    return total, terms

  @property
  def head_format(self):
    return self.student

  def output_formats(self) -> tuple[str, ...]:
    return (STUDENT_FORMAT, self.format.name)

  def to_format(self, coords, scores, format_name: str):
    """The 21 keypoints (image px, scores) read in `format_name` (the student's own or any format mapped to it);
    keypoints of the format that the student lacks get coordinates 0 and score 0."""
    coords, scores = np.asarray(coords), np.asarray(scores)
    if format_name == STUDENT_FORMAT:
      return coords, scores
    try:
      return (
        skeletons.remap_keypoints(coords, STUDENT_FORMAT, format_name, axis=1),
        skeletons.remap_keypoints(scores, STUDENT_FORMAT, format_name, axis=1),
      )
    except (KeyError, ValueError):
      raise UserError(f"the {STUDENT_FORMAT} student's outputs have no mapping to format '{format_name}'") from None

  def output_keypoints(self) -> np.ndarray:
    """Indices of the dataset format's keypoints that the student predicts (all of COCO's and MPII's; Halpe: 20 of
    its 136)."""
    return np.sort(self.own_ids)

  # ---------------------------------------------------------------------------------------------- evaluation
  def head_keypoint_batches(self, predict, batch_size: int):
    """`HeatmapTask.head_keypoint_batches` (the 21 unified keypoints), also keeping each instance's for
    `unlabelled_accuracy`."""
    self._unified_by_instance = {}
    for batch, unified in super().head_keypoint_batches(predict, batch_size):
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        self._unified_by_instance[int(batch['instance_id'][i])] = unified[i]
      yield batch, unified

  def evaluate(self, context: base.EvalContext) -> dict[str, float]:
    """The dataset's official metrics over the keypoints the student predicts for its format (all of them for COCO
    and MPII; a format only partly covered, such as Halpe, is scored on the covered keypoints with their sigmas),
    plus 'PCKh_unlabelled' where the eval split holds another teacher format's truth (see the module docstring)."""
    covered = self.output_keypoints()
    if len(covered) == self.format.num_keypoints:
      metrics = super().evaluate(context)
    else:
      metrics = self._evaluate_covered(context, covered)
    metrics.update(self.unlabelled_accuracy())
    return metrics

  def _evaluate_covered(self, context: base.EvalContext, covered: np.ndarray) -> dict[str, float]:
    """OKS AP (COCO protocol, the format's sigmas) over the `covered` keypoints only: ground truth and results are
    cut to those keypoints before scoring."""
    results, _ = self.predict_split(context)
    coco = self.ground_truth()['coco']
    keep = lambda flat: np.asarray(flat, np.float64).reshape(-1, 3)[covered].reshape(-1).tolist()
    annotations = []
    for ann in coco['annotations']:
      cut = np.asarray(keep(ann['keypoints'])).reshape(-1, 3)
      annotations.append(dict(ann, keypoints=cut.reshape(-1).tolist(), num_keypoints=int(np.sum(cut[:, 2] > 0))))
    gt = dict(coco, annotations=annotations)
    cut_results = [dict(r, keypoints=keep(r['keypoints'])) for r in results]
    sigmas = np.asarray(self.format.sigmas, np.float64)[covered]
    out = dict(evaluation.evaluate_coco_keypoints(gt, cut_results, sigmas))
    out['keypoints scored'] = float(len(covered))
    return out

  def unlabelled_accuracy(self) -> dict[str, float]:
    """{'PCKh_unlabelled': % of the unified keypoints this dataset's format lacks that lie within half a head size
    of another teacher format's truth for the same people, over the visible ones}; {} when the eval split holds no
    such truth (real COCO or MPII) or the format lacks none."""
    gt = self.ground_truth()
    if 'gt_path' in gt or 'head_size' not in gt or not self._unified_by_instance:
      return {}
    lacking = sorted(set(range(self.student.num_keypoints)) - set(self.student_ids.tolist()))
    truths = []  # (unified ids, that format's ids, its truth (N, K, 3)) for formats that cover lacking keypoints
    for teacher in self.teachers:
      if teacher == self.format.name:
        continue
      teacher_ids, student_ids = teacher_channel_indices(teacher)
      wanted = [(u, t) for t, u in zip(teacher_ids, student_ids) if u in lacking]
      if not wanted:
        continue
      other = self._other_truth(teacher)
      if other is not None:
        truths.append(([u for u, _ in wanted], [t for _, t in wanted], other))
    if not truths:
      return {}
    ids = np.asarray(gt['instance_ids'], np.int64)
    head = np.asarray(gt['head_size'], np.float64)
    hits = total = 0
    for unified_ids, other_ids, other in truths:
      for row, instance in enumerate(ids):
        predicted = self._unified_by_instance.get(int(instance))
        if predicted is None or not head[row] > 0:
          continue
        truth = other[row][other_ids]
        visible = truth[:, 2] > 0
        distance = np.linalg.norm(predicted[unified_ids, :2] - truth[:, :2], axis=-1)
        hits += int(np.sum((distance <= 0.5 * head[row]) & visible))
        total += int(np.sum(visible))
    return {'PCKh_unlabelled': 100.0 * hits / total} if total else {}

  def _other_truth(self, format_name: str) -> np.ndarray | None:
    """(N, K, 3) truth in `format_name` of the same eval people, in `ground_truth()` order, or None where the eval
    split has none (it must select the same records: checked by their image ids)."""
    data = copy.deepcopy(self.config.data)
    data.datasets[self.name].format = format_name
    try:
      other = pipeline.eval_ground_truth(data, self.name)
    except (KeyError, ValueError):
      return None
    own = self.ground_truth()
    if 'gt_path' in other or not np.array_equal(np.asarray(other['image_ids']), np.asarray(own['image_ids'])):
      return None
    return np.asarray(other['keypoints'], np.float64)


def distill_summary(results: Mapping[str, float]) -> dict[str, float]:
  """docs/METHOD.md §4's row from `{'eval/<dataset>/<metric>': value}`: 'COCO AP' and 'MPII PCKh' in %, their mean
  'average accuracy', and 'Halpe AP' in % (each present only when its inputs are)."""
  out = {}
  if 'eval/coco/AP' in results:
    out['COCO AP'] = 100.0 * float(results['eval/coco/AP'])
  if 'eval/mpii/PCKh' in results:
    out['MPII PCKh'] = float(results['eval/mpii/PCKh'])
  if 'COCO AP' in out and 'MPII PCKh' in out:
    out['average accuracy'] = 0.5 * (out['COCO AP'] + out['MPII PCKh'])
  if 'eval/halpe/AP' in results:
    out['Halpe AP'] = 100.0 * float(results['eval/halpe/AP'])
  return out
