"""Real data end to end: `configs/b16.py:runlocal,data=real` (with a tiny model) trains and evaluates on the six
training datasets prepared from $POSEBH_REALDATA (the `real_data_dir` fixture), and the training-time
evaluation of real eval splits (species categories, several people per image, detector boxes with rescoring and
OKS-NMS) agrees with the official metrics and with `python -m posebh_jax.evaluate --topdown`."""

import json

import numpy as np
import pytest

from conftest import losses as _losses
from conftest import run_module as _run
from conftest import train as _train
from configs import b16, common
from data_pipeline import pipeline
from posebh_jax import evaluate as evaluate_lib
from posebh_jax.tasks import heatmap as heatmap_task
from posebh_jax import evaluation, skeletons
from realdata_samples import needs_realdata

pytestmark = needs_realdata

CONFIG = 'configs/b16.py:runlocal,data=real'
# The B/16 runlocal config shrunk to a model that compiles fast on CPU (64x48 crops, patch 8, width 32, one block,
# one deconvolution per head: 16x12 heatmaps; no formats picture, which costs one more compile).
TINY = (
  '--config.model.width=32',
  '--config.model.depth=1',
  '--config.model.num_heads=2',
  '--config.model.expert_dim=8',
  '--config.model.head_channels=16',
  '--config.model.head_num_deconv=1',
  '--config.model.patch_size=8',
  '--config.model.patch_padding=0',
  '--config.data.image_size=(64,48)',
  '--config.data.heatmap_size=(16,12)',
  '--config.viz_examples=2',
  '--config.viz_formats=False',
)
DATASETS = common.TRAIN_DATASETS


def _data_config(data_dir, ground_truth_boxes: bool):
  """The real-data config.data; COCO / COCO-WholeBody on their GT-box `validation` split if asked."""
  data = common.data_config('real')
  data.data_dir = data_dir
  if ground_truth_boxes:
    for name in ('coco', 'coco_wholebody'):
      data.datasets[name].eval_split = 'validation'
  return data


def _ground_truth(data, name):
  gt = pipeline.eval_ground_truth(data, name)
  gt['coco'] = {key: gt[key] for key in ('images', 'annotations', 'categories')}
  return gt


def _offline(capsys, name, gt_path, results_path, *extra) -> dict:
  """`python -m posebh_jax.evaluate` (in process) -> its printed metrics."""
  capsys.readouterr()
  assert evaluate_lib.main([f'--dataset={name}', f'--gt={gt_path}', f'--results={results_path}', *extra]) == 0
  return json.loads(capsys.readouterr().out)


def test_b16_config_data_argument():
  assert b16.get_config('runlocal').data.sources == 'synthetic'
  real = b16.get_config('runlocal,data=real')
  assert real.data.sources == 'real' and real.data.data_dir == 'data/tfds' and real.total_steps == 5
  assert real.data.datasets.coco.eval_split == 'validation_det' and real.eval_nms == 'oks'
  assert b16.get_config('').data.sources == 'real'
  with pytest.raises(ValueError, match='data=real or data=synthetic'):
    b16.get_config('runlocal,data=imagenet')


