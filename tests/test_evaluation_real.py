"""Evaluation against the official toolkits on real ground truth + predictions (pycocotools for COCO,
xtcocotools for CrowdPose, COCO-WholeBody, AIC, OCHuman, Halpe, AP-10K), independent re-derivations of the
CrowdPose and WholeBody rules, top-down post-processing (rescoring, OKS-NMS, soft-OKS-NMS), hand PCK/AUC/EPE
and PCKh@0.1 closed forms, one-line user errors, and the `python -m posebh_jax.evaluate` command."""

import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import pycocotools_keypoint_eval, require_reference
from realdata_samples import REALDATA, needs_realdata
from posebh_jax import evaluation
from posebh_jax.evaluation import (
  CROWDPOSE_NAMES,
  SUMMARY_NAMES,
  WHOLEBODY_FIELDS,
  WHOLEBODY_PARTS,
  get_evaluator,
  hand_metrics,
  keypoint_auc,
  keypoint_epe,
  keypoint_pck,
  oks_nms,
  pckh_metrics,
  rescore,
  soft_oks_nms,
  topdown_postprocess,
)
from posebh_jax.skeletons import get_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = REALDATA
XT = os.path.join(REAL, "xtcocoapi")
FCE = os.path.join(REAL, "faster_coco_eval")


@pytest.fixture(scope="module")
def xtcocotools():
  """xtcocotools' COCO and COCOeval, built from source by `make test` (see requirements-reference.txt): its only
  wheel is built against numpy 1.x and fails to import under numpy 2. Where it cannot be built (no C compiler),
  the tests that use it are skipped (failed under CI=true); the others re-derive the same numbers with
  pycocotools."""
  hint = (
    "build it against the installed numpy: pip install -r requirements-reference.txt && pip install "
    "--no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3"
  )
  require_reference("xtcocotools", hint)
  return require_reference("xtcocotools.coco", hint).COCO, require_reference("xtcocotools.cocoeval", hint).COCOeval


def _load(path):
  with open(path) as f:
    return json.load(f)


def _dump(tmp_path, name, data):
  path = str(tmp_path / name)
  with open(path, "w") as f:
    json.dump(data, f)
  return path


def _sigmas(name):
  return np.asarray(get_format(name).sigmas, np.float64)


_pycocotools_stats = pycocotools_keypoint_eval


def _xt_stats(xtcocotools, gt_path, results, iou_type, sigmas, use_area, coco_gt=None, coco_dt=None):
  """xtcocotools' COCOeval(iou_type) `stats`, run the way the reference pose code runs it."""
  XCOCO, XCOCOeval = xtcocotools
  with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    coco_gt = coco_gt or XCOCO(gt_path)
    coco_dt = coco_dt or coco_gt.loadRes(copy.deepcopy(results))
    coco_eval = XCOCOeval(coco_gt, coco_dt, iou_type, np.asarray(sigmas, np.float64), use_area=use_area)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return np.asarray(coco_eval.stats, np.float64)


