"""Evaluation: each dataset's official metric (COCO-style OKS AP/AR with pycocotools' or xtcocotools'
conventions, CrowdPose easy/medium/hard, COCO-WholeBody per part, MPII PCKh, hand PCK/AUC/EPE), top-down
post-processing (rescoring, OKS-NMS, soft-OKS-NMS), 3D metrics (MPJPE, PA-MPJPE, PCK150, AUC, MPJPE-abs; H36M /
3DHP / 3DPW protocols) and an evaluator registry keyed by dataset name."""

from posebh_jax.evaluation.coco import SUMMARY_NAMES, WHOLEBODY_FIELDS, evaluate_coco_keypoints, load_json
from posebh_jax.evaluation.crowdpose import CROWDPOSE_NAMES, crowd_index_split, evaluate_crowdpose
from posebh_jax.evaluation.pck import hand_metrics, keypoint_auc, keypoint_epe, keypoint_pck, match_results
from posebh_jax.evaluation.pckh import MPII_EXCLUDED_FROM_MEAN, pckh, pckh_metrics
from posebh_jax.evaluation.pose3d import (
  Pose3DEvaluator,
  Protocol3D,
  get_evaluator3d,
  is_3d_ground_truth,
  pose3d_metrics,
)
from posebh_jax.evaluation.registry import (
  CrowdPoseEvaluator,
  OKSEvaluator,
  PCKEvaluator,
  PCKhEvaluator,
  WholeBodyEvaluator,
  get_evaluator,
  list_evaluators,
)
from posebh_jax.evaluation.topdown import oks_iou, oks_nms, rescore, soft_oks_nms, topdown_postprocess
from posebh_jax.evaluation.wholebody import WHOLEBODY_NAMES, WHOLEBODY_PARTS, evaluate_wholebody

__all__ = [
  "CROWDPOSE_NAMES",
  "CrowdPoseEvaluator",
  "MPII_EXCLUDED_FROM_MEAN",
  "OKSEvaluator",
  "PCKEvaluator",
  "PCKhEvaluator",
  "Pose3DEvaluator",
  "Protocol3D",
  "SUMMARY_NAMES",
  "WHOLEBODY_FIELDS",
  "WHOLEBODY_NAMES",
  "WHOLEBODY_PARTS",
  "WholeBodyEvaluator",
  "crowd_index_split",
  "evaluate_coco_keypoints",
  "evaluate_crowdpose",
  "evaluate_wholebody",
  "get_evaluator",
  "get_evaluator3d",
  "hand_metrics",
  "is_3d_ground_truth",
  "keypoint_auc",
  "keypoint_epe",
  "keypoint_pck",
  "list_evaluators",
  "load_json",
  "match_results",
  "oks_iou",
  "oks_nms",
  "pckh",
  "pckh_metrics",
  "pose3d_metrics",
  "rescore",
  "soft_oks_nms",
  "topdown_postprocess",
]
