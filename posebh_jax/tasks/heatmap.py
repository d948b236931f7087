"""2D top-down heatmap regression (ViTPose / ViTPose++ / PoseBH datasets): Gaussian heatmap targets encoded by the
dataset's codec, a deconvolution head, the target-weighted joints MSE, flip test, and the dataset's official
top-down evaluation (rescoring, OKS-NMS, COCO-format results, OKS AP / PCKh / PCK) with pictures."""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline import pipeline
from posebh_jax import codecs
from posebh_jax import evaluation
from posebh_jax import flops as flops_lib
from posebh_jax import geometry
from posebh_jax.errors import UserError
from posebh_jax.evaluation.registry import dataset_nms
from posebh_jax.losses import joints_mse
from posebh_jax.models.heatmap_head import HeatmapHeadSpec
from posebh_jax.tasks import base


class HeatmapTask(base.Task):
  """A 2D keypoint dataset trained on heatmaps (one head per dataset, K channels)."""

  kind = 'heatmap'

  def __init__(self, name: str, config):
    super().__init__(name, config)
    self.codec = codecs.get_codec(self.entry.codec)
    heat_h, heat_w = config.data.heatmap_size
    self.heatmap_size_wh = (heat_w, heat_h)
    self._ground_truth = None

  @classmethod
  def validate(cls, config, name: str) -> None:
    entry = config.data.datasets[name]
    try:
      codecs.get_codec(entry.codec)
    except ValueError as e:
      raise UserError(f'config.data.datasets.{name}.codec: {e}') from None
    heat_h, heat_w = config.data.heatmap_size
    stride = 2**config.model.head_num_deconv
    grid = flops_lib.token_grid(config.model, config.data.image_size)
    if (grid[0] * stride, grid[1] * stride) != (heat_h, heat_w):
      raise UserError(
        f'config.data.heatmap_size {tuple(config.data.heatmap_size)} does not match the model output '
        f'{(grid[0] * stride, grid[1] * stride)} for image_size {tuple(config.data.image_size)}'
      )

  # ------------------------------------------------------------------------------------------------ training
  def batch_fields(self):
    heat_h, heat_w = self.config.data.heatmap_size
    k = self.num_keypoints
    return {'heatmaps': ((heat_h, heat_w, k), np.float32), 'target_weights': ((k,), np.float32)}

  def train_transform(self):
    return pipeline.train_transform(self.config.data, self.name)

  def head_spec(self) -> HeatmapHeadSpec:
    model = self.config.model
    return HeatmapHeadSpec(self.num_keypoints, model.head_channels, model.head_num_deconv, model.head_deconv_init_std)

  def loss(self, output, batch, step=None):
    del step
    return joints_mse(output, batch['heatmaps'], batch['target_weights']), {}

  @property
  def head_format(self):
    """The skeleton of the head's channels (here the dataset's; the distillation student's: 'unified21')."""
    return self.format

  def predict(self, apply, variables, images, flip: bool):
    """Heatmaps (n, h, w, K_head); with `flip`, averaged with the mirrored images' heatmaps mapped back through
    the head format's flip pairs (flip test)."""
    if not flip:
      return apply(variables, images)
    # One pass over images and their mirror images (half the program to compile of two passes).
    both = apply(variables, jnp.concatenate([images, images[:, :, ::-1]]))
    heatmaps, flipped = both[: images.shape[0]], both[images.shape[0] :]
    flipped = flipped[:, :, ::-1][..., np.asarray(self.head_format.flip_index)]
    if self.codec.flip_shift:  # the non-UDP flip is off by one pixel; the reference pipelines shift it back
      flipped = jnp.concatenate([flipped[:, :, :1], flipped[:, :, :-1]], axis=2)
    return 0.5 * (heatmaps + flipped)

  def summary_metrics(self):
    return ('AP', 'PCKh')

  def to_format(self, coords: np.ndarray, scores: np.ndarray, format_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded head output → keypoints of `format_name` (one of `output_formats`).

    Args: coords (n, K_head, 2) (image px) and scores (n, K_head) of the head's keypoints.
    Returns (coords (n, K_fmt, 2), scores (n, K_fmt)); here the head predicts the dataset's format itself."""
    if format_name != self.format.name:
      raise UserError(f"dataset '{self.name}' predicts {self.format.name}, not {format_name}")
    return coords, scores

  # ---------------------------------------------------------------------------------------------- evaluation
  def ground_truth(self) -> dict:
    """The eval split's ground truth (`pipeline.eval_ground_truth`) with its COCO-format part under 'coco'."""
    if self._ground_truth is None:
      gt = pipeline.eval_ground_truth(self.config.data, self.name)
      gt['coco'] = {key: gt[key] for key in ('images', 'annotations', 'categories')}
      self._ground_truth = gt
    return self._ground_truth

  def head_keypoint_batches(self, predict, batch_size: int):
    """Yields (eval batch, keypoints float64 (n, K_head, 3) of the head's channels: x, y in image px and the
    heatmap-peak score) over the eval split (`pipeline.make_eval_iterator` order, padding rows included: see the
    batch's `valid`); `predict` is a host function images → heatmaps (`EvalContext.predict`)."""
    for batch in pipeline.make_eval_iterator(self.config.data, self.name, batch_size):
      yield batch, self.decode_to_image(np.asarray(predict(batch['image'])), batch['center'], batch['scale'])

  def decode_to_image(self, heatmaps, center, scale) -> np.ndarray:
    """Head heatmaps (n, h, w, K_head) of crops with `center`, `scale` (n, 2) → float64 (n, K_head, 3): x, y in
    image px and the heatmap-peak score."""
    coords, scores = self.codec.decode(np.asarray(heatmaps, np.float32).transpose(0, 3, 1, 2))
    image_xy = self.codec.to_image(coords, np.asarray(center), np.asarray(scale), self.heatmap_size_wh)
    return np.concatenate([image_xy, np.asarray(scores, np.float64)[..., None]], axis=-1)

  def keypoint_batches(self, predict, batch_size: int):
    """`head_keypoint_batches` read in the dataset's format (`to_format`): (eval batch, float64 (n, K, 3))."""
    for batch, keypoints in self.head_keypoint_batches(predict, batch_size):
      xy, score = self.to_format(keypoints[..., :2], keypoints[..., 2], self.format.name)
      yield batch, np.concatenate([xy, score[..., None]], axis=-1)

  def predict_split(self, context: base.EvalContext) -> tuple[list[dict], dict]:
    """Predictions for the whole eval split: the COCO-format results (`topdown_postprocess` of the raw instances:
    rescoring and per-image NMS, see `dataset_nms`) and {'raw': the raw top-down instances, 'by_instance':
    {instance_id: (K, 3) keypoints}, 'crops': up to `viz_examples` (crop, center, scale, image_id, keypoints)}."""
    config = self.config
    per_person = evaluation.get_evaluator(self.format.name).scores_each_person
    raw, by_instance, crops = [], {}, []
    progress = Progress(f'eval {self.name}', len(self.ground_truth()['instance_ids']))
    for batch, predicted in self.keypoint_batches(context.predict, context.batch_size):
      progress.update(int(np.sum(batch['valid'])))
      count = len(predicted)
      bbox_score = np.asarray(batch.get('bbox_score', np.ones(count)), np.float64)
      category_ids = np.asarray(batch.get('category_id', np.ones(count)), np.int64)
      instance_ids = np.asarray(batch['instance_id'], np.int64)
      box_area = np.prod(np.asarray(batch['scale'], np.float64), axis=-1)  # the padded box, as mmpose's area
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        image_id, instance_id = int(batch['image_id'][i]), int(instance_ids[i])
        keypoints = predicted[i]
        instance = {
          'image_id': image_id,
          'category_id': int(category_ids[i]),
          'keypoints': [round(float(v), 3) for v in keypoints.reshape(-1)],
          'bbox_score': float(bbox_score[i]),
          'area': float(box_area[i]),
        }
        if per_person:  # ground-truth boxes: the annotation id pairs results with people offline
          instance['ann_id'] = instance_id
        raw.append(instance)
        by_instance[instance_id] = keypoints
        if len(crops) < config.viz_examples:
          crops.append((np.asarray(batch['image'][i]), batch['center'][i], batch['scale'][i], image_id, keypoints))
    progress.finish()
    results = evaluation.topdown_postprocess(raw, self.format, nms=dataset_nms(self.format.name, config.eval_nms))
    return results, {'by_instance': by_instance, 'crops': crops, 'raw': raw}

  def evaluate(self, context: base.EvalContext) -> dict[str, float]:
    """Predicts the eval split, writes `eval/<name>_results_step<step>.json` (COCO format, after rescoring and
    NMS), `eval/<name>_topdown_step<step>.json` (the raw instances, which `python -m posebh_jax.evaluate --topdown`
    turns into the same metrics) and `eval/<name>_gt.json`, draws `viz/<name>_step<step>.png`; returns the
    dataset's official metrics."""
    results, extra = self.predict_split(context)
    gt = self.ground_truth()
    name, step = self.name, context.step
    if context.write_files:
      eval_dir = os.path.join(context.workdir, 'eval')
      os.makedirs(eval_dir, exist_ok=True)
      with open(os.path.join(eval_dir, f'{name}_results_step{step}.json'), 'w') as f:
        json.dump(results, f)
      with open(os.path.join(eval_dir, f'{name}_topdown_step{step}.json'), 'w') as f:
        json.dump(extra['raw'], f)
      gt_path = os.path.join(eval_dir, f'{name}_gt.json')
      if not os.path.exists(gt_path):
        with open(gt_path, 'w') as f:
          json.dump(gt_json(self.format, gt), f)
    metrics = metrics_for(self.format, gt, results, extra['by_instance'])
    if context.write_files and extra['crops']:
      self.draw(gt, extra['crops'], os.path.join(context.workdir, 'viz', f'{name}_step{step}.png'))
    return metrics

  def draw(self, gt, crops, path: str):
    """Writes `path`: input crops with the image's ground-truth people (green) and the crop's prediction (red)."""
    fmt = self.format
    gt_by_image = {}
    for ann in gt['coco']['annotations']:
      gt_by_image.setdefault(ann['image_id'], []).append(np.asarray(ann['keypoints'], np.float64).reshape(-1, 3))
    image_h, image_w = self.config.data.image_size
    tiles = []
    for crop, center, scale, image_id, predicted in crops:
      matrix = geometry.get_warp_matrix(
        np.asarray(center), np.asarray(scale), 0.0, (image_w, image_h), self.codec.use_udp
      )
      canvas = cv2.resize(np.ascontiguousarray(crop), (image_w * 2, image_h * 2), interpolation=cv2.INTER_LINEAR)
      people = [(k, (0, 200, 0)) for k in gt_by_image.get(image_id, []) if k.shape[0] == fmt.num_keypoints]
      for keypoints, colour in people + [(predicted, (230, 0, 0))]:
        xy = geometry.transform_points(keypoints[:, :2], matrix) * 2
        shown = keypoints[:, 2] > (0 if colour[1] else 0.2)
        for a, b in fmt.links:
          if shown[a] and shown[b]:
            cv2.line(canvas, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), colour, 1, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
          cv2.circle(canvas, tuple(int(v) for v in xy[k]), 2, colour, -1, cv2.LINE_AA)
      tiles.append(canvas)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR))


