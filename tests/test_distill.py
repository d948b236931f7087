"""Tests of the unified 21-keypoint skeleton, its mappings and the multi-teacher distillation losses (METHOD.md §4)."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import realdata_samples
from posebh_jax.losses import distill
from posebh_jax.losses.heatmap import joints_mse
from posebh_jax.skeletons import format_mapping, get_format

METHOD_MD = pathlib.Path(realdata_samples.REPO) / 'docs' / 'METHOD.md'

# docs/METHOD.md §4, written out: MPII index -> unified index.
MPII_TO_UNIFIED = [
  (13, 5),
  (12, 6),
  (14, 7),
  (11, 8),
  (15, 9),
  (10, 10),
  (3, 11),
  (2, 12),
  (4, 13),
  (1, 14),
  (5, 15),
  (0, 16),
  (6, 17),
  (7, 18),
  (8, 19),
  (9, 20),
]
ADDED_POINTS = ['pelvis', 'thorax', 'upper_neck', 'head_top']


def _compose(first, second):
  """Composes two mappings given as (a, b) pair lists: returns the (a, c) pairs."""
  second = dict(second)
  return sorted((a, second[b]) for a, b in first if b in second)


def _np_log_softmax_cells(heatmaps, temperature):
  n, h, w, k = heatmaps.shape
  logits = heatmaps.astype(np.float64).reshape(n, h * w, k) / temperature
  logits -= logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return log_p.reshape(n, h, w, k)


def _np_kd(student, teacher, temperature, channel_weights=None):
  log_ps, log_pt = _np_log_softmax_cells(student, temperature), _np_log_softmax_cells(teacher, temperature)
  kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=(1, 2))
  if channel_weights is not None:
    kl = kl * np.broadcast_to(channel_weights, kl.shape)
  return kl.mean()


def _heatmaps(seed, n, k, h=8, w=6):
  return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, h, w, k)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- skeleton


def test_unified_format_layout():
  unified, coco = get_format('unified21'), get_format('coco')
  assert unified.num_keypoints == 21 and unified.category == 'human'
  assert unified.keypoint_names[:17] == coco.keypoint_names
  assert list(unified.keypoint_names[17:]) == ADDED_POINTS
  np.testing.assert_array_equal(unified.sigmas[:17], coco.sigmas)
  assert np.all(unified.sigmas > 0)
  np.testing.assert_allclose(unified.sigmas[17:], 0.08)  # Halpe's head / neck / hip value
  links = {frozenset(unified.keypoint_names[i] for i in link) for link in unified.links}
  assert {frozenset(coco.keypoint_names[i] for i in link) for link in coco.links} <= links
  for a, b in [
    ('pelvis', 'left_hip'),
    ('pelvis', 'right_hip'),
    ('thorax', 'left_shoulder'),
    ('thorax', 'right_shoulder'),
    ('thorax', 'pelvis'),
    ('upper_neck', 'thorax'),
    ('head_top', 'upper_neck'),
  ]:
    assert frozenset((a, b)) in links
  assert set(unified.upper_body_ids) | set(unified.lower_body_ids) == set(range(21))
  assert unified.index('pelvis') in unified.lower_body_ids
  assert {unified.index(n) for n in ['thorax', 'upper_neck', 'head_top']} <= set(unified.upper_body_ids)


def test_unified_flip_index_is_an_involution_mapping_left_and_right():
  unified = get_format('unified21')
  flip = unified.flip_index
  np.testing.assert_array_equal(flip[flip], np.arange(21))
  np.testing.assert_array_equal(flip[:17], get_format('coco').flip_index)
  for i, name in enumerate(unified.keypoint_names):
    mirror = unified.keypoint_names[flip[i]]
    if name.startswith('left_'):
      assert mirror == 'right_' + name[len('left_') :]
    elif name.startswith('right_'):
      assert mirror == 'left_' + name[len('right_') :]
    else:
      assert mirror == name  # nose and the four added centre points


# ---------------------------------------------------------------------------------------------- mappings


def test_mpii_table_reproduced_exactly():
  line = next(ln for ln in METHOD_MD.read_text().splitlines() if ln.startswith('MPII → unified:'))
  assert [(int(a), int(b)) for a, b in re.findall(r'(\d+)→(\d+)', line)] == MPII_TO_UNIFIED
  assert format_mapping('mpii', 'unified21') == sorted(MPII_TO_UNIFIED)
  assert format_mapping('unified21', 'mpii') == sorted((b, a) for a, b in MPII_TO_UNIFIED)
  mpii, unified = get_format('mpii'), get_format('unified21')
  for a, b in MPII_TO_UNIFIED:
    assert mpii.keypoint_names[a] == unified.keypoint_names[b]


def test_coco_mapping_is_the_identity_on_17():
  assert format_mapping('coco', 'unified21') == [(i, i) for i in range(17)]
  assert format_mapping('unified21', 'coco') == [(i, i) for i in range(17)]


@pytest.mark.parametrize('name,count', [('coco', 17), ('mpii', 16)])
def test_round_trip_through_unified_is_the_identity(name, count):
  there, back = format_mapping(name, 'unified21'), format_mapping('unified21', name)
  assert _compose(there, back) == [(i, i) for i in range(count)]
  # ... and unified -> name -> unified is the identity on the unified points that name has.
  assert _compose(back, there) == sorted((b, b) for _, b in there)


def test_unified_to_halpe_body_mapping():
  unified, halpe = get_format('unified21'), get_format('halpe')
  mapping = dict(format_mapping('unified21', 'halpe'))
  assert len(mapping) == 20
  assert all(j < 20 for j in mapping.values())  # Halpe's 'body' part (its evaluation scores the first 20)
  for i in range(17):
    assert mapping[i] == i
  named = {unified.keypoint_names[i]: halpe.keypoint_names[j] for i, j in mapping.items()}
  assert named['pelvis'] == 'hip' and named['thorax'] == 'neck' and named['head_top'] == 'head'
  assert 'upper_neck' not in named
  np.testing.assert_allclose(halpe.sigmas[17:20], 0.08)
  np.testing.assert_allclose(halpe.sigmas[20:26], 0.089)


def test_teacher_channel_indices():
  coco_ids, student_ids = distill.teacher_channel_indices('coco')
  np.testing.assert_array_equal(coco_ids, np.arange(17))
  np.testing.assert_array_equal(student_ids, np.arange(17))
  mpii_ids, student_ids = distill.teacher_channel_indices('mpii')
  assert sorted(zip(mpii_ids.tolist(), student_ids.tolist())) == sorted(MPII_TO_UNIFIED)


# ---------------------------------------------------------------------------------------------- losses


def test_spatial_distribution_is_a_per_channel_softmax():
  heatmaps = _heatmaps(0, n=2, k=3)
  dist = np.asarray(distill.spatial_distribution(jnp.asarray(heatmaps), 0.25))
  assert dist.shape == heatmaps.shape
  np.testing.assert_allclose(dist.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(dist, np.exp(_np_log_softmax_cells(heatmaps, 0.25)), rtol=1e-5, atol=1e-7)


def test_kd_loss_is_zero_for_identical_heatmaps():
  heatmaps = jnp.asarray(_heatmaps(1, n=2, k=5))
  assert abs(float(distill.kd_loss(heatmaps, heatmaps, 0.5))) < 1e-6


@pytest.mark.parametrize('temperature', [0.3, 2.0])
def test_kd_loss_matches_numpy_reference(temperature):
  student, teacher = _heatmaps(2, n=3, k=4), _heatmaps(3, n=3, k=4)
  got = distill.kd_loss(jnp.asarray(student), jnp.asarray(teacher), temperature)
  assert got.dtype == jnp.float32
  expected = _np_kd(student, teacher, temperature)
  assert expected > 0
  np.testing.assert_allclose(float(got), expected, rtol=1e-4)
  weights = np.array([1.0, 0.0, 0.5, 2.0], np.float32)
  got_w = distill.kd_loss(jnp.asarray(student), jnp.asarray(teacher), temperature, jnp.asarray(weights))
  np.testing.assert_allclose(float(got_w), _np_kd(student, teacher, temperature, weights), rtol=1e-4)
  got_t2 = distill.kd_loss(jnp.asarray(student), jnp.asarray(teacher), temperature, scale_by_temperature_squared=True)
  np.testing.assert_allclose(float(got_t2), expected * temperature**2, rtol=1e-4)


def test_kd_loss_gradient_stops_at_the_teacher():
  student, teacher = jnp.asarray(_heatmaps(4, n=1, k=2)), jnp.asarray(_heatmaps(5, n=1, k=2))
  grad_teacher = jax.grad(lambda t: distill.kd_loss(student, t, 0.5))(teacher)
  assert float(jnp.max(jnp.abs(grad_teacher))) == 0.0
  grad_student = jax.grad(lambda s: distill.kd_loss(s, teacher, 0.5))(student)
  assert float(jnp.max(jnp.abs(grad_student))) > 0.0


def test_masked_gt_loss_ignores_missing_joints():
  pred, target = _heatmaps(6, n=2, k=21), _heatmaps(7, n=2, k=21)
  weights = np.ones((2, 21), np.float32)
  weights[0, 17:] = 0.0  # a COCO image: no pelvis, thorax, upper neck, head top
  weights[1, :5] = 0.0  # an MPII image: no face points
  loss = float(distill.masked_gt_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weights)))
  changed = pred.copy()
  changed[0, ..., 17:] += 5.0
  changed[1, ..., :5] -= 3.0
  assert float(distill.masked_gt_loss(jnp.asarray(changed), jnp.asarray(target), jnp.asarray(weights))) == loss
  changed[0, ..., 0] += 1.0  # a present joint does count
  assert float(distill.masked_gt_loss(jnp.asarray(changed), jnp.asarray(target), jnp.asarray(weights))) != loss
  expected = np.mean(np.square((pred - target) * weights[:, None, None, :]))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert loss == float(joints_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weights)))


def test_mpii_weight_schedule():
  assert float(distill.mpii_weight_schedule(0, 210)) == 1.0
  assert float(distill.mpii_weight_schedule(210, 210)) == 0.0
  assert float(distill.mpii_weight_schedule(300, 210)) == 0.0
  epochs = np.arange(0, 11)
  values = [float(distill.mpii_weight_schedule(e, 10)) for e in epochs]
  np.testing.assert_allclose(values, 1.0 - epochs / 10, atol=1e-7)
  traced = jax.jit(distill.mpii_weight_schedule)(jnp.asarray(2.5), jnp.asarray(10))
  np.testing.assert_allclose(float(traced), 0.75)
  with pytest.raises(ValueError):
    distill.mpii_weight_schedule(0, 0)


def test_distill_objective_is_the_weighted_sum_of_its_terms():
  n = 2
  student, target = _heatmaps(8, n, 21), _heatmaps(9, n, 21)
  weights = np.ones((n, 21), np.float32)
  weights[0, 17:] = 0.0
  coco_teacher, mpii_teacher = _heatmaps(10, n, 17), _heatmaps(11, n, 16)
  loss_weights, temperature, epoch, max_epochs = (0.3, 0.25, 0.45), 0.5, 30, 120
  total, terms = distill.distill_objective(
    jnp.asarray(student),
    jnp.asarray(target),
    jnp.asarray(weights),
    jnp.asarray(coco_teacher),
    jnp.asarray(mpii_teacher),
    epoch=epoch,
    max_epochs=max_epochs,
    temperature=temperature,
    loss_weights=loss_weights,
  )
  assert set(terms) == {'gt', 'kd_coco', 'kd_mpii', 'mpii_scale'}
  np.testing.assert_allclose(float(terms['mpii_scale']), 0.75)
  np.testing.assert_allclose(
    float(total),
    0.3 * float(terms['gt']) + 0.25 * float(terms['kd_coco']) + 0.45 * 0.75 * float(terms['kd_mpii']),
    rtol=1e-6,
  )
  # Each KD term compares the teacher's channels with the student channels METHOD.md pairs them with.
  np.testing.assert_allclose(float(terms['kd_coco']), _np_kd(student[..., :17], coco_teacher, temperature), rtol=1e-4)
  mpii_ids, unified_ids = np.array(MPII_TO_UNIFIED).T
  np.testing.assert_allclose(
    float(terms['kd_mpii']), _np_kd(student[..., unified_ids], mpii_teacher[..., mpii_ids], temperature), rtol=1e-4
  )
  np.testing.assert_allclose(
    float(terms['gt']), np.mean(np.square((student - target) * weights[:, None, None])), rtol=1e-5
  )
  # Traceable: the same under jit with a traced epoch.
  jitted = jax.jit(
    lambda s, e: distill.distill_objective(
      s,
      jnp.asarray(target),
      jnp.asarray(weights),
      jnp.asarray(coco_teacher),
      jnp.asarray(mpii_teacher),
      epoch=e,
      max_epochs=max_epochs,
      temperature=temperature,
      loss_weights=loss_weights,
    )[0]
  )
  np.testing.assert_allclose(float(jitted(jnp.asarray(student), jnp.asarray(epoch))), float(total), rtol=1e-5)


def test_distill_objective_rejects_wrong_channel_counts():
  n = 1
  args = [_heatmaps(0, n, 21), _heatmaps(1, n, 21), np.ones((n, 21), np.float32)]
  with pytest.raises(ValueError, match='mpii teacher'):
    distill.distill_objective(
      *map(jnp.asarray, args),
      jnp.asarray(_heatmaps(2, n, 17)),
      jnp.asarray(_heatmaps(3, n, 17)),
      epoch=0,
      max_epochs=10,
      temperature=1.0,
    )


def test_remap_keypoints_round_trips_through_the_unified_format():
  """Per-keypoint arrays into the unified format and back: the identity on COCO's 17 and MPII's 16; the unified
  points a format lacks get the fill value (a training target's weight 0)."""
  from posebh_jax.skeletons import remap_keypoints

  rng = np.random.default_rng(0)
  for source, count, missing in (('coco', 17, [17, 18, 19, 20]), ('mpii', 16, [0, 1, 2, 3, 4])):
    heatmaps = rng.random((2, 8, 6, count)).astype(np.float32)
    unified = remap_keypoints(heatmaps, source, 'unified21', axis=-1)
    assert unified.shape == (2, 8, 6, 21) and unified.dtype == np.float32
    np.testing.assert_array_equal(remap_keypoints(unified, 'unified21', source, axis=-1), heatmaps)
    weights = remap_keypoints(np.ones(count, np.float32), source, 'unified21')
    assert np.flatnonzero(weights == 0).tolist() == missing
    keypoints = rng.random((3, count, 3))
    np.testing.assert_array_equal(
      remap_keypoints(remap_keypoints(keypoints, source, 'unified21', axis=1), 'unified21', source, axis=1), keypoints
    )
  # METHOD.md: MPII's thorax (7) is the unified thorax (18).
  values = np.arange(16.0)
  assert remap_keypoints(values, 'mpii', 'unified21', fill=-1.0)[18] == 7.0
  with pytest.raises(ValueError, match="'coco' has 17 keypoints"):
    remap_keypoints(np.zeros(16), 'coco', 'unified21')
