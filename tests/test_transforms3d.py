"""Tests of the 3D grain transforms (data_pipeline/transforms3d.py) on synthetic 3D records (rendered in the test
with the synthetic3d builder's own functions) and on records with lens distortion made from them."""

import functools
import pickle

import cv2
import grain
import numpy as np
import pytest

from data_pipeline import transforms3d
from data_pipeline.builders import records3d, synthetic3d
from data_pipeline.transforms import PADDING, decode_jpeg
from posebh_jax.geometry import Camera, perspective_crop, reproject_image
from posebh_jax.skeletons import get_format3d

FORMAT = 'syn_h36m'
SIZE_HW = (256, 192)
PADDING_FACTOR = 1.25
PARAMS = synthetic3d.Synthetic3DParams(image_size=(256, 256), seed=3).to_metadata()
FLIP = get_format3d(FORMAT).flip_index


@functools.lru_cache(maxsize=None)
def _record(index: int, format_name: str = FORMAT) -> dict:
  _, rendered = synthetic3d.render_example((0, index, 'train', PARAMS))
  return synthetic3d.format_record(rendered, format_name)


def _train(aug=None, **kwargs):
  return transforms3d.Pose3DTrainTransform(
    FORMAT, SIZE_HW, PADDING_FACTOR, transforms3d.DEFAULT_AUG if aug is None else aug, **kwargs
  )


def _eval():
  return transforms3d.Pose3DEvalTransform(FORMAT, SIZE_HW, PADDING_FACTOR)


def _project(points, intrinsics):
  p = np.asarray(points, np.float64) @ np.asarray(intrinsics, np.float64).T
  return p[:, :2] / p[:, 2:3]


def _pairwise(points):
  points = np.asarray(points, np.float64)
  return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_outputs_project_onto_the_person_in_the_crop():
  transform = _train()
  for index in range(3):
    record = _record(index)
    camera = transforms3d.record_camera(record)
    source_px = camera.camera_to_image(record['joints3d'])
    for seed in range(4):
      example = transform.random_map(record, np.random.default_rng(seed))
      assert example['image'].shape == (*SIZE_HW, 3) and example['image'].dtype == np.uint8
      assert example['intrinsics'].dtype == np.float32 and example['joints3d'].dtype == np.float32
      assert example['joints2d'].shape == (17, 2) and example['valid'].dtype == bool
      assert example['valid'].all()
      np.testing.assert_allclose(_project(example['joints3d'], example['intrinsics']), example['joints2d'], atol=1e-3)
      # The crop pixel at joints2d samples the source pixel where the joint projects (the image map, not the 3D
      # rotation): the joints land on the person in the crop.
      crop = transform.sample_crop(record, np.random.default_rng(seed))
      expected = source_px[FLIP] if crop.flip else source_px
      np.testing.assert_allclose(crop.crop_to_source_pixels(example['joints2d']), expected, atol=1e-2)
  # The picture: the perspective crop of the decoded image (geometry.reproject_image: one remap), here computed as
  # a homography (no distortion), to within a gray level.
  geometric = _train(dict(transforms3d.DEFAULT_AUG, occlusion_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0))
  for seed in range(4):
    record = _record(seed)
    crop = geometric.sample_crop(record, np.random.default_rng(seed))
    reference = crop.warp(decode_jpeg(record['image'], fast=True))
    difference = np.abs(geometric.random_map(record, np.random.default_rng(seed))['image'] - reference.astype(np.int16))
    assert difference.max() <= 1 and difference.mean() < 1e-3
  # Without augmentation the person is centred and inside the crop.
  example = _eval().map(_record(0))
  xy = example['joints2d']
  assert np.all((xy >= 0) & (xy <= np.array(SIZE_HW[::-1]) - 1))


def test_crop_without_augmentation_matches_the_eval_transform():
  train = _train(transforms3d.NO_AUG, fast_decode=False)
  evaluate = _eval()
  for index in range(3):
    record = _record(index)
    a = train.random_map(record, np.random.default_rng(index))
    b = evaluate.map(record)
    for key in ('image', 'intrinsics', 'joints3d', 'valid', 'joints2d', 'box_size'):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The box's fitting side spans the output / padding.
    assert b['box_size'] >= min(SIZE_HW) / PADDING_FACTOR - 0.5
  assert set(b) - set(a) == {'rotation', 'bbox', 'image_id', 'instance_id', 'example_valid'}