def gt_json(fmt, gt) -> dict:
  """The COCO-format ground truth written to DIR/eval (PCKh datasets: each person's `head_size`, where the
  annotation lacks it), so that `python -m posebh_jax.evaluate` can evaluate the written results offline."""
  coco = gt['coco']
  if not evaluation.get_evaluator(fmt.name).needs_head_size:
    return coco
  heads = dict(zip(instance_ids(gt).tolist(), np.asarray(gt['head_size'], np.float64).tolist()))
  annotations = [
    a if 'head_size' in a or a['id'] not in heads else dict(a, head_size=heads[a['id']]) for a in coco['annotations']
  ]
  return dict(coco, annotations=annotations)


def metrics_for(fmt, gt, results, by_instance: Mapping[int, np.ndarray]) -> dict[str, float]:
  """The format's official metrics (`evaluation.get_evaluator`). For datasets that score each ground-truth person
  (PCKh / PCK: MPII, InterHand), the predictions `by_instance` ({instance id: (K, 3)}) are paired with gt's rows by
  `gt['instance_ids']` (several people per image), and OKS AP/AR with the format's sigmas is added. Results and
  ground truth of the training-time evaluation keep all K keypoints in one 'keypoints' field (COCO-WholeBody: 133)."""
  evaluator = evaluation.get_evaluator(fmt.name)
  if not evaluator.scores_each_person:
    return dict(evaluator(gt['coco'], results))
  ids = instance_ids(gt)
  gt_kpts = np.asarray(gt['keypoints'], np.float64)
  missing = np.zeros((fmt.num_keypoints, 3))
  pred = np.stack([by_instance.get(int(i), missing)[:, :2] for i in ids]).reshape(gt_kpts.shape[:2] + (2,))
  annotations = {a['id']: a for a in gt['coco']['annotations']}
  people = [annotations.get(int(i), {}) for i in ids]
  out = dict(evaluator.evaluate_people(pred, gt_kpts, people, gt))
  out.update(evaluation.evaluate_coco_keypoints(gt['coco'], results, fmt.sigmas))
  return out


