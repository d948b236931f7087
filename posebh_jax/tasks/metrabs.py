"""3D human pose with MeTRAbs (docs/METHOD.md §3): one shared head over the joints of every 3D dataset of the
config, supervised by each dataset on its own format's joints, and the MPJPE-family evaluation.

The head (`models.metrabs_head.MetrabsHeadSpec`, head name 'metrabs': one module `head_metrabs` in `PoseModel`
that every `metrabs3d` dataset runs on its own examples) predicts J joints: the formats of the config's
`metrabs3d` datasets, each format once, in `config.data.order` (`head_formats`); a dataset's joints are the
contiguous block of its format (`MetrabsTask.joints`, a static slice).

Training examples come from `data_pipeline.transforms3d.Pose3DTrainTransform` (perspective-correct crops with
`config.data.aug3d`): the crop camera's intrinsics, the joints in the crop camera frame (mm) and their validity.
The loss is `losses.metrabs.metrabs_loss` on the dataset's joints (L_meanrel + L_proj + L_abs from
`config.metrabs.abs_loss_start_step` on, weighted by `abs_loss_weight`).

Evaluation: the eval split's records through `Pose3DEvalTransform` (the padded box, no augmentation); the test-time
output is the head's 2D and relative 3D joints (with `config.eval_flip` averaged with the mirrored crop's), the
absolute pose in the crop camera is `losses.metrabs.absolute_from_head` of them with the crop's intrinsics (the
prediction function sees images only), mapped back to the original camera (X_orig = R^T X_crop) and scored by
`evaluation.get_evaluator3d` with the dataset's `protocol` ('' = its format: every joint of its ground truth).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from data_pipeline import pipeline
from data_pipeline import transforms3d
from data_pipeline.builders import records3d
from posebh_jax.errors import UserError
from posebh_jax.evaluation import pose3d
from posebh_jax.losses import metrabs as metrabs_losses
from posebh_jax.models.metrabs_head import MetrabsHeadSpec
from posebh_jax.skeletons import get_format3d
from posebh_jax.tasks import base
from posebh_jax.tasks import consistency as consistency_lib
from posebh_jax.viz import pose3d as pose3d_viz

HEAD_NAME = 'metrabs'
# The eval transform also passes these record fields on (ids of the results and the ground truth).
EVAL_FIELDS = transforms3d.RECORD_FIELDS + ('image_id', 'instance_id')
GT_FIELDS = ('image_id', 'instance_id', 'joints3d', 'valid')
HEAD_OUTPUTS = ('coords2d', 'coords3d_rel')
# The arrays `MetrabsTask.predict_split` keeps of its first examples for the picture.
VIZ_FIELDS = ('crops', 'intrinsics', 'pred_mm', 'true_mm', 'valid')


def head_formats(config) -> tuple[str, ...]:
  """The 3D formats of the config's `metrabs3d` datasets, each once, in `config.data.order`: the shared head's
  joints are theirs in this order."""
  formats = []
  for name in config.data.order:
    entry = config.data.datasets[name]
    if entry.task == MetrabsTask.kind and entry.format not in formats:
      formats.append(entry.format)
  return tuple(formats)


def head_joint_names(config) -> tuple[str, ...]:
  """The shared head's joints, suffixed ('lsho_h36m'), in head order (`head_formats`)."""
  return tuple(name for fmt in head_formats(config) for name in get_format3d(fmt).suffixed_names)


def metrabs_head_spec(config) -> MetrabsHeadSpec:
  """The shared head's spec: J = the joints of `head_formats(config)`, shaped by `config.metrabs`."""
  m = config.metrabs
  return MetrabsHeadSpec(
    num_keypoints=sum(get_format3d(f).num_joints for f in head_formats(config)),
    image_size_hw=tuple(int(s) for s in config.data.image_size),
    depth_bins=m.depth_bins,
    box_size_mm=m.box_mm,
    virtual_batch=m.virtual_batch,
    bn_momentum=m.bn_momentum,
    init_std=m.init_std,
    head_name=HEAD_NAME,
  )


def head_consistency(config) -> consistency_lib.Consistency:
  """The config's consistency variant over the shared head (`tasks.consistency`), for every task that trains it."""
  return consistency_lib.Consistency(config, head_joint_names(config), metrabs_head_spec(config))


