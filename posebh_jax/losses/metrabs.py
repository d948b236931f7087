"""MeTRAbs losses (docs/METHOD.md §3.3) and the absolute pose they act on (§3.2), pure and batch-vectorised.

Shapes: n examples, J joints (the head's), K keypoints of a 2D format. Poses are camera-frame (x right, y down,
z forward) in mm; 2D points are crop pixels with centres at integer coordinates; `intrinsics` (n, 3, 3) are the
crop's (the perspective crop's virtual camera: camera frame → crop pixels, no distortion). Every function computes
in float32 (float64 for float64 inputs) and returns a scalar.

Definitions:
  - A crop point is *in view* when it lies in [0, W - 1] × [0, H - 1] of the (H, W) crop (pixel centres; the same
    test as `geometry.view_weights`).
  - Masks (`valid` (n, J), `valid2d` (n, K), bool or 0/1) drop unlabelled joints from every loss: their ground
    truth is replaced by zeros before any arithmetic, so its values (even NaN) change neither the loss nor the
    gradients.
  - Means are over all the masked-in (example, joint, coordinate) entries of the batch together (MeTRAbs's masked
    mean), 0 when there are none.
  - Π(X) = the crop pixel of camera-frame X through the intrinsics, with X's depth floored at `min_depth_mm` (so a
    prediction behind the camera gives a finite projection; the floor's gradient is 0).
  - Pixel errors become metric through the head's box: `box_size_mm / max(H, W)` mm per crop pixel (2200 / 256 for
    a 256 px crop), so every term is in metres.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax import geometry

BOX_SIZE_MM = 2200.0
# Predicted depths are floored here for projection and back-projection (no person's joint is this close to the lens).
MIN_PRED_DEPTH_MM = 100.0
# L_proj only counts ground-truth joints deeper than this (METHOD.md §3.3).
PROJ_MIN_GT_DEPTH_MM = 300.0
# L_abs's depth weight min(1, ABS_DEPTH_SCALE_MM / z).
ABS_DEPTH_SCALE_MM = 1e4


def _float(x) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mask(valid) -> jax.Array:
  return jnp.asarray(valid) > 0


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` (..., J, C) over the entries whose joint `mask` (..., J) is True; 0 without any."""
  mask = jnp.broadcast_to(mask[..., None], values.shape)
  count = jnp.sum(mask.astype(values.dtype))
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1.0)


def in_view(points_px, crop_size_hw) -> jax.Array:
  """bool (..., J): 2D points (..., J, 2) inside [0, W - 1] × [0, H - 1] of an (H, W) crop (False for NaN)."""
  return geometry.view_weights(points_px, crop_size_hw, 1.0, 0.0) > 0


def project(points, intrinsics, min_depth_mm: float = MIN_PRED_DEPTH_MM) -> jax.Array:
  """Camera-frame points (n, J, 3) mm and intrinsics (n, 3, 3) → crop pixels (n, J, 2) = (K X)_xy / max(z,
  `min_depth_mm`) (K's last row is (0, 0, 1))."""
  points = _float(points)
  k = jnp.asarray(intrinsics, points.dtype)
  homogeneous = jnp.einsum('njc,nrc->njr', points, k)
  return homogeneous[..., :2] / jnp.maximum(points[..., 2:3], min_depth_mm)


def absolute_from_head(
  coords2d,
  coords3d_rel,
  intrinsics,
  crop_size_hw,
  joint_weights=None,
  back_project: bool = True,
  min_depth_mm: float = MIN_PRED_DEPTH_MM,
) -> jax.Array:
  """The MeTRAbs absolute pose (n, J, 3) mm, camera frame, from the head's outputs.

  The translation T of the relative joints comes from `geometry.absolute_pose` (weighted least squares, L2 1e-2)
  with `geometry.view_weights` of the predicted 2D joints (1 in view, 1e-4 out of view), times `joint_weights`
  (n, J) when given (e.g. 0 for joints a dataset never predicts). With `back_project` (MeTRAbs's reconstruction)
  a joint predicted in view is then placed on its 2D prediction's camera ray at the depth the fit gives it,
  X_j = max(z_j + T_z, `min_depth_mm`) · K⁻¹ (coords2d_j, 1), so that it projects exactly onto coords2d_j (its x, y
  come from the 2D heatmap, its depth from the volumetric one); a joint out of view stays coords3d_rel_j + T.
  Without it every joint is coords3d_rel_j + T.

  Args:
    coords2d: (n, J, 2) crop px (the head's `coords2d`).
    coords3d_rel: (n, J, 3) mm (the head's `coords3d_rel`).
    intrinsics: (n, 3, 3) of the crop.
    crop_size_hw: (H, W) of the crop.
  Returns float32 (float64 for float64 inputs).
  """
  points = _float(coords2d)
  relative = jnp.asarray(coords3d_rel, points.dtype)
  k = jnp.asarray(intrinsics, points.dtype)
  weights = geometry.view_weights(points, crop_size_hw).astype(points.dtype)
  if joint_weights is not None:
    weights = weights * jnp.asarray(joint_weights, points.dtype)
  pose = geometry.absolute_pose(points, relative, k, weights)
  if not back_project:
    return pose
  depth = jnp.maximum(pose[..., 2:3], min_depth_mm)
  rays = geometry.normalize_points(points, k)
  on_ray = jnp.concatenate([rays * depth, depth], -1)
  return jnp.where(in_view(points, crop_size_hw)[..., None], on_ray, pose)


