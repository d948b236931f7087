"""Evaluation: OKS AP against direct pycocotools runs on the real xtcocoapi samples, PCKh closed forms,
evaluator registry."""

import copy
import json
import os

import numpy as np
import pytest

from conftest import pycocotools_keypoint_eval
from realdata_samples import REALDATA, needs_realdata
from posebh_jax.evaluation import (
  SUMMARY_NAMES,
  WHOLEBODY_FIELDS,
  evaluate_coco_keypoints,
  get_evaluator,
  list_evaluators,
  pckh,
  pckh_metrics,
)

SAMPLES = os.path.join(REALDATA, "xtcocoapi")
COCO_GT = os.path.join(SAMPLES, "example_coco_val.json")
COCO_PREDS = os.path.join(SAMPLES, "example_coco_preds.json")
# Published COCO keypoint OKS sigmas.
COCO_SIGMAS = (
  np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10
)


def _load(path):
  with open(path) as f:
    return json.load(f)


def _direct_pycocotools(gt_dict, results, sigmas, img_ids=None):
  """Plain pycocotools keypoint evaluation, returning its `stats` vector."""
  return pycocotools_keypoint_eval(gt_dict, results, sigmas, img_ids).stats


def _assert_matches(ours, stats):
  assert list(ours) == list(SUMMARY_NAMES)
  np.testing.assert_allclose([ours[name] for name in SUMMARY_NAMES], stats, atol=1e-12)


@needs_realdata
def test_coco_matches_direct_pycocotools_and_is_quiet(capsys):
  ours = evaluate_coco_keypoints(COCO_GT, COCO_PREDS, COCO_SIGMAS)
  assert capsys.readouterr().out == ""
  _assert_matches(ours, _direct_pycocotools(_load(COCO_GT), _load(COCO_PREDS), COCO_SIGMAS))
  assert 0.0 < ours["AP"] < 1.0
  print(f"example_coco_preds AP = {ours['AP']:.4f}")


@needs_realdata
def test_ground_truth_as_results_scores_one():
  gt = _load(COCO_GT)
  results = [
    {
      "image_id": a["image_id"],
      "category_id": a["category_id"],
      "score": 1.0,
      "keypoints": [v if i % 3 != 2 else 1.0 for i, v in enumerate(a["keypoints"])],
    }
    for a in gt["annotations"]
    if a["num_keypoints"] > 0 and not a.get("iscrowd", 0)
  ]
  ours = evaluate_coco_keypoints(gt, results, COCO_SIGMAS)
  assert ours["AP"] == pytest.approx(1.0) and ours["AR"] == pytest.approx(1.0)
  assert ours["AP .75"] == pytest.approx(1.0)


@needs_realdata
def test_inputs_not_modified_and_empty_results():
  gt, preds = _load(COCO_GT), _load(COCO_PREDS)
  gt_copy, preds_copy = copy.deepcopy(gt), copy.deepcopy(preds)
  evaluate_coco_keypoints(gt, preds, COCO_SIGMAS)
  assert gt == gt_copy and preds == preds_copy
  assert evaluate_coco_keypoints(gt, [], COCO_SIGMAS) == {name: 0.0 for name in SUMMARY_NAMES}


@needs_realdata
def test_results_for_a_subset_of_images():
  gt, preds = _load(COCO_GT), _load(COCO_PREDS)
  first_image = preds[0]["image_id"]
  subset = [p for p in preds if p["image_id"] == first_image]
  ours = evaluate_coco_keypoints(gt, subset, COCO_SIGMAS)
  _assert_matches(ours, _direct_pycocotools(gt, subset, COCO_SIGMAS))
  assert ours["AR"] < evaluate_coco_keypoints(gt, preds, COCO_SIGMAS)["AR"]  # other images' people missed
  restricted = evaluate_coco_keypoints(gt, subset, COCO_SIGMAS, image_ids=[first_image])
  _assert_matches(restricted, _direct_pycocotools(gt, subset, COCO_SIGMAS, img_ids=[first_image]))


