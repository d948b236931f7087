"""The task interface carries a second kind of dataset with no change to the trainer: a keypoint-regression task
defined outside the library (tests/toy_regression_task.py) trains in the same batch as two heatmap datasets, is
evaluated by its own evaluator, and resumes bit for bit."""

import json

import numpy as np

from conftest import losses as _losses
from conftest import records as _records
from conftest import train as _train

_CONFIG = 'tests/toy_regression_task.py'


def test_regression_task_trains_with_heatmap_datasets_evaluates_and_resumes(tmp_path, data_dir):
  whole, parts = tmp_path / 'whole', tmp_path / 'parts'
  # All compiled fast (`conftest.FAST_COMPILE`; alike: the resumed run must give the same losses bit for bit).
  _train(whole, data_dir, config=_CONFIG, fast_compile=True)
  first = _train(
    parts, data_dir, '--config.total_steps=4', '--config.eval_every_steps=0', config=_CONFIG, fast_compile=True
  )
  assert 'resumed' not in first.stdout
  second = _train(parts, data_dir, config=_CONFIG, fast_compile=True)
  assert f'resumed from {parts}/checkpoints at step 4' in second.stdout
  # Exact resume: the same losses bit for bit, and the resumed run trained only steps 5-8.
  assert _losses(parts) == _losses(whole)
  resumed_steps = [r['step'] for r in _records(parts) if 'train/loss' in r]
  assert resumed_steps == list(range(1, 9)), resumed_steps

  records = _records(whole)
  train_rows = [r for r in records if 'train/loss' in r]
  for row in train_rows:  # every step's batch carried both kinds of dataset
    for key in ('train/loss_coco', 'train/loss_mpii', 'train/loss_coco_regression', 'train/loss_coco_regression/l1'):
      assert np.isfinite(row[key]), (key, row)
    total = row['train/loss_coco'] + row['train/loss_mpii'] + row['train/loss_coco_regression']
    assert abs(row['train/loss'] - total) <= 1e-6 * total
  final = [r for r in records if 'eval/coco_regression/EPE' in r][-1]
  assert final['step'] == 8 and 'eval/coco/AP' in final and 'eval/mpii/PCKh' in final

  # The regression evaluator's EPE, recomputed from its written predictions and the ground truth it scored.
  gt = json.loads((whole / 'eval' / 'coco_gt.json').read_text())  # the same validation people, COCO format
  predicted = json.loads((whole / 'eval' / 'coco_regression_predictions_step8.json').read_text())
  errors = []
  for ann in gt['annotations']:
    keypoints = np.asarray(ann['keypoints'], np.float64).reshape(-1, 3)
    labelled = keypoints[:, 2] > 0
    xy = np.asarray(predicted[str(ann['id'])], np.float64)
    errors.extend(np.linalg.norm(xy[labelled] - keypoints[labelled, :2], axis=-1))
  assert abs(np.mean(errors) - final['eval/coco_regression/EPE']) <= 1e-9 * np.mean(errors)
  assert 'eval/coco_regression/EPE=' in second.stdout  # the progress line shows the task's own metric
