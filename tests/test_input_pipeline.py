"""Input-pipeline speed work, checked for sameness: reduced-size JPEG decoding gives the same crop (geometry to a
fraction of a pixel; pictures within a few gray levels on the $POSEBH_REALDATA photos) and identical targets;
the vectorised heatmap targets equal a per-joint loop; the benchmark's reference transform computes what ours
computes; `python -m benchmarks.input_pipeline` runs and prints its ratio line."""

import json
import os
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from benchmarks.input_pipeline import ReferenceTrainTransform, gaussian_targets_loop
from data_pipeline.transforms import (
  TopDownTrainTransform,
  crop_matrix,
  decode_and_crop,
  decode_jpeg,
  decode_reduction,
  has_exif,
  reduced_decode_matrix,
)
from posebh_jax.codecs import encode_msra, encode_udp
from realdata_samples import REALDATA, needs_realdata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_WH = (192, 256)
AUG = dict(
  scale_factor=0.5, rotation=40.0, rotation_prob=0.6, flip_prob=0.5, half_body_prob=0.3, half_body_min_keypoints=8
)


def _matrix(center, scale_wh, rotation=0.0, flip=False, use_udp=True):
  return crop_matrix(center, scale_wh, rotation, flip, 0, OUT_WH, use_udp)


# --- choosing the reduction ---------------------------------------------------------------------------


def test_decode_reduction_follows_the_crop_scale():
  # UDP: crop px per image px = 191 / scale_w (= 255 / scale_h).
  for factor, expected in [(1.0, 1), (1.9, 1), (2.0, 2), (3.9, 2), (4.0, 4), (7.5, 4), (8.0, 8), (30.0, 8)]:
    scale = np.array([191.0, 255.0]) * factor
    for rotation, flip in [(0.0, False), (37.0, True), (-90.0, False)]:
      assert decode_reduction(_matrix([300.0, 200.0], scale, rotation, flip)) == expected, (factor, rotation)
  # The least-shrunk direction decides: 4x smaller along x but only 1.5x along y -> no reduction.
  assert decode_reduction(np.array([[0.25, 0.0, 0.0], [0.0, 1 / 1.5, 0.0]])) == 1
  assert decode_reduction(np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]), max_reduction=2) == 2


def test_reduced_decode_matrix_maps_reduced_pixels_to_their_block_centres():
  matrix = _matrix([120.0, 80.0], [400.0, 530.0], 20.0)
  for r in (2, 4, 8):
    reduced = reduced_decode_matrix(matrix, r)
    points = np.array([[0.0, 0.0], [3.0, 7.0], [10.5, 2.25]])
    original = r * points + (r - 1) / 2  # centre of the r x r block a reduced pixel averages
    np.testing.assert_allclose(
      points @ reduced[:, :2].T + reduced[:, 2], original @ matrix[:, :2].T + matrix[:, 2], atol=1e-9
    )
  np.testing.assert_array_equal(reduced_decode_matrix(matrix, 1), matrix)


# --- the JPEG decoder ---------------------------------------------------------------------------------

_CV2_FLAGS = {
  1: cv2.IMREAD_COLOR,
  2: cv2.IMREAD_REDUCED_COLOR_2,
  4: cv2.IMREAD_REDUCED_COLOR_4,
  8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _cv2_rgb(data, reduction=1):
  return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_FLAGS[reduction]), cv2.COLOR_BGR2RGB)


def _with_exif_orientation(data, orientation):
  """`data` (a JFIF JPEG) with an Exif APP1 segment holding one IFD0 entry: Orientation = `orientation`."""
  tiff = (
    b'MM\x00\x2a\x00\x00\x00\x08'
    + b'\x00\x01'  # big-endian TIFF header, IFD0 at 8, one entry
    + b'\x01\x12\x00\x03\x00\x00\x00\x01'
    + bytes([0, orientation, 0, 0])
    + b'\x00\x00\x00\x00'
  )
  payload = b'Exif\x00\x00' + tiff
  segment = b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload
  return data[:2] + segment + data[2:]