@needs_realdata
def test_use_area_false_equals_box_area_rule():
  gt = _load(os.path.join(SAMPLES, "example_crowdpose_val.json"))
  preds = _load(os.path.join(SAMPLES, "example_crowdpose_preds.json"))
  sigmas = np.full(14, 0.07)
  ours = evaluate_coco_keypoints(gt, preds, sigmas, use_area=False)
  # Independent route: give every annotation area = 0.53 x box area, then plain pycocotools.
  with_area = copy.deepcopy(gt)
  for ann in with_area["annotations"]:
    ann["area"] = ann["bbox"][2] * ann["bbox"][3] * 0.53
    ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"][2::3]) > 0))
  _assert_matches(ours, _direct_pycocotools(with_area, preds, sigmas))


@needs_realdata
def test_wholebody_concatenates_all_parts():
  gt = _load(os.path.join(SAMPLES, "example_wholebody_val.json"))
  preds = _load(os.path.join(SAMPLES, "example_wholebody_preds.json"))
  sigmas = np.linspace(0.01, 0.1, 133)
  ours = evaluate_coco_keypoints(gt, preds, sigmas, keypoint_fields=WHOLEBODY_FIELDS)
  concatenated_gt = copy.deepcopy(gt)
  for ann in concatenated_gt["annotations"]:
    ann["keypoints"] = sum((ann[f] for f in WHOLEBODY_FIELDS), [])
    ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"][2::3]) > 0))

  def body_box(p):  # the toolkits take a result's area from its 'keypoints' field: the body's extent
    x, y = np.asarray(p["keypoints"][0::3]), np.asarray(p["keypoints"][1::3])
    return [float(x.min()), float(y.min()), float(x.max() - x.min()), float(y.max() - y.min())]

  concatenated_preds = [
    {
      "image_id": p["image_id"],
      "category_id": p["category_id"],
      "score": p["score"],
      "bbox": body_box(p),
      "keypoints": sum((p[f] for f in WHOLEBODY_FIELDS), []),
    }
    for p in preds
  ]
  _assert_matches(ours, _direct_pycocotools(concatenated_gt, concatenated_preds, sigmas))
  assert 0.0 < ours["AP"] < 1.0
  # With the area of all 133 keypoints instead, the medium / large numbers differ on this sample.
  for p in concatenated_preds:
    del p["bbox"]
  naive = _direct_pycocotools(concatenated_gt, concatenated_preds, sigmas)
  assert abs(naive[3] - ours["AP (M)"]) > 1e-3


@needs_realdata
def test_user_errors_have_clear_messages(tmp_path):
  gt, preds = _load(COCO_GT), _load(COCO_PREDS)
  with pytest.raises(FileNotFoundError, match="ground truth file not found"):
    evaluate_coco_keypoints(str(tmp_path / "missing.json"), preds, COCO_SIGMAS)
  with pytest.raises(ValueError, match="not in the ground truth"):
    evaluate_coco_keypoints(gt, [dict(preds[0], image_id=-5)], COCO_SIGMAS)
  with pytest.raises(ValueError, match="has 17 keypoints .* but 14 are expected"):
    evaluate_coco_keypoints(gt, preds, COCO_SIGMAS[:14])


# --- PCKh --------------------------------------------------------------------------------------------


