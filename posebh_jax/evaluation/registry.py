"""Evaluator registry: each dataset's official metric and its settings, looked up by dataset (format) name.

Every evaluator has `evaluate(gt, results) -> {metric: value}` taking COCO-format ground truth and results
(dicts / lists or JSON paths), which `python -m posebh_jax.evaluate` uses, plus `kind`, `metric_names` and
`primary_metric`. The OKS evaluators are also callable as `evaluator(gt, results, sigmas=None, **overrides)`;
the PCKh / PCK evaluators are callable on arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from posebh_jax.evaluation.coco import SUMMARY_NAMES, evaluate_coco_keypoints, load_json
from posebh_jax.evaluation.crowdpose import CROWDPOSE_NAMES, evaluate_crowdpose
from posebh_jax.evaluation.pck import hand_metrics, match_results
from posebh_jax.evaluation.pckh import pckh_metrics
from posebh_jax.evaluation.pose3d import get_evaluator3d, list_protocols
from posebh_jax.evaluation.wholebody import WHOLEBODY_NAMES, evaluate_wholebody
from posebh_jax.skeletons import get_format

MPII_HEAD_SIZE_FACTOR = 0.6  # official MPII: head size = 0.6 x head-box diagonal


def _format_sigmas(name: str) -> np.ndarray:
  return np.asarray(get_format(name).sigmas, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class OKSEvaluator:
  """COCO-style OKS AP/AR for one format (`evaluate_coco_keypoints` with the dataset's toolkit settings).

  Call as `evaluator(gt, results, sigmas=None, **overrides) -> {'AP', 'AP .5', ...}`; the sigmas default
  to `posebh_jax.skeletons.get_format(sigma_format).sigmas`, looked up on first use. `overrides` go to the
  evaluation function (e.g. `verbose=True`).
  """

  format_name: str
  sigma_format: str
  use_area: bool = True
  keypoint_fields: Sequence[str] = ("keypoints",)
  score_key: str = "score"
  toolkit: str = "xtcocotools"
  kind = "oks"
  metric_names = SUMMARY_NAMES
  primary_metric = "AP"
  # Detections are matched to people (so top-down results go through NMS), no per-person pairing.
  scores_each_person = False
  needs_head_size = False

  @property
  def sigmas(self) -> np.ndarray:
    """`(K,)` OKS sigmas of the format, from the skeleton registry."""
    return _format_sigmas(self.sigma_format)

  def __call__(self, gt, results, sigmas=None, **overrides) -> dict[str, float]:
    options = dict(
      use_area=self.use_area,
      keypoint_fields=tuple(self.keypoint_fields),
      score_key=self.score_key,
      toolkit=self.toolkit,
    )
    options.update(overrides)
    return evaluate_coco_keypoints(gt, results, self.sigmas if sigmas is None else sigmas, **options)

  def evaluate(self, gt, results) -> dict[str, float]:
    """The dataset's summary metrics of COCO-format `results` (list or path) against `gt` (dict or path)."""
    return self(gt, results)


@dataclasses.dataclass(frozen=True)
class CrowdPoseEvaluator(OKSEvaluator):
  """CrowdPose: AP/AR plus AP (E), AP (M), AP (H) by crowd index (`evaluate_crowdpose`)."""

  use_area: bool = False
  metric_names = CROWDPOSE_NAMES

  def __call__(self, gt, results, sigmas=None, **overrides) -> dict[str, float]:
    options = dict(use_area=self.use_area, score_key=self.score_key)
    options.update(overrides)
    return evaluate_crowdpose(gt, results, self.sigmas if sigmas is None else sigmas, **options)


@dataclasses.dataclass(frozen=True)
class WholeBodyEvaluator(OKSEvaluator):
  """COCO-WholeBody: AP/AR per part and for the whole body (`evaluate_wholebody`); 'AP' is whole-body AP."""

  metric_names = WHOLEBODY_NAMES

  def __call__(self, gt, results, sigmas=None, **overrides) -> dict[str, float]:
    options = dict(use_area=self.use_area)
    options.update(overrides)
    return evaluate_wholebody(gt, results, self.sigmas if sigmas is None else sigmas, **options)


def _head_sizes(annotations) -> np.ndarray:
  sizes = []
  for ann in annotations:
    if "head_size" in ann:
      sizes.append(float(ann["head_size"]))
    elif "head_bbox" in ann:
      x1, y1, x2, y2 = (float(v) for v in ann["head_bbox"])
      sizes.append(MPII_HEAD_SIZE_FACTOR * float(np.hypot(x2 - x1, y2 - y1)))
    else:
      raise ValueError(
        f"annotation {ann.get('id')} has neither 'head_size' (px) nor 'head_bbox' "
        "[x1, y1, x2, y2]; PCKh needs MPII's head boxes (mpii_gt_val.mat) in the ground truth"
      )
  return np.asarray(sizes, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class PCKhEvaluator:
  """MPII PCKh. Call as `evaluator(pred_xy, gt_xy, visible, head_size) -> {'PCKh', 'PCKh@0.1'}` (see `pckh`);
  `evaluate(gt, results)` reads the head size from each annotation's `head_size` or `head_bbox`."""

  format_name: str
  kind = "pckh"
  metric_names = ("PCKh", "PCKh@0.1")
  primary_metric = "PCKh"
  # Every ground-truth person is scored once, paired with its prediction (no NMS); PCKh needs head sizes.
  scores_each_person = True
  needs_head_size = True

  def __call__(self, pred_xy, gt_xy, visible, head_size) -> dict[str, float]:
    return pckh_metrics(pred_xy, gt_xy, visible, head_size)

  def evaluate_people(self, pred_xy, gt_keypoints, annotations, gt) -> dict[str, float]:
    """PCKh of predictions paired with ground-truth people: `pred_xy` (N, K, 2), `gt_keypoints` (N, K, 3), the
    people's annotations (unused) and the ground truth dict with `head_size` (N,) px."""
    del annotations
    return self(pred_xy, gt_keypoints[..., :2], gt_keypoints[..., 2] > 0, np.asarray(gt["head_size"]))

  def evaluate(self, gt, results) -> dict[str, float]:
    """PCKh of COCO-format `results` matched to the ground-truth people (see `match_results`)."""
    gt = load_json(gt, "ground truth")
    results = load_json(results, "results")
    annotations, pred, gt_kpts = match_results(gt, results, _format_sigmas(self.format_name).size)
    labelled = gt_kpts[..., 2] > 0
    keep = labelled.any(axis=1)
    heads = _head_sizes([a for a, k in zip(annotations, keep) if k])
    return self(pred[keep], gt_kpts[keep][..., :2], labelled[keep], heads)


@dataclasses.dataclass(frozen=True)
class PCKEvaluator:
  """Hand keypoint accuracy with ground-truth boxes (InterHand2.6M): {'PCK', 'AUC', 'EPE'} (`hand_metrics`).
  Call as `evaluator(pred_xy, gt_xy, visible, bbox)`; `evaluate(gt, results)` uses each annotation's bbox."""

  format_name: str
  kind = "pck"
  metric_names = ("PCK", "AUC", "EPE")
  primary_metric = "AUC"
  # Every ground-truth person is scored once, paired with its prediction (no NMS); PCK is relative to its box.
  scores_each_person = True
  needs_head_size = False

  def __call__(self, pred_xy, gt_xy, visible, bbox) -> dict[str, float]:
    return hand_metrics(pred_xy, gt_xy, visible, bbox)

  def evaluate_people(self, pred_xy, gt_keypoints, annotations, gt) -> dict[str, float]:
    """PCK / AUC / EPE of predictions paired with ground-truth people: `pred_xy` (N, K, 2), `gt_keypoints`
    (N, K, 3) and the people's COCO annotations (their `bbox` xywh); `gt` unused."""
    del gt
    boxes = np.asarray([a["bbox"] for a in annotations], np.float64).reshape(-1, 4)
    return self(pred_xy, gt_keypoints[..., :2], gt_keypoints[..., 2] > 0, boxes)

  def evaluate(self, gt, results) -> dict[str, float]:
    """PCK / AUC / EPE of COCO-format `results` matched to the ground-truth people (see `match_results`)."""
    gt = load_json(gt, "ground truth")
    results = load_json(results, "results")
    annotations, pred, gt_kpts = match_results(gt, results, _format_sigmas(self.format_name).size)
    if any("bbox" not in a for a in annotations):
      raise ValueError("every ground-truth annotation needs a 'bbox' (xywh); PCK is relative to its size")
    bbox = np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
    return self(pred, gt_kpts[..., :2], gt_kpts[..., 2] > 0, bbox)


_EVALUATORS = {
  "coco": OKSEvaluator("coco", "coco", toolkit="pycocotools"),
  "aic": OKSEvaluator("aic", "aic", use_area=False),
  "mpii": PCKhEvaluator("mpii"),
  "ap10k": OKSEvaluator("ap10k", "ap10k"),
  "apt36k": OKSEvaluator("apt36k", "apt36k"),
  "coco_wholebody": WholeBodyEvaluator("coco_wholebody", "coco_wholebody"),
  "ochuman": OKSEvaluator("ochuman", "coco"),  # COCO layout and sigmas
  "crowdpose": CrowdPoseEvaluator("crowdpose", "crowdpose"),
  "halpe": OKSEvaluator("halpe", "halpe"),
  "interhand": PCKEvaluator("interhand"),
  "smpl24": OKSEvaluator("smpl24", "smpl24"),  # 3DPW transfer: COCO-style AP on the projected SMPL joints
  "unified21": OKSEvaluator("unified21", "unified21"),  # the distillation student's skeleton (its sigmas)
}
# The 3D benchmarks' protocols (`pose3d.Pose3DEvaluator`: MPJPE, PA-MPJPE, PCK150, AUC, MPJPE-abs) under names
# that no 2D format uses (a 2D entry of the same name would win). A 3D format's own name may equal a 2D one, so
# `pose3d.get_evaluator3d` is the 3D lookup for any name, and `python -m posebh_jax.evaluate` picks it by the
# ground-truth file's layout.
_EVALUATORS_3D = {name: get_evaluator3d(name) for name in list_protocols()}


def list_evaluators() -> tuple[str, ...]:
  """Dataset (format) names that have an evaluator: the 2D ones sorted, then the 3D benchmarks."""
  return tuple(sorted(_EVALUATORS)) + tuple(name for name in _EVALUATORS_3D if name not in _EVALUATORS)


def get_evaluator(format_name: str):
  """The evaluator of a dataset: `OKSEvaluator` / `CrowdPoseEvaluator` / `WholeBodyEvaluator` (kind 'oks'),
  `PCKhEvaluator` (kind 'pckh'), `PCKEvaluator` (kind 'pck') or, for 'h36m', '3dhp' and '3dpw',
  `Pose3DEvaluator` (kind 'pose3d'; other 3D names: `get_evaluator3d`)."""
  evaluator = _EVALUATORS.get(format_name, _EVALUATORS_3D.get(format_name))
  if evaluator is None:
    raise ValueError(
      f"no evaluator for format {format_name!r}; pass --dataset as one of: {', '.join(list_evaluators())}"
    )
  return evaluator


NMS_CHOICES = ('oks', 'soft_oks', 'none')  # config.eval_nms


def dataset_nms(format_name: str, nms: str = 'oks') -> str | None:
  """The NMS of a dataset's top-down evaluation (`topdown_postprocess`'s `nms`): `nms` ('oks', 'soft_oks' or
  'none') for datasets whose protocol matches detections to people (OKS AP); none for those that score every
  ground-truth person once (PCKh / PCK: mmpose's MPII and InterHand evaluations apply no NMS)."""
  if nms not in NMS_CHOICES:
    raise ValueError(f"eval NMS must be one of {', '.join(NMS_CHOICES)}, got {nms!r}")
  if nms == 'none' or get_evaluator(format_name).scores_each_person:
    return None
  return nms
