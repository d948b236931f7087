"""Tests of the synthetic 3D datasets: the synthetic 3D formats (data_pipeline/synthetic/formats3d.py) and the
`posebh_synthetic3d` builder (data_pipeline/builders/synthetic3d.py), read back with the pipeline's readers."""

import functools
import hashlib
import json
import os
import sys

import numpy as np
import pytest

from data_pipeline import pipeline, prepare
from data_pipeline.builders import records, records3d, synthetic3d
from data_pipeline.synthetic import LANDMARK_NAMES, formats3d, generate_example, keypoints_3d
from data_pipeline.transforms import decode_jpeg
from posebh_jax.skeletons import TRAIN_FORMATS, benchmark_joints, get_format3d, list_formats3d, merged_joint_names
from posebh_jax.skeletons.registry3d import register_format3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ('syn_smpl', 'syn_h36m', 'syn_markers')
PARAMS = synthetic3d.Synthetic3DParams(num_train_per_format=4, num_val=3, image_size=(64, 64), difficulty=0.5, seed=2)
LM = {n: i for i, n in enumerate(LANDMARK_NAMES)}


@functools.lru_cache(maxsize=None)
def _example(index, split='validation', difficulty=0.5, size=(128, 128), seed=0):
  return generate_example(
    index, split, seed=seed, annotate_format=synthetic3d.ANNOTATE_FORMAT, image_size_hw=size, difficulty=difficulty
  )


def _landmarks(index, **kwargs):
  return _example(index, **kwargs)['joints3d'].astype(np.float64)


def _frame(landmarks, x_from, x_to, y_from, y_to):
  """Independent body frame: columns left, up, forward (Gram-Schmidt)."""
  x = landmarks[LM[x_to]] - landmarks[LM[x_from]]
  x = x / np.sqrt(np.sum(x * x))
  y = landmarks[LM[y_to]] - landmarks[LM[y_from]]
  y = y - np.sum(y * x) * x
  y = y / np.sqrt(np.sum(y * y))
  z = np.array([x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]])
  return np.stack([x, y, z], axis=1)


def _pelvis_frame(lm):
  return _frame(lm, 'right_hip', 'left_hip', 'pelvis', 'thorax')


def _chest_frame(lm):
  return _frame(lm, 'right_shoulder', 'left_shoulder', 'spine', 'neck_base')


def _head_frame(lm):
  return _frame(lm, 'right_ear', 'left_ear', 'head_centre', 'head_top')


def _joints(landmarks, fmt):
  joints, valid = formats3d.joints_in_format(landmarks, fmt)
  assert valid.all()
  names = get_format3d(fmt).joint_names
  return {n: joints[i] for i, n in enumerate(names)}


# --- formats ------------------------------------------------------------------------------------------------------


def test_formats_joint_counts_names_roots_and_registration():
  assert formats3d.SYNTHETIC_FORMAT_NAMES == FORMATS == synthetic3d.FORMATS
  assert {f: get_format3d(f).num_joints for f in FORMATS} == {'syn_smpl': 24, 'syn_h36m': 17, 'syn_markers': 33}
  assert get_format3d('syn_smpl').joint_names == get_format3d('smpl').joint_names
  assert get_format3d('syn_h36m').joint_names == benchmark_joints('h36m')
  markers = get_format3d('syn_markers')
  assert markers.root == 'msacr' and get_format3d('syn_smpl').root == get_format3d('syn_h36m').root == 'pelv'
  assert all(n.startswith(('m', 'lm', 'rm')) for n in markers.joint_names)
  assert len(markers.flip_pairs) == 14 and len(markers.side_indices('center')) == 5
  assert markers.suffixed_names[0] == 'msacr_syn_markers'
  assert get_format3d('syn_h36m').index('lhip_syn_h36m') == 4
  # Outside the merged list; registering is idempotent and refuses a clash.
  assert len(merged_joint_names()) == 555 and not set(FORMATS) & set(list_formats3d())
  formats3d.register()
  assert register_format3d('syn_h36m', formats3d.SYNTHETIC_FORMATS['syn_h36m']) is get_format3d('syn_h36m')
  with pytest.raises(ValueError):
    register_format3d('syn_h36m', dict(formats3d.SYNTHETIC_FORMATS['syn_h36m'], root='neck'))
  with pytest.raises(ValueError):
    register_format3d('h36m', formats3d.SYNTHETIC_FORMATS['syn_h36m'])
  with pytest.raises(ValueError, match='not a synthetic 3D format'):
    formats3d.joints_in_format(_landmarks(0), 'h36m')


