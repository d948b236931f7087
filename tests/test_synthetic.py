"""Tests of the procedural synthetic multi-skeleton generator (data_pipeline/synthetic)."""

import functools

import numpy as np
import pytest

from data_pipeline.synthetic import (
  FORMATS_BY_CATEGORY,
  LANDMARK_NAMES,
  QUADRUPED_LANDMARK_NAMES,
  compiled_format,
  generate_example,
  keypoints_3d,
)
from posebh_jax.skeletons import get_format

HUMAN_FORMATS = FORMATS_BY_CATEGORY['human']
ANIMAL_FORMATS = FORMATS_BY_CATEGORY['animal']
ALL_FORMATS = HUMAN_FORMATS + ANIMAL_FORMATS


@functools.lru_cache(maxsize=None)
def _example(index, split='validation', fmt=None, difficulty=0.5, size=(256, 256), seed=0):
  return generate_example(index, split, seed=seed, annotate_format=fmt, image_size_hw=size, difficulty=difficulty)


def _project(points, intrinsics):
  p = points.astype(np.float64) @ intrinsics.astype(np.float64).T
  return p[:, :2] / p[:, 2:3]


def _validation_examples(n=24, difficulty=0.5, size=(256, 256)):
  return [_example(i, 'validation', None, difficulty, size) for i in range(n)]


def test_public_api_constants():
  assert FORMATS_BY_CATEGORY == {
    'human': ('coco', 'aic', 'mpii', 'coco_wholebody', 'ochuman', 'crowdpose', 'halpe'),
    'animal': ('ap10k', 'apt36k'),
  }
  assert len(set(LANDMARK_NAMES)) == len(LANDMARK_NAMES)
  assert len(QUADRUPED_LANDMARK_NAMES) <= len(LANDMARK_NAMES)


def test_same_arguments_give_identical_arrays_and_other_index_differs():
  a = generate_example(7, 'train', seed=3, annotate_format='aic', image_size_hw=(128, 96), difficulty=0.7)
  b = generate_example(7, 'train', seed=3, annotate_format='aic', image_size_hw=(128, 96), difficulty=0.7)
  for key in ('image', 'bbox', 'area', 'head_size', 'joints3d', 'intrinsics'):
    np.testing.assert_array_equal(a[key], b[key])
  np.testing.assert_array_equal(a['keypoints']['aic'], b['keypoints']['aic'])
  c = generate_example(8, 'train', seed=3, annotate_format='aic', image_size_hw=(128, 96), difficulty=0.7)
  d = generate_example(7, 'train', seed=4, annotate_format='aic', image_size_hw=(128, 96), difficulty=0.7)
  e = generate_example(7, 'validation', seed=3, annotate_format='aic', image_size_hw=(128, 96), difficulty=0.7)
  for other in (c, d, e):
    assert not np.array_equal(a['image'], other['image'])
    assert not np.array_equal(a['joints3d'], other['joints3d'])


@pytest.mark.parametrize(
  'split,fmt',
  [
    ('train', 'coco'),
    ('train', 'ap10k'),
    ('train', 'coco_wholebody'),
    ('validation', 'mpii'),
    ('validation', 'apt36k'),
    ('validation', None),
    ('train', None),
  ],
)
def test_shapes_dtypes_and_keys(split, fmt):
  h, w = 160, 120
  for index in range(3):
    ex = generate_example(index, split, annotate_format=fmt, image_size_hw=(h, w))
    assert set(ex) == {'image', 'category', 'bbox', 'keypoints', 'area', 'head_size', 'joints3d', 'intrinsics'}
    assert ex['image'].dtype == np.uint8 and ex['image'].shape == (h, w, 3)
    assert ex['category'] in ('human', 'animal')
    if fmt is not None:
      assert ex['category'] == ('human' if fmt in HUMAN_FORMATS else 'animal')
    assert ex['bbox'].dtype == np.float32 and ex['bbox'].shape == (4,)
    assert ex['area'].dtype == np.float32 and ex['area'].shape == ()
    assert ex['head_size'].dtype == np.float32 and ex['head_size'] > 0
    assert ex['joints3d'].dtype == np.float32 and ex['joints3d'].shape == (len(LANDMARK_NAMES), 3)
    assert ex['intrinsics'].dtype == np.float32 and ex['intrinsics'].shape == (3, 3)
    assert np.all(ex['joints3d'][:, 2] > 0)
    expected = FORMATS_BY_CATEGORY[ex['category']]
    if split == 'train':
      assert len(ex['keypoints']) == 1 and set(ex['keypoints']) <= set(expected)
      if fmt is not None:
        assert set(ex['keypoints']) == {fmt}
    else:
      assert tuple(ex['keypoints']) == expected
    for name, kps in ex['keypoints'].items():
      assert kps.dtype == np.float32 and kps.shape == (get_format(name).num_keypoints, 3)
      assert set(np.unique(kps[:, 2])) <= {0.0, 1.0, 2.0}