def test_runlocal_on_real_data_trains_and_evaluates(tmp_path, real_data_dir, capsys):
  data_dir, workdir = real_data_dir['data_dir'], tmp_path / 'run'
  # Compiled fast (`conftest.FAST_COMPILE`): 5 steps and one evaluation, whose time is mostly compilation.
  _train(workdir, data_dir, *TINY, '--config.eval_every_steps=0', config=CONFIG, fast_compile=True)
  losses = _losses(workdir)
  assert sorted(losses) == [1, 2, 3, 4, 5] and all(np.isfinite(v) for v in losses.values())

  result = _run(
    [
      '-m',
      'posebh_jax.main',
      f'--config={CONFIG}',
      f'--workdir={workdir}',
      '--mode=eval',
      f'--config.data.data_dir={data_dir}',
      *TINY,
    ],
    fast_compile=True,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  print(result.stdout)
  # The table: one row per dataset with its headline metric, then the docs/METHOD.md-style row.
  lines = result.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('dataset'))
  rows = {line.split()[0]: line.split()[1] for line in lines[header + 1 : header + 1 + len(DATASETS)]}
  assert rows == {name: 'PCKh' if name == 'mpii' else 'AP' for name in DATASETS}
  assert lines[header + len(DATASETS) + 2].startswith('| model | COCO AP')

  with open(workdir / 'metrics.jsonl') as f:
    logged = [json.loads(line) for line in f][-1]
  assert logged['step'] == 5
  eval_dir = workdir / 'eval'
  data = _data_config(data_dir, ground_truth_boxes=False)
  for name in DATASETS:
    fmt = skeletons.get_format(name)
    evaluator = evaluation.get_evaluator(name)
    metrics = {m: logged[f'eval/{name}/{m}'] for m in evaluator.metric_names}
    assert all(np.isfinite(v) for v in metrics.values()), (name, metrics)
    # COCO-format results (after rescoring and NMS), the raw top-down instances and the ground truth.
    results = json.loads((eval_dir / f'{name}_results_step5.json').read_text())
    raw = json.loads((eval_dir / f'{name}_topdown_step5.json').read_text())
    gt = _ground_truth(data, name)
    assert len(raw) == len(gt['image_ids']) and 0 < len(results) <= len(raw)
    assert all(
      len(r['keypoints']) == 3 * fmt.num_keypoints and {'image_id', 'category_id', 'score'} <= set(r) for r in results
    )
    # Results carry each instance's category (AP-10K / APT-36K: the species).
    assert sorted(r['category_id'] for r in raw) == sorted(gt['category_ids'].tolist())
    if name in ('coco', 'coco_wholebody'):  # detector boxes and their scores
      assert len(raw) == real_data_dir['summaries'][common.REAL_SOURCES[name][0]]['splits']['validation_det']
      assert sorted(r['bbox_score'] for r in raw) == pytest.approx(sorted(gt['bbox_score'].tolist()), abs=1e-6)
    if name == 'mpii':  # every ground-truth person once, paired by annotation id
      assert sorted(r['ann_id'] for r in results) == sorted(gt['instance_ids'].tolist())
    # The offline tool on the written files reproduces the logged official metrics.
    offline = _offline(capsys, name, eval_dir / f'{name}_gt.json', eval_dir / f'{name}_topdown_step5.json', '--topdown')
    assert offline == pytest.approx({m: metrics[m] for m in offline}, abs=1e-9), name
    assert (workdir / 'viz' / f'{name}_step5.png').is_file()
  assert {r['category_id'] for r in json.loads((eval_dir / 'ap10k_results_step5.json').read_text())} == {1, 26}


def _perfect_instances(gt):
  """Raw top-down instances predicting each eval record's ground truth exactly (unlabelled keypoints at the box
  centre), with keypoint scores 1 and the record's box, box score, category and annotation id."""
  raw, by_instance = [], {}
  for row, keypoints in enumerate(np.asarray(gt['keypoints'], np.float64)):
    x, y, w, h = (float(v) for v in gt['bbox'][row])
    predicted = keypoints.copy()
    predicted[keypoints[:, 2] <= 0, :2] = (x + w / 2, y + h / 2)
    predicted[:, 2] = 1.0
    by_instance[int(gt['instance_ids'][row])] = predicted
    raw.append(
      {
        'image_id': int(gt['image_ids'][row]),
        'category_id': int(gt['category_ids'][row]),
        'keypoints': predicted.reshape(-1).tolist(),
        'bbox_score': float(gt['bbox_score'][row]),
        'area': w * h * 1.25**2,
        'ann_id': int(gt['instance_ids'][row]),
      }
    )
  return raw, by_instance


def test_ground_truth_predictions_score_perfectly(real_data_dir, tmp_path, capsys):
  data = _data_config(real_data_dir['data_dir'], ground_truth_boxes=True)
  for name in DATASETS:
    fmt = skeletons.get_format(name)
    gt = _ground_truth(data, name)
    raw, by_instance = _perfect_instances(gt)
    results = evaluation.topdown_postprocess(raw, fmt, nms=evaluate_lib.dataset_nms(name))
    metrics = heatmap_task.metrics_for(fmt, gt, results, by_instance)
    if name == 'mpii':
      assert metrics['PCKh'] == pytest.approx(100.0) and metrics['PCKh@0.1'] == pytest.approx(100.0)
    assert metrics['AP'] == pytest.approx(1.0) and metrics['AR'] == pytest.approx(1.0), (name, metrics)
    if name == 'coco_wholebody':
      assert all(metrics[f'{part} AP'] == pytest.approx(1.0) for part in evaluation.WHOLEBODY_PARTS)
    # The stored ground truth written as the heatmap task's evaluation writes it evaluates offline to the same numbers.
    gt_path, raw_path = tmp_path / f'{name}_gt.json', tmp_path / f'{name}_raw.json'
    gt_path.write_text(json.dumps(heatmap_task.gt_json(fmt, gt)))
    raw_path.write_text(json.dumps(raw))
    offline = _offline(capsys, name, gt_path, raw_path, '--topdown')
    assert offline == pytest.approx({m: metrics[m] for m in offline}, abs=1e-9), name
    if name in ('ap10k', 'apt36k'):  # a fixed category 1 loses the other species' animals
      assert len({r['category_id'] for r in raw}) > 1
      one = [dict(r, category_id=1) for r in results]
      assert heatmap_task.metrics_for(fmt, gt, one, by_instance)['AP'] < 0.9