def _perturbed(gt, fields=("keypoints",), seed=0):
  """Realistic predictions for a ground-truth-only file: every labelled person with person-sized keypoint
  noise (some joints far off), random keypoint scores, plus a shifted, lower-scored false positive for every
  other person. The result keeps gt's field layout and category ids."""
  rng = np.random.default_rng(seed)
  sizes = [len(gt["annotations"][0][f]) // 3 for f in fields]
  out = []
  for n, ann in enumerate(gt["annotations"]):
    kpts = np.concatenate([np.asarray(ann[f], np.float64).reshape(-1, 3) for f in fields])
    if not np.any(kpts[:, 2] > 0) or ann.get("iscrowd", 0):
      continue
    x, y, w, h = ann["bbox"]
    scale = math.sqrt(max(w * h, 1.0))
    copies = [(0.0, rng.uniform(0.4, 1.0))] + ([(0.3 * w, rng.uniform(0.05, 0.5))] if n % 2 else [])
    for shift, score in copies:
      pred = kpts.copy()
      spread = rng.choice([0.01, 0.04, 0.15], size=(len(pred), 1), p=[0.5, 0.4, 0.1])
      pred[:, :2] += rng.normal(0.0, 1.0, (len(pred), 2)) * spread * scale
      pred[:, 0] += shift
      pred[:, 2] = rng.uniform(0.05, 1.0, len(pred))
      res = {"image_id": ann["image_id"], "category_id": ann.get("category_id", 1), "score": float(score)}
      start = 0
      for field, size in zip(fields, sizes):
        res[field] = [round(float(v), 3) for v in pred[start : start + size].reshape(-1)]
        start += size
      out.append(res)
  return out


# --- COCO: pycocotools ---------------------------------------------------------------------------------

COCO_CASES = [
  (os.path.join(XT, "example_coco_val.json"), os.path.join(XT, "example_coco_preds.json")),
  # 14 people, 128 real detections in one image, results with a 'bbox' (its area is the result's area).
  (
    os.path.join(FCE, "keypoints_dataset", "gt_dataset.json"),
    os.path.join(FCE, "keypoints_dataset", "dt_dataset.json"),
  ),
]


@needs_realdata
@pytest.mark.parametrize("gt_path,res_path", COCO_CASES)
def test_coco_equals_pycocotools(gt_path, res_path):
  ours = get_evaluator("coco").evaluate(gt_path, res_path)
  assert list(ours) == list(SUMMARY_NAMES)
  reference = _pycocotools_stats(_load(gt_path), _load(res_path), _sigmas("coco")).stats
  np.testing.assert_array_equal([ours[n] for n in SUMMARY_NAMES], reference)
  assert 0.0 < ours["AP"] < 1.0
  print(os.path.basename(res_path), {n: round(ours[n], 6) for n in ("AP", "AP .5", "AP (M)", "AR")})


@needs_realdata
@pytest.mark.parametrize("gt_path,res_path", COCO_CASES)
def test_coco_equals_xtcocotools(gt_path, res_path, xtcocotools):
  ours = get_evaluator("coco").evaluate(gt_path, res_path)
  xt = _xt_stats(xtcocotools, gt_path, _load(res_path), "keypoints", _sigmas("coco"), True)
  np.testing.assert_allclose([ours[n] for n in SUMMARY_NAMES], xt, atol=1e-12)


@needs_realdata
def test_coco_keeps_unscored_results_like_pycocotools():
  """pycocotools keeps a result whose keypoint scores are all 0 (xtcocotools drops it)."""
  gt_path, res_path = os.path.join(XT, "example_coco_val.json"), os.path.join(XT, "example_coco_preds.json")
  results = _load(res_path)
  image = results[0]["image_id"]
  results = [r for r in results if r["image_id"] == image]
  for r in results[::2]:
    r["keypoints"][2::3] = [0.0] * 17
  reference = _pycocotools_stats(_load(gt_path), results, _sigmas("coco"), img_ids=[image]).stats
  ours = get_evaluator("coco")(gt_path, results, image_ids=[image])
  np.testing.assert_array_equal([ours[n] for n in SUMMARY_NAMES], reference)
  dropped = get_evaluator("ochuman")(gt_path, results, image_ids=[image])  # xtcocotools rules, same sigmas
  assert dropped != ours


# --- CrowdPose: xtcocotools 'keypoints_crowd' ------------------------------------------------------------


def _crowdpose_cases(tmp_path):
  test_gt = os.path.join(REAL, "crowdpose", "test_crowdpose.json")
  # CrowdPose's num_keypoints counts only some joints: a person with labelled joints but num_keypoints 0 is ignored.
  edited = _load(os.path.join(XT, "example_crowdpose_val.json"))
  for ann in edited["annotations"][::3]:
    ann["num_keypoints"] = 0
  boundaries = copy.deepcopy(_load(os.path.join(XT, "example_crowdpose_val.json")))
  for image, crowd_index in zip(boundaries["images"], (0.2, 0.8, 0.1999, 0.0)):  # easy < 0.2 <= medium < 0.8
    image["crowdIndex"] = crowd_index
  return [
    (_dump(tmp_path, "boundaries.json", boundaries), _load(os.path.join(XT, "example_crowdpose_preds.json"))),
    (_dump(tmp_path, "edited_crowdpose.json", edited), _load(os.path.join(XT, "example_crowdpose_preds.json"))),
    (os.path.join(XT, "example_crowdpose_val.json"), _load(os.path.join(XT, "example_crowdpose_preds.json"))),
    (
      os.path.join(FCE, "dataset", "example_crowdpose_val.json"),
      _load(os.path.join(FCE, "dataset", "example_crowdpose_preds.json")),
    ),
    (test_gt, _perturbed(_load(test_gt), seed=3)),  # both images 'medium': easy and hard are -1
  ]


@needs_realdata
def test_crowdpose_equals_xtcocotools(tmp_path, xtcocotools):
  for gt_path, results in _crowdpose_cases(tmp_path):
    ours = get_evaluator("crowdpose").evaluate(gt_path, results)
    assert list(ours) == list(CROWDPOSE_NAMES)
    reference = _xt_stats(xtcocotools, gt_path, results, "keypoints_crowd", _sigmas("crowdpose"), False)
    np.testing.assert_allclose([ours[n] for n in CROWDPOSE_NAMES], reference, atol=1e-12, rtol=0)
    print(os.path.basename(gt_path), {n: round(ours[n], 6) for n in CROWDPOSE_NAMES})
  assert ours["AP (E)"] == ours["AP (H)"] == -1.0 and ours["AP (M)"] >= 0


@needs_realdata
def test_crowdpose_by_independent_pycocotools_route():
  """'all' numbers = pycocotools with area 0.53 x box; AP (E/M/H) = pycocotools on that split's images."""
  gt = _load(os.path.join(XT, "example_crowdpose_val.json"))
  results = _load(os.path.join(XT, "example_crowdpose_preds.json"))
  sigmas = _sigmas("crowdpose")
  ours = evaluation.evaluate_crowdpose(gt, results, sigmas)
  with_area = copy.deepcopy(gt)
  for ann in with_area["annotations"]:
    ann["area"] = ann["bbox"][2] * ann["bbox"][3] * 0.53  # num_keypoints stays the file's
  stats = _pycocotools_stats(with_area, results, sigmas).stats
  np.testing.assert_array_equal([ours[n] for n in CROWDPOSE_NAMES[:6]], stats[[0, 1, 2, 5, 6, 7]])
  crowd = {im["id"]: im["crowdIndex"] for im in gt["images"]}
  splits = {"AP (E)": lambda c: c < 0.2, "AP (M)": lambda c: 0.2 <= c < 0.8, "AP (H)": lambda c: c >= 0.8}
  for name, rule in splits.items():
    ids = [i for i, c in crowd.items() if rule(c)]
    assert ids, name
    precision = _pycocotools_stats(with_area, results, sigmas, img_ids=ids).eval["precision"][:, :, :, 0, :]
    assert ours[name] == round(float(np.mean(precision)), 4)
  assert len({ours["AP (E)"], ours["AP (M)"], ours["AP (H)"]}) == 3


def test_crowdpose_two_people_by_hand():
  """One image, two people, OKS computed here from its definition with area 0.53 x box area: person A's
  result has OKS 0.97 (a hit at every threshold), person B's about 0.62 (a hit at .50, .55, .60 only)."""
  sigmas = _sigmas("crowdpose")
  rng = np.random.default_rng(0)
  boxes = [[10.0, 20.0, 100.0, 200.0], [400.0, 30.0, 80.0, 160.0]]
  gt_kpts = [
    np.c_[rng.uniform(b[0], b[0] + b[2], 14), rng.uniform(b[1], b[1] + b[3], 14), np.full(14, 2.0)] for b in boxes
  ]
  target_oks = [0.97, 0.62]
  preds, oks = [], []
  for kpts, box, target in zip(gt_kpts, boxes, target_oks):
    area = box[2] * box[3] * 0.53
    # A common shift d with mean_k exp(-d^2 / (2 (2 sigma_k)^2 area)) = target, by bisection.
    lo, hi = 0.0, 100.0
    for _ in range(200):
      d = 0.5 * (lo + hi)
      value = np.mean(np.exp(-d * d / (2 * (2 * sigmas) ** 2 * area)))
      lo, hi = (d, hi) if value > target else (lo, d)
    pred = kpts.copy()
    pred[:, 0] += d
    pred[:, 2] = 0.9
    preds.append(pred)
    oks.append(float(np.mean(np.exp(-d * d / (2 * (2 * sigmas) ** 2 * area)))))
  gt = {
    "images": [{"id": 1, "crowdIndex": 0.5}],
    "categories": [{"id": 1}],
    "annotations": [
      {
        "id": i + 1,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": 14,
        "bbox": box,
        "keypoints": k.reshape(-1).tolist(),
      }
      for i, (box, k) in enumerate(zip(boxes, gt_kpts))
    ],
  }
  results = [
    {"image_id": 1, "category_id": 1, "score": s, "keypoints": p.reshape(-1).tolist()}
    for s, p in zip((0.9, 0.8), preds)
  ]
  ours = evaluation.evaluate_crowdpose(gt, results, sigmas)
  thresholds = np.linspace(0.5, 0.95, 10)
  hits_b = int(np.sum(oks[1] >= thresholds))
  assert oks[0] > 0.95 and hits_b == 3
  # Both hit: AP 1. Only the higher-scored A hits: precision 1 up to recall 0.5 (51 of 101 recall points).
  ap = (hits_b * 1.0 + (10 - hits_b) * 51 / 101) / 10
  ar = (hits_b * 1.0 + (10 - hits_b) * 0.5) / 10
  assert ours["AP"] == pytest.approx(ap, abs=1e-12) and ours["AR"] == pytest.approx(ar, abs=1e-12)
  assert ours["AP .5"] == 1.0 and ours["AP .75"] == pytest.approx(51 / 101, abs=1e-12)
  assert ours["AP (M)"] == round(ap, 4) and ours["AP (E)"] == ours["AP (H)"] == -1.0
  # Swapping the scores: only the lower-scored result hits above .60, so precision there is 1/2.
  results[0]["score"], results[1]["score"] = 0.8, 0.9
  swapped = evaluation.evaluate_crowdpose(gt, results, sigmas)
  assert swapped["AP"] == pytest.approx((hits_b + (10 - hits_b) * 0.5 * 51 / 101) / 10, abs=1e-12)


# --- COCO-WholeBody: xtcocotools per part ---------------------------------------------------------------


def _xt_wholebody(xtcocotools, gt_path, results):
  """The reference code's sequence: one gt and one result object, five parts then the whole body."""
  XCOCO, _ = xtcocotools
  sigmas = _sigmas("coco_wholebody")
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = XCOCO(gt_path)
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
  cuts = np.cumsum([0, 17, 6, 68, 21, 21])
  out = {}
  for i, part in enumerate(["body", "foot", "face", "lefthand", "righthand"]):
    out[part] = _xt_stats(
      xtcocotools, None, None, f"keypoints_{part}", sigmas[cuts[i] : cuts[i + 1]], True, coco_gt, coco_dt
    )
  out["wholebody"] = _xt_stats(xtcocotools, None, None, "keypoints_wholebody", sigmas, True, coco_gt, coco_dt)
  return out


@needs_realdata
def test_wholebody_parts_equal_xtcocotools(xtcocotools):
  cases = [(os.path.join(XT, "example_wholebody_val.json"), _load(os.path.join(XT, "example_wholebody_preds.json")))]
  test_gt = os.path.join(REAL, "coco", "test_coco_wholebody.json")
  cases.append((test_gt, _perturbed(_load(test_gt), WHOLEBODY_FIELDS, seed=1)))
  for gt_path, results in cases:
    ours = get_evaluator("coco_wholebody").evaluate(gt_path, results)
    reference = _xt_wholebody(xtcocotools, gt_path, results)
    for part in WHOLEBODY_PARTS:
      np.testing.assert_allclose(
        [ours[f"{part} {n}"] for n in SUMMARY_NAMES], reference[part], atol=1e-12, rtol=0, err_msg=f"{gt_path} {part}"
      )
    assert [ours[n] for n in SUMMARY_NAMES] == [ours[f"wholebody {n}"] for n in SUMMARY_NAMES]
    print(os.path.basename(gt_path), {p: round(ours[f"{p} AP"], 6) for p in WHOLEBODY_PARTS})
  # The training-time layout (all 133 keypoints in 'keypoints') gives the same numbers.
  flat_gt = copy.deepcopy(_load(test_gt))
  for ann in flat_gt["annotations"]:
    ann["keypoints"] = sum((ann.pop(f) if f != "keypoints" else ann[f] for f in WHOLEBODY_FIELDS), [])
  flat_results = [
    dict(image_id=r["image_id"], category_id=1, score=r["score"], keypoints=sum((r[f] for f in WHOLEBODY_FIELDS), []))
    for r in results
  ]
  assert get_evaluator("coco_wholebody").evaluate(flat_gt, flat_results) == ours


@needs_realdata
def test_wholebody_part_by_independent_pycocotools_route():
  """A part = plain pycocotools on that part's keypoints (people ignored when the part is unlabelled), with
  the result's area taken from its body keypoints (given as a bbox, which pycocotools then uses)."""
  gt = _load(os.path.join(XT, "example_wholebody_val.json"))
  results = _load(os.path.join(XT, "example_wholebody_preds.json"))
  ours = evaluation.evaluate_wholebody(gt, results, _sigmas("coco_wholebody"))
  part_gt = copy.deepcopy(gt)
  for ann in part_gt["annotations"]:
    ann["keypoints"] = ann["lefthand_kpts"]
    ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"][2::3]) > 0))
  part_results = []
  for r in results:
    if not np.any(np.asarray(r["lefthand_kpts"][2::3]) > 0):
      continue
    x, y = np.asarray(r["keypoints"][0::3]), np.asarray(r["keypoints"][1::3])
    part_results.append(
      {
        "image_id": r["image_id"],
        "category_id": 1,
        "score": r["score"],
        "keypoints": r["lefthand_kpts"],
        "bbox": [x.min(), y.min(), x.max() - x.min(), y.max() - y.min()],
      }
    )
  stats = _pycocotools_stats(part_gt, part_results, _sigmas("coco_wholebody")[91:112]).stats
  np.testing.assert_array_equal([ours[f"lefthand {n}"] for n in SUMMARY_NAMES], stats)
  assert sum(a["num_keypoints"] == 0 for a in part_gt["annotations"]) > 0  # the ignore rule is exercised


# --- other datasets whose official protocol is xtcocotools -----------------------------------------------


@needs_realdata
@pytest.mark.parametrize(
  "dataset,path,use_area",
  [
    ("aic", "aic/test_aic.json", False),
    ("ochuman", "ochuman/test_ochuman.json", True),
    ("halpe", "halpe/test_halpe.json", True),
    ("ap10k", "ap10k/test_ap10k.json", True),
  ],
)
def test_xtcocotools_datasets_equal_xtcocotools(dataset, path, use_area, tmp_path, xtcocotools):
  gt = _load(os.path.join(REAL, path))
  for ann in gt["annotations"]:
    ann.setdefault("iscrowd", 0)  # xtcocotools needs it; the project treats a missing iscrowd as 0
  gt_path = _dump(tmp_path, "gt.json", gt)
  results = _perturbed(gt, seed=2)
  ours = get_evaluator(dataset).evaluate(gt_path, results)
  evaluator = get_evaluator(dataset)
  reference = _xt_stats(xtcocotools, gt_path, results, "keypoints", evaluator.sigmas, use_area)
  assert evaluator.use_area == use_area
  np.testing.assert_allclose([ours[n] for n in SUMMARY_NAMES], reference, atol=1e-12, rtol=0)
  assert 0.0 < ours["AP"] <= 1.0
  print(dataset, {n: round(ours[n], 6) for n in ("AP", "AP .5", "AR")})


# --- top-down post-processing ----------------------------------------------------------------------------


def test_rescore_closed_form():
  scores = np.array([[0.9, 0.5, 0.1, 0.2], [0.1, 0.05, 0.0, 0.2], [0.3, 0.3, 0.3, 0.3]])
  out = rescore(scores, np.array([0.8, 0.99, 0.5]))
  np.testing.assert_allclose(out, [0.8 * (0.9 + 0.5) / 2, 0.0, 0.5 * 0.3], atol=1e-15)  # 0.2 is not above 0.2


def _oks_by_definition(a, b, area_a, area_b, sigmas):
  total = 0.0
  for k in range(len(sigmas)):
    d2 = (a[k, 0] - b[k, 0]) ** 2 + (a[k, 1] - b[k, 1]) ** 2
    total += math.exp(-d2 / (2 * sigmas[k]) ** 2 / ((area_a + area_b) / 2 + np.spacing(1)) / 2)
  return total / len(sigmas)


def _greedy_nms_reference(kpts, scores, areas, sigmas, threshold):
  order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
  suppressed, keep = set(), []
  for position, i in enumerate(order):
    if i in suppressed:
      continue
    keep.append(i)
    for j in order[position + 1 :]:
      if j not in suppressed and _oks_by_definition(kpts[i], kpts[j], areas[i], areas[j], sigmas) > threshold:
        suppressed.add(j)
  return keep


def test_oks_nms_matches_double_loop_reference():
  rng = np.random.default_rng(7)
  sigmas = _sigmas("coco")
  suppressed_total = kept_total = 0
  for _ in range(12):
    people = rng.integers(1, 4)
    kpts, areas = [], []
    for _ in range(people):
      base = rng.uniform(0, 400, (17, 2))
      area = rng.uniform(2000, 20000)
      for _ in range(rng.integers(1, 5)):  # near-duplicates with varied jitter, OKS on both sides of 0.9
        kpts.append(base + rng.normal(0, rng.choice([0.5, 2.0, 6.0]), (17, 2)))
        areas.append(area * rng.uniform(0.8, 1.2))
    kpts, areas = np.asarray(kpts), np.asarray(areas)
    scores = rng.uniform(0, 1, len(kpts))
    for threshold in (0.9, 0.5):
      keep = oks_nms(kpts, scores, areas, sigmas, threshold)
      assert keep.tolist() == _greedy_nms_reference(kpts, scores, areas, sigmas, threshold)
      if threshold == 0.9:
        kept_total += len(keep)
        suppressed_total += len(kpts) - len(keep)
  assert suppressed_total > 5 and kept_total > suppressed_total / 2


def test_soft_oks_nms_closed_form():
  sigmas = _sigmas("coco")
  rng = np.random.default_rng(1)
  a = np.c_[rng.uniform(0, 300, (17, 2)), np.full(17, 0.8)]
  b = a.copy()
  b[:, 0] += 3.0
  b[:, 2] = [0.1] * 5 + [0.6] * 12
  raw = [
    {"image_id": 5, "keypoints": a.reshape(-1).tolist(), "bbox_score": 0.9, "area": 10000.0},
    {"image_id": 5, "keypoints": b.reshape(-1).tolist(), "bbox_score": 0.7, "area": 8000.0},
  ]
  s_a, s_b = 0.9 * 0.8, 0.7 * 0.6
  oks = float(np.mean(np.exp(-9.0 / (2 * sigmas) ** 2 / (9000.0 + np.spacing(1)) / 2)))
  assert 0.9 < oks < 1.0
  soft = topdown_postprocess(raw, "coco", nms="soft_oks")
  assert [r["score"] for r in soft] == pytest.approx([s_a, s_b * math.exp(-(oks**2) / 0.9)], abs=1e-15)
  assert soft[1]["keypoints"] == b.reshape(-1).tolist()
  hard = topdown_postprocess(raw, "coco", nms="oks")
  assert len(hard) == 1 and hard[0]["score"] == pytest.approx(s_a, abs=1e-15)
  none = topdown_postprocess(raw, "coco", nms=None)
  assert [r["score"] for r in none] == pytest.approx([s_a, s_b], abs=1e-15)
  # A third, distant instance C scored between: after A, B's decayed score falls below C's, so C comes second
  # and B decays once more (by its tiny OKS with C).
  c = a.copy()
  c[:, :2] += 500.0
  kpts = np.stack([a, b, c])
  keep, scores = soft_oks_nms(kpts, [s_a, s_b, 0.4], [10000.0, 8000.0, 9000.0], sigmas)
  o_ac = _oks_by_definition(a, c, 10000.0, 9000.0, sigmas)
  o_cb = _oks_by_definition(c, b, 9000.0, 8000.0, sigmas)
  assert keep.tolist() == [0, 2, 1]
  np.testing.assert_allclose(
    scores,
    [s_a, 0.4 * math.exp(-(o_ac**2) / 0.9), s_b * math.exp(-(oks**2) / 0.9) * math.exp(-(o_cb**2) / 0.9)],
    rtol=1e-13,
  )


def _reference_soft_oks_nms_order(kpts, scores, areas, sigmas, sigma=0.9):
  """The reference soft-OKS-NMS loop (mmpose top-down): `argsort()[::-1]` of the scores, then after each pick the
  remaining scores are decayed and re-sorted by `argsort()[::-1]` of their current order."""
  scores = np.asarray(scores, np.float64)
  order = scores.argsort()[::-1]
  scores = scores[order]
  keep = []
  while order.size:
    i = order[0]
    overlap = np.array([_oks_by_definition(kpts[i], kpts[j], areas[i], areas[j], sigmas) for j in order[1:]])
    order, scores = order[1:], scores[1:] * np.exp(-(overlap**2) / sigma)
    tmp = scores.argsort()[::-1]
    order, scores = order[tmp], scores[tmp]
    keep.append(int(i))
  return keep


def test_oks_nms_orders_equal_scores_as_the_reference():
  """Equal instance scores (GT boxes, saturated keypoint scores) are ordered as the reference OKS-NMS orders them,
  `np.argsort(scores)[::-1]`: the later instance first, so of two equal-scored duplicates the later one is kept."""
  sigmas = _sigmas("coco")
  rng = np.random.default_rng(3)
  base = rng.uniform(0, 300, (17, 2))
  far = [base + 1000.0 * i for i in range(5)]  # OKS 0 between any two
  scores = np.array([0.5, 0.7, 0.5, 0.7, 0.5])
  areas = np.full(5, 9000.0)
  expected = np.argsort(scores)[::-1].tolist()
  assert expected == [3, 1, 4, 2, 0]  # the closed form: ties later-first
  assert oks_nms(np.stack(far), scores, areas, sigmas).tolist() == expected
  # Two equal-scored near-duplicates (OKS > 0.9) and a distant third: the later duplicate survives.
  dup = np.stack([base, base + 0.5, base + 1000.0])
  assert oks_nms(dup, [0.6, 0.6, 0.6], np.full(3, 9000.0), sigmas).tolist() == [2, 1]
  out = topdown_postprocess(
    [
      {
        "image_id": 1,
        "keypoints": np.c_[k, np.full(17, 0.8)].reshape(-1).tolist(),
        "bbox_score": 1.0,
        "area": 9000.0,
        "ann_id": n,
      }
      for n, k in enumerate(dup)
    ],
    "coco",
  )
  assert [r["ann_id"] for r in out] == [2, 1]
  # Soft-OKS-NMS: equal distant scores never decay (OKS 0), and each re-sort reverses the remaining ties.
  keep, kept_scores = soft_oks_nms(np.stack(far[:4]), np.full(4, 0.5), areas[:4], sigmas)
  assert keep.tolist() == [3, 0, 2, 1] == _reference_soft_oks_nms_order(far[:4], np.full(4, 0.5), areas, sigmas)
  assert kept_scores.tolist() == [0.5] * 4
  keep, _ = soft_oks_nms(np.stack(far), scores, areas, sigmas)
  assert keep.tolist() == _reference_soft_oks_nms_order(far, scores, areas, sigmas)


def _iou(a, b):
  iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def _detector_instances():
  """Top-down instances on the real COCO detector boxes: each box overlapping a labelled person (IoU > 0.5)
  gets that person's keypoints plus a person-level error shared by all of its boxes and a tiny per-box
  jitter (so a person's boxes have OKS > 0.92 with each other). Keypoint scores 0.9 where labelled, 0.05
  elsewhere. Returns (gt, instances, the person each instance copies)."""
  gt = _load(os.path.join(REAL, "coco", "test_coco.json"))
  dets = _load(os.path.join(REAL, "coco", "test_coco_det_AP_H_56.json"))
  sigmas = _sigmas("coco")
  rng = np.random.default_rng(5)
  people = {a["id"]: a for a in gt["annotations"] if a["num_keypoints"] > 0}
  person_error = {}
  for pid, ann in people.items():  # per-keypoint e = d^2 / (2 (2 sigma)^2 area) in [0, 0.6]
    e = rng.uniform(0.0, 0.6, 17)
    angle = rng.uniform(0, 2 * np.pi, 17)
    radius = np.sqrt(e * 2 * (2 * sigmas) ** 2 * ann["area"])
    person_error[pid] = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
  instances, owners = [], []
  for det in dets:
    candidates = [(_iou(det["bbox"], a["bbox"]), pid) for pid, a in people.items() if a["image_id"] == det["image_id"]]
    best = max(candidates, default=(0.0, None))
    if best[0] <= 0.5:
      continue
    ann = people[best[1]]
    kpts = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
    e = rng.uniform(0.0, 0.02, 17)  # jitter: e <= 0.02 each, so e <= 0.08 between two boxes of a person
    angle = rng.uniform(0, 2 * np.pi, 17)
    radius = np.sqrt(e * 2 * (2 * sigmas) ** 2 * ann["area"])
    xy = kpts[:, :2] + person_error[best[1]] + np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    score = np.where(kpts[:, 2] > 0, 0.9, 0.05)
    instances.append(
      {
        "image_id": det["image_id"],
        "category_id": 1,
        "bbox_score": det["score"],
        "area": ann["area"],
        "bbox": det["bbox"],
        "keypoints": np.c_[xy, score].reshape(-1).tolist(),
      }
    )
    owners.append(best[1])
  return gt, instances, owners


@needs_realdata
def test_topdown_oks_nms_on_real_detections_equals_deduplicated():
  gt, instances, owners = _detector_instances()
  sigmas = _sigmas("coco")
  assert len(instances) - len(set(owners)) >= 20  # plenty of duplicate boxes to suppress
  # Different people never reach OKS 0.9 with each other here (so NMS must keep exactly one per person).
  for i in range(len(instances)):
    for j in range(i):
      if owners[i] != owners[j] and instances[i]["image_id"] == instances[j]["image_id"]:
        a = np.asarray(instances[i]["keypoints"]).reshape(17, 3)
        b = np.asarray(instances[j]["keypoints"]).reshape(17, 3)
        assert _oks_by_definition(a, b, instances[i]["area"], instances[j]["area"], sigmas) < 0.9
  out = topdown_postprocess(instances, "coco")
  # Independent expectation: per person, the box with the highest detector score, scored box score x 0.9.
  best = {}
  for inst, owner in zip(instances, owners):
    if owner not in best or inst["bbox_score"] > best[owner]["bbox_score"]:
      best[owner] = inst
  expected = [
    {"image_id": b["image_id"], "category_id": 1, "keypoints": b["keypoints"], "score": b["bbox_score"] * 0.9}
    for b in best.values()
  ]
  assert sorted((r["image_id"], round(r["score"], 12)) for r in out) == sorted(
    (r["image_id"], round(r["score"], 12)) for r in expected
  )
  ours = get_evaluator("coco").evaluate(gt, out)
  reference = _pycocotools_stats(gt, expected, sigmas).stats
  np.testing.assert_allclose([ours[n] for n in SUMMARY_NAMES], reference, atol=1e-12, rtol=0)
  assert 0.3 < ours["AP"] < 1.0
  # Without NMS every box stays, and the duplicates change the numbers (the comparison above can fail).
  no_nms = topdown_postprocess(instances, "coco", nms=None)
  assert len(no_nms) == len(instances)
  assert abs(get_evaluator("coco").evaluate(gt, no_nms)["AP"] - ours["AP"]) > 1e-3
  print("topdown COCO", {n: round(ours[n], 6) for n in ("AP", "AP .5", "AP .75", "AR")})


# --- hand PCK / AUC / EPE, PCKh@0.1 ---------------------------------------------------------------------


def test_hand_pck_auc_epe_closed_form():
  gt = np.zeros((3, 3, 2))
  pred = np.zeros((3, 3, 2))
  pred[0, :, 0] = [10.0, 25.0, 99.0]  # joint 2 of sample 0 is not labelled
  pred[1, :, 0] = [15.0, 17.0, 5.0]
  pred[2, :, 0] = [1.0, 1.0, 1.0]  # sample 2 has a zero-size box: left out of PCK only
  visible = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
  bbox = np.array([[0, 0, 100.0, 50.0], [5, 5, 40.0, 80.0], [0, 0, 0.0, 0.0]])
  # PCK@0.2 of the longer side (20 px, 16 px): joint 0 hits twice, joint 1 never, joint 2 once -> (1 + 0 + 1) / 3
  pck = keypoint_pck(pred, gt, visible, np.max(bbox[:, 2:], axis=1), 0.2)
  np.testing.assert_array_equal(pck["per_joint"], [1.0, 0.0, 1.0])
  assert pck["PCK"] == pytest.approx(2 / 3, abs=1e-15)
  # AUC over thresholds 1.5 i px (i < 20), strict: joint 0 distances {10, 15, 1}: 1/3 from i=1, 2/3 from
  # i=7, 1 from i=11 (15 < 15 is false at i=10); joint 1 {25, 17}: 1/2 from i=12, 1 from i=17; joint 2 {5}: from i=4.
  joint0 = (1 / 3) * (7 - 1) + (2 / 3) * (11 - 7) + 1 * (20 - 11)
  joint1 = 0.5 * (17 - 12) + 1 * (20 - 17)
  joint2 = 20 - 4
  assert keypoint_auc(pred, gt, visible) == pytest.approx((joint0 + joint1 + joint2) / 3 / 20, abs=1e-15)
  assert keypoint_epe(pred, gt, visible) == pytest.approx((10 + 25 + 15 + 17 + 5 + 1) / 6, abs=1e-15)
  metrics = hand_metrics(pred, gt, visible, bbox)
  assert metrics == {"PCK": pck["PCK"], "AUC": keypoint_auc(pred, gt, visible), "EPE": pytest.approx(73 / 6)}
  # The same through COCO-format files (InterHand: 42 joints, matched by image id).
  k = 42
  gt_kpts, pred_kpts = np.zeros((3, k, 3)), np.zeros((3, k, 3))
  gt_kpts[:, :3, 2] = visible
  pred_kpts[:, :3, :2] = pred
  gt_json = {
    "images": [{"id": i} for i in range(3)],
    "categories": [{"id": 1}],
    "annotations": [
      {"id": 10 + i, "image_id": i, "bbox": bbox[i].tolist(), "keypoints": gt_kpts[i].reshape(-1).tolist()}
      for i in range(3)
    ],
  }
  results = [{"image_id": i, "keypoints": pred_kpts[i].reshape(-1).tolist(), "score": 1.0} for i in (2, 0, 1)]
  assert get_evaluator("interhand").evaluate(gt_json, results) == pytest.approx(metrics, abs=1e-15)
  with pytest.raises(ValueError, match="annotated people have no result"):
    get_evaluator("interhand").evaluate(gt_json, results[:2])


def test_pckh_at_0_1_closed_form():
  # Head box 30 x 40 -> diagonal 50 -> head size 0.6 x 50 = 30 px: PCKh@0.1 radius 3 px (inclusive), @0.5 15 px.
  k = 16
  gt = np.zeros((2, k, 2))
  pred = np.zeros((2, k, 2))
  pred[0, :, 1] = [3.0, 3.5, 15.0, 15.5] + [1.0] * 12
  pred[1, :, 1] = [2.0, 100.0, 2.9, 3.1] + [20.0] * 12
  pred[:, 6:8, 1] = 1000.0  # pelvis and thorax are not in the MPII mean
  visible = np.ones((2, k))
  ours = pckh_metrics(pred, gt, visible, np.array([30.0, 30.0]))
  # @0.1 over the 28 counted joints: sample 0: 3.0 and the 10 ones -> 11; sample 1: 2.0, 2.9 -> 2.
  assert ours["PCKh@0.1"] == pytest.approx(100 * 13 / 28, abs=1e-12)
  # @0.5: sample 0: all but 15.5 -> 13; sample 1: 2.0, 2.9, 3.1 -> 3.
  assert ours["PCKh"] == pytest.approx(100 * 16 / 28, abs=1e-12)
  gt_json = {
    "images": [{"id": 1}, {"id": 2}],
    "categories": [{"id": 1}],
    "annotations": [
      {
        "id": i + 1,
        "image_id": i + 1,
        "head_bbox": [10, 10, 40, 50],
        "keypoints": np.c_[gt[i], visible[i]].reshape(-1).tolist(),
      }
      for i in range(2)
    ],
  }
  results = [
    {"image_id": i + 1, "keypoints": np.c_[pred[i], np.ones(k)].reshape(-1).tolist(), "score": 1.0} for i in range(2)
  ]
  assert get_evaluator("mpii").evaluate(gt_json, results) == pytest.approx(ours, abs=1e-12)


# --- user errors and the command ------------------------------------------------------------------------


@needs_realdata
def test_user_errors_are_one_line_value_errors(tmp_path):
  crowd_gt = os.path.join(XT, "example_crowdpose_val.json")
  results = _load(os.path.join(XT, "example_crowdpose_preds.json"))
  results[3]["keypoints"] = results[3]["keypoints"] + [1.0, 2.0, 0.5] * 3
  with pytest.raises(ValueError, match=r"has 17 keypoints .* but 14 are expected.*--dataset") as info:
    get_evaluator("crowdpose").evaluate(crowd_gt, results)
  assert "\n" not in str(info.value)
  with pytest.raises(ValueError, match=r"top-down result .* has 17 keypoints but the format has 14"):
    topdown_postprocess([dict(results[3], bbox_score=1.0, area=100.0)], "crowdpose")
  with pytest.raises(ValueError, match=r"no evaluator for format 'cocoo'; pass --dataset as one of: aic, "):
    get_evaluator("cocoo")
  not_json = tmp_path / "gt.json"
  not_json.write_bytes(b"\xff\xd8\xff\xe0 JFIF")
  with pytest.raises(ValueError, match=r"ground truth file .*gt.json is not valid JSON .*pass the COCO-format"):
    get_evaluator("coco").evaluate(str(not_json), [])
  not_json.write_text('{"images": [')
  with pytest.raises(ValueError, match=r"is not valid JSON") as info:
    get_evaluator("crowdpose").evaluate(str(not_json), [])
  assert "\n" not in str(info.value)


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(
    [sys.executable, "-m", "posebh_jax.evaluate", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )


@needs_realdata
def test_cli_on_real_files(tmp_path, xtcocotools):
  gt_path, res_path = os.path.join(XT, "example_crowdpose_val.json"), os.path.join(XT, "example_crowdpose_preds.json")
  run = _cli("--dataset=crowdpose", f"--gt={gt_path}", f"--results={res_path}")
  assert run.returncode == 0, run.stderr
  printed = json.loads(run.stdout)
  assert list(printed) == list(CROWDPOSE_NAMES)
  reference = _xt_stats(xtcocotools, gt_path, _load(res_path), "keypoints_crowd", _sigmas("crowdpose"), False)
  np.testing.assert_allclose([printed[n] for n in CROWDPOSE_NAMES], reference, atol=1e-12, rtol=0)
  # --topdown on raw instances (real detector boxes) = the API's rescoring + OKS-NMS + COCO AP.
  gt, instances, _ = _detector_instances()
  raw_path = _dump(tmp_path, "raw.json", instances)
  gt_coco = os.path.join(REAL, "coco", "test_coco.json")
  run = _cli("--dataset=coco", f"--gt={gt_coco}", f"--results={raw_path}", "--topdown")
  assert run.returncode == 0, run.stderr
  assert json.loads(run.stdout) == get_evaluator("coco").evaluate(gt, topdown_postprocess(instances, "coco"))


@needs_realdata
def test_cli_user_errors(tmp_path):
  gt_path, res_path = os.path.join(XT, "example_coco_val.json"), os.path.join(XT, "example_coco_preds.json")
  bad = tmp_path / "bad.json"
  bad.write_text("not json")
  cases = {
    "no evaluator for format 'nope'": ("--dataset=nope", f"--gt={gt_path}", f"--results={res_path}"),
    "has 17 keypoints": ("--dataset=aic", f"--gt={gt_path}", f"--results={res_path}"),
    "is not valid JSON": ("--dataset=coco", f"--gt={bad}", f"--results={res_path}"),
    "results file not found": ("--dataset=coco", f"--gt={gt_path}", f"--results={tmp_path / 'none.json'}"),
  }
  for message, args in cases.items():
    run = _cli(*args)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: ") and message in run.stderr and run.stderr.count("\n") == 1, run.stderr


# --- training-time metrics and the results table --------------------------------------------------------


def _training_time_gt(name, n=4, seed=0):
  """A ground truth as `data_pipeline.pipeline.eval_ground_truth` returns it (all K keypoints in 'keypoints'),
  two people per image."""
  rng = np.random.default_rng(seed)
  k = get_format(name).num_keypoints
  kpts = np.concatenate([rng.uniform(0, 200, (n, k, 2)), np.full((n, k, 1), 2.0)], -1).astype(np.float32)
  annotations = [
    {
      "id": i + 1,
      "image_id": 100 + i // 2,
      "category_id": 1,
      "keypoints": kpts[i].reshape(-1).tolist(),
      "num_keypoints": k,
      "bbox": [0.0, 0.0, 200.0, 200.0],
      "area": 30000.0,
      "iscrowd": 0,
    }
    for i in range(n)
  ]
  gt = {
    "images": [{"id": 100 + i} for i in range((n + 1) // 2)],
    "annotations": annotations,
    "categories": [{"id": 1}],
    "keypoints": kpts,
    "head_size": np.full(n, 30.0, np.float32),
    "image_ids": 100 + np.arange(n) // 2,
    "instance_ids": np.arange(1, n + 1),
  }
  gt["coco"] = {key: gt[key] for key in ("images", "annotations", "categories")}
  return gt, kpts.astype(np.float64)


def test_training_time_metrics_and_table():
  from posebh_jax import evaluate as evaluate_lib
  from posebh_jax.tasks import heatmap as heatmap_task

  rng = np.random.default_rng(1)
  logged = {}
  expected_keys = {
    "coco": "AP (L)",
    "mpii": "PCKh@0.1",
    "crowdpose": "AR .75",
    "coco_wholebody": "face AP",
    "interhand": "EPE",
  }
  for name, key in expected_keys.items():
    fmt = get_format(name)
    gt, kpts = _training_time_gt(name)
    pred = kpts.copy()
    pred[..., :2] += rng.normal(0, 2.0, pred[..., :2].shape)
    pred[..., 2] = 0.8
    raw = [
      {
        "image_id": 100 + i // 2,
        "keypoints": p.reshape(-1).tolist(),
        "bbox_score": 1.0,
        "area": 40000.0,
        "ann_id": i + 1,
      }
      for i, p in enumerate(pred)
    ]
    results = topdown_postprocess(raw, fmt, nms=evaluate_lib.dataset_nms(name))
    # Predictions are paired with people by instance id (several people per image).
    metrics = heatmap_task.metrics_for(fmt, gt, results, {i + 1: p for i, p in enumerate(pred)})
    assert key in metrics and metrics["AP"] > 0
    # The file written next to the results evaluates offline to the same official numbers.
    official = get_evaluator(name).evaluate(json.loads(json.dumps(heatmap_task.gt_json(fmt, gt))), results)
    assert all(metrics[m] == pytest.approx(v, abs=1e-9) for m, v in official.items())
    logged.update({f"eval/{name}/{m}": v for m, v in metrics.items()})
  logged["train/loss"] = 1.0
  table = evaluate_lib.format_table(logged).splitlines()
  rows = {line.split()[0]: line.split()[1:3] for line in table[1:] if line and not line.startswith("|")}
  assert rows["mpii"] == ["PCKh", f"{logged['eval/mpii/PCKh']:.1f}"]
  assert rows["interhand"] == ["AUC", f"{100 * logged['eval/interhand/AUC']:.1f}"]
  assert rows["coco_wholebody"] == ["AP", f"{100 * logged['eval/coco_wholebody/wholebody AP']:.1f}"]
  assert table[-3].split("|")[1:-1] == [
    " model ",
    " COCO AP ",
    " test-dev ",
    " OCHuman ",
    " MPII PCKh ",
    " AIC AP ",
    " AP-10K ",
    " APT-36K ",
    " WholeBody ",
  ]
  last = [cell.strip() for cell in table[-1].split("|")[1:-1]]
  assert last[1] == f"{100 * logged['eval/coco/AP']:.1f}" and last[2] == "-" and last[4] == rows["mpii"][1]
