"""Evaluator registry: the metric family and its settings for each keypoint format, looked up by name."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from posebh_jax.evaluation.coco import SUMMARY_NAMES, WHOLEBODY_FIELDS, evaluate_coco_keypoints
from posebh_jax.evaluation.pckh import pckh_metrics


@dataclasses.dataclass(frozen=True)
class OKSEvaluator:
    """COCO-style OKS AP for one format.

    Call as `evaluator(gt, results, sigmas=None, **overrides) -> {'AP', 'AP .5', ...}`; the sigmas default
    to `posebh_jax.skeletons.get_format(sigma_format).sigmas`, looked up on first use. `overrides` go to
    `evaluate_coco_keypoints` (e.g. `verbose=True`, `image_ids=...`).
    """

    format_name: str
    sigma_format: str
    use_area: bool = True
    keypoint_fields: Sequence[str] = ("keypoints",)
    score_key: str = "score"
    kind = "oks"
    metric_names = SUMMARY_NAMES
    primary_metric = "AP"

    @property
    def sigmas(self) -> np.ndarray:
        """`(K,)` OKS sigmas of the format, from the skeleton registry."""
        from posebh_jax.skeletons import get_format

        return np.asarray(get_format(self.sigma_format).sigmas, dtype=np.float64)

    def __call__(self, gt, results, sigmas=None, **overrides) -> dict[str, float]:
        options = dict(use_area=self.use_area, keypoint_fields=tuple(self.keypoint_fields),
                       score_key=self.score_key)
        options.update(overrides)
        return evaluate_coco_keypoints(gt, results, self.sigmas if sigmas is None else sigmas, **options)


@dataclasses.dataclass(frozen=True)
class PCKhEvaluator:
    """MPII PCKh. Call as `evaluator(pred_xy, gt_xy, visible, head_size) -> {'PCKh', 'PCKh@0.1'}`."""

    format_name: str
    kind = "pckh"
    metric_names = ("PCKh", "PCKh@0.1")
    primary_metric = "PCKh"

    def __call__(self, pred_xy, gt_xy, visible, head_size) -> dict[str, float]:
        return pckh_metrics(pred_xy, gt_xy, visible, head_size)


_EVALUATORS = {
    "coco": OKSEvaluator("coco", "coco"),
    "aic": OKSEvaluator("aic", "aic", use_area=False),
    "ap10k": OKSEvaluator("ap10k", "ap10k"),
    "apt36k": OKSEvaluator("apt36k", "apt36k"),
    # Whole-body AP over all 133 keypoints (body, foot, face, hands concatenated, with their sigmas).
    "coco_wholebody": OKSEvaluator("coco_wholebody", "coco_wholebody", keypoint_fields=WHOLEBODY_FIELDS,
                                   score_key="wholebody_score"),
    "ochuman": OKSEvaluator("ochuman", "coco"),  # COCO layout and sigmas
    "crowdpose": OKSEvaluator("crowdpose", "crowdpose", use_area=False),
    "halpe": OKSEvaluator("halpe", "halpe"),
    "mpii": PCKhEvaluator("mpii"),
}


def list_evaluators() -> tuple[str, ...]:
    """Format names that have an evaluator."""
    return tuple(sorted(_EVALUATORS))


def get_evaluator(format_name: str):
    """The evaluator for a format: an `OKSEvaluator` (kind 'oks') or a `PCKhEvaluator` (kind 'pckh')."""
    if format_name not in _EVALUATORS:
        raise ValueError(f"no evaluator for format {format_name!r}; known: {', '.join(list_evaluators())}")
    return _EVALUATORS[format_name]