def _iou(box, boxes):
  x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
  x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
  y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


@pytest.mark.parametrize('name', ['coco', 'coco_wholebody'])
def test_detector_split_rescoring_and_oks_nms(name, real_data_dir, tmp_path, capsys):
  """On the detector-box split, each detection predicts (jittered) the keypoints of the labelled person it
  overlaps most: rescoring + OKS-NMS 0.9 (what the evaluator applies) removes the duplicate boxes, and the
  offline `--topdown` tool gives the training-time metrics."""
  fmt = skeletons.get_format(name)
  data = _data_config(real_data_dir['data_dir'], ground_truth_boxes=False)
  gt = _ground_truth(data, name)
  people = [a for a in gt['coco']['annotations'] if not a['iscrowd'] and a['num_keypoints'] > 0]
  rng = np.random.default_rng(0)
  raw, owners = [], []
  for row, box in enumerate(np.asarray(gt['bbox'], np.float64)):
    image_id = int(gt['image_ids'][row])
    candidates = [a for a in people if a['image_id'] == image_id]
    overlap = _iou(box, np.asarray([a['bbox'] for a in candidates], np.float64).reshape(-1, 4))
    keypoints = np.zeros((fmt.num_keypoints, 3))
    keypoints[:, :2] = box[:2] + rng.uniform(0, 1, (fmt.num_keypoints, 2)) * box[2:]
    keypoints[:, 2] = 0.1
    owners.append(candidates[int(overlap.argmax())]['id'] if candidates and overlap.max() > 0.5 else None)
    if owners[-1] is not None:  # the person's keypoints (unlabelled ones at its box centre), jittered
      person = candidates[int(overlap.argmax())]
      truth = np.asarray(person['keypoints'], np.float64).reshape(-1, 3)
      labelled = truth[:, 2] > 0
      x, y, w, h = person['bbox']
      truth[~labelled, :2] = (x + w / 2, y + h / 2)
      keypoints[:, :2] = truth[:, :2] + rng.normal(0, 0.1, (fmt.num_keypoints, 2))
      keypoints[labelled, 2] = 0.9
    raw.append(
      {
        'image_id': image_id,
        'category_id': 1,
        'keypoints': keypoints.reshape(-1).tolist(),
        'bbox_score': float(gt['bbox_score'][row]),
        'area': float(box[2] * box[3] * 1.25**2),
      }
    )
  results = evaluation.topdown_postprocess(raw, fmt, nms=evaluate_lib.dataset_nms(name, 'oks'))
  metrics = heatmap_task.metrics_for(fmt, gt, results, {})
  assert 0.3 < metrics['AP'] <= 1.0
  # Several boxes per person; NMS keeps one of them (the highest box score) and drops the duplicates.
  owned = [o for o in owners if o is not None]
  assert len(owned) > len(set(owned))
  owner_of = {tuple(r['keypoints']): o for r, o in zip(raw, owners)}
  kept = [owner_of[tuple(r['keypoints'])] for r in results]
  kept_owned = [o for o in kept if o is not None]
  assert sorted(kept_owned) == sorted(set(owned))
  best = {}
  for r, o in zip(raw, owners):
    if o is not None and r['bbox_score'] > best.get(o, -1):
      best[o] = r['bbox_score']
  assert sorted(r['score'] for r, o in zip(results, kept) if o is not None) == pytest.approx(
    sorted(0.9 * score for score in best.values())
  )  # rescored: box score x mean keypoint score above 0.2
  gt_path, raw_path = tmp_path / 'gt.json', tmp_path / 'raw.json'
  gt_path.write_text(json.dumps(heatmap_task.gt_json(fmt, gt)))
  raw_path.write_text(json.dumps(raw))
  offline = _offline(capsys, name, gt_path, raw_path, '--topdown')
  assert offline == pytest.approx({m: metrics[m] for m in offline}, abs=1e-9)