def _ring(n, k, radius, rng):
  gt = rng.uniform(0, 500, (n, k, 2))
  angle = rng.uniform(0, 2 * np.pi, (n, k))
  return gt, gt + radius[:, None, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def test_pckh_closed_form():
  rng = np.random.default_rng(0)
  head = rng.uniform(20, 60, 8)
  gt, pred = _ring(8, 16, 0.4 * head, rng)  # every joint at 0.4 head sizes
  visible = np.ones((8, 16), bool)
  assert pckh_metrics(pred, gt, visible, head) == {"PCKh": 100.0, "PCKh@0.1": 0.0}
  # Move joint 0 of the first 2 instances far away and hide joint 1 everywhere except one (a miss).
  pred[:2, 0] += 1000
  visible[1:, 1] = False
  pred[0, 1] += 1000
  result = pckh(pred, gt, visible, head, threshold=0.5)
  assert result["per_joint"][0] == pytest.approx(100 * 6 / 8)
  assert result["per_joint"][1] == 0.0 and result["joint_count"][1] == 1
  hits, labelled = 13 * 8 - 2, 13 * 8 + 1  # 14 joints without pelvis/thorax; joint 1 labelled once
  assert result["PCKh"] == pytest.approx(100 * hits / labelled)
  assert result["PCKh_all"] == pytest.approx(100 * (hits + 16) / (labelled + 16))
  assert result["Ankle"] == pytest.approx(0.5 * (result["per_joint"][5] + 75.0))
  # Invisible joints are ignored whatever their error.
  pred_hidden = pred.copy()
  pred_hidden[~visible] = 1e6
  assert pckh(pred_hidden, gt, visible, head)["PCKh"] == result["PCKh"]


def test_pckh_threshold_is_inclusive_and_not_mpii_means_all_joints():
  gt = np.zeros((1, 3, 2))
  pred = np.array([[[5.0, 0.0], [5.0001, 0.0], [0.0, 1.0]]])
  result = pckh(pred, gt, np.ones((1, 3)), np.array([10.0]))
  np.testing.assert_allclose(result["per_joint"], [100, 0, 100])
  assert result["PCKh"] == result["PCKh_all"] == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match="head_size must be positive"):
    pckh(pred, gt, np.ones((1, 3)), np.array([0.0]))


# --- registry ----------------------------------------------------------------------------------------


def test_registry_kinds_and_errors():
  expected = {"coco", "aic", "ap10k", "apt36k", "coco_wholebody", "ochuman", "crowdpose", "halpe", "mpii", "interhand"}
  assert expected <= set(list_evaluators())
  for name in expected:
    assert get_evaluator(name).kind == {"mpii": "pckh", "interhand": "pck"}.get(name, "oks")
  assert get_evaluator("aic").use_area is False and get_evaluator("crowdpose").use_area is False
  with pytest.raises(ValueError, match="no evaluator for format 'nope'"):
    get_evaluator("nope")
  gt = np.zeros((2, 16, 2))
  assert get_evaluator("mpii")(gt, gt, np.ones((2, 16)), np.ones(2)) == {"PCKh": 100.0, "PCKh@0.1": 100.0}


@needs_realdata
def test_registry_sigmas_from_skeletons():
  pytest.importorskip("posebh_jax.skeletons")
  sizes = {
    "coco": 17,
    "aic": 14,
    "ap10k": 17,
    "apt36k": 17,
    "coco_wholebody": 133,
    "ochuman": 17,
    "crowdpose": 14,
    "halpe": 136,
  }
  for name, k in sizes.items():
    assert get_evaluator(name).sigmas.shape == (k,)
  np.testing.assert_allclose(get_evaluator("coco").sigmas, COCO_SIGMAS, rtol=1e-6)
  ours = get_evaluator("coco")(COCO_GT, COCO_PREDS)
  reference = evaluate_coco_keypoints(COCO_GT, COCO_PREDS, COCO_SIGMAS)
  np.testing.assert_allclose(list(ours.values()), list(reference.values()), atol=1e-6)


def test_long_evaluation_reports_progress(capsys):
  """A dataset whose evaluation takes minutes (COCO val with 104k detections) prints a line every 30 s and a closing
  line; a short one (the demo's) prints nothing."""
  from posebh_jax.tasks.heatmap import Progress as _Progress

  times = iter([0.0, 10.0, 31.0, 45.0, 62.0, 70.0])
  progress = _Progress('eval coco', total=400)
  progress.clock = lambda: next(times)
  progress.start = progress.last = progress.clock()  # t = 0
  for _ in range(4):  # at t = 10, 31, 45, 62 s
    progress.update(100)
  progress.finish()  # t = 70 s
  assert capsys.readouterr().out.splitlines() == [
    'eval coco: 200/400 instances, 6/s, ETA 31 s',
    'eval coco: 400 instances in 70 s (6/s)',
  ]
  short = _Progress('eval mpii', total=10)
  short.update(10)
  short.finish()
  assert capsys.readouterr().out == ''
