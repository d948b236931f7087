"""A second task that lives outside the library, to show that the task interface is enough to add one: direct
keypoint-coordinate regression (a pooled-feature head predicting each keypoint's crop position) with a weighted L1
loss, evaluated by the mean end-point error in image pixels.

It is picked by module path (`config.data.datasets.<name>.task = 'tests.toy_regression_task'`), and this file is
also a config file: `--config=tests/toy_regression_task.py` trains the tiny demo's COCO and MPII heatmap datasets
together with `coco_regression`, a regression dataset on the synthetic COCO-format examples, in one batch.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import common, demo
from data_pipeline import pipeline
from data_pipeline import transforms
from posebh_jax import geometry
from posebh_jax.tasks import base


class RegressionHead(nn.Module):
  """Mean-pooled features (n, h, w, D) → keypoint positions (n, K, 2) in [0, 1] crop coordinates (x / W, y / H)."""

  num_keypoints: int
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    del train
    pooled = jnp.mean(features, axis=(1, 2)).astype(self.dtype)
    hidden = nn.gelu(nn.Dense(64, dtype=self.dtype, param_dtype=self.param_dtype, name='hidden')(pooled))
    out = nn.Dense(2 * self.num_keypoints, dtype=self.dtype, param_dtype=self.param_dtype, name='out')(hidden)
    return nn.sigmoid(out.reshape(-1, self.num_keypoints, 2)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class RegressionHeadSpec:
  """The model's side of the task: builds `RegressionHead`; its heads never run stacked."""

  num_keypoints: int
  stack_key = None

  def build(self, dtype, param_dtype, name):
    return RegressionHead(self.num_keypoints, dtype, param_dtype, name=name)

  def forward_flops(self, width: int, grid_hw) -> float:
    return 2.0 * (width * 64 + 64 * 2 * self.num_keypoints)


class RegressionTransform(transforms.TopDownTrainTransform):
  """Record → {'image', 'coords' float32 (K, 2) in [0, 1] crop coordinates, 'coord_weights' float32 (K,)}: the
  heatmap task's crop and augmentation, with the warped keypoints themselves as the target."""

  def random_map(self, element, rng):
    keypoints = np.asarray(element[self.keypoints_key], np.float32)
    center, scale, rotation, flip = self.sample_crop(keypoints, element['bbox'], rng)
    matrix = transforms.crop_matrix(center, scale, rotation, flip, 0, self.output_size_wh, False)
    crop = transforms.decode_and_crop(
      element['image'], matrix, self.output_size_wh, self.reduced_decode, self.fast_decode
    )
    warped = transforms.warp_keypoints(keypoints, matrix, self.output_size_wh, self.flip_index if flip else None)
    size = np.asarray(self.output_size_wh, np.float32)
    return {
      'image': crop,
      'coords': (warped[:, :2] / size).astype(np.float32),
      'coord_weights': (warped[:, 2] > 0).astype(np.float32),
    }


class Task(base.Task):
  """Keypoint regression on a 2D keypoint dataset."""

  kind = 'tests.toy_regression_task'

  def batch_fields(self):
    k = self.num_keypoints
    return {'coords': ((k, 2), np.float32), 'coord_weights': ((k,), np.float32)}

  def train_transform(self):
    data = self.config.data
    return RegressionTransform(
      format_name=self.entry.format,
      codec_name='msra',
      image_size_hw=data.image_size,
      heatmap_size_hw=data.heatmap_size,
      sigma=data.sigma,
      bbox_padding=data.bbox_padding,
      aug=data.aug,
      half_body=False,
      fast_decode=data.fast_jpeg_decode,
    )

  def head_spec(self):
    return RegressionHeadSpec(self.num_keypoints)

  def loss(self, output, batch, step=None):
    del step
    weights = batch['coord_weights'][..., None]
    l1 = jnp.sum(jnp.abs(output - batch['coords']) * weights) / jnp.maximum(jnp.sum(weights) * 2, 1.0)
    return l1, {'l1': l1}

  def summary_metrics(self):
    return ('EPE',)

  def evaluate(self, context):
    """Mean end-point error (image px) over the labelled keypoints of the eval split; writes the predictions
    (`eval/<name>_predictions_step<step>.json`: instance id → (K, 2) image px)."""
    gt = pipeline.eval_ground_truth(self.config.data, self.name)
    truth = dict(zip(np.asarray(gt['instance_ids']).tolist(), np.asarray(gt['keypoints'], np.float64)))
    image_h, image_w = self.config.data.image_size
    errors, predictions = [], {}
    for batch in pipeline.make_eval_iterator(self.config.data, self.name, context.batch_size):
      crop_xy = np.asarray(context.predict(batch['image']), np.float64) * np.array([image_w, image_h])
      for i in np.flatnonzero(np.asarray(batch['valid'])):
        matrix = geometry.get_warp_matrix(
          np.asarray(batch['center'][i], np.float64),
          np.asarray(batch['scale'][i], np.float64),
          0.0,
          (image_w, image_h),
          False,
        )
        inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
        image_xy = geometry.transform_points(crop_xy[i], inverse)
        instance = int(batch['instance_id'][i])
        predictions[instance] = image_xy.tolist()
        target = truth[instance]
        labelled = target[:, 2] > 0
        errors.extend(np.linalg.norm(image_xy[labelled] - target[labelled, :2], axis=-1).tolist())
    if context.write_files:
      os.makedirs(os.path.join(context.workdir, 'eval'), exist_ok=True)
      with open(os.path.join(context.workdir, 'eval', f'{self.name}_predictions_step{context.step}.json'), 'w') as f:
        json.dump(predictions, f)
    return {'EPE': float(np.mean(errors)) if errors else float('nan')}


def get_config(arg: str = ''):
  """The tiny demo's COCO and MPII heatmap datasets with a COCO-format regression dataset, 4 examples each."""
  del arg
  config = demo.get_config('tiny')
  with config.unlocked():
    entry = config.data.datasets.coco.to_dict()
    entry.update(task=Task.kind, codec='msra')  # the eval crops' (non-UDP) warp, which `evaluate` inverts
    config.data.datasets['coco_regression'] = ml_collections.ConfigDict(entry)
    config.data.order = ('coco', 'mpii', 'coco_regression')
    config.batch_size = 12
    config.total_steps = 8
    config.checkpoint_every_steps = 4
    config.eval_every_steps = 8
  return common.finalize(config)
