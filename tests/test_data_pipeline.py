"""Data pipeline: the synthetic tfds builder (no TensorFlow), `prepare` CLI errors, crop/flip geometry
against OpenCV, batch composition, determinism and checkpoint state of the train iterator (in-process and
with worker processes), eval batches and COCO ground truth (checked with pycocotools)."""

import json
import sys

import cv2
import numpy as np
import pytest

from configs import common
from data_pipeline import pipeline, prepare
from data_pipeline import synthetic as synthetic_generator
from data_pipeline.builders import synthetic as synthetic_builder
from data_pipeline.errors import DatasetNotFoundError
from data_pipeline.transforms import (
  TopDownTrainTransform,
  crop_matrix,
  decode_jpeg,
  half_body_center_scale,
  warp_keypoints,
)
from posebh_jax.geometry import get_warp_matrix
from posebh_jax.skeletons import TRAIN_FORMATS, get_format

PARAMS = synthetic_builder.SyntheticParams(
  num_train_per_format=12, num_val=8, image_size=(64, 64), difficulty=0.5, seed=0
)
WEIGHTS = {'coco': 1.0, 'aic': 0.5, 'mpii': 0.3, 'ap10k': 0.2, 'apt36k': 0.2, 'coco_wholebody': 1.0}
NO_AUG = dict(
  scale_factor=0.0, rotation=0.0, rotation_prob=0.0, flip_prob=0.0, half_body_prob=0.0, half_body_min_keypoints=8
)


