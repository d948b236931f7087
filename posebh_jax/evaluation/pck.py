"""Keypoint accuracy with ground-truth boxes: PCK, AUC and EPE (InterHand2.6M and other hand sets), and the
matching of COCO-format results to ground-truth people that these metrics (and MPII's PCKh) need.

Definitions (as the reference pose code evaluates hands):
- PCK@t: a labelled joint is correct when its distance, divided by the normaliser, is < t (strict); the
  normaliser of InterHand2.6M is the longer side of the person's box, t = 0.2. A joint's accuracy is over the
  samples where it is labelled (samples whose normaliser is 0 are left out); PCK is the plain mean over the
  joints labelled at least once (0 when none is).
- AUC: the mean of PCK at the thresholds 0, 1/20, ..., 19/20 of a fixed normaliser of 30 px.
- EPE: the mean distance in px over all labelled joints (0 when none is).
Distances are computed in float64 (the reference code stores them in float32, which can move a joint lying
within float32 rounding of a threshold).
"""

from __future__ import annotations

import numpy as np

INTERHAND_PCK_THRESHOLD = 0.2
AUC_NORMALIZE_PX = 30.0
AUC_NUM_STEPS = 20


def _checked(pred_xy, gt_xy, visible):
  pred = np.asarray(pred_xy, dtype=np.float64)
  gt = np.asarray(gt_xy, dtype=np.float64)
  vis = np.asarray(visible) > 0
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
    raise ValueError(f"pred_xy and gt_xy must both be (N, K, 2), got {pred.shape} and {gt.shape}")
  if vis.shape != pred.shape[:2]:
    raise ValueError(f"visible must be {pred.shape[:2]}, got {vis.shape}")
  return pred, gt, vis


def keypoint_pck(pred_xy, gt_xy, visible, normalize, threshold: float) -> dict:
  """PCK at `threshold` with a per-sample normaliser.

  Args:
    pred_xy, gt_xy: `(N, K, 2)` px; visible: `(N, K)` (false / 0 = not labelled, ignored).
    normalize: `(N,)` or `(N, 2)` (per axis) normaliser in px, e.g. the box's longer side.
    threshold: fraction of the normaliser; a joint is correct when distance / normaliser < threshold.
  Returns: {'PCK': mean over joints labelled at least once (0.0 if none), 'per_joint': `(K,)` (NaN where a
    joint is never labelled), 'joint_count': `(K,)` int}.
  """
  pred, gt, vis = _checked(pred_xy, gt_xy, visible)
  n = pred.shape[0]
  norm = np.asarray(normalize, dtype=np.float64)
  norm = np.broadcast_to(norm.reshape(n, 1) if norm.ndim == 1 else norm, (n, 2))
  valid = vis & np.all(norm != 0, axis=1)[:, None]
  safe = np.where(norm != 0, norm, 1.0)
  distance = np.linalg.norm((pred - gt) / safe[:, None, :], axis=-1)
  count = valid.sum(axis=0)
  hits = ((distance < threshold) & valid).sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    per_joint = hits / count
  labelled = count > 0
  return {
    "PCK": float(np.mean(per_joint[labelled])) if labelled.any() else 0.0,
    "per_joint": per_joint,
    "joint_count": count,
  }


def keypoint_auc(pred_xy, gt_xy, visible, normalize: float = AUC_NORMALIZE_PX, num_steps: int = AUC_NUM_STEPS) -> float:
  """Area under the PCK curve: mean of PCK at thresholds i / num_steps (i = 0 .. num_steps - 1) of
  `normalize` px. `(N, K, 2)` predictions and ground truth, `(N, K)` visibility. Returns a float in [0, 1]."""
  n = np.asarray(pred_xy).shape[0]
  norm = np.full((n, 2), float(normalize))
  return float(np.mean([keypoint_pck(pred_xy, gt_xy, visible, norm, i / num_steps)["PCK"] for i in range(num_steps)]))


def keypoint_epe(pred_xy, gt_xy, visible) -> float:
  """End-point error: mean px distance over labelled joints of `(N, K, 2)` arrays (0.0 if none is labelled)."""
  pred, gt, vis = _checked(pred_xy, gt_xy, visible)
  distance = np.linalg.norm(pred - gt, axis=-1)[vis]
  return float(distance.sum() / max(1, distance.size))


