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


NMS_CHOICES = ('oks', 'soft_oks', 'none')


def dataset_nms(format_name: str, nms: str = 'oks') -> str | None:
  """The NMS of a dataset's top-down evaluation (`topdown_postprocess`'s `nms`): `nms` ('oks', 'soft_oks' or
  'none') for the OKS-AP datasets; none for the PCKh / PCK ones, whose protocols score every ground-truth person
  once (mmpose's MPII and InterHand evaluations apply no NMS)."""
  if nms not in NMS_CHOICES:
    raise ValueError(f"eval NMS must be one of {', '.join(NMS_CHOICES)}, got {nms!r}")
  if nms == 'none' or evaluation.get_evaluator(format_name).kind in ('pckh', 'pck'):
    return None
  return nms


class Evaluator:
  """Runs every eval dataset of the config on a train state; returns `{'eval/<name>/<metric>': value}`.

  Works on the synthetic validation split and on real eval splits alike: one eval example per person
  instance (ground-truth or detector box), results carry the batch's `category_id` (AP-10K / APT-36K
  species), PCKh / PCK predictions are paired with the ground truth by `instance_id`, and the raw instances
  go through `evaluation.topdown_postprocess` (rescoring, then `config.eval_nms`) exactly as
  `python -m posebh_jax.evaluate --topdown` does.
  """

  def __init__(self, config, task, workdir: str):
    self.config = config
    self.task = task
    self.workdir = workdir
    names = tuple(config.eval_datasets) or tuple(config.data.order)
    self.names = names
    self.nms = config.get('eval_nms', 'oks')
    if self.nms not in NMS_CHOICES:
      from posebh_jax.errors import UserError
      raise UserError(f"config.eval_nms is '{self.nms}'; use one of {', '.join(NMS_CHOICES)}")
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
    """Predictions for the whole eval split of `name`: the COCO-format results (`topdown_postprocess` of the
    raw instances: rescoring and per-image NMS, see `dataset_nms`) and {'raw': the raw top-down instances,
    'by_instance': {instance_id: (K, 3) keypoints}, 'crops': up to `viz_examples` (crop, center, scale,
    image_id, keypoints)}."""
    from data_pipeline import pipeline
    from posebh_jax import codecs
    from posebh_jax import sharding as sharding_lib
    config, task = self.config, self.task
    entry = config.data.datasets[name]
    fmt = task.formats[name]
    per_person = evaluation.get_evaluator(fmt.name).kind in ('pckh', 'pck')
    use_udp = entry.codec == 'udp'
    if name not in self._predict:
      self._predict[name] = task.predict_fn(name, config.eval_flip)
    predict = self._predict[name]
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    heat_h, heat_w = config.data.heatmap_size
    batch_size = config.eval_batch_size - config.eval_batch_size % task.groups or task.groups
    raw, by_instance, crops = [], {}, []
    progress = _Progress(f'eval {name}', len(self._gt(name)['instance_ids']))
    for batch in pipeline.make_eval_iterator(config.data, name, batch_size):
      progress.update(int(np.sum(batch['valid'])))
      # Every process reads the whole split; with several processes each computes its shards and all receive
      # the whole batch's heatmaps.
      images = sharding_lib.put_global(batch['image'], task.batch_sharding)
      heatmaps = sharding_lib.fetch_global(predict(variables, images)).astype(np.float32).transpose(0, 3, 1, 2)
      coords, scores = codecs.decode(heatmaps, entry.codec)
      image_xy = codecs.heatmap_to_image(coords, np.asarray(batch['center']), np.asarray(batch['scale']),
                                         (heat_w, heat_h), use_udp)
      count = len(coords)
      bbox_score = np.asarray(batch.get('bbox_score', np.ones(count)), np.float64)
      category_ids = np.asarray(batch.get('category_id', np.ones(count)), np.int64)
      instance_ids = np.asarray(batch['instance_id'], np.int64)
      box_area = np.prod(np.asarray(batch['scale'], np.float64), axis=-1)  # the padded box, as mmpose's area
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        image_id, instance_id = int(batch['image_id'][i]), int(instance_ids[i])
        keypoints = np.concatenate([image_xy[i], scores[i][:, None]], axis=-1)
        instance = {'image_id': image_id, 'category_id': int(category_ids[i]),
                    'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
                    'bbox_score': float(bbox_score[i]), 'area': float(box_area[i])}
        if per_person:  # ground-truth boxes: the annotation id pairs results with people offline
          instance['ann_id'] = instance_id
        raw.append(instance)
        by_instance[instance_id] = keypoints
        if len(crops) < config.viz_examples:
          crops.append((np.asarray(batch['image'][i]), batch['center'][i], batch['scale'][i], image_id, keypoints))
    progress.finish()
    results = evaluation.topdown_postprocess(raw, fmt, nms=dataset_nms(fmt.name, self.nms))
    return results, {'by_instance': by_instance, 'crops': crops, 'raw': raw}

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
      metrics = self.metrics_for(name, fmt, gt, results, extra['by_instance'])
      out.update({f'eval/{name}/{k}': v for k, v in metrics.items()})
      if jax.process_index() == 0 and extra['crops']:
        self.draw(name, fmt, gt, extra, step)
    if self.config.get('viz_formats', False) and jax.process_count() == 1:
      self.draw_formats(state, step)
    return out

  def draw_formats(self, state, step):
    """DIR/viz/formats_step<step>.png: every head's skeleton on the same validation images (posebh_jax.viz.formats).
    A failure is logged, never raised: a picture must not stop a run."""
    from absl import logging
    from posebh_jax.viz import formats as formats_viz
    try:
      formats_viz.draw_state(self.config, state, os.path.join(self.workdir, 'viz', f'formats_step{step}.png'))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('formats picture at step %d failed: %s', step, e)

  @staticmethod
  def gt_json(fmt, gt) -> dict:
    """The COCO-format ground truth written to DIR/eval (PCKh datasets: each person's `head_size`, where the
    annotation lacks it), so that `python -m posebh_jax.evaluate` can evaluate the written results offline."""
    coco = gt['coco']
    if evaluation.get_evaluator(fmt.name).kind != 'pckh':
      return coco
    heads = dict(zip(_instance_ids(gt).tolist(), np.asarray(gt['head_size'], np.float64).tolist()))
    annotations = [a if 'head_size' in a or a['id'] not in heads else dict(a, head_size=heads[a['id']])
                   for a in coco['annotations']]
    return dict(coco, annotations=annotations)

  @staticmethod
  def metrics_for(name, fmt, gt, results, by_instance) -> dict[str, float]:
    """The format's official metrics (`evaluation.get_evaluator`). For PCKh / PCK datasets (MPII, InterHand),
    the predictions `by_instance` ({instance id: (K, 3)}) are paired with gt's rows by `gt['instance_ids']`
    (several people per image), and OKS AP/AR with the format's sigmas is added. Results and ground truth of
    the training-time evaluation keep all K keypoints in one 'keypoints' field (COCO-WholeBody: 133)."""
    evaluator = evaluation.get_evaluator(fmt.name)
    out = {}
    if evaluator.kind in ('pckh', 'pck'):
      ids = _instance_ids(gt)
      gt_kpts = np.asarray(gt['keypoints'], np.float64)
      missing = np.zeros((fmt.num_keypoints, 3))
      pred = np.stack([by_instance.get(int(i), missing)[:, :2] for i in ids]).reshape(gt_kpts.shape[:2] + (2,))
      if evaluator.kind == 'pckh':
        out.update(evaluator(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, np.asarray(gt['head_size'])))
      else:
        annotations = {a['id']: a for a in gt['coco']['annotations']}
        boxes = np.asarray([annotations[int(i)]['bbox'] for i in ids], np.float64).reshape(-1, 4)
        out.update(evaluator(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, boxes))
      out.update(evaluation.evaluate_coco_keypoints(gt['coco'], results, fmt.sigmas))
    else:
      out.update(evaluator(gt['coco'], results))
    return out

  def draw(self, name, fmt, gt, extra, step):
    """Writes DIR/viz/<name>_step<step>.png: input crops with the image's ground-truth people (green) and the
    crop's prediction (red)."""
    import cv2
    from posebh_jax import codecs
    gt_by_image = {}
    for ann in gt['coco']['annotations']:
      gt_by_image.setdefault(ann['image_id'], []).append(np.asarray(ann['keypoints'], np.float64).reshape(-1, 3))
    image_h, image_w = self.config.data.image_size
    use_udp = self.config.data.datasets[name].codec == 'udp'
    tiles = []
    for crop, center, scale, image_id, predicted in extra['crops']:
      matrix = codecs.get_warp_matrix(np.asarray(center), np.asarray(scale), 0.0, (image_w, image_h), use_udp)
      canvas = cv2.resize(np.ascontiguousarray(crop), (image_w * 2, image_h * 2), interpolation=cv2.INTER_LINEAR)
      people = [(k, (0, 200, 0)) for k in gt_by_image.get(image_id, []) if k.shape[0] == fmt.num_keypoints]
      for keypoints, colour in people + [(predicted, (230, 0, 0))]:
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


