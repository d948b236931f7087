"""Evaluation: the in-training evaluator (per dataset: predict with flip test, decode, COCO-format results,
official metric, pictures) and the offline command

  python -m posebh_jax.evaluate --dataset=<name> --gt=<gt.json> --results=<results.json> [--topdown]

which prints one JSON object of summary metrics.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import cv2
import jax
import numpy as np

from posebh_jax import codecs
from posebh_jax import evaluation
from posebh_jax import sharding as sharding_lib
from posebh_jax import skeletons


def rescore(keypoint_scores: np.ndarray, bbox_score: np.ndarray, threshold: float = 0.2) -> np.ndarray:
  """Top-down instance score: box score × mean of the keypoint scores above `threshold` (N,K),(N,) → (N,)."""
  above = keypoint_scores > threshold
  mean = np.where(above.any(-1), (keypoint_scores * above).sum(-1) / np.maximum(above.sum(-1), 1), 0.0)
  return bbox_score * mean


class Evaluator:
  """Runs every eval dataset of the config on a train state; returns `{'eval/<name>/<metric>': value}`."""

  def __init__(self, config, task, workdir: str):
    self.config = config
    self.task = task
    self.workdir = workdir
    names = tuple(config.eval_datasets) or tuple(config.data.order)
    self.names = names
    self._predict = {}
    self._ground_truth = {}

  def _gt(self, name):
    from data_pipeline import pipeline
    if name not in self._ground_truth:
      gt = pipeline.eval_ground_truth(self.config.data, name)
      gt['coco'] = {key: gt[key] for key in ('images', 'annotations', 'categories')}
      self._ground_truth[name] = gt
    return self._ground_truth[name]

  def predict_dataset(self, state, name: str) -> tuple[list[dict], dict]:
    """Predictions for the whole eval split of `name`: COCO-format result dicts and arrays by image id."""
    from data_pipeline import pipeline
    config, task = self.config, self.task
    entry = config.data.datasets[name]
    use_udp = entry.codec == 'udp'
    if name not in self._predict:
      self._predict[name] = task.predict_fn(name, config.eval_flip)
    predict = self._predict[name]
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    heat_h, heat_w = config.data.heatmap_size
    batch_size = config.eval_batch_size - config.eval_batch_size % task.groups or task.groups
    results, by_image, crops = [], {}, []
    for batch in pipeline.make_eval_iterator(config.data, name, batch_size):
      images = jax.device_put(np.asarray(batch['image']), task.batch_sharding)
      heatmaps = np.asarray(jax.device_get(predict(variables, images)), np.float32).transpose(0, 3, 1, 2)
      coords, scores = codecs.decode(heatmaps, entry.codec)
      image_xy = codecs.heatmap_to_image(coords, np.asarray(batch['center']), np.asarray(batch['scale']),
                                         (heat_w, heat_h), use_udp)
      bbox_score = np.asarray(batch.get('bbox_score', np.ones(len(coords))), np.float64)
      instance_scores = rescore(scores, bbox_score)
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        image_id = int(batch['image_id'][i])
        keypoints = np.concatenate([image_xy[i], scores[i][:, None]], axis=-1)
        results.append({'image_id': image_id, 'category_id': 1,
                        'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
                        'score': float(instance_scores[i])})
        by_image[image_id] = keypoints
        if len(crops) < config.viz_examples:
          crops.append((np.asarray(batch['image'][i]), batch['center'][i], batch['scale'][i], image_id))
    return results, {'by_image': by_image, 'crops': crops}

  def run(self, state, step: int) -> dict[str, float]:
    out = {}
    for name in self.names:
      results, extra = self.predict_dataset(state, name)
      fmt = self.task.formats[name]
      gt = self._gt(name)
      eval_dir = os.path.join(self.workdir, 'eval')
      if jax.process_index() == 0:
        os.makedirs(eval_dir, exist_ok=True)
        with open(os.path.join(eval_dir, f'{name}_results_step{step}.json'), 'w') as f:
          json.dump(results, f)
        gt_path = os.path.join(eval_dir, f'{name}_gt.json')
        if not os.path.exists(gt_path):
          with open(gt_path, 'w') as f:
            json.dump(gt['coco'], f)
      metrics = self.metrics_for(name, fmt, gt, results, extra['by_image'])
      out.update({f'eval/{name}/{k}': v for k, v in metrics.items()})
      if jax.process_index() == 0 and extra['crops']:
        self.draw(name, fmt, gt, extra, step)
    return out

  def metrics_for(self, name, fmt, gt, results, by_image) -> dict[str, float]:
    """The format's official metric (PCKh for MPII) plus OKS AP/AR with the format's sigmas. Results and ground
    truth of the training-time evaluation keep all K keypoints in one 'keypoints' field."""
    evaluator = evaluation.get_evaluator(fmt.name)
    out = {}
    if evaluator.kind == 'pckh':
      ids = np.asarray(gt['image_ids'])
      gt_kpts = np.asarray(gt['keypoints'], np.float64)
      pred = np.stack([by_image.get(int(i), np.zeros((fmt.num_keypoints, 3)))[:, :2] for i in ids])
      out.update(evaluator(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, np.asarray(gt['head_size'])))
    out.update(evaluation.evaluate_coco_keypoints(gt['coco'], results, fmt.sigmas,
                                                  use_area=getattr(evaluator, 'use_area', True)))
    return out

  def draw(self, name, fmt, gt, extra, step):
    """Writes DIR/viz/<name>_step<step>.png: input crops with ground truth (green) and predictions (red)."""
    gt_by_image = {}
    for ann in gt['coco']['annotations']:
      gt_by_image.setdefault(ann['image_id'], np.asarray(ann['keypoints'], np.float64).reshape(-1, 3))
    image_h, image_w = self.config.data.image_size
    use_udp = self.config.data.datasets[name].codec == 'udp'
    tiles = []
    for crop, center, scale, image_id in extra['crops']:
      matrix = codecs.get_warp_matrix(np.asarray(center), np.asarray(scale), 0.0, (image_w, image_h), use_udp)
      canvas = cv2.resize(np.ascontiguousarray(crop), (image_w * 2, image_h * 2), interpolation=cv2.INTER_LINEAR)
      for keypoints, colour in ((gt_by_image.get(image_id), (0, 200, 0)), (extra['by_image'][image_id], (230, 0, 0))):
        if keypoints is None:
          continue
        xy = codecs.transform_points(keypoints[:, :2], matrix) * 2
        shown = keypoints[:, 2] > (0 if colour[1] else 0.2)
        for a, b in fmt.links:
          if shown[a] and shown[b]:
            cv2.line(canvas, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), colour, 1, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
          cv2.circle(canvas, tuple(int(v) for v in xy[k]), 2, colour, -1, cv2.LINE_AA)
      tiles.append(canvas)
    grid = np.concatenate(tiles, axis=1)
    viz_dir = os.path.join(self.workdir, 'viz')
    os.makedirs(viz_dir, exist_ok=True)
    cv2.imwrite(os.path.join(viz_dir, f'{name}_step{step}.png'), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def format_table(results: dict[str, float]) -> str:
  """A table with one row per dataset: AP (or PCKh) and the other summary metrics."""
  rows = {}
  for key, value in results.items():
    _, name, metric = key.split('/', 2)
    rows.setdefault(name, {})[metric] = value
  columns = ['AP', 'AP .5', 'AP .75', 'AR', 'PCKh', 'PCKh@0.1']
  lines = ['dataset'.ljust(16) + ''.join(c.rjust(10) for c in columns)]
  for name, metrics in rows.items():
    lines.append(name.ljust(16) + ''.join(
        (f'{100 * metrics[c]:.1f}' if c in metrics and 'PCKh' not in c else
         f'{metrics[c]:.1f}' if c in metrics else '-').rjust(10) for c in columns))
  return '\n'.join(lines)


def main(argv=None) -> int:
  """Offline evaluation of a COCO-format result file with the dataset's official protocol."""
  import argparse
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.evaluate', description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataset', required=True, help='skeleton format name, e.g. coco, crowdpose, coco_wholebody')
  parser.add_argument('--gt', required=True, help='COCO-format ground truth json')
  parser.add_argument('--results', required=True, help='COCO-format results json')
  parser.add_argument('--topdown', action='store_true',
                      help='results are raw top-down instances: apply rescoring and OKS-NMS first')
  args = parser.parse_args(argv)
  try:
    fmt = skeletons.get_format(args.dataset)
    for path in (args.gt, args.results):
      if not os.path.exists(path):
        raise FileNotFoundError(f'{path} does not exist; pass an existing json file')
    with open(args.results) as f:
      results = json.load(f)
    if args.topdown:
      if not hasattr(evaluation, 'topdown_postprocess'):
        raise ValueError('--topdown is not available in this version; pass already rescored results')
      results = evaluation.topdown_postprocess(results, fmt)
    metrics = evaluation.get_evaluator(fmt.name)(args.gt, results)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(metrics))
  return 0


if __name__ == '__main__':
  sys.exit(main())
