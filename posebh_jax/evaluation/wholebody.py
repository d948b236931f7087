"""COCO-WholeBody keypoint AP/AR per part, as xtcocotools computes it for the reference pose code.

Six evaluations of the same results with `use_area=True`: body (17), foot (6), face (68), left hand (21),
right hand (21), each with its slice of the 133 sigmas, and whole body (all 133, concatenated in that order).
In each, a person is ignored when the evaluated part has no labelled keypoint, a result is dropped when the
part's keypoint scores are all zero, the result's score is its `<part>_score` (`wholebody_score` for the whole
body; plain `score` for the body) falling back to `score`, and the result's area is the extent of its body
keypoints (`keypoints` field).

Ground truth and results may use the official layout (`keypoints` = body, plus `foot_kpts`, `face_kpts`,
`lefthand_kpts`, `righthand_kpts`) or carry all 133 keypoints in `keypoints` (the training-time layout); the
latter is split into the parts first.
"""

from __future__ import annotations

import numpy as np

from posebh_jax.evaluation.coco import (
  SUMMARY_NAMES,
  WHOLEBODY_FIELDS,
  check_sigmas,
  load_json,
  prepare_ground_truth,
  prepare_results,
  run_cocoeval,
  summarize,
)

# part name -> (field(s), number of keypoints, score key)
WHOLEBODY_PARTS = {
  "body": (("keypoints",), 17, "score"),
  "foot": (("foot_kpts",), 6, "foot_score"),
  "face": (("face_kpts",), 68, "face_score"),
  "lefthand": (("lefthand_kpts",), 21, "lefthand_score"),
  "righthand": (("righthand_kpts",), 21, "righthand_score"),
  "wholebody": (WHOLEBODY_FIELDS, 133, "wholebody_score"),
}
WHOLEBODY_NUM_KEYPOINTS = 133
WHOLEBODY_NAMES = SUMMARY_NAMES + tuple(f"{part} {name}" for part in WHOLEBODY_PARTS for name in SUMMARY_NAMES)


def split_wholebody(record: dict, what: str) -> dict:
  """`record` with the official part fields; a 133-keypoint `keypoints` field is split into the parts."""
  if all(field in record for field in WHOLEBODY_FIELDS):
    return record
  values = np.asarray(record.get("keypoints", []), dtype=np.float64).reshape(-1)
  if values.size != 3 * WHOLEBODY_NUM_KEYPOINTS:
    raise ValueError(
      f"{what} for image {record.get('image_id')} has {values.size / 3:g} keypoints and no "
      f"part fields {list(WHOLEBODY_FIELDS[1:])}; COCO-WholeBody needs 133 keypoints "
      "(or the official part fields); evaluate with the dataset the file was made for"
    )
  out = dict(record)
  start = 0
  for field, (_, size, _) in zip(WHOLEBODY_FIELDS, list(WHOLEBODY_PARTS.values())[:5]):
    out[field] = values[3 * start : 3 * (start + size)].tolist()
    start += size
  return out


def evaluate_wholebody(
  gt: dict | str, results: list[dict] | str, sigmas, *, use_area: bool = True, max_dets: int = 20, verbose: bool = False
) -> dict[str, float]:
  """COCO-WholeBody AP/AR of `results` for each part and the whole body.

  Args:
    gt: COCO-WholeBody ground truth (dict or JSON path), official or 133-in-`keypoints` layout.
    results: `[{'image_id', 'category_id', 'keypoints', ..., 'score'}]` (either layout) or a JSON path.
    sigmas: `(133,)` OKS sigmas in body, foot, face, left hand, right hand order.
  Returns: `{'<part> <metric>': value}` for the parts body, foot, face, lefthand, righthand, wholebody and the
    metrics `SUMMARY_NAMES`, plus the plain `SUMMARY_NAMES` ('AP', ...) equal to the whole-body numbers;
    values in [0, 1] (-1 where there is nothing to average).
  """
  sigmas = check_sigmas(sigmas)
  if sigmas.size != WHOLEBODY_NUM_KEYPOINTS:
    raise ValueError(f"COCO-WholeBody needs 133 sigmas, got {sigmas.size}")
  gt = load_json(gt, "ground truth")
  if not isinstance(gt, dict) or not isinstance(gt.get("annotations"), list):
    raise ValueError("ground truth must be a COCO-format dict with images, annotations and categories")
  gt = dict(gt, annotations=[split_wholebody(a, "ground-truth annotation") for a in gt["annotations"]])
  results = load_json(results, "results")
  if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
    raise ValueError("results must be a list of {'image_id', 'category_id', 'keypoints', 'score'} dicts")
  results = [split_wholebody(r, "result") for r in results]
  out, start = {}, 0
  for part, (fields, size, score_key) in WHOLEBODY_PARTS.items():
    part_sigmas = sigmas if part == "wholebody" else sigmas[start : start + size]
    start += 0 if part == "wholebody" else size
    gt_prepared = prepare_ground_truth(gt, fields, size, use_area, "labelled", renumber=True)
    known = {img["id"] for img in gt_prepared["images"]}
    prepared = prepare_results(results, fields, size, score_key, known)
    if prepared:
      stats = summarize(run_cocoeval(gt_prepared, prepared, part_sigmas, max_dets, verbose=verbose))
    else:
      stats = {name: 0.0 for name in SUMMARY_NAMES}
    out.update({f"{part} {name}": value for name, value in stats.items()})
  return {**{name: out[f"wholebody {name}"] for name in SUMMARY_NAMES}, **out}
