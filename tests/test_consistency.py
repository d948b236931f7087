"""Cross-format consistency (posebh_jax/evaluation/consistency.py) against hand-computed cases."""

import math

import numpy as np
import pytest

from posebh_jax.evaluation.consistency import LandmarkGroup, cross_format_consistency, shared_landmark_groups


def _gt(xy, visible=None):
  """(N, K, 2) positions -> (N, K, 3) ground truth with visibility (default all labelled)."""
  xy = np.asarray(xy, np.float64)
  v = np.ones(xy.shape[:2]) if visible is None else np.asarray(visible, np.float64)
  return np.concatenate([xy, v[..., None]], axis=-1)


KNEE = [LandmarkGroup('knee', (('a', 0), ('b', 0)))]


def test_two_formats_closed_form():
  # Image 0 (norm 10): heads 5 px apart where the formats coincide.
  # Image 1 (norm 20): heads coincide where the formats are 10 px apart.
  pred = {'a': [[[0, 0]], [[10, 0]]], 'b': [[[3, 4]], [[10, 0]]]}
  gt = {'a': _gt([[[0, 0]], [[0, 0]]]), 'b': _gt([[[0, 0]], [[6, 8]]])}
  out = cross_format_consistency(
    {k: np.array(v, float) for k, v in pred.items()}, gt, np.array([10.0, 20.0]), groups=KNEE
  )
  o = out['overall']
  assert o['count'] == 2
  assert o['pred_dist'] == pytest.approx((0.5 + 0.0) / 2)
  assert o['gt_dist'] == pytest.approx((0.0 + 0.5) / 2)
  # offsets: image 0 (-3,-4) vs (0,0) -> 5/10; image 1 (0,0) vs (-6,-8) -> 10/20
  assert o['inconsistency'] == pytest.approx(0.5)
  assert o['abs_gap'] == pytest.approx(0.5)
  # errors: image 0 a 0, b 5/10; image 1 a 10/20, b |(10,0)-(6,8)| = sqrt(80) / 20
  assert o['error'] == pytest.approx(((0 + 0.5) / 2 + (0.5 + math.sqrt(80) / 20) / 2) / 2)
  assert out['groups']['knee']['formats'] == ['a', 'b']
  assert out['groups']['knee']['inconsistency'] == pytest.approx(0.5)
  assert out['format_pairs']['a~b']['count'] == 2
  assert out['formats']['a']['pred_dist'] == out['formats']['b']['pred_dist'] == pytest.approx(0.25)


def test_direction_matters_only_for_inconsistency():
  # The heads are 5 px apart, the formats 5 px apart the other way: same distance, opposite offset.
  pred = {'a': np.array([[[0.0, 0.0]]]), 'b': np.array([[[3.0, 4.0]]])}
  gt = {'a': _gt([[[0, 0]]]), 'b': _gt([[[-3, -4]]])}
  o = cross_format_consistency(pred, gt, np.array([1.0]), groups=KNEE)['overall']
  assert o['pred_dist'] == pytest.approx(5) and o['gt_dist'] == pytest.approx(5)
  assert o['abs_gap'] == pytest.approx(0)
  assert o['inconsistency'] == pytest.approx(10)


def test_shared_error_is_consistent_and_perfect_prediction_is_zero():
  rng = np.random.default_rng(0)
  ga, gb = rng.uniform(0, 100, (5, 1, 2)), rng.uniform(0, 100, (5, 1, 2))
  gt = {'a': _gt(ga), 'b': _gt(gb)}
  norm = rng.uniform(50, 100, 5)
  perfect = cross_format_consistency({'a': ga, 'b': gb}, gt, norm, groups=KNEE)['overall']
  assert perfect['inconsistency'] == pytest.approx(0) and perfect['error'] == pytest.approx(0)
  assert perfect['pred_dist'] == pytest.approx(perfect['gt_dist'])
  shift = rng.uniform(-20, 20, (5, 1, 2))  # both heads wrong by the same offset
  shifted = cross_format_consistency({'a': ga + shift, 'b': gb + shift}, gt, norm, groups=KNEE)['overall']
  assert shifted['inconsistency'] == pytest.approx(0, abs=1e-12)
  assert shifted['error'] == pytest.approx(np.mean(np.linalg.norm(shift[:, 0], axis=-1) / norm))


