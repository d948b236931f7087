"""Single-dataset models against the distilled unified-skeleton student, on the same evaluation (docs/METHOD.md §4).

  python -m benchmarks.distill_comparison --student=workdirs/demo_distill \
      --models=coco:workdirs/demo_teacher_coco,mpii:workdirs/demo_teacher_mpii [--data_dir=data/tfds]

Every model is scored by the student's evaluation (`tasks.distill.DistillTask.evaluate` of the student run's
config): its outputs read in the unified 21-keypoint skeleton, then mapped to COCO 17 (OKS AP), MPII 16 (PCKh@0.5)
and Halpe's 20 covered keypoints (OKS AP), and, where the eval split holds every format's truth (the synthetic
data), PCKh@0.5 on the unified keypoints each dataset's format lacks. A single-dataset model's heatmaps are placed
at the unified keypoints its format maps to and the other channels are empty (decoded with score 0 at the crop's
corner): the keypoints it cannot predict count as misses, as in the paper's "average accuracy" of single-dataset
models. Prints one Markdown row per model: COCO AP, MPII PCKh, their mean, Halpe AP, and the two unlabelled-keypoint
accuracies (COCO images: pelvis, thorax, upper neck, head top; MPII images: the face).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import numpy as np

from posebh_jax import evaluator as evaluator_lib
from posebh_jax import inference
from posebh_jax import skeletons
from posebh_jax.errors import UserError
from posebh_jax.losses.distill import STUDENT_FORMAT
from posebh_jax.tasks import EvalContext, build_tasks

COLUMNS = ('COCO AP', 'MPII PCKh', 'average accuracy', 'Halpe AP', 'unlabelled on COCO', 'unlabelled on MPII')


def unified_predict(predictor: inference.Predictor, fmt: str, flip: bool):
  """Host images uint8 (n, H, W, 3) → float32 heatmaps (n, h, w, 21) of the unified skeleton from `predictor`'s
  head for format `fmt` (the student's own output, or a single-format head's channels placed by the mapping, zeros
  elsewhere)."""
  dataset = predictor.resolve_formats(fmt)[fmt]
  function = predictor.predict_function(dataset, flip)
  own = predictor.tasks[dataset].output_formats()[0]

  def predict(images):
    heatmaps = np.asarray(jax.device_get(function(predictor.variables, images)), np.float32)
    if own == STUDENT_FORMAT:
      return heatmaps
    return skeletons.remap_keypoints(heatmaps, own, STUDENT_FORMAT, axis=-1)

  return predict


def evaluate_model(student_config, predict, batch_size: int) -> dict[str, float]:
  """The student evaluation's metrics {'<dataset>/<metric>': value} of `predict` (images → unified heatmaps)."""
  out = {}
  with tempfile.TemporaryDirectory() as scratch:
    for name, task in build_tasks(student_config).items():
      context = EvalContext(student_config, name, predict, batch_size, scratch, 0, write_files=False)
      out.update({f'{name}/{metric}': value for metric, value in task.evaluate(context).items()})
  return out


def row(metrics: dict[str, float]) -> dict[str, float]:
  """The table's columns from `evaluate_model`'s metrics (AP in %, PCKh as is)."""
  values = {
    'COCO AP': 100.0 * metrics.get('coco/AP', np.nan),
    'MPII PCKh': metrics.get('mpii/PCKh', np.nan),
    'Halpe AP': 100.0 * metrics.get('halpe/AP', np.nan),
    'unlabelled on COCO': metrics.get('coco/PCKh_unlabelled', np.nan),
    'unlabelled on MPII': metrics.get('mpii/PCKh_unlabelled', np.nan),
  }
  values['average accuracy'] = 0.5 * (values['COCO AP'] + values['MPII PCKh'])
  return values


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--student', required=True, help='the distillation run (its config defines the evaluation)')
  parser.add_argument('--models', default='', help='single-dataset runs: format:workdir,format:workdir')
  parser.add_argument('--data_dir', default=None, help="the prepared data (default: the student run's)")
  parser.add_argument('--json', default=None, help='also write the rows here')
  args = parser.parse_args(argv)
  try:
    student = inference.Predictor.load(args.student)
    config = student.config
    if args.data_dir:
      config.data.data_dir = args.data_dir
    models = [('student', student, STUDENT_FORMAT)]
    for item in filter(None, args.models.split(',')):
      fmt, _, path = item.partition(':')
      models.append((f'{fmt} only', inference.Predictor.load(path), fmt))
    batch_size = evaluator_lib.eval_batch_size(config, 1)
    rows = {}
    for label, predictor, fmt in models:
      start = time.perf_counter()
      metrics = evaluate_model(config, unified_predict(predictor, fmt, bool(config.eval_flip)), batch_size)
      rows[label] = row(metrics)
      print(f'{label}: evaluated in {time.perf_counter() - start:.0f} s', flush=True)
  except UserError as e:
    raise SystemExit(f'error: {e}') from None
  print('| model | ' + ' | '.join(COLUMNS) + ' |')
  print('|---' * (len(COLUMNS) + 1) + '|')
  for label, values in rows.items():
    cells = ['-' if not np.isfinite(values[c]) else f'{values[c]:.1f}' for c in COLUMNS]
    print(f'| {label} | ' + ' | '.join(cells) + ' |')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
