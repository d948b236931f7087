"""PCKh (MPII): fraction of labelled joints within `threshold x head size` of the ground truth.

Follows the official MPII evaluation as the reference pose code runs it: a joint is correct when its
distance is <= threshold x head size, where head size = 0.6 x the diagonal of the annotated head box; the
per-joint PCKh is over the instances where that joint is labelled; the summary mean weights each joint
by its number of labelled instances (equivalently: all hits / all labelled joints). For the 16-joint MPII
format the official 'Mean' leaves out pelvis (6) and thorax (7); that number is reported as 'PCKh' (it is
what papers quote, e.g. 92.8 for ViTPose++-B) and the mean over all joints as 'PCKh_all'.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MPII_NUM_JOINTS = 16
MPII_EXCLUDED_FROM_MEAN = (6, 7)  # pelvis, thorax
# Official MPII grouping: name -> joint indices (MPII order: r_ankle 0 ... l_wrist 15).
MPII_GROUPS = {
  "Head": (9,),
  "Shoulder": (13, 12),
  "Elbow": (14, 11),
  "Wrist": (15, 10),
  "Hip": (3, 2),
  "Knee": (4, 1),
  "Ankle": (5, 0),
}


def pckh(
  pred_xy, gt_xy, visible, head_size, threshold: float = 0.5, exclude_from_mean: Sequence[int] | None = None
) -> dict:
  """PCKh of predictions, as percentages.

  Args:
    pred_xy, gt_xy: `(N, K, 2)` image px.
    visible: `(N, K)`; joints with a false / zero entry are ignored.
    head_size: `(N,)` head size in px (MPII: 0.6 x head-box diagonal); must be > 0 where joints are labelled.
    threshold: fraction of the head size.
    exclude_from_mean: joints left out of 'PCKh'; default pelvis and thorax when K == 16, none otherwise.
  Returns: {'PCKh': count-weighted mean without the excluded joints, 'PCKh_all': count-weighted mean over
    all joints, 'per_joint': float64 `(K,)` (NaN where a joint is never labelled), 'joint_count': `(K,)`},
    plus the official 'Head', 'Shoulder', ..., 'Ankle' groups (mean of left and right) when K == 16.
  """
  pred = np.asarray(pred_xy, dtype=np.float64)
  gt = np.asarray(gt_xy, dtype=np.float64)
  vis = np.asarray(visible) > 0
  head = np.asarray(head_size, dtype=np.float64).reshape(-1)
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
    raise ValueError(f"pred_xy and gt_xy must both be (N, K, 2), got {pred.shape} and {gt.shape}")
  n, k, _ = pred.shape
  if vis.shape != (n, k) or head.shape != (n,):
    raise ValueError(f"visible must be ({n}, {k}) and head_size ({n},), got {vis.shape} and {head.shape}")
  if np.any(vis.any(axis=1) & ~(head > 0)):
    raise ValueError("head_size must be positive for every instance with labelled joints")
  safe_head = np.where(head > 0, head, 1.0)
  distance = np.linalg.norm(pred - gt, axis=-1) / safe_head[:, None]
  hits = (distance <= threshold) & vis
  count = vis.sum(axis=0)
  hit_count = hits.sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    per_joint = 100.0 * hit_count / count
  if exclude_from_mean is None:
    exclude_from_mean = MPII_EXCLUDED_FROM_MEAN if k == MPII_NUM_JOINTS else ()
  included = np.ones(k, dtype=bool)
  included[list(exclude_from_mean)] = False

  def weighted_mean(mask):
    total = count[mask].sum()
    return float(100.0 * hit_count[mask].sum() / total) if total else float("nan")

  out = {
    "PCKh": weighted_mean(included),
    "PCKh_all": weighted_mean(np.ones(k, dtype=bool)),
    "per_joint": per_joint,
    "joint_count": count,
  }
  if k == MPII_NUM_JOINTS:
    for name, joints in MPII_GROUPS.items():
      out[name] = float(np.mean(per_joint[list(joints)]))
  return out


def pckh_metrics(pred_xy, gt_xy, visible, head_size) -> dict[str, float]:
  """Summary PCKh as the MPII protocol reports it: {'PCKh': at 0.5, 'PCKh@0.1': at 0.1}, percentages.

  Same arguments as `pckh`. PCKh@0.1 is at exactly 0.1 head sizes (mmpose 0.x reports the 0.11 entry of its
  0.01-step threshold table under that name).
  """
  return {
    "PCKh": pckh(pred_xy, gt_xy, visible, head_size, threshold=0.5)["PCKh"],
    "PCKh@0.1": pckh(pred_xy, gt_xy, visible, head_size, threshold=0.1)["PCKh"],
  }