def data_config(data_dir, num_workers=0):
  """configs.common's config.data for 64x48 crops, with this file's mixture weights."""
  cfg = common.data_config('synthetic')
  cfg.data_dir = str(data_dir)
  for name in TRAIN_FORMATS:
    cfg.datasets[name].weight = WEIGHTS[name]
  cfg.image_size = (64, 48)
  cfg.heatmap_size = (16, 12)
  cfg.num_workers = num_workers
  cfg.prefetch_buffer_size = 2
  return cfg


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(data_dir, generator module, prepare summary) for the tiny synthetic dataset (2 generator processes)."""
  data_dir = tmp_path_factory.mktemp('tfds')
  summary = prepare.prepare_synthetic(str(data_dir), PARAMS, num_workers=2, log=lambda line: None)
  return data_dir, synthetic_generator, summary


# --- builder -----------------------------------------------------------------------------------------


def test_build_and_round_trip_without_tensorflow(built):
  data_dir, generator, summary = built
  expected_splits = {f'train_{n}': 12 for n in TRAIN_FORMATS} | {'validation': 8}
  assert summary['splits'] == expected_splits and summary['built']
  size = PARAMS.image_size

  source = pipeline.open_source('posebh_synthetic', 'train_coco', str(data_dir))
  assert len(source) == 12
  seen_ids = []
  for position in (0, 5, 11):
    record = source[position]
    seen_ids.append(int(record['image_id']))
    example = generator.generate_example(
      int(record['image_id']),
      'train',
      seed=PARAMS.seed,
      annotate_format='coco',
      image_size_hw=size,
      difficulty=PARAMS.difficulty,
    )
    np.testing.assert_array_equal(record['keypoints'], example['keypoints']['coco'])
    np.testing.assert_array_equal(record['bbox'], example['bbox'])
    assert record['has_coco'] and not record['has_aic'] and record['keypoints_coco'].shape == (0, 3)
    image = decode_jpeg(record['image'])
    assert image.shape == (*size, 3)
    assert np.abs(image.astype(np.float32) - example['image']).mean() < 8.0  # JPEG quality 90
  assert len(set(seen_ids)) == 3
  # Train images are disjoint across formats.
  aic_ids = {
    int(pipeline.open_source('posebh_synthetic', 'train_aic', str(data_dir))[i]['image_id']) for i in range(12)
  }
  assert not aic_ids & {int(source[i]['image_id']) for i in range(12)}

  validation = pipeline.open_source('posebh_synthetic', 'validation', str(data_dir))
  for position in range(len(validation)):
    record = validation[position]
    example = generator.generate_example(
      int(record['image_id']),
      'validation',
      seed=PARAMS.seed,
      annotate_format=None,
      image_size_hw=size,
      difficulty=PARAMS.difficulty,
    )
    assert record['category'].decode() == example['category']
    for name in generator.FORMATS_BY_CATEGORY['human'] + generator.FORMATS_BY_CATEGORY['animal']:
      k = get_format(name).num_keypoints
      assert bool(record[f'has_{name}']) == (name in example['keypoints'])
      expected = example['keypoints'].get(name, np.zeros((k, 3), np.float32))
      np.testing.assert_array_equal(record[f'keypoints_{name}'], expected)
  assert 'tensorflow' not in sys.modules


def test_selected_fields_source_equals_the_full_records(built):
  """The train pipeline's lean reader returns the full tfds records' values for the keys it selects."""
  data_dir, _, _ = built
  for split, keys in (
    ('train_mpii', ('image', 'bbox', 'keypoints')),
    ('validation', ('image', 'keypoints_coco_wholebody', 'has_ap10k', 'category')),
  ):
    source = pipeline.open_source('posebh_synthetic', split, str(data_dir))
    lean = pipeline.select_fields(source, keys)
    assert isinstance(lean, pipeline.SelectedFieldsSource) and len(lean) == len(source)
    for position in range(len(source)):
      full, selected = source[position], lean[position]
      assert sorted(selected) == sorted(keys)
      for key in keys:
        assert type(selected[key]) is type(full[key])
        np.testing.assert_array_equal(np.asarray(selected[key]), np.asarray(full[key]))
        assert np.asarray(selected[key]).dtype == np.asarray(full[key]).dtype
  # A key the records do not have leaves the source as it is (its own KeyError then names the key).
  assert pipeline.select_fields(source, ('image', 'no_such_key')) is source


def test_prepare_keeps_or_refuses_existing_preparation(built, capsys):
  data_dir = built[0]
  again = prepare.prepare_synthetic(str(data_dir), PARAMS, log=lambda line: None)
  assert not again['built'] and again['splits'] == built[2]['splits']
  status = prepare.main(['synthetic', f'--data_dir={data_dir}', '--num_train=13', '--num_val=8', '--image_size=64,64'])
  err = capsys.readouterr().err.strip()
  assert status == 2 and '\n' not in err and '--overwrite' in err


def test_prepare_unknown_dataset_is_a_one_line_error(capsys):
  assert prepare.main(['no_such_dataset']) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'no_such_dataset' in err and 'synthetic' in err


def test_prepare_into_a_file_is_a_one_line_error(tmp_path, capsys):
  not_a_directory = tmp_path / 'file'
  not_a_directory.write_text('')
  assert prepare.main(['synthetic', f'--data_dir={not_a_directory}', '--num_train=1', '--num_val=1']) == 2
  err = capsys.readouterr().err.strip()  # was a NotADirectoryError traceback from tfds
  assert '\n' not in err and 'it is a file' in err and str(not_a_directory) in err


def test_missing_dataset_raises_one_line_error(tmp_path):
  cfg = data_config(tmp_path / 'empty')
  with pytest.raises(DatasetNotFoundError) as info:
    pipeline.make_train_iterator(cfg, 12, 1)
  assert str(info.value) == (
    f"dataset 'posebh_synthetic' is not prepared in {tmp_path / 'empty'}; run: "
    f"python -m data_pipeline.prepare synthetic --data_dir={tmp_path / 'empty'}"
  )
  assert isinstance(info.value, FileNotFoundError)


# --- geometry ----------------------------------------------------------------------------------------


def _blob_image(height, width, point_xy, sigma=2.5):
  ys, xs = np.mgrid[0:height, 0:width]
  blob = np.exp(-((xs - point_xy[0]) ** 2 + (ys - point_xy[1]) ** 2) / (2 * sigma**2))
  return (blob * 250).astype(np.float32)


def _centroid(image):
  ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
  mass = image.sum()
  return np.array([(xs * image).sum() / mass, (ys * image).sum() / mass])


@pytest.mark.parametrize('use_udp', [False, True])
@pytest.mark.parametrize('flip', [False, True])
def test_crop_moves_keypoint_with_the_image_content(use_udp, flip):
  point = np.array([57.3, 41.6])
  image = _blob_image(96, 128, point)
  matrix = crop_matrix(
    center=[60.0, 45.0],
    scale=[45.0, 60.0],
    rotation_deg=25.0,
    flip=flip,
    image_width=128,
    output_size_wh=(48, 64),
    use_udp=use_udp,
  )
  crop = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR)
  keypoint = warp_keypoints(np.array([[*point, 2.0]]), matrix, (48, 64))[0]
  assert keypoint[2] == 2.0
  np.testing.assert_allclose(_centroid(crop), keypoint[:2], atol=0.1)


def test_flip_matrix_equals_cropping_the_mirrored_image():
  rng = np.random.default_rng(1)
  image = rng.uniform(0, 255, (70, 90)).astype(np.float32)
  center, scale = np.array([40.0, 30.0]), np.array([36.0, 48.0])
  mirrored = np.ascontiguousarray(image[:, ::-1])
  direct = cv2.warpAffine(
    mirrored,
    get_warp_matrix([90 - 1 - center[0], center[1]], scale, 10.0, (24, 32), True),
    (24, 32),
    flags=cv2.INTER_LINEAR,
  )
  folded = cv2.warpAffine(
    image, crop_matrix(center, scale, 10.0, True, 90, (24, 32), True), (24, 32), flags=cv2.INTER_LINEAR
  )
  np.testing.assert_allclose(folded, direct, atol=0.05)


def test_flip_swaps_left_and_right_keypoints():
  skeleton = get_format('coco')
  keypoints = np.zeros((17, 3), np.float32)
  keypoints[:, 0] = np.arange(17) * 3 + 10
  keypoints[:, 1] = np.arange(17) + 20
  keypoints[:, 2] = 2
  keypoints[skeleton.index('right_wrist'), 2] = 1
  center, scale = np.array([50.0, 35.0]), np.array([90.0, 120.0])
  flipped = warp_keypoints(
    keypoints, crop_matrix(center, scale, 0.0, True, 100, (48, 64), True), (48, 64), skeleton.flip_index
  )
  plain = warp_keypoints(keypoints, crop_matrix(center, scale, 0.0, False, 100, (48, 64), True), (48, 64))
  left, right = skeleton.index('left_wrist'), skeleton.index('right_wrist')
  # The flipped crop is the mirror of the plain one; the left wrist label goes to the mirrored right wrist.
  np.testing.assert_allclose(flipped[left, :2], [48 - 1 - plain[right, 0], plain[right, 1]], atol=1e-4)
  assert flipped[left, 2] == 1 and flipped[right, 2] == 2
  nose = skeleton.index('nose')
  np.testing.assert_allclose(flipped[nose, :2], [48 - 1 - plain[nose, 0], plain[nose, 1]], atol=1e-4)


def test_train_transform_flip_mirrors_image_and_heatmaps(built):
  source = pipeline.open_source('posebh_synthetic', 'train_coco', str(built[0]))
  record = source[3]
  skeleton = get_format('coco')
  outputs = {}
  for flip_prob in (0.0, 1.0):
    transform = TopDownTrainTransform(
      'coco', 'udp', (64, 48), (16, 12), 2.0, 1.25, dict(NO_AUG, flip_prob=flip_prob), half_body=False
    )
    outputs[flip_prob] = transform.random_map(record, np.random.default_rng(0))
  plain, flipped = outputs[0.0], outputs[1.0]
  assert np.abs(flipped['image'].astype(int) - plain['image'][:, ::-1].astype(int)).max() <= 1
  np.testing.assert_allclose(flipped['heatmaps'], plain['heatmaps'][:, ::-1, skeleton.flip_index], atol=1e-5)
  np.testing.assert_array_equal(flipped['target_weights'], plain['target_weights'][skeleton.flip_index])


def test_half_body_crops_the_labelled_half():
  skeleton = get_format('coco')
  rng = np.random.default_rng(0)
  keypoints = np.zeros((17, 3), np.float32)
  keypoints[:, :2] = rng.uniform(0, 200, (17, 2))
  keypoints[list(skeleton.upper_body_ids), 2] = 2  # lower half unlabelled: always the upper half
  upper = keypoints[list(skeleton.upper_body_ids), :2]
  low, high = upper.min(0), upper.max(0)
  for _ in range(5):
    center, scale = half_body_center_scale(keypoints, skeleton.upper_body_ids, skeleton.lower_body_ids, 0.75, rng)
    np.testing.assert_allclose(center, (low + high) / 2, rtol=1e-6)
    assert scale[0] / scale[1] == pytest.approx(0.75)
    assert np.all(scale >= 1.5 * (high - low) - 1e-4) and np.any(np.isclose(scale, 1.5 * (high - low)))
  keypoints[:, 2] = 0
  keypoints[:1, 2] = 2
  assert half_body_center_scale(keypoints, skeleton.upper_body_ids, skeleton.lower_body_ids, 0.75, rng) is None


def test_keypoints_outside_the_crop_get_zero_weight(built):
  record = dict(pipeline.open_source('posebh_synthetic', 'train_coco', str(built[0]))[0])
  keypoints = np.array(record['keypoints'])
  keypoints[:, 2] = 2
  keypoints[0, :2] = [-30.0, -30.0]  # far outside the box and the image
  record['keypoints'] = keypoints
  transform = TopDownTrainTransform('coco', 'udp', (64, 48), (16, 12), 2.0, 1.25, NO_AUG, half_body=False)
  out = transform.random_map(record, np.random.default_rng(0))
  assert out['target_weights'][0] == 0 and np.all(out['heatmaps'][..., 0] == 0)


# --- composition -------------------------------------------------------------------------------------


def test_composition_largest_remainder():
  cfg = data_config('unused')
  # 12 units of 2; quotas 12 * w / 3.2 = 3.75, 1.875, 1.125, .75, .75, 3.75 -> floors (min 1) 3,1,1,1,1,3;
  # the two spare units go to the largest remainders: aic (.875), then coco (.75, before wholebody).
  assert pipeline.composition(cfg, 24, 2) == {
    'coco': 8,
    'aic': 4,
    'mpii': 2,
    'ap10k': 2,
    'apt36k': 2,
    'coco_wholebody': 6,
  }
  for batch, groups in [(6, 1), (48, 8), (100, 2), (640, 16)]:
    counts = pipeline.composition(cfg, batch, groups)
    assert sum(counts.values()) == batch and all(c > 0 and c % groups == 0 for c in counts.values())
  cfg.datasets.mpii.weight = 1.0
  for name in TRAIN_FORMATS:
    cfg.datasets[name].weight = 2.0
  assert set(pipeline.composition(cfg, 60, 2).values()) == {10}


def test_composition_impossible_is_a_one_line_error():
  with pytest.raises(ValueError) as info:
    pipeline.composition(data_config('unused'), 10, 4)
  message = str(info.value)
  assert '\n' not in message and 'global batch 10' in message and '24' in message
  with pytest.raises(ValueError):
    pipeline.composition(data_config('unused'), 26, 4)


# --- train iterator ----------------------------------------------------------------------------------


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_same(batches_a, batches_b):
  for a, b in zip(batches_a, batches_b, strict=True):
    assert list(a) == list(b)
    for name in a:
      for key in a[name]:
        np.testing.assert_array_equal(a[name][key], b[name][key])


def test_train_batches_shapes_and_dtypes(built):
  cfg = data_config(built[0])
  iterator = pipeline.make_train_iterator(cfg, 24, 2, seed=0)
  batch = next(iterator)
  counts = pipeline.composition(cfg, 24, 2)
  assert list(batch) == list(TRAIN_FORMATS)
  for name, arrays in batch.items():
    n, k = counts[name], get_format(name).num_keypoints
    assert set(arrays) == {'image', 'heatmaps', 'target_weights'}
    assert arrays['image'].shape == (n, 64, 48, 3) and arrays['image'].dtype == np.uint8
    assert arrays['heatmaps'].shape == (n, 16, 12, k) and arrays['heatmaps'].dtype == np.float32
    assert arrays['target_weights'].shape == (n, k) and arrays['target_weights'].dtype == np.float32
    assert set(np.unique(arrays['target_weights'])) <= {0.0, 1.0}
    assert 0.0 <= arrays['heatmaps'].min() and arrays['heatmaps'].max() <= 1.0
  assert pipeline.dataset_sizes(cfg) == {name: 12 for name in TRAIN_FORMATS}


def test_train_iterator_is_deterministic_and_resumes(built):
  cfg = data_config(built[0])
  first = pipeline.make_train_iterator(cfg, 12, 1, seed=7)
  reference = _take(first, 5)  # 5 batches of 2 coco examples each is almost an epoch of 12
  _assert_same(reference, _take(pipeline.make_train_iterator(cfg, 12, 1, seed=7), 5))
  other = next(pipeline.make_train_iterator(cfg, 12, 1, seed=8))
  assert not np.array_equal(other['coco']['image'], reference[0]['coco']['image'])

  resumed = pipeline.make_train_iterator(cfg, 12, 1, seed=7)
  _take(resumed, 2)
  state = json.loads(json.dumps(resumed.get_state()))  # a checkpoint is plain JSON
  fresh = pipeline.make_train_iterator(cfg, 12, 1, seed=7)
  fresh.set_state(state)
  _assert_same(reference[2:], _take(fresh, 3))


def test_train_iterator_with_worker_processes_matches_in_process(built):
  reference = _take(pipeline.make_train_iterator(data_config(built[0]), 12, 1, seed=7), 4)
  cfg = data_config(built[0], num_workers=2)
  iterator = pipeline.make_train_iterator(cfg, 12, 1, seed=7)
  try:
    got = _take(iterator, 2)
    state = iterator.get_state()
    _assert_same(reference[:2], got)
  finally:
    iterator.close()
  restored = pipeline.make_train_iterator(cfg, 12, 1, seed=7)
  try:
    restored.set_state(state)
    _assert_same(reference[2:], _take(restored, 2))
  finally:
    restored.close()


def test_processes_take_interleaved_shares_of_the_global_stream(built):
  cfg = data_config(built[0])
  whole = next(pipeline.make_train_iterator(cfg, 24, 2, seed=3))
  shares = [next(pipeline.make_train_iterator(cfg, 24, 2, process_index=p, process_count=2, seed=3)) for p in range(2)]
  for name in TRAIN_FORMATS:
    for p in range(2):
      np.testing.assert_array_equal(shares[p][name]['image'], whole[name]['image'][p::2])
      np.testing.assert_array_equal(shares[p][name]['heatmaps'], whole[name]['heatmaps'][p::2])


# --- eval --------------------------------------------------------------------------------------------


def test_eval_batches_and_ground_truth(built):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  data_dir, generator, _ = built
  cfg = data_config(data_dir)
  validation = pipeline.open_source('posebh_synthetic', 'validation', str(data_dir))
  animal_ids = [
    int(validation[i]['image_id']) for i in range(len(validation)) if validation[i]['category'] == b'animal'
  ]
  assert animal_ids  # the split holds both categories

  batches = list(pipeline.make_eval_iterator(cfg, 'ap10k', batch_size=4))
  valid = np.concatenate([b['valid'] for b in batches])
  ids = np.concatenate([b['image_id'] for b in batches])[valid]
  assert all(b['image'].shape == (4, 64, 48, 3) and b['image'].dtype == np.uint8 for b in batches)
  assert ids.tolist() == animal_ids and valid.sum() == len(animal_ids) and len(valid) % 4 == 0
  assert np.all(np.concatenate([b['bbox_score'] for b in batches])[valid] == 1.0)
  first = validation[[int(validation[i]['image_id']) for i in range(len(validation))].index(animal_ids[0])]
  bbox = first['bbox']
  np.testing.assert_allclose(batches[0]['center'][0], [bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2], rtol=1e-6)
  assert batches[0]['scale'][0][0] / batches[0]['scale'][0][1] == pytest.approx(48 / 64)

  gt = pipeline.eval_ground_truth(cfg, 'ap10k')
  assert gt['image_ids'].tolist() == animal_ids and gt['keypoints'].shape == (len(animal_ids), 17, 3)
  assert gt['categories'][0]['keypoints'] == list(get_format('ap10k').keypoint_names)
  # The ground truth is a valid COCO file: scoring it against itself gives AP 1.
  coco = COCO()
  coco.dataset = {k: gt[k] for k in ('images', 'annotations', 'categories')}
  coco.createIndex()
  results = [dict(a, score=1.0) for a in gt['annotations'] if a['num_keypoints'] > 0]
  evaluator = COCOeval(coco, coco.loadRes(results), 'keypoints')
  evaluator.params.kpt_oks_sigmas = get_format('ap10k').sigmas.astype(np.float64)
  evaluator.evaluate()
  evaluator.accumulate()
  evaluator.summarize()
  assert evaluator.stats[0] == pytest.approx(1.0)


def test_mixture_note_when_batch_shards_override_the_weights():
  from configs import demo

  data = demo.get_config('').data  # weights 3:1:1:1:1:1
  assert pipeline.mixture_note(data, 48, 1, pipeline.composition(data, 48, 1)) is None  # 18:6:6:6:6:6
  counts = pipeline.composition(data, 48, 8)
  assert set(counts.values()) == {8}  # 8 shards leave one multiple of 8 per dataset
  note = pipeline.mixture_note(data, 48, 8, counts)
  assert note.startswith('note: 8 batch shards give coco 8 of 48 examples (17%) where its weight asks for 38%')
  assert note.endswith('--config.batch_size=64 keeps every dataset within 10 % of its weight')
  assert pipeline.composition(data, 64, 8) == dict(coco=24, aic=8, mpii=8, ap10k=8, apt36k=8, coco_wholebody=8)