@pytest.mark.parametrize('index', [0, 1, 4])
def test_known_definitions_and_offsets_hold(index):
  lm = _landmarks(index)
  smpl, h36m, mk = (_joints(lm, f) for f in FORMATS)
  # syn_smpl is the generator's smpl24 skeleton.
  np.testing.assert_allclose(np.stack(list(smpl.values())), keypoints_3d('smpl24', lm), atol=1e-9)
  pelvis, chest, head = _pelvis_frame(lm), _chest_frame(lm), _head_frame(lm)
  for frame in (pelvis, chest, head):
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-12)
    assert np.linalg.det(frame) == pytest.approx(1.0)
  # The frames face the way the body does: the nose is in front of the neck, the head above the pelvis.
  assert (lm[LM['nose']] - lm[LM['neck_base']]) @ chest[:, 2] > 30
  assert (lm[LM['head_top']] - lm[LM['pelvis']]) @ pelvis[:, 1] > 300
  # syn_h36m: hips wider and higher than syn_smpl's by (±30, 25, 0) mm, the pelvis their mean.
  np.testing.assert_allclose(h36m['lhip'], smpl['lhip'] + pelvis @ [30.0, 25.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(h36m['rhip'], smpl['rhip'] + pelvis @ [-30.0, 25.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(h36m['pelv'], (smpl['lhip'] + smpl['rhip']) / 2 + pelvis @ [0.0, 25.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(h36m['pelv'], (h36m['lhip'] + h36m['rhip']) / 2, atol=1e-6)
  np.testing.assert_allclose(h36m['spin'], (smpl['spi2'] + smpl['spi3']) / 2, atol=1e-6)
  np.testing.assert_allclose(h36m['head'], lm[LM['head_centre']] + head @ [0.0, -10.0, 50.0], atol=1e-6)
  np.testing.assert_allclose(h36m['neck'], lm[LM['neck_base']], atol=1e-9)
  np.testing.assert_allclose(h36m['htop'], lm[LM['head_top']], atol=1e-9)
  for s in 'lr':
    for joint in ('kne', 'ank', 'sho', 'elb', 'wri'):
      np.testing.assert_array_equal(h36m[s + joint], smpl[s + joint])
  # syn_markers: landmark + offset in the body frame, mirrored on the right.
  np.testing.assert_allclose(mk['msacr'], lm[LM['pelvis']] + pelvis @ [0.0, 40.0, -100.0], atol=1e-6)
  np.testing.assert_allclose(mk['mc7'], lm[LM['neck_base']] + chest @ [0.0, 20.0, -70.0], atol=1e-6)
  np.testing.assert_allclose(mk['lmsho'], lm[LM['left_shoulder']] + chest @ [15.0, 45.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(mk['rmsho'], lm[LM['right_shoulder']] + chest @ [-15.0, 45.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(mk['rmfhd'], lm[LM['head_centre']] + head @ [-45.0, 35.0, 80.0], atol=1e-6)
  np.testing.assert_allclose(mk['lmkne'], lm[LM['left_knee']] + pelvis @ [50.0, 0.0, 0.0], atol=1e-6)
  thigh = (lm[LM['right_hip']] + lm[LM['right_knee']]) / 2
  np.testing.assert_allclose(mk['rmthi'], thigh + pelvis @ [-70.0, 0.0, 0.0], atol=1e-6)
  # Every marker sits at its stated distance from its anchor.
  compiled = formats3d.compiled_format3d('syn_markers')
  anchors = compiled.weights @ lm
  distances = np.linalg.norm(np.stack(list(mk.values())) - anchors, axis=1)
  np.testing.assert_allclose(distances, np.linalg.norm(compiled.offsets_mm, axis=1), atol=1e-6)
  assert np.all(distances > 10)


def test_formats_move_rigidly_with_the_body():
  lm = _landmarks(2)
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  rotation = q * np.sign(np.linalg.det(q))
  shift = np.array([100.0, -50.0, 2000.0])
  for fmt in FORMATS:
    a, _ = formats3d.joints_in_format(lm, fmt)
    b, _ = formats3d.joints_in_format(lm @ rotation.T + shift, fmt)
    np.testing.assert_allclose(b, a @ rotation.T + shift, atol=1e-6)


def test_invalid_landmarks_make_dependent_joints_invalid():
  lm = _landmarks(0).copy()
  lm[LM['left_knee']] = np.nan
  joints, valid = formats3d.joints_in_format(lm, 'syn_h36m')
  names = get_format3d('syn_h36m').joint_names
  assert not valid[names.index('lkne')] and valid[names.index('rkne')] and valid[names.index('pelv')]
  assert np.all(joints[~valid] == 0) and np.all(np.isfinite(joints))
  lm[LM['left_ear']] = np.nan  # the head frame: every head-frame joint
  _, valid = formats3d.joints_in_format(lm, 'syn_markers')
  names = get_format3d('syn_markers').joint_names
  lost = {'lmfhd', 'rmfhd', 'lmbhd', 'rmbhd', 'lmkne', 'lmthi', 'lmtib'}  # head frame; on or next to the left knee
  assert {n for n, ok in zip(names, valid) if not ok} == lost
  with pytest.raises(ValueError):
    formats3d.joints_in_format(lm[:10], 'syn_smpl')


@pytest.mark.parametrize('difficulty', [0.0, 0.5])
def test_projections_land_on_the_rendered_person(difficulty):
  """Every format's joints, projected with the stored intrinsics, fall in the person's (visible-silhouette) box
  grown by 5 %: all of them in most examples (truncated / occluded ones lose a few)."""
  fractions = []
  for index in range(24):
    example = _example(index, difficulty=difficulty, size=(96, 96))
    x, y, w, h = example['bbox'].astype(np.float64)
    margin = 0.05 * max(w, h)
    intrinsics = example['intrinsics'].astype(np.float64)
    for fmt in FORMATS:
      joints, _ = formats3d.joints_in_format(example['joints3d'], fmt)
      assert np.all(joints[:, 2] > 0)
      uv = (joints @ intrinsics.T)[:, :2] / joints[:, 2:]
      inside = (uv[:, 0] >= x - margin) & (uv[:, 0] <= x + w + margin)
      inside &= (uv[:, 1] >= y - margin) & (uv[:, 1] <= y + h + margin)
      fractions.append(inside.mean())
  assert min(fractions) >= 0.75 and np.mean(fractions) >= 0.98


def test_render_and_records_are_deterministic_in_the_seed():
  params = PARAMS.to_metadata()
  _, a = synthetic3d.render_example((0, 5, 'train', params))
  _, b = synthetic3d.render_example((0, 5, 'train', params))
  _, c = synthetic3d.render_example((0, 5, 'train', dict(params, seed=3)))
  for fmt in FORMATS:
    ra, rb = synthetic3d.format_record(a, fmt), synthetic3d.format_record(b, fmt)
    assert set(ra) == set(records3d.SCALAR_FIELDS) | {'bbox', 'intrinsics', 'distortion', 'joints3d', 'valid'}
    for key in ra:
      np.testing.assert_array_equal(ra[key], rb[key])
    assert not np.array_equal(ra['joints3d'], synthetic3d.format_record(c, fmt)['joints3d'])
  assert a['image'] == b['image'] and a['image'] != c['image']


def test_images_are_not_the_2d_datasets():
  # posebh_synthetic renders ('train', TRAIN_FORMATS) and ('validation', None); the 3D data another combination.
  assert synthetic3d.ANNOTATE_FORMAT not in TRAIN_FORMATS and synthetic3d.ANNOTATE_FORMAT is not None


# The 2D generator's output, hashed at commit 1dbc673 (before the synthetic 3D datasets were added): it must not
# change (`make demo` and the prepared 2D dataset depend on it).
_2D_CASES = [
  (0, 'train', 'coco', (96, 96), 0.0),
  (7, 'train', 'aic', (128, 96), 0.5),
  (2, 'validation', None, (96, 96), 0.0),
  (5, 'validation', None, (192, 192), 0.5),
  (3, 'train', 'ap10k', (96, 96), 1.0),
]
_2D_SHA256 = 'e8183b6553d7a5b9438b2ae0c57e07f80f22ec5659ea818d4cf55261f495d63b'


def test_2d_generator_output_is_unchanged():
  digest = hashlib.sha256()
  for index, split, fmt, size, difficulty in _2D_CASES:
    ex = generate_example(index, split, seed=0, annotate_format=fmt, image_size_hw=size, difficulty=difficulty)
    digest.update(np.ascontiguousarray(ex['image']).tobytes())
    digest.update(ex['category'].encode())
    for key in ('bbox', 'area', 'head_size', 'joints3d', 'intrinsics'):
      digest.update(np.asarray(ex[key], np.float32).tobytes())
    for name in sorted(ex['keypoints']):
      digest.update(name.encode())
      digest.update(np.asarray(ex['keypoints'][name], np.float32).tobytes())
  assert digest.hexdigest() == _2D_SHA256


# --- the prepared dataset -----------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(data_dir, prepare summary) of a tiny posebh_synthetic3d, generated in-process."""
  data_dir = tmp_path_factory.mktemp('tfds3d')
  summary = prepare.prepare_synthetic3d(str(data_dir), PARAMS, num_workers=0, log=lambda line: None)
  return str(data_dir), summary


def test_prepared_dataset_reads_back_without_tensorflow(built):
  data_dir, summary = built
  n, v = PARAMS.num_train_per_format, PARAMS.num_val
  assert summary['built']
  assert summary['splits'] == {f'train_{f}': n for f in FORMATS} | {f'validation_{f}': v for f in FORMATS}
  params = PARAMS.to_metadata()
  train_ids = {}
  for fmt in FORMATS:
    j = get_format3d(fmt).num_joints
    shapes = records3d.feature_shapes(j)
    for split in (f'train_{fmt}', f'validation_{fmt}'):
      source = pipeline.open_source('posebh_synthetic3d', split, data_dir)
      for position in range(len(source)):
        record = source[position]
        assert set(record) == set(shapes)
        for key, (shape, dtype) in shapes.items():
          if dtype is not object and shape:
            assert record[key].shape == shape and record[key].dtype == dtype, key
        assert record['format'] == fmt.encode() and record['valid'].all()
        generator_split = split.split('_')[0]
        index = int(record['image_id']) - 1
        _, rendered = synthetic3d.render_example((0, index, generator_split, params))
        expected = synthetic3d.format_record(rendered, fmt)
        for key in ('joints3d', 'intrinsics', 'bbox', 'instance_id', 'height', 'width'):
          np.testing.assert_array_equal(record[key], expected[key])
        assert record['image'] == expected['image']
        assert decode_jpeg(record['image']).shape == (*PARAMS.image_size, 3)
        if generator_split == 'train':
          train_ids.setdefault(fmt, set()).add(index)
  # Train images are disjoint across formats; validation images are the same in every format's split.
  assert sum(len(ids) for ids in train_ids.values()) == len(set().union(*train_ids.values())) == 3 * n
  validation = {f: pipeline.open_source('posebh_synthetic3d', f'validation_{f}', data_dir) for f in FORMATS}
  for position in range(v):
    first = validation['syn_smpl'][position]
    for fmt in FORMATS[1:]:
      other = validation[fmt][position]
      assert other['image_id'] == first['image_id'] and other['image'] == first['image']
  assert 'tensorflow' not in sys.modules


def test_ground_truth_json_per_format(built):
  data_dir, _ = built
  for fmt in FORMATS:
    split = f'validation_{fmt}'
    with open(records.gt_json_path('posebh_synthetic3d', split, data_dir)) as f:
      gt = json.load(f)
    skeleton = get_format3d(fmt)
    assert gt['joints'] == list(skeleton.suffixed_names) and gt['root'] == f'{skeleton.root}_{fmt}'
    source = pipeline.open_source('posebh_synthetic3d', split, data_dir)
    assert len(gt['annotations']) == len(source) == PARAMS.num_val
    for annotation, position in zip(gt['annotations'], range(len(source))):
      record = source[position]
      assert annotation['id'] == record['instance_id'] and annotation['image_id'] == record['image_id']
      np.testing.assert_allclose(annotation['keypoints_3d'], record['joints3d'], atol=1e-3)
      assert all(annotation['valid'])
  with pytest.raises(ValueError):
    records.gt_json_path('posebh_synthetic3d', 'train_syn_smpl', data_dir)


def test_prepare_keeps_or_refuses_existing_preparation(built, capsys):
  data_dir, _ = built
  again = prepare.prepare_synthetic3d(data_dir, PARAMS, num_workers=0, log=lambda line: None)
  assert not again['built'] and again['splits'] == built[1]['splits']
  other = synthetic3d.Synthetic3DParams(num_train_per_format=2, num_val=2, image_size=(64, 64), seed=2)
  with pytest.raises(ValueError, match='--overwrite'):
    prepare.prepare_synthetic3d(data_dir, other, num_workers=0, log=lambda line: None)
  assert prepare.main(['synthetic3d', f'--data_dir={data_dir}', '--num_train=2', '--num_val=2', '--seed=2']) == 2
  assert 'overwrite' in capsys.readouterr().err


def test_prepare_command_with_a_config(tmp_path, capsys):
  """`--config` takes the config's `data.synthetic3d` sizes; flags override them."""
  config = os.path.join(REPO, 'configs', 'demo.py') + ':tiny,task=3d'
  code = prepare.main(['synthetic3d', f'--data_dir={tmp_path}', f'--config={config}', '--num_train=2', '--num_val=1'])
  assert code == 0
  out = capsys.readouterr().out
  assert 'train_syn_markers 2' in out and 'validation_syn_h36m 1' in out
  source = pipeline.open_source('posebh_synthetic3d', 'validation_syn_smpl', str(tmp_path))
  assert int(source[0]['height']) == 96 and int(source[0]['width']) == 96  # demo.py:tiny,task=3d's image size


def test_params_validation():
  with pytest.raises(ValueError):
    synthetic3d.Synthetic3DParams(num_val=0)
  with pytest.raises(ValueError):
    synthetic3d.Synthetic3DParams(difficulty=1.5)
  assert synthetic3d.Synthetic3DParams.from_metadata(PARAMS.to_metadata()) == PARAMS
  assert synthetic3d.Synthetic3DParams.from_settings({'num_val': 5}).num_val == 5