def box_size(bbox) -> np.ndarray:
  """`(N,)` longer side of `(N, 4)` xywh boxes (the PCK normaliser of InterHand2.6M)."""
  bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
  return np.max(bbox[:, 2:], axis=1)


def hand_metrics(pred_xy, gt_xy, visible, bbox, pck_threshold: float = INTERHAND_PCK_THRESHOLD) -> dict[str, float]:
  """InterHand2.6M's metrics: {'PCK': PCK@0.2 of the box's longer side, 'AUC': over 0..30 px, 'EPE': px}.

  `(N, K, 2)` predictions and ground truth, `(N, K)` visibility, `(N, 4)` xywh ground-truth boxes.
  PCK and AUC are fractions in [0, 1].
  """
  return {
    "PCK": keypoint_pck(pred_xy, gt_xy, visible, box_size(bbox), pck_threshold)["PCK"],
    "AUC": keypoint_auc(pred_xy, gt_xy, visible),
    "EPE": keypoint_epe(pred_xy, gt_xy, visible),
  }


def match_results(gt: dict, results: list, num_keypoints: int) -> tuple[list, np.ndarray, np.ndarray]:
  """Pairs COCO-format results with ground-truth people (top-down with ground-truth boxes).

  A result is matched by its `ann_id` (the annotation id it was predicted for) when every result has one,
  otherwise by `image_id`, which needs at most one annotated person per image (the highest-scoring result
  of an image is used). Crowd annotations are skipped.
  Returns (annotations, pred `(N, K, 2)`, gt keypoints `(N, K, 3)`) for the N non-crowd annotations; a
  person with no labelled joint may lack a result (its prediction is zeros, never counted).
  """
  if not isinstance(gt, dict) or not isinstance(gt.get("annotations"), list):
    raise ValueError("ground truth must be a COCO-format dict with an 'annotations' list")
  if not isinstance(results, list) or not all(isinstance(r, dict) and "keypoints" in r for r in results):
    raise ValueError("results must be a list of {'image_id', 'keypoints', 'score'} dicts")
  annotations = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]

  def as_array(record, what):
    values = np.asarray(record["keypoints"], dtype=np.float64).reshape(-1)
    if values.size != 3 * num_keypoints:
      raise ValueError(
        f"{what} for image {record.get('image_id')} has {values.size / 3:g} keypoints but "
        f"{num_keypoints} are expected; evaluate with the dataset (--dataset) the file was "
        "made for"
      )
    return values.reshape(num_keypoints, 3)

  gt_kpts = (
    np.stack([as_array(a, "ground-truth annotation") for a in annotations])
    if annotations
    else np.zeros((0, num_keypoints, 3))
  )
  by_ann = bool(results) and all("ann_id" in r for r in results)
  key_of_ann = (lambda a: a["id"]) if by_ann else (lambda a: a["image_id"])
  key_of_res = (lambda r: r["ann_id"]) if by_ann else (lambda r: r.get("image_id"))
  if not by_ann:
    people = {}
    for a, kpts in zip(annotations, gt_kpts):
      if np.any(kpts[:, 2] > 0):
        people[a["image_id"]] = people.get(a["image_id"], 0) + 1
    crowded = [image for image, count in people.items() if count > 1]
    if crowded:
      raise ValueError(
        f"image {crowded[0]} has {people[crowded[0]]} annotated people; give each result "
        "the 'ann_id' of the annotation it was predicted for"
      )
  known = {key_of_ann(a) for a in annotations}
  best = {}
  for r in results:
    key = key_of_res(r)
    if key not in known:
      raise ValueError(
        f"result {'ann_id' if by_ann else 'image_id'} {key!r} is not in the ground truth; "
        "evaluate against the annotation file the predictions were made for"
      )
    if key not in best or float(r.get("score", 0.0)) > float(best[key].get("score", 0.0)):
      best[key] = r
  pred = np.zeros((len(annotations), num_keypoints, 2))
  missing = []
  for i, (a, kpts) in enumerate(zip(annotations, gt_kpts)):
    r = best.get(key_of_ann(a))
    if r is not None:
      pred[i] = as_array(r, "result")[:, :2]
    elif np.any(kpts[:, 2] > 0):
      missing.append(a["id"])
  if missing:
    raise ValueError(
      f"{len(missing)} annotated people have no result (e.g. annotation {missing[0]}); predict every ground-truth box"
    )
  return annotations, pred, gt_kpts