class _Progress:
  """Progress of a long evaluation on process 0: a line every `every` seconds (done/total, rate, ETA) and a
  closing line when it took that long; nothing for a short one (the demo's)."""

  def __init__(self, label: str, total: int, every: float = 30.0):
    import time
    self.label, self.total, self.every, self.done = label, total, every, 0
    self.clock = time.perf_counter
    self.start = self.last = self.clock()

  def _say(self, text: str):
    import jax
    if jax.process_index() == 0:
      print(f'{self.label}: {text}', flush=True)

  def update(self, count: int):
    self.done += count
    now = self.clock()
    if now - self.last >= self.every and self.done < self.total:
      self.last = now
      rate = self.done / (now - self.start)
      self._say(f'{self.done}/{self.total} instances, {rate:.0f}/s, ETA {(self.total - self.done) / rate:.0f} s')

  def finish(self):
    seconds = self.clock() - self.start
    if seconds >= self.every:
      self._say(f'{self.done} instances in {seconds:.0f} s ({self.done / seconds:.0f}/s)')


def _instance_ids(gt) -> np.ndarray:
  """The annotation id of each row of `eval_ground_truth`'s arrays (older dicts without 'instance_ids': the
  annotations in order)."""
  if 'instance_ids' in gt:
    return np.asarray(gt['instance_ids'], np.int64)
  return np.asarray([a['id'] for a in gt['coco']['annotations']], np.int64)


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
  parser.add_argument('--nms', default=None, choices=NMS_CHOICES,
                      help='NMS of --topdown: OKS-NMS 0.9, soft-OKS-NMS or none; default as training-time '
                           'evaluation with config.eval_nms=oks: oks for OKS-AP datasets, none for PCKh / PCK ones')
  args = parser.parse_args(argv)
  try:
    evaluator = evaluation.get_evaluator(args.dataset)
    gt = evaluation.load_json(args.gt, 'ground truth')
    results = evaluation.load_json(args.results, 'results')
    if args.topdown:
      nms = dataset_nms(args.dataset) if args.nms is None else (None if args.nms == 'none' else args.nms)
      results = evaluation.topdown_postprocess(results, args.dataset, nms=nms)
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
