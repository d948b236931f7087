"""Evaluation: COCO-style OKS AP (pycocotools), MPII PCKh, and an evaluator registry keyed by format name."""

from posebh_jax.evaluation.coco import SUMMARY_NAMES, WHOLEBODY_FIELDS, evaluate_coco_keypoints
from posebh_jax.evaluation.pckh import MPII_EXCLUDED_FROM_MEAN, pckh, pckh_metrics
from posebh_jax.evaluation.registry import OKSEvaluator, PCKhEvaluator, get_evaluator, list_evaluators

__all__ = [
    "MPII_EXCLUDED_FROM_MEAN",
    "OKSEvaluator",
    "PCKhEvaluator",
    "SUMMARY_NAMES",
    "WHOLEBODY_FIELDS",
    "evaluate_coco_keypoints",
    "get_evaluator",
    "list_evaluators",
    "pckh",
    "pckh_metrics",
]