def loss_meanrel(pred, gt, valid) -> jax.Array:
  """L_meanrel = mean |(P − mean P) − (G − mean G)| / 1000 over the valid joints' coordinates, each example's means
  over its valid joints. pred, gt (n, J, 3) mm (any translation of pred gives the same value: the head's relative
  3D or the absolute pose rel + T); valid (n, J)."""
  mask = _mask(valid)
  pred = _float(pred)
  gt = jnp.where(mask[..., None], jnp.asarray(gt, pred.dtype), 0.0)
  count = jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1).astype(pred.dtype)[..., None]
  mean_pred = jnp.sum(jnp.where(mask[..., None], pred, 0.0), -2, keepdims=True) / count
  mean_gt = jnp.sum(gt, -2, keepdims=True) / count
  return _masked_mean(jnp.abs((pred - mean_pred) - (gt - mean_gt)), mask) / 1000.0


def loss_proj(
  pred_abs,
  gt,
  valid,
  intrinsics,
  crop_size_hw,
  box_size_mm: float = BOX_SIZE_MM,
  min_gt_depth_mm: float = PROJ_MIN_GT_DEPTH_MM,
  min_depth_mm: float = MIN_PRED_DEPTH_MM,
) -> jax.Array:
  """L_proj = mean |Π(P) − Π(G)| · (box_size_mm / max(H, W)) / 1000 over the x, y of the joints that are valid, have
  ground-truth depth > `min_gt_depth_mm` and whose ground truth projects in view (module docstring).
  pred_abs, gt (n, J, 3) mm; valid (n, J); intrinsics (n, 3, 3); crop_size_hw (H, W)."""
  pred = _float(pred_abs)
  mask = _mask(valid)
  gt = jnp.where(mask[..., None], jnp.asarray(gt, pred.dtype), 0.0)
  gt_px = project(gt, intrinsics, min_gt_depth_mm)
  mask = mask & (gt[..., 2] > min_gt_depth_mm) & in_view(gt_px, crop_size_hw)
  error = jnp.abs(project(pred, intrinsics, min_depth_mm) - gt_px)
  return _masked_mean(error, mask) * (box_size_mm / max(crop_size_hw)) / 1000.0


def loss_abs(pred_abs, gt, valid) -> jax.Array:
  """L_abs = mean over valid joints of (2|Δxy| + min(1, 10⁴ mm / z)|Δz|) / 3 / 1000, where |Δxy| = (|Δx| + |Δy|) / 2
  and z is the ground truth's depth (weight 1 where z ≤ 0): the per-coordinate mean absolute error with far joints'
  depth errors down-weighted. pred_abs, gt (n, J, 3) mm; valid (n, J)."""
  pred = _float(pred_abs)
  mask = _mask(valid)
  gt = jnp.where(mask[..., None], jnp.asarray(gt, pred.dtype), 0.0)
  z = gt[..., 2]
  depth_weight = jnp.minimum(1.0, ABS_DEPTH_SCALE_MM / jnp.where(z > 0, z, ABS_DEPTH_SCALE_MM))
  error = jnp.abs(pred - gt)
  per_joint = (error[..., 0] + error[..., 1] + depth_weight * error[..., 2]) / 3.0
  return _masked_mean(per_joint[..., None], mask) / 1000.0