class MetrabsTask(base.Task):
  """A 3D dataset trained by MeTRAbs through the shared head (see the module docstring)."""

  kind = 'metrabs3d'

  def __init__(self, name: str, config):
    # Not base.Task.__init__: the format is a 3D skeleton format (registry3d), not a 2D one.
    self.name = name
    self.config = config
    self.entry = config.data.datasets[name]
    self.format = get_format3d(self.entry.format)
    formats = head_formats(config)
    start = sum(get_format3d(f).num_joints for f in formats[: formats.index(self.entry.format)])
    self.joints = slice(start, start + self.format.num_joints)
    self.image_size_hw = tuple(int(s) for s in config.data.image_size)
    m = config.metrabs
    self.loss_config = metrabs_losses.MetrabsLossConfig(
      crop_size_hw=self.image_size_hw,
      box_size_mm=m.box_mm,
      abs_weight=m.abs_loss_weight,
      abs_start_step=m.abs_loss_start_step,
      weight_2d=m.loss_2d_weight,
      min_gt_depth_mm=m.proj_min_depth_mm,
    )
    self.consistency = head_consistency(config)
    self._ground_truth = None

  @property
  def num_keypoints(self) -> int:
    """The dataset's joint count J_d (its format's)."""
    return self.format.num_joints

  @classmethod
  def validate(cls, config, name: str) -> None:
    entry = config.data.datasets[name]
    try:
      get_format3d(entry.format)
    except ValueError as e:
      raise UserError(f'config.data.datasets.{name}.format: {e}') from None
    m = config.metrabs
    if m.depth_bins < 1 or m.virtual_batch < 1 or not m.box_mm > 0:
      raise UserError(
        f'config.metrabs.depth_bins and virtual_batch must be >= 1 and box_mm > 0 (got {m.depth_bins}, '
        f'{m.virtual_batch} and {m.box_mm})'
      )
    if m.abs_loss_start_step < 0 or m.abs_loss_weight < 0 or m.loss_2d_weight < 0:
      raise UserError(
        'config.metrabs.abs_loss_start_step, abs_loss_weight and loss_2d_weight must be >= 0 (got '
        f'{m.abs_loss_start_step}, {m.abs_loss_weight} and {m.loss_2d_weight})'
      )
    aug = config.data.aug3d
    missing = [key for key in transforms3d.DEFAULT_AUG if key not in aug]
    if missing:
      raise UserError(f'config.data.aug3d lacks {", ".join(missing)} (the 3D augmentation keys)')
    if not 0 <= aug.scale_factor < 1 or not 0 <= aug.flip_prob <= 1 or not 0 <= aug.occlusion_prob <= 1:
      raise UserError(
        'config.data.aug3d.scale_factor must be in [0, 1) and flip_prob, occlusion_prob in [0, 1] (got '
        f'{aug.scale_factor}, {aug.flip_prob} and {aug.occlusion_prob})'
      )

  # ------------------------------------------------------------------------------------------------ training
  def batch_fields(self):
    j = self.num_keypoints
    return {
      'intrinsics': ((3, 3), np.float32),
      'joints3d': ((j, 3), np.float32),
      'valid': ((j,), np.bool_),
      'joints2d': ((j, 2), np.float32),
      'box_size': ((), np.float32),
    }

  def train_transform(self):
    data = self.config.data
    return transforms3d.Pose3DTrainTransform(
      format_name=self.entry.format,
      image_size_hw=self.image_size_hw,
      bbox_padding=data.bbox_padding,
      aug={key: data.aug3d[key] for key in transforms3d.DEFAULT_AUG},
      fast_decode=data.fast_jpeg_decode,
    )

  def head_spec(self):
    """The shared head's spec, or the consistency variant's 3D heads (`tasks.consistency`)."""
    return self.consistency.spec()

  def own_joints(self, output, inference: bool = False) -> dict:
    """The head output's joints (the consistency variant's: training or `inference` path) restricted to this
    dataset's (a static slice of the head's J)."""
    return self._own(self.consistency.split(output), inference)

  def _own(self, heads: dict, inference: bool = False) -> dict:
    joints = self.consistency.inference_joints(heads) if inference else self.consistency.joints(heads)
    return {key: joints[key][:, self.joints] for key in HEAD_OUTPUTS}

  def loss(self, output, batch, step=None):
    """`metrabs_loss` on the dataset's joints; terms 'meanrel', 'proj' and 'abs' (unweighted, also before its
    start step), and the consistency variant's term ('consistency' or 'distill') on all the head's joints."""
    labels = {'intrinsics': batch['intrinsics'], 'joints3d': batch['joints3d'], 'joints3d_valid': batch['valid']}
    heads = self.consistency.split(output)
    total, terms = metrabs_losses.metrabs_loss(
      self._own(heads), labels, jnp.zeros((), jnp.int32) if step is None else step, self.loss_config
    )
    extra, extra_terms = self.consistency.terms(heads, self.image_size_hw, self.loss_config.box_size_mm, is_2d=False)
    return total + extra, {**{key: terms[key] for key in ('meanrel', 'proj', 'abs')}, **extra_terms}

  def predict(self, apply, variables, images, flip: bool):
    """{'coords2d' (n, J_d, 2) crop px, 'coords3d_rel' (n, J_d, 3) mm} of the dataset's joints (the consistency
    variant's inference path); with `flip`, the mean
    with the mirrored crop's prediction mirrored back (x → W - 1 - x in px, x → -x in the relative 3D, joints
    swapped through the format's flip_index)."""
    if not flip:
      return self.own_joints(apply(variables, images), inference=True)
    count = images.shape[0]
    both = self.own_joints(apply(variables, jnp.concatenate([images, images[:, :, ::-1]])), inference=True)
    flip_index = np.asarray(self.format.flip_index)
    width = self.image_size_hw[1]
    out = {}
    for key in HEAD_OUTPUTS:
      plain, mirrored = both[key][:count], both[key][count:][:, flip_index]
      if key == 'coords2d':
        mirrored = mirrored.at[..., 0].set(width - 1.0 - mirrored[..., 0])
      else:
        mirrored = mirrored.at[..., 0].multiply(-1.0)
      out[key] = 0.5 * (plain + mirrored)
    return out

  @functools.cached_property
  def _absolute(self):
    return jax.jit(functools.partial(metrabs_losses.absolute_from_head, crop_size_hw=self.image_size_hw))

  def absolute_pose(self, prediction, intrinsics) -> np.ndarray:
    """The absolute pose float64 (n, J_d, 3) mm in the crop camera of `predict`'s output and the crops' intrinsics
    (n, 3, 3): `losses.metrabs.absolute_from_head` (least-squares translation, in-view joints back-projected)."""
    coords2d = np.asarray(prediction['coords2d'], np.float32)
    relative = np.asarray(prediction['coords3d_rel'], np.float32)
    return np.asarray(self._absolute(coords2d, relative, np.asarray(intrinsics, np.float32)), np.float64)

  def summary_metrics(self):
    return ('MPJPE',)

  # ---------------------------------------------------------------------------------------------- evaluation
  def protocol(self) -> str:
    """The evaluation protocol (`evaluation.get_evaluator3d`): the entry's `protocol`, or its format's name."""
    return self.entry.protocol or self.format.name

  def ground_truth(self) -> dict:
    """The eval split's ground truth in the records3d gt layout (original camera frame, suffixed joint names)."""
    if self._ground_truth is None:
      source = pipeline.eval_records(self.config.data, self.name, GT_FIELDS)
      fmt = self.format
      root = fmt.root if fmt.root is not None else fmt.joint_names[fmt.root_indices[0]]
      records = [source[i] for i in range(len(source))]
      self._ground_truth = records3d.gt_json(records, fmt.suffixed_names, fmt.suffixed_names[fmt.index(root)])
    return self._ground_truth

  def predict_split(self, context: base.EvalContext) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(results, examples) for the eval split. results: [{'ann_id': instance id, 'image_id', 'keypoints_3d': J_d x 3
    mm in the original camera frame}], one per record. examples: the first `config.viz_examples` records for the
    picture (`viz_examples`), as arrays: 'crops' uint8 (n, H, W, 3), 'intrinsics' (n, 3, 3) of the crop camera,
    'pred_mm' / 'true_mm' float64 (n, J_d, 3) predicted / true joints in the crop camera frame, 'valid' (n, J_d)."""
    transform = transforms3d.Pose3DEvalTransform(self.entry.format, self.image_size_hw, self.config.data.bbox_padding)
    results = []
    examples = {key: [] for key in VIZ_FIELDS}
    batches = pipeline.make_eval_records_iterator(
      self.config.data, self.name, context.batch_size, transform, EVAL_FIELDS
    )
    for batch in batches:
      crop_pose = self.absolute_pose(context.predict(batch['image']), batch['intrinsics'])
      # X_orig = R^T X_crop: rows `joints_crop @ R`.
      original = np.einsum('njc,ncd->njd', crop_pose, np.asarray(batch['rotation'], np.float64))
      for i in np.flatnonzero(np.asarray(batch['example_valid'])):
        results.append(
          {
            'ann_id': int(batch['instance_id'][i]),
            'image_id': int(batch['image_id'][i]),
            'keypoints_3d': np.round(original[i], 3).tolist(),
          }
        )
        if len(examples['crops']) < self.config.viz_examples:
          # The eval transform's joints3d is the ground truth already in the crop camera frame (X_crop = R X_orig).
          examples['crops'].append(np.asarray(batch['image'][i], np.uint8))
          examples['intrinsics'].append(np.asarray(batch['intrinsics'][i], np.float64))
          examples['pred_mm'].append(crop_pose[i])
          examples['true_mm'].append(np.asarray(batch['joints3d'][i], np.float64))
          examples['valid'].append(np.asarray(batch['valid'][i], bool))
    return results, viz_examples(examples, self.image_size_hw, self.num_keypoints)

  def evaluate(self, context: base.EvalContext) -> dict[str, float]:
    """Predicts the eval split, writes `eval/<name>_results_step<step>.json` and `eval/<name>_gt.json` (which
    `python -m posebh_jax.evaluate --dataset=<protocol>` scores the same), returns {'MPJPE', 'PA-MPJPE', 'PCK150',
    'AUC', 'MPJPE-abs'} (mm, %). Also draws `viz/<name>_step<step>.png` (`draw`)."""
    results, examples = self.predict_split(context)
    gt = self.ground_truth()
    if context.write_files:
      eval_dir = os.path.join(context.workdir, 'eval')
      os.makedirs(eval_dir, exist_ok=True)
      with open(os.path.join(eval_dir, f'{self.name}_results_step{context.step}.json'), 'w') as f:
        json.dump(results, f)
      gt_path = os.path.join(eval_dir, f'{self.name}_gt.json')
      if not os.path.exists(gt_path):
        with open(gt_path, 'w') as f:
          json.dump(gt, f)
    if context.write_files and len(examples['crops']):
      self.draw(examples, os.path.join(context.workdir, 'viz', f'{self.name}_step{context.step}.png'))
    return dict(pose3d.get_evaluator3d(self.protocol()).evaluate(gt, results))

  def draw(self, examples: dict[str, np.ndarray], path: str) -> None:
    """Writes `path`: per example of `predict_split`'s `examples`, the crop with the projected predicted (red) and
    true (green) skeletons and a 3D view of both root-relative poses with the MPJPE (`viz.pose3d`). A failure is
    logged, never raised: a picture must not stop a run."""
    try:
      pose3d_viz.write_pose3d_png(
        path,
        examples['crops'],
        examples['intrinsics'],
        examples['pred_mm'],
        examples['true_mm'],
        examples['valid'],
        self.format,
      )
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('3D picture %s failed: %s', path, e)


def viz_examples(examples: dict[str, list], image_size_hw, num_joints: int) -> dict[str, np.ndarray]:
  """`predict_split`'s lists of picture examples stacked into arrays (empty arrays of the right shapes for none)."""
  height, width = image_size_hw
  empty = {
    'crops': np.zeros((0, height, width, 3), np.uint8),
    'intrinsics': np.zeros((0, 3, 3)),
    'pred_mm': np.zeros((0, num_joints, 3)),
    'true_mm': np.zeros((0, num_joints, 3)),
    'valid': np.zeros((0, num_joints), bool),
  }
  return {key: np.stack(examples[key]) if examples[key] else empty[key] for key in VIZ_FIELDS}
