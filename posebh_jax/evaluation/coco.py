"""COCO-style keypoint evaluation (OKS AP/AR) through pycocotools, with the xtcocotools conventions.

pycocotools' COCOeval('keypoints') does the matching and accumulation. Before handing data to it, the ground
truth and results are normalised the way the extended toolkit (xtcocotools, used by the reference pose
code) treats them, so that one function serves COCO, AIC, CrowdPose, AP-10K, COCO-WholeBody, ...:
- keypoints can be concatenated from several fields (COCO-WholeBody: body, foot, face, left hand, right
  hand) for both ground truth and results;
- an instance is ignored when none of its keypoints is labelled (visibility > 0), whatever `num_keypoints`
  says; a missing `iscrowd` counts as 0;
- with `use_area=False`, or when an annotation has no `area`, the object area (used by OKS and the
  medium/large ranges) is 0.53 x box area (AIC and CrowdPose have no areas);
- results whose keypoint scores are all zero are dropped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Sequence

import numpy as np

SUMMARY_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
# (is_precision, iou_threshold or None for the mean over .50:.95, area range label)
_SUMMARY_SPECS = (
    (True, None, "all"), (True, 0.5, "all"), (True, 0.75, "all"), (True, None, "medium"), (True, None, "large"),
    (False, None, "all"), (False, 0.5, "all"), (False, 0.75, "all"), (False, None, "medium"), (False, None, "large"),
)
WHOLEBODY_FIELDS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
_AREA_FROM_BOX = 0.53


def _load_json(source, what: str):
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
        try:
            with open(path) as f:
                return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} file {path} is not valid JSON ({err}); regenerate it") from None
    return source


def _concat_keypoints(record: dict, fields: Sequence[str], num_keypoints: int, what: str) -> list:
    values = []
    for field in fields:
        if field not in record:
            raise ValueError(f"{what} {record.get('id', record.get('image_id'))} has no {field!r}; "
                             f"every {what} needs the fields {list(fields)}")
        values.extend(float(v) for v in np.asarray(record[field], dtype=np.float64).reshape(-1))
    if len(values) != 3 * num_keypoints:
        raise ValueError(f"{what} for image {record.get('image_id')} has {len(values) // 3} keypoints "
                         f"but {num_keypoints} sigmas were given; pass the sigmas of the dataset's format")
    return values


def _prepare_ground_truth(gt: dict, fields, num_keypoints: int, use_area: bool) -> dict:
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"ground truth has no {key!r} list; pass a COCO-format keypoint annotation file")
    annotations = []
    for ann in gt["annotations"]:
        if "id" not in ann or "image_id" not in ann:
            raise ValueError("every ground-truth annotation needs 'id' and 'image_id'; fix the annotation file")
        keypoints = _concat_keypoints(ann, fields, num_keypoints, "ground-truth annotation")
        new = {k: ann[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd") if k in ann}
        new["keypoints"] = keypoints
        new["num_keypoints"] = int(np.count_nonzero(np.asarray(keypoints[2::3]) > 0))
        new["iscrowd"] = int(ann.get("iscrowd", 0))
        new.setdefault("category_id", 1)
        if not use_area or "area" not in ann:
            if "bbox" not in ann:
                raise ValueError(f"ground-truth annotation {ann['id']} has neither 'area' nor 'bbox'; add one")
            _, _, w, h = ann["bbox"]
            new["area"] = float(w) * float(h) * _AREA_FROM_BOX
        if "bbox" not in new:
            new["bbox"] = [0.0, 0.0, 0.0, 0.0]
        annotations.append(new)
    return {"images": list(gt["images"]), "annotations": annotations, "categories": list(gt["categories"])}


def _prepare_results(results, fields, num_keypoints: int, score_key: str, known_images: set) -> list:
    if not isinstance(results, list):
        raise ValueError("results must be a list of {'image_id', 'category_id', 'keypoints', 'score'} dicts")
    prepared, unknown = [], set()
    for res in results:
        for key in ("image_id", "keypoints"):
            if key not in res:
                raise ValueError(f"a result has no {key!r}; every result needs image_id, category_id, keypoints, score")
        if score_key not in res and "score" not in res:
            raise ValueError(f"a result for image {res['image_id']} has no 'score'")
        if res["image_id"] not in known_images:
            unknown.add(res["image_id"])
            continue
        keypoints = _concat_keypoints(res, fields, num_keypoints, "result")
        if not np.any(np.asarray(keypoints[2::3]) > 0):
            continue
        prepared.append({
            "image_id": res["image_id"],
            "category_id": res.get("category_id", 1),
            "keypoints": keypoints,
            "score": float(res.get(score_key, res.get("score"))),
        })
    if unknown:
        examples = sorted(unknown, key=str)[:5]
        raise ValueError(f"{len(unknown)} result image_id(s) are not in the ground truth (e.g. {examples}); "
                         "evaluate against the annotation file the predictions were made for")
    return prepared


def _summarize(coco_eval) -> dict[str, float]:
    """The 10 keypoint summary numbers from an accumulated COCOeval, for its single maxDets setting."""
    params = coco_eval.params
    precision = coco_eval.eval["precision"][..., 0]  # (T, R, K, A)
    recall = coco_eval.eval["recall"][..., 0]  # (T, K, A)
    stats = {}
    for name, (is_precision, iou, area) in zip(SUMMARY_NAMES, _SUMMARY_SPECS):
        area_index = list(params.areaRngLbl).index(area)
        values = precision[..., area_index] if is_precision else recall[..., area_index]
        if iou is not None:
            values = values[np.isclose(params.iouThrs, iou)]
        valid = values[values > -1]
        stats[name] = float(np.mean(valid)) if valid.size else -1.0
    return stats


def evaluate_coco_keypoints(
    gt: dict | str,
    results: list[dict] | str,
    sigmas,
    use_area: bool = True,
    max_dets: int = 20,
    *,
    keypoint_fields: Sequence[str] = ("keypoints",),
    score_key: str = "score",
    use_cats: bool = True,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """OKS keypoint AP/AR of `results` against `gt` with pycocotools.

    Args:
      gt: COCO-format keypoint ground truth (dict or path to its JSON). Not modified.
      results: list of `{'image_id', 'category_id', 'keypoints' [x, y, score] * K, 'score'}` (or a path to
        such a JSON list); their image ids must be ground-truth images (any subset). Not modified.
      sigmas: `(K,)` OKS sigmas of the format.
      use_area: use the annotations' `area` in OKS; False uses 0.53 x box area (AIC, CrowdPose).
      max_dets: detections per image considered (pycocotools' keypoint default is 20).
      keypoint_fields: fields concatenated, in order, into the K keypoints of both gt and results
        (`WHOLEBODY_FIELDS` for COCO-WholeBody).
      score_key: result field used as instance score (falls back to 'score' when absent).
      use_cats: match per category (False ignores category ids, as in proposal scoring).
      image_ids: evaluate only these images (default: every ground-truth image).
      verbose: let pycocotools print its progress and print the summary table.
    Returns: `{name: value}` for `SUMMARY_NAMES` ('AP', 'AP .5', ..., 'AR (L)'), in [0, 1]; -1 where
      pycocotools has nothing to average (e.g. no medium-sized ground truth). With no usable result, every
      value is 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sigmas.size == 0 or not np.all(sigmas > 0):
        raise ValueError("sigmas must be a non-empty array of positive OKS sigmas, one per keypoint")
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    num_keypoints = sigmas.size
    gt = _load_json(gt, "ground truth")
    if not isinstance(gt, dict):
        raise ValueError("ground truth must be a COCO-format dict with images, annotations and categories")
    gt_prepared = _prepare_ground_truth(gt, keypoint_fields, num_keypoints, use_area)
    known_images = {img["id"] for img in gt_prepared["images"]}
    results = _prepare_results(_load_json(results, "results"), keypoint_fields, num_keypoints, score_key,
                               known_images)
    if not results:
        if verbose:
            print("evaluate_coco_keypoints: no results with keypoints; every metric is 0")
        return {name: 0.0 for name in SUMMARY_NAMES}

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = COCO()
        coco_gt.dataset = gt_prepared
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.kpt_oks_sigmas = sigmas
        coco_eval.params.maxDets = [int(max_dets)]
        coco_eval.params.useCats = int(bool(use_cats))
        if image_ids is not None:
            missing = set(image_ids) - known_images
            if missing:
                raise ValueError(f"image_ids not in the ground truth: {sorted(missing, key=str)[:5]}")
            coco_eval.params.imgIds = sorted(set(image_ids))
        coco_eval.evaluate()
        coco_eval.accumulate()
    stats = _summarize(coco_eval)
    if verbose:
        for name, value in stats.items():
            print(f" {name:<7} @[ maxDets={max_dets:>3d} ] = {value:0.3f}")
    return stats