def test_unlabelled_and_zero_norm_are_skipped_and_empty_is_nan():
  pred = {
    'a': np.array([[[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]),
    'b': np.array([[[1.0, 0.0]], [[2.0, 0.0]], [[4.0, 0.0]]]),
  }
  gt = {'a': _gt(np.zeros((3, 1, 2)), [[1], [0], [1]]), 'b': _gt(np.zeros((3, 1, 2)), [[1], [1], [1]])}
  out = cross_format_consistency(pred, gt, np.array([1.0, 1.0, 0.0]), groups=KNEE)
  assert out['overall']['count'] == 1  # image 1: a unlabelled; image 2: norm 0
  assert out['overall']['pred_dist'] == pytest.approx(1.0)
  none = cross_format_consistency(pred, {k: v * np.array([1, 1, 0]) for k, v in gt.items()}, np.ones(3), groups=KNEE)[
    'overall'
  ]
  assert none['count'] == 0 and all(math.isnan(none[k]) for k in ('pred_dist', 'gt_dist', 'inconsistency'))


def test_three_formats_average_over_pairs():
  groups = [LandmarkGroup('x', (('a', 1), ('b', 0), ('c', 2)))]
  pred = {'a': np.zeros((1, 2, 2)), 'b': np.zeros((1, 1, 2)), 'c': np.zeros((1, 3, 2))}
  pred['b'][0, 0] = (6, 0)
  pred['c'][0, 2] = (0, 8)
  gt = {f: _gt(np.zeros(p.shape)) for f, p in pred.items()}
  out = cross_format_consistency(pred, gt, np.array([2.0]), groups=groups)
  # pairs a~b 6, a~c 8, b~c 10 px; norm 2
  assert out['overall']['count'] == 3
  assert out['overall']['pred_dist'] == pytest.approx((3 + 4 + 5) / 3)
  assert out['format_pairs']['b~c']['pred_dist'] == pytest.approx(5)
  assert out['formats']['a']['pred_dist'] == pytest.approx((3 + 4) / 2)
  assert out['formats']['c']['count'] == 2
  # a head missing from the predictions drops its pairs
  two = cross_format_consistency({k: pred[k] for k in 'ab'}, {k: gt[k] for k in 'ab'}, np.array([2.0]), groups=groups)
  assert two['overall']['count'] == 1 and two['groups']['x']['formats'] == ['a', 'b']


def test_shape_errors():
  with pytest.raises(ValueError, match='same formats'):
    cross_format_consistency({'a': np.zeros((1, 1, 2))}, {}, np.ones(1))
  with pytest.raises(ValueError, match=r"gt\['a'\]"):
    cross_format_consistency({'a': np.zeros((1, 1, 2))}, {'a': np.zeros((1, 2, 3))}, np.ones(1))
  with pytest.raises(ValueError, match=r"pred\['a'\]"):
    cross_format_consistency({'a': np.zeros((2, 1, 2))}, {'a': np.zeros((2, 1, 3))}, np.ones(1))


def test_registry_groups():
  human = shared_landmark_groups(['coco', 'aic', 'mpii', 'coco_wholebody'])
  by_name = {g.name: g for g in human}
  # COCO's 17 body keypoints: 12 limb joints in all four formats, face points in COCO and WholeBody only.
  assert len(human) == 17
  assert by_name['left_knee'].formats == ('coco', 'aic', 'mpii', 'coco_wholebody')
  assert by_name['left_knee'].members[1] == ('aic', 10) and by_name['left_knee'].members[2] == ('mpii', 4)
  assert by_name['nose'].formats == ('coco', 'coco_wholebody')
  # AIC and MPII meet only through COCO: without it they share nothing (no aic<->mpii mapping).
  assert shared_landmark_groups(['aic', 'mpii']) == []
  assert len(shared_landmark_groups(['aic', 'mpii', 'coco'])) == 12
  animal = shared_landmark_groups(['ap10k', 'apt36k'])
  assert len(animal) == 17 and all(g.members == (('ap10k', i), ('apt36k', i)) for i, g in enumerate(animal))
  assert shared_landmark_groups(['coco', 'ap10k']) == []


def test_default_groups_come_from_the_registry():
  n = 2
  pred = {'coco': np.zeros((n, 17, 3)), 'mpii': np.zeros((n, 16, 3))}
  gt = {'coco': _gt(np.zeros((n, 17, 2))), 'mpii': _gt(np.zeros((n, 16, 2)))}
  pred['mpii'][:, 4, :2] = (3, 4)  # MPII's left_knee (COCO's is index 13)
  out = cross_format_consistency(pred, gt, np.full(n, 10.0))
  assert set(out['groups']) == {
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'left_hip',
    'right_hip',
    'left_knee',
    'right_knee',
    'left_ankle',
    'right_ankle',
  }
  assert out['groups']['left_knee']['pred_dist'] == pytest.approx(0.5)
  assert out['groups']['right_knee']['pred_dist'] == 0
  assert out['overall']['count'] == 12 * n