def test_validation_carries_every_format_of_both_categories():
  seen = set()
  for ex in _validation_examples(9):
    fmts = FORMATS_BY_CATEGORY[ex['category']]
    assert tuple(ex['keypoints']) == fmts
    for name in fmts:
      assert ex['keypoints'][name].shape == (get_format(name).num_keypoints, 3)
    seen.add(ex['category'])
  assert seen == {'human', 'animal'}


def test_format_keypoint_order_follows_registry():
  for name in ALL_FORMATS:
    assert compiled_format(name).keypoint_names == get_format(name).keypoint_names


def test_projection_of_joints3d_reproduces_keypoints_at_joints():
  """Keypoints defined exactly at a landmark equal the pinhole projection of that landmark's 3D position."""
  checked = 0
  for ex in _validation_examples(12):
    for name, kps in ex['keypoints'].items():
      rows = compiled_format(name).exact_landmark
      k = np.nonzero((rows >= 0) & (kps[:, 2] > 0))[0]
      uv = _project(ex['joints3d'][rows[k]], ex['intrinsics'])
      np.testing.assert_allclose(kps[k, :2], uv, atol=0.02)
      checked += len(k)
  assert checked > 200


def test_keypoints_3d_round_trip():
  """keypoints_3d(format, joints3d) projects onto every labelled keypoint of that format."""
  for ex in _validation_examples(6):
    for name, kps in ex['keypoints'].items():
      uv = _project(keypoints_3d(name, ex['joints3d']), ex['intrinsics'])
      lab = kps[:, 2] > 0
      np.testing.assert_allclose(kps[lab, :2], uv[lab], atol=0.02)


def test_visibility_zero_exactly_outside_the_image():
  h, w = 128, 128
  n_outside = 0
  for i in range(40):
    ex = _example(i, 'validation', None, 1.0, (h, w))
    for name, kps in ex['keypoints'].items():
      uv = _project(keypoints_3d(name, ex['joints3d']), ex['intrinsics'])
      inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
      np.testing.assert_array_equal(kps[:, 2] == 0, ~inside)
      assert np.all(kps[~inside, :2] == 0)
      n_outside += int((~inside).sum())
  assert n_outside > 0, 'difficulty 1.0 should truncate some subjects'


def test_truncated_and_occluded_subjects_stay_partly_in_view():
  """Even at difficulty 1 every subject keeps a visible silhouette and several labelled keypoints."""
  for i in range(60):
    ex = _example(i, 'validation', None, 1.0, (128, 128))
    main = ex['keypoints']['coco' if ex['category'] == 'human' else 'ap10k']
    assert (main[:, 2] > 0).sum() >= 3, i
    assert ex['area'] >= 0.005 * 128 * 128, i


def test_bbox_is_inside_the_image_and_contains_visible_keypoints():
  for ex in _validation_examples(24) + [_example(i, 'validation', None, 1.0) for i in range(12)]:
    h, w = ex['image'].shape[:2]
    x, y, bw, bh = ex['bbox']
    assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
    assert 0 < ex['area'] <= bw * bh
    for kps in ex['keypoints'].values():
      vis = kps[kps[:, 2] == 2]
      # Visible keypoints lie on the silhouette; fingertips and the nose tip may sit on its rim.
      assert np.all(vis[:, 0] >= x - 1.5) and np.all(vis[:, 0] <= x + bw + 0.5)
      assert np.all(vis[:, 1] >= y - 1.5) and np.all(vis[:, 1] <= y + bh + 0.5)


