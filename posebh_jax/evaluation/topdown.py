"""Top-down post-processing before OKS evaluation: rescoring and (soft-)OKS-NMS per image.

Definitions (as the reference pose code applies them):
- rescoring: instance score = box score x mean of the keypoint scores above 0.2 (0 when none is);
- OKS between two instances a, b of one image: mean over all K keypoints of
  exp(-d_k^2 / (2 * (2 sigma_k)^2 * s)) with s = (area_a + area_b) / 2 (+ machine epsilon);
- OKS-NMS: greedily keep the highest-scoring instance and drop the others whose OKS with it is > 0.9;
- soft-OKS-NMS (Gaussian soft-NMS with OKS instead of IoU): after keeping the highest-scoring instance, the
  others' scores decay by exp(-OKS^2 / sigma), sigma = the threshold 0.9; at most 20 kept per image. The
  decayed scores are the output scores (the reference code only uses them to order and cut the list).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from posebh_jax import skeletons
from posebh_jax.evaluation.coco import WHOLEBODY_FIELDS

NMS_THRESHOLD = 0.9
KEYPOINT_SCORE_THRESHOLD = 0.2
SOFT_NMS_MAX_DETS = 20


def rescore(keypoint_scores, bbox_score, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> np.ndarray:
  """Top-down instance scores: `bbox_score` x mean of the keypoint scores > `threshold` (0 when none is).

  `(N, K)` keypoint scores, `(N,)` box scores -> float64 `(N,)`.
  """
  scores = np.asarray(keypoint_scores, dtype=np.float64)
  above = scores > threshold
  count = above.sum(-1)
  mean = np.where(count > 0, (scores * above).sum(-1) / np.maximum(count, 1), 0.0)
  return np.asarray(bbox_score, dtype=np.float64) * mean


def oks_iou(reference, others, reference_area: float, other_areas, sigmas) -> np.ndarray:
  """OKS between one instance and several, for NMS: `(K, 2+)` and `(M, K, 2+)` keypoints (x, y first), a
  scalar and `(M,)` areas, `(K,)` sigmas -> `(M,)`. All keypoints count, whatever their scores."""
  reference = np.asarray(reference, dtype=np.float64)[..., :2]
  others = np.asarray(others, dtype=np.float64)
  others = (others[None] if others.ndim == 2 else others)[..., :2]
  variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
  scale = (float(reference_area) + np.asarray(other_areas, dtype=np.float64)) / 2.0 + np.spacing(1)
  squared = np.sum((others - reference[None]) ** 2, axis=-1)  # (M, K)
  return np.mean(np.exp(-squared / variances[None] / scale[:, None] / 2.0), axis=-1)


def _descending(scores: np.ndarray) -> np.ndarray:
  """Highest score first, ties as the reference top-down OKS-NMS (mmpose) orders them: `argsort()[::-1]`,
  i.e. for equal scores the later instance first. Equal scores are common (GT boxes, saturated keypoint
  scores) and the order decides which duplicate NMS keeps, which moves the AP."""
  return np.argsort(scores)[::-1]


def oks_nms(keypoints, scores, areas, sigmas, threshold: float = NMS_THRESHOLD) -> np.ndarray:
  """Greedy OKS-NMS of the instances of one image.

  `(N, K, 2+)` keypoints, `(N,)` scores and areas, `(K,)` sigmas. Returns the kept indices, highest score
  first (ties: later index first, as the reference's `argsort()[::-1]`); an instance is dropped when its OKS
  with a kept one is > `threshold`.
  """
  keypoints = np.asarray(keypoints, dtype=np.float64)
  scores = np.asarray(scores, dtype=np.float64)
  areas = np.asarray(areas, dtype=np.float64)
  order = _descending(scores)
  keep = []
  while order.size:
    best, order = order[0], order[1:]
    keep.append(int(best))
    if order.size:
      overlap = oks_iou(keypoints[best], keypoints[order], areas[best], areas[order], sigmas)
      order = order[overlap <= threshold]
  return np.asarray(keep, dtype=np.int64)


def soft_oks_nms(
  keypoints, scores, areas, sigmas, sigma: float = NMS_THRESHOLD, max_dets: int = SOFT_NMS_MAX_DETS
) -> tuple[np.ndarray, np.ndarray]:
  """Gaussian soft-NMS with OKS of the instances of one image.

  Repeatedly keeps the highest (current) score and multiplies every remaining score by exp(-OKS^2 / sigma)
  with the OKS to the kept instance, until `max_dets` are kept. Same inputs as `oks_nms`.
  Returns (kept indices `(M,)` in keep order, their decayed scores `(M,)`).
  """
  keypoints = np.asarray(keypoints, dtype=np.float64)
  current = np.asarray(scores, dtype=np.float64).copy()
  areas = np.asarray(areas, dtype=np.float64)
  remaining = _descending(current)
  keep, kept_scores = [], []
  while remaining.size and len(keep) < max_dets:
    best, remaining = remaining[0], remaining[1:]
    keep.append(int(best))
    kept_scores.append(current[best])
    if remaining.size:
      overlap = oks_iou(keypoints[best], keypoints[remaining], areas[best], areas[remaining], sigmas)
      current[remaining] = current[remaining] * np.exp(-(overlap**2) / sigma)
      remaining = remaining[_descending(current[remaining])]
  return np.asarray(keep, dtype=np.int64), np.asarray(kept_scores, dtype=np.float64)


def _instance_keypoints(res: dict, num_keypoints: int) -> np.ndarray:
  values = np.asarray(res.get("keypoints", []), dtype=np.float64).reshape(-1)
  if values.size != 3 * num_keypoints and all(f in res for f in WHOLEBODY_FIELDS):
    values = np.concatenate([np.asarray(res[f], dtype=np.float64).reshape(-1) for f in WHOLEBODY_FIELDS])
  if values.size != 3 * num_keypoints:
    raise ValueError(
      f"top-down result for image {res.get('image_id')} has {values.size / 3:g} keypoints "
      f"but the format has {num_keypoints}; evaluate with the dataset (--dataset) the "
      "results were made for"
    )
  return values.reshape(num_keypoints, 3)


def _instance_area(res: dict) -> float:
  if "area" in res:
    return float(res["area"])
  if res.get("bbox"):
    return float(res["bbox"][2]) * float(res["bbox"][3])
  raise ValueError(
    f"top-down result for image {res.get('image_id')} has neither 'area' nor 'bbox'; "
    "give each instance its box area for OKS-NMS"
  )


def topdown_postprocess(
  results: Sequence[dict],
  format_name: Any,
  nms: str | None = "oks",
  nms_threshold: float = NMS_THRESHOLD,
  score_threshold: float = KEYPOINT_SCORE_THRESHOLD,
  sigmas=None,
  max_dets: int = SOFT_NMS_MAX_DETS,
) -> list[dict]:
  """Rescoring and per-image (soft-)OKS-NMS of raw top-down instances, giving COCO result dicts.

  Args:
    results: `[{'image_id', 'keypoints' [x, y, score] * K, 'bbox_score', 'area' or 'bbox' xywh,
      'category_id' (default 1), optional 'ann_id' (passed on)}]`; without `bbox_score`, `score` is the box
      score. COCO-WholeBody instances may give the official part fields instead of 133 keypoints.
    format_name: skeleton format name (or a `SkeletonFormat`): K and the OKS sigmas.
    nms: 'oks' (drop OKS > `nms_threshold`), 'soft_oks' (decay with sigma `nms_threshold`, keep at most
      `max_dets` per image) or None.
    score_threshold: keypoint scores above it enter the rescoring mean.
    sigmas: `(K,)` OKS sigmas overriding the format's.
  Returns: `[{'image_id', 'category_id', 'keypoints' (K * 3 floats), 'score'[, 'ann_id']}]`, grouped by
    image in order of first appearance, within an image highest score first.
  """
  if nms not in ("oks", "soft_oks", None):
    raise ValueError(f"nms must be 'oks', 'soft_oks' or None, got {nms!r}")
  fmt = skeletons.get_format(format_name) if isinstance(format_name, str) else format_name
  sigmas = np.asarray(fmt.sigmas if sigmas is None else sigmas, dtype=np.float64).reshape(-1)
  num_keypoints = sigmas.size
  if not isinstance(results, (list, tuple)):
    raise ValueError("top-down results must be a list of {'image_id', 'keypoints', 'bbox_score', 'area'} dicts")
  by_image: dict[Any, list[int]] = {}
  keypoints, box_scores, areas = [], [], []
  for index, res in enumerate(results):
    if not isinstance(res, dict) or "image_id" not in res:
      raise ValueError("every top-down result needs an 'image_id' (and keypoints, bbox_score, area)")
    if "bbox_score" not in res and "score" not in res:
      raise ValueError(
        f"top-down result for image {res['image_id']} has no 'bbox_score'; add the "
        "detector's box score (1.0 for ground-truth boxes)"
      )
    by_image.setdefault(res["image_id"], []).append(index)
    keypoints.append(_instance_keypoints(res, num_keypoints))
    box_scores.append(float(res.get("bbox_score", res.get("score"))))
    areas.append(_instance_area(res))
  if not results:
    return []
  keypoints = np.stack(keypoints)
  scores = rescore(keypoints[..., 2], np.asarray(box_scores), score_threshold)
  areas = np.asarray(areas)
  out = []
  for image_id, indices in by_image.items():
    indices = np.asarray(indices)
    if nms == "oks":
      keep = oks_nms(keypoints[indices], scores[indices], areas[indices], sigmas, nms_threshold)
      kept, kept_scores = indices[keep], scores[indices][keep]
    elif nms == "soft_oks":
      keep, kept_scores = soft_oks_nms(
        keypoints[indices], scores[indices], areas[indices], sigmas, nms_threshold, max_dets
      )
      kept = indices[keep]
    else:
      order = np.argsort(-scores[indices], kind="stable")  # no reordering of ties, as without NMS upstream
      kept, kept_scores = indices[order], scores[indices][order]
    for i, score in zip(kept, kept_scores):
      res = {
        "image_id": image_id,
        "category_id": results[i].get("category_id", 1),
        "keypoints": [float(v) for v in keypoints[i].reshape(-1)],
        "score": float(score),
      }
      if "ann_id" in results[i]:  # the ground-truth person a GT-box instance was predicted for (PCKh, PCK)
        res["ann_id"] = results[i]["ann_id"]
      out.append(res)
  return out