def _decoder_test_images():
  rng = np.random.default_rng(5)
  smooth = cv2.GaussianBlur(rng.uniform(0, 255, (203, 317, 3)).astype(np.uint8), (0, 0), 3.0)
  images = [_jpeg(smooth), _jpeg(smooth[..., 0])]  # colour 4:2:0, and a one-channel (grayscale) JPEG
  ok, data = cv2.imencode(
    '.jpg',
    smooth,
    [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
  )
  images.append(data.tobytes())
  if os.path.isdir(REALDATA):
    for folder, file_name in REAL_IMAGES:
      with open(os.path.join(REALDATA, folder, file_name), 'rb') as f:
        images.append(f.read())
  return images


def test_decode_jpeg_gives_opencvs_pixels_at_every_reduction():
  """simplejpeg and cv2.imdecode run the same libjpeg-turbo IDCT: the exact decode is bit-identical."""
  for data in _decoder_test_images():
    assert not has_exif(data)
    for reduction in (1, 2, 4, 8):
      np.testing.assert_array_equal(decode_jpeg(data, reduction), _cv2_rgb(data, reduction))


def test_fast_decode_stays_within_a_few_gray_levels():
  for data in _decoder_test_images():
    for reduction in (1, 2):
      exact = decode_jpeg(data, reduction).astype(np.float32)
      fast = decode_jpeg(data, reduction, fast=True).astype(np.float32)
      assert fast.shape == exact.shape
      assert np.abs(fast - exact).mean() < 1.5, reduction


@pytest.mark.parametrize('orientation,transposed', [(1, False), (3, False), (6, True)])
def test_decode_jpeg_applies_the_exif_orientation_like_opencv(orientation, transposed):
  plain = _jpeg(_blob_photo(120, 200, (40.0, 30.0), 9.0))
  data = _with_exif_orientation(plain, orientation)
  assert has_exif(data) and not has_exif(plain)
  image = decode_jpeg(data)
  np.testing.assert_array_equal(image, _cv2_rgb(data))  # OpenCV reads the tag, as cv2.imread does
  assert image.shape[:2] == ((200, 120) if transposed else (120, 200))
  if orientation == 3:  # rotated 180 degrees: the blob moves to the opposite corner
    np.testing.assert_array_equal(image, decode_jpeg(plain)[::-1, ::-1])


def test_decode_jpeg_rejects_what_is_not_an_image():
  for data in (b'', b'not a jpeg at all', _jpeg(_blob_photo(64, 64, (10.0, 10.0), 5.0))[:200]):
    with pytest.raises(ValueError, match='could not decode'):
      decode_jpeg(data)
  with pytest.raises(ValueError, match='reduction must be one of'):
    decode_jpeg(_jpeg(_blob_photo(16, 16, (5.0, 5.0), 2.0)), 3)


# --- reduced decoding gives the same crop -------------------------------------------------------------


def _jpeg(image, quality=95):
  ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
  assert ok
  return data.tobytes()


def _blob_photo(height, width, point_xy, sigma):
  """A smooth colour image: a bright Gaussian blob at `point_xy` on a dark background."""
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  blob = np.exp(-((xs - point_xy[0]) ** 2 + (ys - point_xy[1]) ** 2) / (2 * sigma**2))
  image = np.stack([40 + 150 * blob, 60 + 120 * blob, 30 + 200 * blob], axis=-1)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _centroid(crop):
  """Centroid of the blob (the crop minus its background level, black border excluded)."""
  mass = crop.astype(np.float64).sum(axis=-1)
  mass = np.clip(mass - 140.0, 0, None)
  ys, xs = np.mgrid[0 : mass.shape[0], 0 : mass.shape[1]]
  return np.array([(xs * mass).sum(), (ys * mass).sum()]) / mass.sum()


@pytest.mark.parametrize('reduction', [2, 4, 8])
@pytest.mark.parametrize('rotation,flip', [(0.0, False), (33.0, True)])
def test_reduced_decode_crop_equals_full_decode_on_a_smooth_image(reduction, rotation, flip):
  height, width = 1003, 1301  # not multiples of 8: the last reduced row/column covers a partial block
  point = np.array([611.3, 487.8])
  data = _jpeg(_blob_photo(height, width, point, sigma=9.0 * reduction))
  scale = np.array([191.0, 255.0]) * reduction * 1.1  # the crop is `reduction` x 1.1 smaller than the region
  matrix = _matrix(point + [13.0, -21.0], scale, rotation, flip)
  assert decode_reduction(matrix) == reduction
  reduced = decode_and_crop(data, matrix, OUT_WH, reduced_decode=True).astype(np.float64)
  full = decode_and_crop(data, matrix, OUT_WH, reduced_decode=False).astype(np.float64)
  assert reduced.shape == full.shape == (256, 192, 3)
  assert np.abs(reduced - full).mean() < 1.0
  # Sub-pixel geometry: the blob lands where the keypoint transform puts it, in both crops.
  expected = point @ matrix[:, :2].T + matrix[:, 2]
  np.testing.assert_allclose(_centroid(reduced), expected, atol=0.1)
  np.testing.assert_allclose(_centroid(full), expected, atol=0.1)


REAL_IMAGES = [
  ('coco', '000000000785.jpg'),
  ('aic', '054d9ce9201beffc76e5ff2169d2af2f027002ca.jpg'),
  ('mpii', '004645041.jpg'),
  ('ap10k', '000000037516.jpg'),
]


@needs_realdata
@pytest.mark.parametrize('folder,file_name', REAL_IMAGES)
def test_reduced_decode_crop_equals_full_decode_on_real_photos(folder, file_name):
  with open(os.path.join(REALDATA, folder, file_name), 'rb') as f:
    data = f.read()
  height, width = decode_jpeg(data).shape[:2]
  for reduction in (2, 4, 8):
    for rotation in (0.0, 30.0):
      matrix = _matrix([width / 2, height / 2], np.array([191.0, 255.0]) * reduction, rotation)
      assert decode_reduction(matrix) == reduction
      reduced = decode_and_crop(data, matrix, OUT_WH, reduced_decode=True).astype(np.float32)
      full = decode_and_crop(data, matrix, OUT_WH, reduced_decode=False).astype(np.float32)
      # The same picture: within 3 gray levels on average once pixel-level detail is smoothed away
      # (unsmoothed they differ where the full-size bilinear warp aliases fine texture, which the
      # scaled decode's block averaging does not).
      smooth = lambda image: cv2.GaussianBlur(image, (0, 0), 1.0)
      assert np.abs(smooth(reduced) - smooth(full)).mean() < 3.0, (reduction, rotation)


def _coco_style_records(folder, annotation_file):
  with open(os.path.join(REALDATA, folder, annotation_file)) as f:
    raw = json.load(f)
  files = {image['id']: image['file_name'] for image in raw['images']}
  records = []
  for ann in raw['annotations']:
    keypoints = np.asarray(ann['keypoints'], np.float32).reshape(-1, 3)
    if not np.any(keypoints[:, 2] > 0):
      continue
    with open(os.path.join(REALDATA, folder, files[ann['image_id']]), 'rb') as f:
      records.append({'image': f.read(), 'bbox': np.asarray(ann['bbox'], np.float32), 'keypoints': keypoints})
  return records


@needs_realdata
@pytest.mark.parametrize(
  'name,folder,annotation_file,codec',
  [
    ('coco', 'coco', 'test_coco.json', 'udp'),
    ('aic', 'aic', 'test_aic.json', 'msra'),
    ('ap10k', 'ap10k', 'test_ap10k.json', 'msra'),
  ],
)
def test_train_transform_targets_do_not_depend_on_the_decode_size(name, folder, annotation_file, codec):
  records = _coco_style_records(folder, annotation_file)
  make = lambda reduced: TopDownTrainTransform(
    name, codec, (256, 192), (64, 48), 2.0, 1.25, AUG, half_body=True, reduced_decode=reduced
  )
  fast, full = make(True), make(False)
  reduced_seen = 0
  for index, record in enumerate(records):
    for seed in range(4):
      a = fast.random_map(record, np.random.default_rng([seed, index]))
      b = full.random_map(record, np.random.default_rng([seed, index]))
      again = fast.random_map(record, np.random.default_rng([seed, index]))
      np.testing.assert_array_equal(a['heatmaps'], b['heatmaps'])
      np.testing.assert_array_equal(a['target_weights'], b['target_weights'])
      for key in a:  # deterministic for a seed
        np.testing.assert_array_equal(a[key], again[key])
      assert a['image'].shape == b['image'].shape == (256, 192, 3) and a['image'].dtype == np.uint8
      assert a['heatmaps'].shape == (64, 48, len(record['keypoints'])) and a['heatmaps'].dtype == np.float32
      if not np.array_equal(a['image'], b['image']):
        reduced_seen += 1
        smooth = lambda image: cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
        assert np.abs(smooth(a['image']) - smooth(b['image'])).mean() < 3.0
  if name != 'coco':  # AIC / AP-10K crops often shrink their (large) images 2x or more
    assert reduced_seen > 0


# --- vectorised targets against a per-joint loop --------------------------------------------------------


def _awkward_keypoints(rng, count, input_wh):
  keypoints = rng.uniform(-40, np.array(input_wh) + 40, (count, 2))
  keypoints[:6] = [
    [0, 0],
    [input_wh[0] - 1, input_wh[1] - 1],
    [-27.0, 50.0],
    [-30.0, 50.0],
    [input_wh[0] + 20.4, 10.0],
    [np.nan, 5.0],
  ]
  visible = rng.integers(0, 3, count)
  visible[:6] = 2
  return keypoints, visible


@pytest.mark.parametrize('encode,use_udp', [(encode_udp, True), (encode_msra, False)])
@pytest.mark.parametrize('sigma,heatmap_wh', [(2.0, (48, 64)), (1.5, (48, 64)), (3.0, (36, 44))])
def test_vectorised_targets_equal_a_per_joint_loop(encode, use_udp, sigma, heatmap_wh):
  input_wh = (192, 256)
  codec = types.SimpleNamespace(heatmap_size_wh=heatmap_wh, input_size_wh=input_wh, sigma=sigma, use_udp=use_udp)
  rng = np.random.default_rng(int(sigma * 10))
  for count in (17, 133):
    keypoints, visible = _awkward_keypoints(rng, count, input_wh)
    heatmaps, weights = encode(keypoints, visible, input_wh, heatmap_wh, sigma)
    loop_maps, loop_weights = gaussian_targets_loop(keypoints, visible > 0, codec)
    np.testing.assert_array_equal(weights, loop_weights)
    np.testing.assert_allclose(heatmaps, loop_maps, atol=1e-6, rtol=0)
    assert weights[[0, 1, 5]].tolist() == [1, 1, 0]  # corners of the crop in, NaN out
    channels_last, weights_last = encode(keypoints, visible, input_wh, heatmap_wh, sigma, channels_last=True)
    np.testing.assert_array_equal(channels_last, np.transpose(heatmaps, (1, 2, 0)))
    np.testing.assert_array_equal(weights_last, weights)


@needs_realdata
@pytest.mark.parametrize(
  'name,folder,annotation_file,codec',
  [('coco', 'coco', 'test_coco.json', 'udp'), ('ap10k', 'ap10k', 'test_ap10k.json', 'msra')],
)
def test_benchmark_reference_computes_what_ours_computes(name, folder, annotation_file, codec):
  """The reference only does it the slow way: same crop as ours with full-size decoding, same targets."""
  ours = TopDownTrainTransform(
    name, codec, (256, 192), (64, 48), 2.0, 1.25, AUG, half_body=True, reduced_decode=False, fast_decode=False
  )
  reference = ReferenceTrainTransform(ours)
  for index, record in enumerate(_coco_style_records(folder, annotation_file)[:4]):
    a = ours.random_map(record, np.random.default_rng(index))
    b = reference.random_map(record, np.random.default_rng(index))
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_allclose(a['heatmaps'], b['heatmaps'], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(a['target_weights'], b['target_weights'])


# --- the benchmark script ----------------------------------------------------------------------------


@needs_realdata
def test_benchmark_script_prints_the_ratio():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'benchmarks.input_pipeline',
      '--iterations=1',
      '--workers=1',
      '--steps=2',
      '--warmup=1',
      '--batch_size=4',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  lines = result.stdout.splitlines()
  ratio = [line for line in lines if line.startswith('ratio b/a')]
  assert len(ratio) == 1 and float(ratio[0].split(':')[1].split()[0]) > 0
  assert any(line.split()[:1] == ['1'] for line in lines)  # the 1-worker pipeline row
