"""COCO-style keypoint evaluation (OKS AP/AR) through pycocotools, with either toolkit's conventions.

pycocotools' COCOeval('keypoints') does the matching and accumulation. Before handing data to it, the ground
truth and results are normalised the way the chosen official toolkit treats them, so that one function serves
COCO (pycocotools is its official toolkit) and AIC, AP-10K, OCHuman, Halpe, CrowdPose, COCO-WholeBody (whose
official protocol, as the reference pose code runs it, is xtcocotools):

- keypoints can be concatenated from several fields (COCO-WholeBody: body, foot, face, left hand, right
  hand) for both ground truth and results;
- which ground-truth people are ignored: pycocotools uses the file's `num_keypoints == 0`; xtcocotools counts
  the labelled keypoints (visibility > 0) of the evaluated fields (`ignore_rule` overrides either);
  `iscrowd` people are always ignored; a missing `iscrowd` counts as 0;
- with `use_area=False`, or when an annotation has no `area`, the object area (used by OKS and the
  medium/large ranges) is 0.53 x box area (AIC and CrowdPose have no areas);
- xtcocotools drops results whose keypoint scores (in the evaluated fields) are all zero; pycocotools keeps them;
- a result's area (it decides whether an unmatched result falls in the medium/large range) is, in both
  toolkits, its `bbox` area when the first result has a `bbox`, otherwise the extent of its `keypoints` field
  (for COCO-WholeBody parts that is the body's extent, not the part's).
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
_SUMMARY_SPECS = {
  "AP": (True, None, "all"),
  "AP .5": (True, 0.5, "all"),
  "AP .75": (True, 0.75, "all"),
  "AP (M)": (True, None, "medium"),
  "AP (L)": (True, None, "large"),
  "AR": (False, None, "all"),
  "AR .5": (False, 0.5, "all"),
  "AR .75": (False, 0.75, "all"),
  "AR (M)": (False, None, "medium"),
  "AR (L)": (False, None, "large"),
}
WHOLEBODY_FIELDS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
TOOLKITS = ("pycocotools", "xtcocotools")
_AREA_FROM_BOX = 0.53


def load_json(source, what: str):
  """`source` itself when it is not a path; otherwise the parsed JSON file. Errors name the file and the fix."""
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{what} file not found: {path}; pass an existing .json file")
    try:
      with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
      raise ValueError(
        f"{what} file {path} is not valid JSON ({str(err).splitlines()[0]}); pass the COCO-format .json {what} file"
      ) from None
  return source


def concat_keypoints(record: dict, fields: Sequence[str], num_keypoints: int, what: str) -> list:
  """The values of `fields` of `record` concatenated into one flat `[x, y, v] * num_keypoints` list."""
  values = []
  for field in fields:
    if field not in record:
      raise ValueError(
        f"{what} {record.get('id', record.get('image_id'))} has no {field!r}; "
        f"every {what} needs the fields {list(fields)}"
      )
    values.extend(float(v) for v in np.asarray(record[field], dtype=np.float64).reshape(-1))
  if len(values) != 3 * num_keypoints:
    raise ValueError(
      f"{what} for image {record.get('image_id')} has {len(values) / 3:g} keypoints in "
      f"{list(fields)} but {num_keypoints} are expected (one per OKS sigma); evaluate with "
      f"the dataset (--dataset) the file was made for"
    )
  return values


def _check_toolkit(toolkit: str, ignore_rule: str | None) -> str:
  if toolkit not in TOOLKITS:
    raise ValueError(f"toolkit must be one of {TOOLKITS}, got {toolkit!r}")
  rule = ignore_rule or ("num_keypoints" if toolkit == "pycocotools" else "labelled")
  if rule not in ("num_keypoints", "labelled"):
    raise ValueError(f"ignore_rule must be 'num_keypoints' or 'labelled', got {ignore_rule!r}")
  return rule


def prepare_ground_truth(
  gt: dict,
  fields: Sequence[str],
  num_keypoints: int,
  use_area: bool,
  ignore_rule: str = "labelled",
  renumber: bool = False,
) -> dict:
  """A copy of COCO-format `gt` as pycocotools needs it for one keypoint evaluation (see the module doc).

  Annotations get `keypoints` (the concatenated `fields`), `num_keypoints` (0 marks an ignored person, by
  `ignore_rule`), `iscrowd`, `bbox`, `area` (0.53 x box area without `use_area`) and, with `renumber`,
  ids 1..N in file order (xtcocotools treats a match with annotation id 0 as a match, pycocotools does not).
  """
  if not isinstance(gt, dict):
    raise ValueError("ground truth must be a COCO-format dict with images, annotations and categories")
  for key in ("images", "annotations", "categories"):
    if key not in gt:
      raise ValueError(f"ground truth has no {key!r} list; pass a COCO-format keypoint annotation file")
  annotations = []
  for position, ann in enumerate(gt["annotations"]):
    if "id" not in ann or "image_id" not in ann:
      raise ValueError("every ground-truth annotation needs 'id' and 'image_id'; fix the annotation file")
    keypoints = concat_keypoints(ann, fields, num_keypoints, "ground-truth annotation")
    new = {k: ann[k] for k in ("id", "image_id", "category_id", "bbox", "area") if k in ann}
    if renumber:
      new["id"] = position + 1
    new["keypoints"] = keypoints
    labelled = int(np.count_nonzero(np.asarray(keypoints[2::3]) > 0))
    new["num_keypoints"] = int(ann.get("num_keypoints", labelled)) if ignore_rule == "num_keypoints" else labelled
    new["iscrowd"] = int(ann.get("iscrowd", 0) or 0)
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


def _extent_area(values) -> float:
  xy = np.asarray(values, dtype=np.float64).reshape(-1)
  x, y = xy[0::3], xy[1::3]
  return float((np.max(x) - np.min(x)) * (np.max(y) - np.min(y)))


def prepare_results(
  results, fields: Sequence[str], num_keypoints: int, score_key: str, known_images: set, drop_unscored: bool = True
) -> list:
  """Copies of `results` as `{image_id, category_id, keypoints, score, area}` for one keypoint evaluation.

  `score` is `score_key` (falling back to 'score'); `area` is what the toolkits use (module doc); with
  `drop_unscored`, results whose evaluated keypoint scores are all <= 0 are left out (xtcocotools).
  """
  if not isinstance(results, list):
    raise ValueError("results must be a list of {'image_id', 'category_id', 'keypoints', 'score'} dicts")
  box_area = bool(results) and isinstance(results[0], dict) and bool(results[0].get("bbox"))
  prepared, unknown = [], set()
  for res in results:
    if not isinstance(res, dict):
      raise ValueError("results must be a list of {'image_id', 'category_id', 'keypoints', 'score'} dicts")
    for key in ("image_id", "keypoints"):
      if key not in res:
        raise ValueError(f"a result has no {key!r}; every result needs image_id, category_id, keypoints, score")
    if score_key not in res and "score" not in res:
      raise ValueError(
        f"a result for image {res['image_id']} has no 'score'; rescore top-down instances "
        "first (evaluate with --topdown)"
      )
    if res["image_id"] not in known_images:
      unknown.add(res["image_id"])
      continue
    keypoints = concat_keypoints(res, fields, num_keypoints, "result")
    if drop_unscored and not np.any(np.asarray(keypoints[2::3]) > 0):
      continue
    if box_area:
      if not res.get("bbox"):
        raise ValueError(
          f"the first result has a 'bbox' but one for image {res['image_id']} has none; "
          "give every result a bbox or none"
        )
      area = float(res["bbox"][2]) * float(res["bbox"][3])
    else:
      area = _extent_area(res["keypoints"])
    prepared.append(
      {
        "image_id": res["image_id"],
        "category_id": res.get("category_id", 1),
        "keypoints": keypoints,
        "score": float(res.get(score_key, res.get("score"))),
        "area": area,
      }
    )
  if unknown:
    examples = sorted(unknown, key=str)[:5]
    raise ValueError(
      f"{len(unknown)} result image_id(s) are not in the ground truth (e.g. {examples}); "
      "evaluate against the annotation file the predictions were made for"
    )
  return prepared


def run_cocoeval(
  gt_prepared: dict,
  results_prepared: list,
  sigmas,
  max_dets: int = 20,
  use_cats: bool = True,
  image_ids: Sequence | None = None,
  verbose: bool = False,
):
  """pycocotools COCOeval('keypoints') on prepared inputs, evaluated and accumulated; returns the COCOeval.

  The results' `area` (from `prepare_results`) replaces the one pycocotools derives. Nothing is printed
  unless `verbose`.
  """
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  areas = [r["area"] for r in results_prepared]
  results = [{k: v for k, v in r.items() if k != "area"} for r in results_prepared]
  quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
  with quiet:
    coco_gt = COCO()
    coco_gt.dataset = gt_prepared
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(results)
    for ann, area in zip(coco_dt.dataset["annotations"], areas):
      ann["area"] = area
    coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
    coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    coco_eval.params.maxDets = [int(max_dets)]
    coco_eval.params.useCats = int(bool(use_cats))
    if image_ids is not None:
      coco_eval.params.imgIds = sorted(set(image_ids))
    coco_eval.evaluate()
    coco_eval.accumulate()
  return coco_eval


def summarize(coco_eval, names: Sequence[str] = SUMMARY_NAMES) -> dict[str, float]:
  """Summary numbers `names` (from `SUMMARY_NAMES`) of an accumulated COCOeval, for its single maxDets."""
  params = coco_eval.params
  precision = coco_eval.eval["precision"][..., 0]  # (T, R, K, A)
  recall = coco_eval.eval["recall"][..., 0]  # (T, K, A)
  stats = {}
  for name in names:
    is_precision, iou, area = _SUMMARY_SPECS[name]
    area_index = list(params.areaRngLbl).index(area)
    values = precision[..., area_index] if is_precision else recall[..., area_index]
    if iou is not None:
      values = values[np.isclose(params.iouThrs, iou)]
    valid = values[values > -1]
    stats[name] = float(np.mean(valid)) if valid.size else -1.0
  return stats


def check_sigmas(sigmas) -> np.ndarray:
  """`(K,)` float64 OKS sigmas; ValueError unless non-empty and positive."""
  sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
  if sigmas.size == 0 or not np.all(sigmas > 0):
    raise ValueError("sigmas must be a non-empty array of positive OKS sigmas, one per keypoint")
  return sigmas


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
  toolkit: str = "xtcocotools",
  ignore_rule: str | None = None,
) -> dict[str, float]:
  """OKS keypoint AP/AR of `results` against `gt`, as the official `toolkit` computes it.

  Args:
    gt: COCO-format keypoint ground truth (dict or path to its JSON). Not modified.
    results: list of `{'image_id', 'category_id', 'keypoints' [x, y, score] * K, 'score'}` (or a path to
      such a JSON list); their image ids must be ground-truth images (any subset). Not modified.
    sigmas: `(K,)` OKS sigmas of the format.
    use_area: use the annotations' `area` in OKS; False uses 0.53 x box area (AIC, CrowdPose).
    max_dets: detections per image considered (the keypoint default is 20).
    keypoint_fields: fields concatenated, in order, into the K keypoints of both gt and results
      (`WHOLEBODY_FIELDS` for whole-body AP over all 133 keypoints).
    score_key: result field used as instance score (falls back to 'score' when absent).
    use_cats: match per category (False ignores category ids, as in proposal scoring).
    image_ids: evaluate only these images (default: every ground-truth image).
    verbose: let pycocotools print its progress and print the summary table.
    toolkit: 'pycocotools' (COCO's official protocol) or 'xtcocotools' (the others'); see the module doc.
    ignore_rule: 'num_keypoints' or 'labelled' to override the toolkit's rule for ignored people.
  Returns: `{name: value}` for `SUMMARY_NAMES` ('AP', 'AP .5', ..., 'AR (L)'), in [0, 1]; -1 where
    the toolkit has nothing to average (e.g. no medium-sized ground truth). With no usable result, every
    value is 0.
  """
  rule = _check_toolkit(toolkit, ignore_rule)
  sigmas = check_sigmas(sigmas)
  if max_dets < 1:
    raise ValueError(f"max_dets must be >= 1, got {max_dets}")
  gt = load_json(gt, "ground truth")
  gt_prepared = prepare_ground_truth(
    gt, keypoint_fields, sigmas.size, use_area, rule, renumber=toolkit == "xtcocotools"
  )
  known_images = {img["id"] for img in gt_prepared["images"]}
  results = prepare_results(
    load_json(results, "results"),
    keypoint_fields,
    sigmas.size,
    score_key,
    known_images,
    drop_unscored=toolkit == "xtcocotools",
  )
  if image_ids is not None:
    missing = set(image_ids) - known_images
    if missing:
      raise ValueError(f"image_ids not in the ground truth: {sorted(missing, key=str)[:5]}")
  if not results:
    if verbose:
      print("evaluate_coco_keypoints: no results with keypoints; every metric is 0")
    return {name: 0.0 for name in SUMMARY_NAMES}
  coco_eval = run_cocoeval(gt_prepared, results, sigmas, max_dets, use_cats, image_ids, verbose)
  stats = summarize(coco_eval)
  if verbose:
    for name, value in stats.items():
      print(f" {name:<7} @[ maxDets={max_dets:>3d} ] = {value:0.3f}")
  return stats