def test_flip_permutes_joints_and_mirrors_x():
  no_colour = dict(transforms3d.DEFAULT_AUG, occlusion_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
  flipped = _train(dict(no_colour, flip_prob=1.0))
  plain = _train(dict(no_colour, flip_prob=0.0))
  width = SIZE_HW[1]
  for index in range(2):
    record = dict(_record(index))
    valid = record['valid'].copy()
    valid[3] = False  # a joint without a label follows its joint through the permutation
    record['valid'] = valid
    a = plain.random_map(record, np.random.default_rng(7))
    b = flipped.random_map(record, np.random.default_rng(7))
    np.testing.assert_array_equal(b['valid'], a['valid'][FLIP])
    mirrored = a['joints3d'][FLIP] * np.array([-1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(b['joints3d'], mirrored, atol=1e-3)
    expected_xy = a['joints2d'][FLIP]
    expected_xy[:, 0] = np.where(b['valid'], width - 1 - expected_xy[:, 0], 0.0)
    np.testing.assert_allclose(b['joints2d'], expected_xy, atol=1e-3)
    np.testing.assert_allclose(b['intrinsics'], a['intrinsics'], atol=1e-4)
    np.testing.assert_allclose(b['box_size'], a['box_size'], rtol=1e-5)
    difference = np.abs(b['image'].astype(np.int16) - a['image'][:, ::-1].astype(np.int16))
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 2


def test_crop_rotation_is_rigid():
  transform = _train()
  for index in range(3):
    record = _record(index)
    distances = _pairwise(record['joints3d'])
    for seed in range(4):
      example = transform.random_map(record, np.random.default_rng(seed))
      order = FLIP if transform.sample_crop(record, np.random.default_rng(seed)).flip else np.arange(len(FLIP))
      np.testing.assert_allclose(_pairwise(example['joints3d']), distances[order][:, order], atol=2e-3)


def test_same_seed_same_example_other_seed_another():
  transform = _train()
  record = _record(1)
  a = transform.random_map(record, np.random.default_rng(11))
  b = transform.random_map(record, np.random.default_rng(11))
  c = transform.random_map(record, np.random.default_rng(12))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert not np.array_equal(a['image'], c['image'])
  assert not np.allclose(a['joints3d'], c['joints3d'])
  # Through grain (pickled, as mp_prefetch workers get it): deterministic in the pipeline seed.
  transform = pickle.loads(pickle.dumps(transform))
  records = [_record(i) for i in range(3)]

  def run(seed):
    return list(grain.MapDataset.source(records).random_map(transform, seed=seed))

  first, again, other = run(5), run(5), run(6)
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert any(not np.array_equal(x['image'], y['image']) for x, y in zip(first, other))


def test_eval_rotation_maps_crop_joints_back_to_the_original_camera():
  evaluate = _eval()
  for index in range(4):
    record = _record(index)
    example = evaluate.map(record)
    rotation = example['rotation'].astype(np.float64)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    back = example['joints3d'].astype(np.float64) @ rotation
    np.testing.assert_allclose(back, record['joints3d'], atol=1e-3)
    assert example['example_valid'] and example['image_id'] == record['image_id']
    assert example['instance_id'] == record['instance_id']
    np.testing.assert_array_equal(example['bbox'], record['bbox'])
  padding = evaluate.map(PADDING)
  real = evaluate.map(_record(0))
  assert not padding['example_valid'] and padding['image_id'] == -1 and not padding['valid'].any()
  assert {k: (np.shape(v), np.asarray(v).dtype) for k, v in padding.items()} == {
    k: (np.shape(v), np.asarray(v).dtype) for k, v in real.items()
  }


def test_label_only_records_are_an_error():
  record = dict(_record(0), image=b'')
  with pytest.raises(ValueError, match='label-only'):
    _train().random_map(record, np.random.default_rng(0))
  with pytest.raises(ValueError, match='label-only'):
    _eval().map(record)


def test_wrong_joint_count_and_missing_aug_keys_are_errors():
  with pytest.raises(ValueError, match='syn_h36m joints3d of shape'):
    _train().random_map(_record(0, 'syn_smpl'), np.random.default_rng(0))
  with pytest.raises(ValueError, match='occlusion_prob'):
    _train({k: v for k, v in transforms3d.DEFAULT_AUG.items() if k != 'occlusion_prob'})


@pytest.mark.parametrize('model', ['opencv', 'h36m'])
def test_distortion_is_undone(model):
  """A record whose image a distorted camera took: its crop equals the crop of the undistorted picture taken by
  the same virtual camera, and joints2d are where the distorted image shows the joints, mapped into the crop."""
  record = _record(2)
  pinhole = Camera(record['intrinsics'], image_size=(256, 256))
  coefficients = np.array([-1.5, 2.0, 0.05, -0.04, 0.0])  # up to ~9 px in the crop; the models differ by ~0.2 px
  distorted = Camera(record['intrinsics'], coefficients, image_size=(256, 256), distortion_model=model)
  original = decode_jpeg(record['image'])
  image = reproject_image(original, pinhole, distorted, antialias=False)
  ok, jpeg = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # lossless: no JPEG noise in the check
  assert ok
  fields = {k: record[k] for k in record}
  fields.update(image=jpeg.tobytes(), distortion=coefficients, distortion_model=model)
  distorted_record = records3d.make_record(fields, 17)
  example = _eval().map(distorted_record)
  crop = perspective_crop(distorted, record['bbox'], SIZE_HW, PADDING_FACTOR)
  np.testing.assert_allclose(example['intrinsics'], crop.camera.intrinsics, atol=1e-4)
  reference = reproject_image(original, pinhole, crop.camera)
  region = (slice(20, SIZE_HW[0] - 20), slice(20, SIZE_HW[1] - 20))
  difference = np.abs(example['image'][region].astype(np.int16) - reference[region].astype(np.int16))
  assert difference.mean() < 2.0  # about 0.7 (resampling twice); about 8.5 when the distortion is ignored
  np.testing.assert_allclose(
    crop.pixels_to_crop(distorted.camera_to_image(record['joints3d'])), example['joints2d'], atol=1e-2
  )
  # The undistorted record's crop sees the joints elsewhere: the distortion matters here.
  assert np.abs(_eval().map(record)['joints2d'] - example['joints2d']).max() > 5.0
  # ... and so does the model: the other formula's tangential terms move the joints by a tenth of a pixel or more.
  other = dict(distorted_record, distortion_model='h36m' if model == 'opencv' else 'opencv')
  assert np.abs(_eval().map(other)['joints2d'] - example['joints2d']).max() > 0.1


def test_colour_jitter_and_occlusion():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms3d.jitter_colour(image, 1.0, 1.0, 1.0), image)
  b, c, s = 1.1, 0.8, 1.2
  rgb = image.astype(np.float64)
  luma = rgb @ np.array([0.299, 0.587, 0.114])
  expected = b * (c * (s * rgb + (1 - s) * luma[..., None]) + (1 - c) * luma.mean())
  got = transforms3d.jitter_colour(image, b, c, s).astype(np.float64)
  assert np.abs(got - np.clip(expected, 0, 255)).max() <= 1.0
  occluded = image.copy()
  transforms3d.occlude(occluded, (16.0, 24.0), np.random.default_rng(3), 3)
  changed = np.any(occluded != image, axis=-1)
  assert 0 < changed.mean() < 0.9


def test_reduced_decode_sees_the_same_crop():
  """A 4x larger image of the same scene: decoded at a fraction of its size, the crop shows the same picture."""
  record = _record(0)
  camera = Camera(record['intrinsics'], image_size=(256, 256)).resized((1024, 1024))
  image = cv2.resize(decode_jpeg(record['image']), (1024, 1024), interpolation=cv2.INTER_CUBIC)
  ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), 95])
  assert ok
  bbox = (record['bbox'] + np.array([0.5, 0.5, 0.0, 0.0])) * 4 - np.array([0.5, 0.5, 0.0, 0.0])
  fields = dict(record, image=jpeg.tobytes(), intrinsics=camera.intrinsics, bbox=bbox, height=1024, width=1024)
  large = records3d.make_record(fields, 17)

  def make(**kwargs):  # a smaller crop, so that it shrinks the 4x image by more than 2
    return transforms3d.Pose3DTrainTransform(FORMAT, (128, 96), PADDING_FACTOR, transforms3d.NO_AUG, **kwargs)

  full, reduced = make(reduced_decode=False, fast_decode=False), make(reduced_decode=True, fast_decode=False)
  crop = reduced.sample_crop(large, np.random.default_rng(0))
  assert transforms3d.decode_reduction_for(crop) >= 2
  a = full.random_map(large, np.random.default_rng(0))
  b = reduced.random_map(large, np.random.default_rng(0))
  for key in ('intrinsics', 'joints3d', 'joints2d', 'box_size'):
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert np.abs(a['image'].astype(np.int16) - b['image'].astype(np.int16)).mean() < 1.0  # ~0.3; ~2.5 for a 1 px shift
  # The same crop as the 256 px original's (the same virtual camera, up to float rounding of the box).
  small = make(fast_decode=False).random_map(record, np.random.default_rng(0))
  np.testing.assert_allclose(b['intrinsics'], small['intrinsics'], rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(b['joints2d'], small['joints2d'], atol=1e-2)
