"""Evaluation: the in-training evaluator (per dataset: predict with flip test, decode, top-down rescoring and
OKS-NMS, COCO-format results, official metric, pictures) and the offline command

  python -m posebh_jax.evaluate --dataset=<name> --gt=<gt.json> --results=<results.json> [--topdown]

which prints one JSON object of summary metrics.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from posebh_jax import evaluation


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
    """Predictions for the whole eval split of `name`: COCO-format result dicts (rescored, OKS-NMS per image as
    `posebh_jax.evaluate --topdown` does), the raw top-down instances, and arrays by image id."""
    import jax
    from data_pipeline import pipeline
    from posebh_jax import codecs
    config, task = self.config, self.task
    entry = config.data.datasets[name]
    use_udp = entry.codec == 'udp'
    if name not in self._predict:
      self._predict[name] = task.predict_fn(name, config.eval_flip)
    predict = self._predict[name]
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    heat_h, heat_w = config.data.heatmap_size
    batch_size = config.eval_batch_size - config.eval_batch_size % task.groups or task.groups
    raw, by_image, crops = [], {}, []
    for batch in pipeline.make_eval_iterator(config.data, name, batch_size):
      images = jax.device_put(np.asarray(batch['image']), task.batch_sharding)
      heatmaps = np.asarray(jax.device_get(predict(variables, images)), np.float32).transpose(0, 3, 1, 2)
      coords, scores = codecs.decode(heatmaps, entry.codec)
      image_xy = codecs.heatmap_to_image(coords, np.asarray(batch['center']), np.asarray(batch['scale']),
                                         (heat_w, heat_h), use_udp)
      bbox_score = np.asarray(batch.get('bbox_score', np.ones(len(coords))), np.float64)
      box_area = np.prod(np.asarray(batch['scale'], np.float64), axis=-1)
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        image_id = int(batch['image_id'][i])
        keypoints = np.concatenate([image_xy[i], scores[i][:, None]], axis=-1)
        raw.append({'image_id': image_id, 'category_id': 1,
                    'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
                    'bbox_score': float(bbox_score[i]), 'area': float(box_area[i])})
        by_image[image_id] = keypoints
        if len(crops) < config.viz_examples:
          crops.append((np.asarray(batch['image'][i]), batch['center'][i], batch['scale'][i], image_id))
    nms = getattr(config, 'eval_nms', 'oks')
    results = evaluation.topdown_postprocess(raw, task.formats[name], nms=None if nms in (None, 'none') else nms)
    return results, {'by_image': by_image, 'crops': crops, 'raw': raw}

  def run(self, state, step: int) -> dict[str, float]:
    import jax
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
        with open(os.path.join(eval_dir, f'{name}_topdown_step{step}.json'), 'w') as f:
          json.dump(extra['raw'], f)  # raw instances: `python -m posebh_jax.evaluate --topdown` reproduces the metrics
        gt_path = os.path.join(eval_dir, f'{name}_gt.json')
        if not os.path.exists(gt_path):
          with open(gt_path, 'w') as f:
            json.dump(self.gt_json(fmt, gt), f)
      metrics = self.metrics_for(name, fmt, gt, results, extra['by_image'])
      out.update({f'eval/{name}/{k}': v for k, v in metrics.items()})
      if jax.process_index() == 0 and extra['crops']:
        self.draw(name, fmt, gt, extra, step)
    return out

  @staticmethod
  def gt_json(fmt, gt) -> dict:
    """The COCO-format ground truth written to DIR/eval (with each person's `head_size` for PCKh datasets), so
    that `python -m posebh_jax.evaluate` can evaluate the written results offline."""
    coco = gt['coco']
    if evaluation.get_evaluator(fmt.name).kind != 'pckh':
      return coco
    heads = np.asarray(gt['head_size'], np.float64)
    annotations = [dict(a, head_size=float(h)) for a, h in zip(coco['annotations'], heads)]
    return dict(coco, annotations=annotations)

  @staticmethod
  def metrics_for(name, fmt, gt, results, by_image) -> dict[str, float]:
    """The format's official metrics (`evaluation.get_evaluator`). For PCKh / PCK datasets (MPII, InterHand),
    also OKS AP/AR with the format's sigmas. Results and ground truth of the training-time evaluation keep all
    K keypoints in one 'keypoints' field."""
    evaluator = evaluation.get_evaluator(fmt.name)
    out = {}
    if evaluator.kind in ('pckh', 'pck'):
      ids = np.asarray(gt['image_ids'])
      gt_kpts = np.asarray(gt['keypoints'], np.float64)
      pred = np.stack([by_image.get(int(i), np.zeros((fmt.num_keypoints, 3)))[:, :2] for i in ids])
      if evaluator.kind == 'pckh':
        out.update(evaluator(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, np.asarray(gt['head_size'])))
      else:
        boxes = np.asarray([a['bbox'] for a in gt['coco']['annotations']], np.float64).reshape(-1, 4)
        out.update(evaluator(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, boxes))
      out.update(evaluation.evaluate_coco_keypoints(gt['coco'], results, fmt.sigmas))
    else:
      out.update(evaluator(gt['coco'], results))
    return out

  def draw(self, name, fmt, gt, extra, step):
    """Writes DIR/viz/<name>_step<step>.png: input crops with ground truth (green) and predictions (red)."""
    import cv2
    from posebh_jax import codecs
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


# METHOD.md's results table: (column title, dataset name, metric).
METHOD_TABLE_COLUMNS = (
    ('COCO AP', 'coco', 'AP'), ('test-dev', 'coco_test_dev', 'AP'), ('OCHuman', 'ochuman', 'AP'),
    ('MPII PCKh', 'mpii', 'PCKh'), ('AIC AP', 'aic', 'AP'), ('AP-10K', 'ap10k', 'AP'), ('APT-36K', 'apt36k', 'AP'),
    ('WholeBody', 'coco_wholebody', 'AP'),
)
_HEADLINE = ('PCKh', 'AUC', 'AP')  # the official metric first (MPII, InterHand also report OKS AP)
_DETAILS = (  # (metric that identifies the family, details shown after the headline)
    ('PCKh', ('PCKh@0.1', 'AP')),
    ('AUC', ('PCK', 'EPE', 'AP')),
    ('AP (E)', ('AP .5', 'AP .75', 'AR', 'AP (E)', 'AP (M)', 'AP (H)')),
    ('body AP', ('body AP', 'foot AP', 'face AP', 'lefthand AP', 'righthand AP', 'AR')),
    ('AP', ('AP .5', 'AP .75', 'AP (M)', 'AP (L)', 'AR')),
)


def _shown(metric: str, value) -> str:
  """A metric as the results table prints it: percentages with one decimal (PCKh already is one), EPE in px."""
  if value is None or not np.isfinite(value) or value < 0:
    return '-'
  if metric == 'EPE':
    return f'{value:.2f}'
  return f'{value:.1f}' if 'PCKh' in metric else f'{100 * value:.1f}'


def format_table(results: dict[str, float], model: str = 'this run') -> str:
  """The evaluation results as text: one row per dataset (headline metric -- AP, PCKh or AUC -- then the
  dataset's other summary metrics), followed by one row in the layout of METHOD.md's results table.

  Args:
    results: `{'eval/<dataset>/<metric>': value}` as `Evaluator.run` returns (AP-style values in [0, 1],
      PCKh in %); other keys are ignored.
    model: the row label of the METHOD.md-style row.
  Returns: the table as a multi-line string (percentages with one decimal; '-' for a missing value).
  """
  rows: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    parts = key.split('/', 2)
    if len(parts) == 3 and parts[0] == 'eval':
      rows.setdefault(parts[1], {})[parts[2]] = value
  lines = ['dataset'.ljust(16) + 'metric'.ljust(8) + 'value'.rjust(7) + '   others']
  for name, metrics in rows.items():
    headline = next((m for m in _HEADLINE if m in metrics), next(iter(metrics)))
    details = next((d for marker, d in _DETAILS if marker in metrics), ())
    others = '  '.join(f'{m} {_shown(m, metrics[m])}' for m in details if m in metrics and m != headline)
    lines.append(name.ljust(16) + headline.ljust(8) + _shown(headline, metrics[headline]).rjust(7) + '   ' + others)
  titles = [title for title, _, _ in METHOD_TABLE_COLUMNS]
  values = [_shown(metric, rows.get(name, {}).get(metric)) for _, name, metric in METHOD_TABLE_COLUMNS]
  lines += ['', '| model | ' + ' | '.join(titles) + ' |', '|---' * (len(titles) + 1) + '|',
            f'| {model} | ' + ' | '.join(values) + ' |']
  return '\n'.join(lines)


def main(argv=None) -> int:
  """Offline evaluation of a COCO-format result file with the dataset's official protocol; prints one JSON
  object of the summary metrics. Returns the exit status (2 with a one-line message for a user error)."""
  import argparse
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.evaluate', description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataset', required=True,
                      help=f'dataset name, one of: {", ".join(evaluation.list_evaluators())}')
  parser.add_argument('--gt', required=True, help='COCO-format ground truth json')
  parser.add_argument('--results', required=True, help='COCO-format results json')
  parser.add_argument('--topdown', action='store_true',
                      help='results are raw top-down instances (keypoints with per-keypoint scores, bbox_score, '
                           'area or bbox): apply rescoring and OKS-NMS first')
  parser.add_argument('--nms', default='oks', choices=('oks', 'soft_oks', 'none'),
                      help='NMS of --topdown: OKS-NMS 0.9 (default), soft-OKS-NMS or none')
  args = parser.parse_args(argv)
  try:
    evaluator = evaluation.get_evaluator(args.dataset)
    gt = evaluation.load_json(args.gt, 'ground truth')
    results = evaluation.load_json(args.results, 'results')
    if args.topdown:
      results = evaluation.topdown_postprocess(results, args.dataset, nms=None if args.nms == 'none' else args.nms)
    metrics = evaluator.evaluate(gt, results)
  except (ValueError, FileNotFoundError) as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  except (KeyError, TypeError, IndexError, AttributeError) as e:
    print(f'error: {args.gt} / {args.results} are not COCO-format keypoint files for {args.dataset} '
          f'({type(e).__name__}: {e}); check their layout', file=sys.stderr)
    return 2
  print(json.dumps({name: float(value) for name, value in metrics.items()}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