def loss_2d(
  pred_abs,
  gt2d,
  valid2d,
  intrinsics,
  prefix_matrix,
  crop_size_hw,
  box_size_mm: float = BOX_SIZE_MM,
  min_depth_mm: float = MIN_PRED_DEPTH_MM,
) -> jax.Array:
  """The 2D examples' loss: keypoint k supervises Π(Σ_j M_kj P_j), the projection of the mean of the 3D joints the
  prefix matrix M (K, J) (`skeletons.registry3d.prefix_matrix`, columns in the head's joint order) averages, by
  mean |Π(M P) − gt2d| · (box_size_mm / max(H, W)) / 1000 over the x, y of the keypoints that are valid, map to
  at least one joint and whose label is in view.
  pred_abs (n, J, 3) mm; gt2d (n, K, 2) crop px; valid2d (n, K); intrinsics (n, 3, 3); crop_size_hw (H, W)."""
  pred = _float(pred_abs)
  matrix = jnp.asarray(np.asarray(prefix_matrix), pred.dtype)
  mask = _mask(valid2d) & (jnp.sum(matrix, -1) > 0)
  gt2d = jnp.where(mask[..., None], jnp.asarray(gt2d, pred.dtype), 0.0)
  mask = mask & in_view(gt2d, crop_size_hw)
  means = jnp.einsum('kj,njc->nkc', matrix, pred)
  error = jnp.abs(project(means, intrinsics, min_depth_mm) - gt2d)
  return _masked_mean(error, mask) * (box_size_mm / max(crop_size_hw)) / 1000.0


@dataclasses.dataclass(frozen=True)
class MetrabsLossConfig:
  """The MeTRAbs objective's numbers (METHOD.md §3.3): crop size (H, W) px, the head's box, L_abs's weight and the
  first step it counts at, the 2D examples' weight, and the ground-truth depth below which L_proj ignores a joint."""

  crop_size_hw: tuple[int, int]
  box_size_mm: float = BOX_SIZE_MM
  abs_weight: float = 0.1
  abs_start_step: int = 5000
  weight_2d: float = 0.2
  min_gt_depth_mm: float = PROJ_MIN_GT_DEPTH_MM

  def __post_init__(self):
    object.__setattr__(self, 'crop_size_hw', tuple(int(s) for s in self.crop_size_hw))


def metrabs_loss(outputs, batch, step, config: MetrabsLossConfig, prefix_matrix=None, joint_weights=None):
  """The MeTRAbs objective on one batch slice: total = L_meanrel + L_proj + [step ≥ abs_start_step] abs_weight L_abs
  + weight_2d L_2d, with `step` traced (a scalar array; one compiled function serves both sides of the switch).

  Args:
    outputs: the head's dict: `coords2d` (n, J, 2) crop px, `coords3d_rel` (n, J, 3) mm.
    batch: `intrinsics` (n, 3, 3) of the crop; for 3D examples `joints3d` (n, J, 3) mm camera frame and
      `joints3d_valid` (n, J); for 2D examples `keypoints2d` (n, K, 2) crop px and `keypoints2d_valid` (n, K).
      The 3D terms are computed when `joints3d` is present, the 2D term when `keypoints2d` is.
    step: the training step (int scalar, traced or not).
    config: `MetrabsLossConfig`.
    prefix_matrix: (K, J) (`loss_2d`); needed with `keypoints2d`.
    joint_weights: optional (n, J) multipliers of the absolute pose's least-squares weights (`absolute_from_head`).
  Returns:
    (total, {'meanrel', 'proj', 'abs', '2d'}) float32 scalars; the terms unweighted ('abs' also before its start
    step), 0 where the batch has no labels for them. L_meanrel is computed on the head's relative 3D (it ignores
    translation, and the absolute pose's in-view joints take their x, y from the 2D head), L_proj, L_abs and L_2d on
    `absolute_from_head`'s back-projected absolute pose.
  """
  crop = config.crop_size_hw
  pred_abs = absolute_from_head(
    outputs['coords2d'], outputs['coords3d_rel'], batch['intrinsics'], crop, joint_weights=joint_weights
  )
  zero = jnp.zeros((), pred_abs.dtype)
  terms = {'meanrel': zero, 'proj': zero, 'abs': zero, '2d': zero}
  if 'joints3d' in batch:
    gt, valid = batch['joints3d'], batch['joints3d_valid']
    terms['meanrel'] = loss_meanrel(outputs['coords3d_rel'], gt, valid)
    terms['proj'] = loss_proj(
      pred_abs, gt, valid, batch['intrinsics'], crop, config.box_size_mm, config.min_gt_depth_mm
    )
    terms['abs'] = loss_abs(pred_abs, gt, valid)
  if 'keypoints2d' in batch:
    if prefix_matrix is None:
      raise ValueError('metrabs_loss: a batch with keypoints2d needs the prefix matrix')
    terms['2d'] = loss_2d(
      pred_abs,
      batch['keypoints2d'],
      batch['keypoints2d_valid'],
      batch['intrinsics'],
      prefix_matrix,
      crop,
      config.box_size_mm,
    )
  abs_on = jnp.asarray(step) >= config.abs_start_step
  total = (
    terms['meanrel']
    + terms['proj']
    + jnp.where(abs_on, config.abs_weight * terms['abs'], 0.0)
    + config.weight_2d * terms['2d']
  )
  return total, terms
