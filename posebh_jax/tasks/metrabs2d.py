"""2D human datasets that supervise the shared MeTRAbs head (docs/METHOD.md §3.1, §3.3): a 2D keypoint labels the
projection of the mean of the 3D joints whose names start with its short name.

- `Metrabs2DTask` (kind 'metrabs2d'): the dataset trains only the 3D head, through its 2D term (`configs/b16.py:
  task=3d`); it has no head of its own and is not evaluated.
- `HeatmapMetrabsTask` (kind 'heatmap_metrabs'): the dataset's own 2D heatmap head (the 'heatmap' task: loss, flip
  test, evaluation) and the 3D head's 2D term on the same examples (`task=joint`, the mission's shape).

Examples come from the top-down 2D transform with `camera_fov_deg` (`data_pipeline.transforms.crop_camera_2d`): an
image without a known camera is taken to have square pixels, the principal point at its centre and a field of view
of `config.metrabs.fov_2d_deg` over its longer side (MeTRAbs's assumption for 2D datasets); the affine crop
(flip, scale, rotation) turns that camera into the crop's intrinsics, and the keypoints come in crop px. The loss is
`weight_2d · losses.metrabs.loss_2d` of `absolute_from_head` of the dataset's examples, over the head's joints
(`prefix_matrix` maps the dataset's keypoints onto the head's joint order); keypoints no 3D joint name begins with
(face, feet, fingers) are ignored.
"""

from __future__ import annotations

import functools

import numpy as np

from data_pipeline import pipeline
from posebh_jax.errors import UserError
from posebh_jax.losses import metrabs as metrabs_losses
from posebh_jax.models.multi_head import MultiHeadSpec
from posebh_jax.skeletons import registry3d
from posebh_jax.tasks import base
from posebh_jax.tasks import metrabs as metrabs_task
from posebh_jax.tasks.heatmap import HeatmapTask


def check_has_3d_head(config, name: str, kind: str) -> None:
  """Raises UserError (one line) unless the config has a 'metrabs3d' dataset (the 3D head's joints are theirs) and
  dataset `name` is a human 2D format with keypoints that map onto the head's joints."""
  if not metrabs_task.head_formats(config):
    raise UserError(
      f"config.data.datasets.{name}.task is '{kind}', which supervises the 3D head, but no dataset of "
      "config.data.order has task 'metrabs3d' (the 3D head's joints are theirs); add one or use task 'heatmap'"
    )
  matrix = prefix_matrix(config, config.data.datasets[name].format)
  if not matrix.any():
    raise UserError(
      f"config.data.datasets.{name}: no keypoint of format '{config.data.datasets[name].format}' names a joint of "
      f'the 3D head ({", ".join(metrabs_task.head_formats(config))}); only human 2D formats can supervise it'
    )


def prefix_matrix(config, format2d: str) -> np.ndarray:
  """float32 (K, J_head): `registry3d.prefix_matrix` of 2D format `format2d` over the shared head's joints."""
  return registry3d.prefix_matrix(format2d, metrabs_task.head_joint_names(config))


class _Metrabs2DTerm:
  """The 3D head's 2D term of a 2D dataset (shared by both tasks of this module)."""

  def _init_3d(self, config):
    self.image_size_hw = tuple(int(s) for s in config.data.image_size)
    m = config.metrabs
    self.weight_2d = float(m.loss_2d_weight)
    self.box_size_mm = float(m.box_mm)
    self.consistency = metrabs_task.head_consistency(config)

  @functools.cached_property
  def head_prefix_matrix(self) -> np.ndarray:
    return prefix_matrix(self.config, self.entry.format)

  def camera_fields(self) -> dict:
    k = self.num_keypoints
    return {
      'intrinsics': ((3, 3), np.float32),
      'keypoints2d': ((k, 2), np.float32),
      'keypoints2d_valid': ((k,), np.bool_),
    }

  def transform(self, heatmaps: bool):
    return pipeline.train_transform(
      self.config.data, self.name, camera_fov_deg=self.config.metrabs.fov_2d_deg, with_heatmaps=heatmaps
    )

  def loss_3d_head(self, heads, batch):
    """(weighted total, {'2d': L_2d, and the consistency variant's term}) of the 3D heads' outputs `heads`
    ({output key: head output} of the dataset's examples)."""
    term = self.loss_2d(self.consistency.joints(heads), batch)
    extra, extra_terms = self.consistency.terms(heads, self.image_size_hw, self.box_size_mm, is_2d=True)
    return self.weight_2d * term + extra, {'2d': term, **extra_terms}

  def loss_2d(self, joints, batch):
    """L_2d (unweighted) of the 3D head's joints {'coords2d', 'coords3d_rel'} (n, J_head) on the dataset's
    keypoints."""
    pred_abs = metrabs_losses.absolute_from_head(
      joints['coords2d'], joints['coords3d_rel'], batch['intrinsics'], self.image_size_hw
    )
    return metrabs_losses.loss_2d(
      pred_abs,
      batch['keypoints2d'],
      batch['keypoints2d_valid'],
      batch['intrinsics'],
      self.head_prefix_matrix,
      self.image_size_hw,
      self.box_size_mm,
    )


class Metrabs2DTask(_Metrabs2DTerm, base.Task):
  """A 2D human dataset that trains only the shared MeTRAbs head (module docstring)."""

  kind = 'metrabs2d'
  evaluates = False

  def __init__(self, name: str, config):
    super().__init__(name, config)
    self._init_3d(config)

  @classmethod
  def validate(cls, config, name: str) -> None:
    check_has_3d_head(config, name, cls.kind)

  def batch_fields(self):
    return self.camera_fields()

  def train_transform(self):
    return self.transform(heatmaps=False)

  def head_spec(self):
    return self.consistency.spec()

  def loss(self, output, batch, step=None):
    del step
    return self.loss_3d_head(self.consistency.split(output), batch)

  def evaluate(self, context: base.EvalContext) -> dict[str, float]:
    raise UserError(f"dataset '{self.name}' (task '{self.kind}') has no evaluation; leave it out of eval_datasets")


class HeatmapMetrabsTask(_Metrabs2DTerm, HeatmapTask):
  """A 2D dataset with its own heatmap head that also supervises the shared MeTRAbs head (module docstring)."""

  kind = 'heatmap_metrabs'

  def __init__(self, name: str, config):
    super().__init__(name, config)
    self._init_3d(config)

  @classmethod
  def validate(cls, config, name: str) -> None:
    HeatmapTask.validate(config, name)
    check_has_3d_head(config, name, cls.kind)

  def batch_fields(self):
    return {**HeatmapTask.batch_fields(self), **self.camera_fields()}

  def train_transform(self):
    return self.transform(heatmaps=True)

  def head_spec(self) -> MultiHeadSpec:
    return MultiHeadSpec((('heatmaps', HeatmapTask.head_spec(self)),) + self.consistency.head_parts())

  def loss(self, output, batch, step=None):
    heatmap_loss, _ = HeatmapTask.loss(self, output['heatmaps'], batch, step)
    heads = {key: output[key] for key, _ in self.consistency.head_parts()}
    total, terms = self.loss_3d_head(heads, batch)
    return heatmap_loss + total, {'heatmap': heatmap_loss, **terms}

  def predict(self, apply, variables, images, flip: bool):
    """The heatmap head's test-time heatmaps (`HeatmapTask.predict`; XLA drops the unused 3D head)."""
    return HeatmapTask.predict(self, lambda v, x: apply(v, x)['heatmaps'], variables, images, flip)