def test_frontal_subjects_have_their_left_on_the_image_right():
  """When the face points at the camera (nose nearer than both ears, ears and shoulders at similar depth),
  the subject's left side appears on the image's right, for every format."""
  idx = {n: i for i, n in enumerate(LANDMARK_NAMES)}
  pairs = {
    'coco': [
      ('left_eye', 'right_eye'),
      ('left_ear', 'right_ear'),
      ('left_shoulder', 'right_shoulder'),
      ('left_hip', 'right_hip'),
    ],
    'aic': [('left_shoulder', 'right_shoulder'), ('left_hip', 'right_hip')],
    'mpii': [('left_shoulder', 'right_shoulder'), ('left_hip', 'right_hip')],
    'crowdpose': [('left_shoulder', 'right_shoulder'), ('left_hip', 'right_hip')],
    'coco_wholebody': [('face-16', 'face-0'), ('face-45', 'face-36')],
    'halpe': [('face-16', 'face-0'), ('face-42', 'face-39')],
  }
  frontal = 0
  for i in range(200):
    ex = _example(i, 'validation', 'coco', 0.0, (96, 96))
    j = ex['joints3d']
    z = {
      n: j[idx[n], 2]
      for n in (
        'nose',
        'left_ear',
        'right_ear',
        'left_shoulder',
        'right_shoulder',
        'left_hip',
        'right_hip',
        'head_centre',
      )
    }
    if not (
      z['nose'] < min(z['left_ear'], z['right_ear']) - 40
      and abs(z['left_ear'] - z['right_ear']) < 40
      and abs(z['left_shoulder'] - z['right_shoulder']) < 80
      and abs(z['left_hip'] - z['right_hip']) < 60
    ):
      continue
    frontal += 1
    for name, checks in pairs.items():
      kps = ex['keypoints'][name]
      fmt = get_format(name)
      for left, right in checks:
        a, b = kps[fmt.index(left)], kps[fmt.index(right)]
        if a[2] > 0 and b[2] > 0:
          assert a[0] > b[0], (i, name, left, right)
  assert frontal >= 5


def test_formats_disagree_like_real_datasets():
  """Same body, different conventions: AIC hips sit higher and wider than COCO's, AP-10K and APT-36K place
  the neck and tail root differently, MPII's pelvis is the midpoint of COCO's hips."""
  ex = _example(0, 'validation', 'coco')
  j = ex['joints3d']
  coco, aic = keypoints_3d('coco', j), keypoints_3d('aic', j)
  mpii = keypoints_3d('mpii', j)
  c_l, c_r = coco[get_format('coco').index('left_hip')], coco[get_format('coco').index('right_hip')]
  a_l, a_r = aic[get_format('aic').index('left_hip')], aic[get_format('aic').index('right_hip')]
  assert np.linalg.norm(a_l - a_r) > np.linalg.norm(c_l - c_r) + 20  # mm
  thorax = mpii[get_format('mpii').index('thorax')]
  up = (thorax - 0.5 * (c_l + c_r)) / np.linalg.norm(thorax - 0.5 * (c_l + c_r))
  assert np.dot(0.5 * (a_l + a_r) - 0.5 * (c_l + c_r), up) > 20
  np.testing.assert_allclose(mpii[get_format('mpii').index('pelvis')], 0.5 * (c_l + c_r), atol=1e-3)
  animal = _example(2, 'validation', 'ap10k')
  ap, apt = keypoints_3d('ap10k', animal['joints3d']), keypoints_3d('apt36k', animal['joints3d'])
  for name in ('neck', 'root_of_tail', 'left_front_paw'):
    i = get_format('ap10k').index(name)
    assert np.linalg.norm(ap[i] - apt[i]) > 5
  for name in ('left_eye', 'nose', 'left_elbow', 'right_knee'):
    i = get_format('ap10k').index(name)
    np.testing.assert_allclose(ap[i], apt[i], atol=1e-3)


def test_units_head_size_and_visibility_mix():
  idx = {n: i for i, n in enumerate(LANDMARK_NAMES)}
  vis_counts = np.zeros(3)
  for ex in _validation_examples(24):
    if ex['category'] != 'human':
      continue
    j = ex['joints3d']
    upper_arm = np.linalg.norm(j[idx['left_shoulder']] - j[idx['left_elbow']])
    assert 180 < upper_arm < 420  # millimetres
    top_chin = _project(j[[idx['head_top'], idx['chin']]], ex['intrinsics'])
    assert ex['head_size'] >= 0.6 * np.linalg.norm(top_chin[0] - top_chin[1]) - 1e-3
    vis_counts += np.bincount(ex['keypoints']['coco'][:, 2].astype(int), minlength=3)
  # Mostly visible, some self-occlusion, little truncation at difficulty 0.5.
  frac = vis_counts / vis_counts.sum()
  assert frac[2] > 0.5 and frac[1] > 0.05 and frac[0] < 0.2


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match='split'):
    generate_example(0, 'val')
  with pytest.raises(ValueError, match='annotate_format'):
    generate_example(0, 'train', annotate_format='smpl24')
  with pytest.raises(ValueError, match='difficulty'):
    generate_example(0, 'train', difficulty=1.5)
  with pytest.raises(ValueError, match='index'):
    generate_example(-1, 'train')
  with pytest.raises(ValueError, match='image_size_hw'):
    generate_example(0, 'train', image_size_hw=(8, 8))


def test_preview_sheet_builds():
  from data_pipeline.synthetic import preview

  sheet = preview.build_sheet(n_train=2, seed=0, difficulty=0.5, image_size_hw=(128, 128))
  assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