def instance_ids(gt) -> np.ndarray:
  """The annotation id of each row of `eval_ground_truth`'s arrays (older dicts without 'instance_ids': the
  annotations in order)."""
  if 'instance_ids' in gt:
    return np.asarray(gt['instance_ids'], np.int64)
  return np.asarray([a['id'] for a in gt['coco']['annotations']], np.int64)


class Progress:
  """Progress of a long evaluation on process 0: a line every `every` seconds (done/total, rate and ETA) and a
  closing line when it took that long; nothing for a short one (the demo's)."""

  def __init__(self, label: str, total: int, every: float = 30.0):
    self.label, self.total, self.every, self.done = label, total, every, 0
    self.clock = time.perf_counter
    self.start = self.last = self.clock()

  def _say(self, text: str):
    if jax.process_index() == 0:
      print(f'{self.label}: {text}', flush=True)

  def update(self, count: int):
    """Counts `count` more instances; prints a line when `every` seconds passed since the last."""
    self.done += count
    now = self.clock()
    if now - self.last >= self.every and self.done < self.total:
      self.last = now
      rate = self.done / (now - self.start)
      self._say(f'{self.done}/{self.total} instances, {rate:.0f}/s, ETA {(self.total - self.done) / rate:.0f} s')

  def finish(self):
    """Prints the closing line when the evaluation took at least `every` seconds."""
    seconds = self.clock() - self.start
    if seconds >= self.every:
      self._say(f'{self.done} instances in {seconds:.0f} s ({self.done / seconds:.0f}/s)')
