"""Real-dataset tfds builders: each builder on its $POSEBH_REALDATA sample (or a tiny fake raw layout for
APT-36K and 3DPW) against independent readings of the raw files (counts, keypoint values, boxes, image bytes),
the normalised ground truth, every bad-input case (skipped and counted, or a one-line error naming file, record
and field), the `prepare` CLI, and the data pipeline (data_config(sources='real')) on prepared real data."""

import contextlib
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest

from data_pipeline import pipeline, prepare
from data_pipeline.builders import animals, real
from data_pipeline.errors import RawDataError
from posebh_jax.skeletons import get_format
from realdata_samples import REALDATA, SAMPLES, make_fake_3dpw, needs_realdata

pytestmark = needs_realdata
QUIET = dict(log=lambda line: None)


def _raw(*parts):
  with open(os.path.join(REALDATA, *parts)) as f:
    return json.load(f)


def _records(data_dir, tfds_name, split):
  source = pipeline.open_source(tfds_name, split, data_dir)
  return [source[i] for i in range(len(source))]


def _clean_box(bbox, width, height):
  """mmpose 0.x's box cleaning, written out independently of the builder."""
  x, y, w, h = bbox
  x1, y1 = max(0, x), max(0, y)
  x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
  return [x1, y1, x2 - x1, y2 - y1]


@pytest.fixture(scope='module')
def built(tmp_path_factory, real_data_dir):
  """tfds data_dir with every real builder prepared from its sample (the six training sets come from the
  session fixture); also the fake APT-36K dict and 3DPW sequences."""
  data_dir = real_data_dir['data_dir']
  summaries = dict(real_data_dir['summaries'])
  for name in ('ochuman', 'crowdpose', 'halpe', 'interhand'):
    summaries[name] = prepare.prepare_real(name, data_dir=data_dir, **SAMPLES[name], **QUIET)
  raw_3dpw = tmp_path_factory.mktemp('raw_3dpw')
  sequences = make_fake_3dpw(str(raw_3dpw))
  summaries['3dpw'] = prepare.prepare_real('3dpw', str(raw_3dpw), data_dir, **QUIET)
  apt36k = json.load(open(os.path.join(summaries['apt36k']['path'], 'gt_validation.json')))
  return {
    'data_dir': data_dir,
    'summaries': summaries,
    'sequences': sequences,
    'raw_3dpw': str(raw_3dpw),
    'apt36k_gt_validation': apt36k,
  }


# --- builders on the samples -------------------------------------------------------------------------


def test_coco_keypoints_sample(built):
  data_dir, summary = built['data_dir'], built['summaries']['coco_keypoints']
  raw = _raw('coco', 'test_coco.json')
  labelled = [a for a in raw['annotations'] if any(v > 0 for v in a['keypoints'][2::3])]
  assert summary['splits'] == {'train': len(labelled), 'validation': len(labelled), 'validation_det': 118}
  assert (len(raw['images']), len(raw['annotations']), len(labelled)) == (4, 14, 12)
  assert summary['skipped'] == {'train': {'no_labelled_keypoints': 2}, 'validation': {'no_labelled_keypoints': 2}}
  images = {im['id']: im for im in raw['images']}
  by_id = {a['id']: a for a in raw['annotations']}
  records = _records(data_dir, 'coco_keypoints', 'train')
  assert {int(r['image_id']) for r in records} == set(images)
  for record in records:
    ann, image = by_id[int(record['instance_id'])], images[int(record['image_id'])]
    np.testing.assert_array_equal(record['keypoints'], np.asarray(ann['keypoints'], np.float32).reshape(17, 3))
    np.testing.assert_allclose(record['bbox'], _clean_box(ann['bbox'], image['width'], image['height']), rtol=1e-6)
    assert record['area'] == np.float32(ann['area']) and (record['height'], record['width']) == (
      image['height'],
      image['width'],
    )
    assert record['category'] == b'human' and record['bbox_score'] == 1.0 and record['iscrowd'] == 0
    with open(os.path.join(REALDATA, 'coco', image['file_name']), 'rb') as f:
      assert record['image'] == f.read()  # the original JPEG bytes, not re-encoded
  gt = json.load(open(real.gt_json_path('coco_keypoints', 'validation', data_dir)))
  assert gt == json.load(open(real.gt_json_path('coco_keypoints', 'validation_det', data_dir)))
  assert len(gt['images']) == 4 and [a['id'] for a in gt['annotations']] == [a['id'] for a in raw['annotations']]
  for ann in gt['annotations']:
    assert ann['keypoints'] == [float(v) for v in by_id[ann['id']]['keypoints']]
    assert ann['bbox'] == by_id[ann['id']]['bbox'] and ann['area'] == by_id[ann['id']]['area']
  assert gt['categories'][0]['keypoints'] == raw['categories'][0]['keypoints']
  assert 'tensorflow' not in sys.modules


def test_detector_split_keeps_every_person_detection_with_its_score(built):
  detections = _raw('coco', 'test_coco_det_AP_H_56.json')
  records = _records(built['data_dir'], 'coco_keypoints', 'validation_det')
  assert len(records) == len(detections) == 118
  for index in (0, 57, 117):
    record, det = records[index], detections[index]
    assert int(record['instance_id']) == index + 1 and int(record['image_id']) == det['image_id']
    assert record['bbox_score'] == np.float32(det['score'])
    np.testing.assert_array_equal(record['bbox'], np.asarray(det['bbox'], np.float32))
    assert not record['keypoints'].any()


def test_coco_wholebody_concatenates_the_five_parts(built):
  raw = _raw('coco', 'test_coco_wholebody.json')
  by_id = {a['id']: a for a in raw['annotations']}
  fields = ('keypoints', 'foot_kpts', 'face_kpts', 'lefthand_kpts', 'righthand_kpts')
  expected = {i: np.concatenate([np.reshape(a[f], (-1, 3)) for f in fields]) for i, a in by_id.items()}
  records = _records(built['data_dir'], 'coco_wholebody', 'validation')
  assert len(records) == 12 and all(r['keypoints'].shape == (133, 3) for r in records)
  for record in records:
    np.testing.assert_array_equal(record['keypoints'], expected[int(record['instance_id'])].astype(np.float32))
  gt = json.load(open(real.gt_json_path('coco_wholebody', 'validation', built['data_dir'])))
  for ann in gt['annotations']:
    assert ann['keypoints'] == expected[ann['id']].reshape(-1).tolist()
    assert ann['num_keypoints'] == int(np.count_nonzero(expected[ann['id']][:, 2] > 0))
    assert 'foot_kpts' not in ann and ann['face_box'] == by_id[ann['id']]['face_box']
  assert built['summaries']['coco_wholebody']['splits']['validation_det'] == 118


def test_aic_sample(built):
  raw = _raw('aic', 'test_aic.json')
  assert built['summaries']['aic']['splits'] == {'train': 9, 'validation': 9}
  images = {im['id']: im for im in raw['images']}
  by_id = {a['id']: a for a in raw['annotations']}
  for record in _records(built['data_dir'], 'aic', 'train'):
    ann = by_id[int(record['instance_id'])]
    np.testing.assert_array_equal(record['keypoints'], np.asarray(ann['keypoints'], np.float32).reshape(14, 3))
    assert record['area'] == ann['bbox'][2] * ann['bbox'][3]  # AIC has no area: the box area
    assert record['file_name'].decode() == images[ann['image_id']]['file_name']
  gt = json.load(open(real.gt_json_path('aic', 'validation', built['data_dir'])))
  assert len(gt['annotations']) == 9 and all('area' not in a for a in gt['annotations'])


def test_mpii_sample(built, tmp_path):
  raw = _raw('mpii', 'test_mpii.json')
  assert built['summaries']['mpii']['splits'] == {'train': 5, 'validation': 5}
  records = _records(built['data_dir'], 'mpii', 'validation')
  for position, (record, entry) in enumerate(zip(records, raw)):
    joints = np.asarray(entry['joints'])
    assert int(record['instance_id']) == position + 1
    assert int(record['image_id']) == int(entry['image'].split('.')[0])
    np.testing.assert_allclose(record['keypoints'][:, :2], joints - 1, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(record['keypoints'][:, 2], entry['joints_vis'])
    assert record['head_size'] == pytest.approx(np.linalg.norm(joints[9] - joints[8]), rel=1e-6)
    side = 200 * entry['scale']
    cx, cy = entry['center'][0] - 1, entry['center'][1] - 1 + 15 * entry['scale']
    np.testing.assert_allclose(record['bbox'], [cx - side / 2, cy - side / 2, side, side], rtol=1e-5)
  assert (records[0]['height'], records[0]['width']) == (720, 1280)  # from the JPEG header
  gt = json.load(open(real.gt_json_path('mpii', 'validation', built['data_dir'])))
  assert [a['head_size'] for a in gt['annotations']] == pytest.approx([float(r['head_size']) for r in records])
  # Official head boxes (N, 2, 2) replace the head-segment estimate: 0.6 x the box diagonal.
  boxes = np.array([[[10, 20], [40, 60]], [[0, 0], [30, 40]], [[5, 5], [8, 9]], [[1, 1], [2, 2]], [[0, 0], [6, 8]]])
  with open(tmp_path / 'headboxes.json', 'w') as f:
    json.dump(boxes.tolist(), f)
  summary = prepare.prepare_real(
    'mpii',
    data_dir=str(tmp_path / 'tfds'),
    options={'headboxes': str(tmp_path / 'headboxes.json')},
    **SAMPLES['mpii'],
    **QUIET,
  )
  with_boxes = _records(str(tmp_path / 'tfds'), 'mpii', 'validation')
  np.testing.assert_allclose([r['head_size'] for r in with_boxes], [30.0, 30.0, 3.0, 0.6 * np.sqrt(2), 6.0], rtol=1e-6)
  assert summary['splits']['validation'] == 5
  # ... or from the official mpii_gt_val.mat layout: headboxes_src (2 corners, 2 coords, N).
  from scipy.io import savemat

  savemat(tmp_path / 'mpii_gt_val.mat', {'headboxes_src': boxes.transpose(1, 2, 0).astype(float)})
  prepare.prepare_real(
    'mpii',
    data_dir=str(tmp_path / 'tfds_mat'),
    options={'headboxes': str(tmp_path / 'mpii_gt_val.mat')},
    **SAMPLES['mpii'],
    **QUIET,
  )
  np.testing.assert_allclose(
    [r['head_size'] for r in _records(str(tmp_path / 'tfds_mat'), 'mpii', 'validation')],
    [30.0, 30.0, 3.0, 0.6 * np.sqrt(2), 6.0],
    rtol=1e-6,
  )


def test_ap10k_sample_keeps_species(built):
  raw = _raw('ap10k', 'test_ap10k.json')
  records = _records(built['data_dir'], 'ap10k', 'validation')
  assert len(records) == 2 and {int(r['category_id']) for r in records} == {
    a['category_id'] for a in raw['annotations']
  }
  by_id = {a['id']: a for a in raw['annotations']}
  for record in records:
    np.testing.assert_array_equal(
      record['keypoints'], np.asarray(by_id[int(record['instance_id'])]['keypoints'], np.float32).reshape(17, 3)
    )
    assert record['category'] == b'animal'
  gt = json.load(open(real.gt_json_path('ap10k', 'validation', built['data_dir'])))
  assert len(gt['categories']) == 54 and gt['categories'][25]['name'] == raw['categories'][25]['name']


def test_apt36k_splits_by_video_7_1_2(built):
  summary = built['summaries']['apt36k']
  # 2 species x 10 videos: 7 / 1 / 2 videos each; 2 frames per video, 3 animals per video.
  assert summary['splits'] == {'train': 2 * 7 * 3, 'validation': 2 * 1 * 3, 'test': 2 * 2 * 3}
  data_dir = built['data_dir']
  videos = {
    split: {int(r['video_id']) for r in _records(data_dir, 'apt36k', split)}
    for split in ('train', 'validation', 'test')
  }
  assert [len(v) for v in videos.values()] == [14, 2, 4]
  assert not (
    videos['train'] & videos['validation'] or videos['train'] & videos['test'] or videos['validation'] & videos['test']
  )
  # Per species, in order of appearance: videos 1-7 train, 8 validation, 9-10 test (ids 1-10 and 11-20).
  assert videos['validation'] == {8, 18} and videos['test'] == {9, 10, 19, 20}
  raw_dir = json.load(open(os.path.join(summary['path'], 'metadata.json')))['source']['manual_dir']
  raw = json.load(open(os.path.join(raw_dir, 'annotations', 'apt36k_annotations.json')))
  assignment = animals.apt36k_video_splits(raw['images'])
  assert {v for v, s in assignment.items() if s == 'validation'} == {8, 18}
  by_id = {a['id']: a for a in raw['annotations']}
  for record in _records(data_dir, 'apt36k', 'test'):
    ann = by_id[int(record['instance_id'])]
    expected = np.asarray(ann['keypoints'], np.float32).reshape(17, 3)
    np.testing.assert_array_equal(record['keypoints'], expected)
    assert int(record['track_id']) == ann['track_id'] and int(record['video_id']) == ann['video_id']
    assert '\\' in record['file_name'].decode()  # Windows path resolved under AP-36k-patr1/
  gt = built['apt36k_gt_validation']
  assert {im['video_id'] for im in gt['images']} == {8, 18} and len(gt['annotations']) == 6


def test_ochuman_sample(built):
  raw = _raw('ochuman', 'test_ochuman.json')
  records = _records(built['data_dir'], 'ochuman', 'validation')
  assert len(records) == 5 and len({int(r['image_id']) for r in records}) == 3
  by_id = {a['id']: a for a in raw['annotations']}
  for record in records:
    np.testing.assert_array_equal(
      record['keypoints'], np.asarray(by_id[int(record['instance_id'])]['keypoints'], np.float32).reshape(17, 3)
    )
  gt = json.load(open(real.gt_json_path('ochuman', 'validation', built['data_dir'])))
  assert all('segmentation' not in a for a in gt['annotations'])


def test_crowdpose_sample_keeps_crowd_index(built):
  raw = _raw('crowdpose', 'test_crowdpose.json')
  crowd = {im['id']: im['crowdIndex'] for im in raw['images']}
  summary = built['summaries']['crowdpose']
  assert summary['splits'] == {'test': 4, 'test_det': 6}
  assert summary['skipped'] == {'test': {'no_labelled_keypoints': 1}}
  by_id = {a['id']: a for a in raw['annotations']}
  for split in ('test', 'test_det'):
    for record in _records(built['data_dir'], 'crowdpose', split):
      assert record['crowd_index'] == np.float32(crowd[int(record['image_id'])])
      if split == 'test':
        np.testing.assert_array_equal(
          record['keypoints'], np.asarray(by_id[int(record['instance_id'])]['keypoints'], np.float32).reshape(14, 3)
        )
  gt = json.load(open(real.gt_json_path('crowdpose', 'test_det', built['data_dir'])))
  assert {im['id']: im['crowdIndex'] for im in gt['images']} == crowd and len(gt['annotations']) == 5


def test_halpe_sample_on_the_coco_images(built):
  raw = _raw('halpe', 'test_halpe.json')
  records = _records(built['data_dir'], 'halpe', 'validation')
  assert len(records) == 12 and records[0]['keypoints'].shape == (136, 3)
  by_id = {a['id']: a for a in raw['annotations']}
  for record in records:
    np.testing.assert_array_equal(
      record['keypoints'], np.asarray(by_id[int(record['instance_id'])]['keypoints'], np.float32).reshape(136, 3)
    )
    with open(os.path.join(REALDATA, 'coco', record['file_name'].decode()), 'rb') as f:
      assert record['image'] == f.read()


def test_interhand_projects_joint_3d_with_the_camera(built):
  data = _raw('interhand2.6m', 'test_interhand2.6m_data.json')
  cameras = _raw('interhand2.6m', 'test_interhand2.6m_camera.json')
  joints = _raw('interhand2.6m', 'test_interhand2.6m_joint_3d.json')
  images = {im['id']: im for im in data['images']}
  anns = {a['id']: a for a in data['annotations']}
  records = _records(built['data_dir'], 'interhand26m', 'test')
  assert len(records) == 4 and built['summaries']['interhand']['splits'] == {'train': 4, 'test': 4}
  for record in records:
    ann = anns[int(record['instance_id'])]
    image = images[ann['image_id']]
    cap, cam = str(image['capture']), image['camera']
    world = np.asarray(joints[cap][str(image['frame_idx'])]['world_coord'])
    rot, pos = np.asarray(cameras[cap]['camrot'][cam]), np.asarray(cameras[cap]['campos'][cam])
    cam_xyz = (rot @ (world - pos).T).T
    uv = cam_xyz[:, :2] / cam_xyz[:, 2:] * cameras[cap]['focal'][cam] + cameras[cap]['princpt'][cam]
    np.testing.assert_allclose(record['keypoints'][:, :2], uv, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(record['keypoints'][:, 2], np.ravel(ann['joint_valid']))
    np.testing.assert_allclose(record['joints_cam'], cam_xyz, rtol=1e-5, atol=1e-3)
    assert record['hand_type'].decode() == ann['hand_type'] and record['category'] == b'hand'
    # The projected labelled joints lie in the annotated hand box (a sanity check of the camera model).
    box = np.asarray(ann['bbox'])
    labelled = uv[np.ravel(ann['joint_valid']) > 0]
    assert np.all((labelled >= box[:2] - 1) & (labelled <= box[:2] + box[2:] + 1))


def test_3dpw_projects_smpl_joints(built):
  sequences = built['sequences']
  records = _records(built['data_dir'], 'pw3d', 'test')
  # a_seq: 3 frames x 2 people, b_seq: 2 frames x 1 person; each sequence's last person lacks frame 0's pose.
  assert len(records) == 3 * 2 - 1 + 2 * 1 - 1
  assert built['summaries']['3dpw']['skipped'] == {'test': {'invalid_camera_pose': 2}}
  for record in records:
    seq = sequences[record['sequence'].decode()]
    frame = int(record['image_id']) % 100000
    f_index = list(seq['img_frame_ids']).index(frame)
    person = int(record['instance_id']) % 10 - 1
    world = seq['jointPositions'][person][f_index].reshape(24, 3)
    cam = (seq['cam_poses'][f_index] @ np.c_[world, np.ones(24)].T).T[:, :3]
    uv = (seq['cam_intrinsics'] @ (cam / cam[:, 2:]).T).T[:, :2]
    np.testing.assert_allclose(record['keypoints'][:, :2], uv, rtol=0, atol=1e-3)
    np.testing.assert_allclose(record['joints_cam'], cam * 1000, rtol=1e-5)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= 1079) & (uv[:, 1] >= 0) & (uv[:, 1] <= 1919)
    np.testing.assert_array_equal(record['keypoints'][:, 2], 2.0 * inside)
    x, y, w, h = record['bbox']
    assert np.all((uv[inside] >= [x, y]) & (uv[inside] <= [x + w, y + h]))
    assert record['file_name'].decode() == f'{record["sequence"].decode()}/image_{frame:05d}.jpg'


# --- bad inputs --------------------------------------------------------------------------------------


def _coco_like(tmp_path, mutate, name='bad.json'):
  """Writes the COCO sample with `mutate(data)` applied to tmp_path/name; returns prepare_real kwargs."""
  data = _raw('coco', 'test_coco.json')
  mutate(data)
  with open(tmp_path / name, 'w') as f:
    json.dump(data, f)
  return dict(
    manual_dir=str(tmp_path),
    annotation_files={'validation': name},
    image_dirs={'validation': os.path.join(REALDATA, 'coco')},
  )


def _error(tmp_path, mutate, name='coco_keypoints') -> str:
  with pytest.raises(RawDataError) as info:
    prepare.prepare_real(name, data_dir=str(tmp_path / 'tfds'), **_coco_like(tmp_path, mutate), **QUIET)
  message = str(info.value)
  assert '\n' not in message and str(tmp_path / 'bad.json') in message
  assert not [p for p in (tmp_path / 'tfds').rglob('*incomplete*')]  # nothing half-written is left
  return message


def test_missing_image_and_bad_box_are_skipped_and_counted(tmp_path, capsys):
  def mutate(data):
    data['images'][0]['file_name'] = 'no_such_image.jpg'  # image 785: one person
    data['annotations'][1]['bbox'][2] = 0.0  # 198196: zero width
    data['annotations'][2]['bbox'][3] = -5.0  # 230195: negative height

  kwargs = _coco_like(tmp_path, mutate)
  argv = [
    'coco_keypoints',
    f'--data_dir={tmp_path / "tfds"}',
    f'--manual_dir={tmp_path}',
    '--ann_file=validation=bad.json',
    f'--image_dir=validation={kwargs["image_dirs"]["validation"]}',
  ]
  assert prepare.main(argv) == 0
  out = capsys.readouterr().out
  assert (
    'skipped:' in out and 'validation: 1 missing image (e.g. no_such_image.jpg (image id 785, 1 annotations))' in out
  )
  assert 'validation: 2 bad bbox' in out and 'annotation id=198196' in out
  records = _records(str(tmp_path / 'tfds'), 'coco_keypoints', 'validation')
  assert len(records) == 12 - 1 - 2 and 785 not in {int(r['image_id']) for r in records}
  gt = json.load(open(real.gt_json_path('coco_keypoints', 'validation', str(tmp_path / 'tfds'))))
  assert {im['id'] for im in gt['images']} == {40083, 196141, 197388} and len(gt['annotations']) == 13


def test_truncated_image_is_skipped_and_counted(tmp_path):
  with open(os.path.join(REALDATA, 'coco', '000000000785.jpg'), 'rb') as f:
    payload = f.read()
  images = tmp_path / 'images'
  images.mkdir()
  for name in ('000000040083.jpg', '000000196141.jpg', '000000197388.jpg'):
    os.symlink(os.path.join(REALDATA, 'coco', name), images / name)
  (images / '000000000785.jpg').write_bytes(payload[: len(payload) // 2])
  kwargs = _coco_like(tmp_path, lambda data: None)
  kwargs['image_dirs'] = {'validation': str(images)}
  summary = prepare.prepare_real('coco_keypoints', data_dir=str(tmp_path / 'tfds'), **kwargs, **QUIET)
  assert summary['splits'] == {'validation': 11}
  assert summary['skipped']['validation'] == {'no_labelled_keypoints': 2, 'unreadable_image': 1}
  assert any('truncated JPEG' in line for line in summary['skipped_lines'])
  gt = json.load(open(real.gt_json_path('coco_keypoints', 'validation', str(tmp_path / 'tfds'))))
  assert 785 not in {im['id'] for im in gt['images']}


def test_truncated_json_is_a_one_line_error(tmp_path, capsys):
  text = json.dumps(_raw('coco', 'test_coco.json'))
  (tmp_path / 'bad.json').write_text(text[: len(text) // 3])
  status = prepare.main(
    ['coco_keypoints', f'--data_dir={tmp_path / "tfds"}', f'--manual_dir={tmp_path}', '--ann_file=validation=bad.json']
  )
  err = capsys.readouterr().err.strip()
  assert status == 2 and '\n' not in err and err.startswith(f'error: {tmp_path / "bad.json"}: not valid JSON')
  assert 'truncated' in err


def test_keypoints_of_the_wrong_length_is_an_error(tmp_path):
  message = _error(tmp_path, lambda data: data['annotations'][4]['keypoints'].pop())
  assert "annotation id=460541 (#4): field 'keypoints'" in message and '50 values' in message and '51' in message


def test_wholebody_part_of_the_wrong_length_is_an_error(tmp_path):
  def mutate(data):
    wholebody = _raw('coco', 'test_coco_wholebody.json')
    data['annotations'] = wholebody['annotations']
    data['annotations'][2]['lefthand_kpts'] = data['annotations'][2]['lefthand_kpts'][:60]

  message = _error(tmp_path, mutate, name='coco_wholebody')
  assert "annotation id=230195 (#2): field 'lefthand_kpts'" in message and '63' in message


def test_unknown_category_is_an_error(tmp_path):
  message = _error(tmp_path, lambda data: data['annotations'][3].update(category_id=7))
  assert "annotation id=1202706 (#3): field 'category_id' is 7, an unknown category" in message


def test_missing_field_and_unknown_image_are_errors(tmp_path):
  message = _error(tmp_path, lambda data: data['annotations'][0].pop('bbox'))
  assert "annotation id=442619 (#0): missing field 'bbox'" in message
  shutil.rmtree(tmp_path / 'tfds', ignore_errors=True)
  message = _error(tmp_path, lambda data: data['annotations'][0].update(image_id=1))
  assert "field 'image_id' is 1, which is not in 'images'" in message


def test_no_usable_instance_is_an_error(tmp_path):
  kwargs = _coco_like(tmp_path, lambda data: None)
  kwargs['image_dirs'] = {'validation': str(tmp_path)}  # no image there
  with pytest.raises(
    RawDataError, match=r"split 'validation' of coco_keypoints has no usable instance .*missing_image: 4"
  ):
    prepare.prepare_real('coco_keypoints', data_dir=str(tmp_path / 'tfds'), **kwargs, **QUIET)


def test_mpii_bad_inputs(tmp_path):
  raw = _raw('mpii', 'test_mpii.json')
  raw[2]['joints'] = raw[2]['joints'][:15]
  (tmp_path / 'mpii.json').write_text(json.dumps(raw))
  kwargs = dict(
    annotation_files={'validation': str(tmp_path / 'mpii.json')},
    image_dirs={'validation': os.path.join(REALDATA, 'mpii')},
  )
  with pytest.raises(RawDataError, match=r"mpii.json: person #2 \(051423444.jpg\): field 'joints' has shape \[15, 2\]"):
    prepare.prepare_real('mpii', None, str(tmp_path / 'tfds'), **kwargs, **QUIET)
  (tmp_path / 'boxes.json').write_text(json.dumps([[[0, 0], [1, 1]]] * 3))
  with pytest.raises(RawDataError, match='has 3 head boxes but split .validation. has 5 persons'):
    prepare.prepare_real(
      'mpii',
      None,
      str(tmp_path / 'tfds'),
      annotation_files={'validation': os.path.join(REALDATA, 'mpii', 'test_mpii.json')},
      image_dirs=kwargs['image_dirs'],
      options={'headboxes': str(tmp_path / 'boxes.json')},
      **QUIET,
    )


def test_interhand_missing_camera_is_an_error(tmp_path):
  for suffix in ('data', 'joint_3d'):
    os.symlink(
      os.path.join(REALDATA, 'interhand2.6m', f'test_interhand2.6m_{suffix}.json'), tmp_path / f'x_{suffix}.json'
    )
  cameras = _raw('interhand2.6m', 'test_interhand2.6m_camera.json')
  del cameras['7']['focal']
  (tmp_path / 'x_camera.json').write_text(json.dumps(cameras))
  with pytest.raises(
    RawDataError,
    match=r"x_camera.json: capture '7': no campos/camrot/focal/princpt for camera "
    r"'410053' \(needed by annotation id=680801 \(#2\)",
  ):
    prepare.prepare_real(
      'interhand',
      str(tmp_path),
      str(tmp_path / 'tfds'),
      annotation_files={'test': 'x_data.json'},
      image_dirs={'test': os.path.join(REALDATA, 'interhand2.6m')},
      **QUIET,
    )


def test_bad_detections_are_errors_or_counted(tmp_path):
  kwargs = _coco_like(tmp_path, lambda data: None)
  detections = _raw('coco', 'test_coco_det_AP_H_56.json')
  confident = [i for i, d in enumerate(detections) if d['score'] >= 0.5][:3]
  detections[confident[0]]['category_id'] = 2
  detections[confident[1]]['image_id'] = 12345
  detections[confident[2]]['bbox'][3] = 0
  (tmp_path / 'det.json').write_text(json.dumps(detections))
  summary = prepare.prepare_real(
    'coco_keypoints',
    data_dir=str(tmp_path / 'tfds'),
    det_json=str(tmp_path / 'det.json'),
    det_score_threshold=0.5,
    **kwargs,
    **QUIET,
  )
  rest = [d for i, d in enumerate(detections) if i not in confident]
  assert summary['splits']['validation_det'] == sum(d['score'] >= 0.5 for d in rest)
  assert summary['skipped']['validation_det'] == {
    'bad_bbox': 1,
    'detection_not_person': 1,
    'detection_on_unknown_image': 1,
    'detection_below_score_threshold': sum(d['score'] < 0.5 for d in rest),
  }
  del detections[5]['score']
  (tmp_path / 'det.json').write_text(json.dumps(detections))
  with pytest.raises(RawDataError, match=r"det.json: detection #5: missing field 'score'"):
    prepare.prepare_real(
      'coco_keypoints', data_dir=str(tmp_path / 'tfds2'), det_json=str(tmp_path / 'det.json'), **kwargs, **QUIET
    )


def test_prepare_keeps_or_refuses_an_existing_real_preparation(built, capsys):
  data_dir = built['data_dir']
  again = prepare.prepare_real('aic', data_dir=data_dir, **SAMPLES['aic'], **QUIET)
  assert not again['built'] and again['splits'] == built['summaries']['aic']['splits']
  status = prepare.main(
    ['aic', f'--data_dir={data_dir}', f'--manual_dir={REALDATA}/aic', '--ann_file=validation=test_aic.json']
  )
  err = capsys.readouterr().err.strip()
  assert status == 2 and '\n' not in err and '--overwrite' in err
  status = prepare.main(['aic', f'--data_dir={data_dir}'])
  assert status == 2 and 'needs --manual_dir' in capsys.readouterr().err


def test_missing_raw_directory_and_layout_are_errors(tmp_path):
  with pytest.raises(RawDataError, match='raw data directory does not exist'):
    prepare.prepare_real('coco_keypoints', str(tmp_path / 'nowhere'), str(tmp_path / 'tfds'), **QUIET)
  with pytest.raises(
    RawDataError,
    match=r'no annotation file of coco_keypoints found; expected .*'
    r'annotations/person_keypoints_train2017.json',
  ):
    prepare.prepare_real('coco_keypoints', str(tmp_path), str(tmp_path / 'tfds'), **QUIET)


# --- the pipeline on prepared real data ----------------------------------------------------------------


@pytest.fixture(scope='module')
def real_config(real_data_dir):
  from configs.common import data_config

  cfg = data_config(sources='real')
  cfg.data_dir = real_data_dir['data_dir']
  cfg.num_workers = 0
  cfg.image_size, cfg.heatmap_size = (64, 48), (16, 12)
  return cfg


def test_data_config_real_reads_every_training_dataset(real_config):
  from configs.common import REAL_SOURCES

  counts = {'coco': 12, 'aic': 9, 'mpii': 5, 'ap10k': 2, 'apt36k': 42, 'coco_wholebody': 12}
  assert pipeline.dataset_sizes(real_config) == counts
  for name, (tfds_name, train_split, eval_split) in REAL_SOURCES.items():
    assert len(pipeline.open_source(tfds_name, eval_split, real_config.data_dir)) > 0
  batch = next(pipeline.make_train_iterator(real_config, 6, 1, seed=0))
  for name in counts:
    k = len(get_format(name).keypoint_names)
    assert batch[name]['image'].shape == (1, 64, 48, 3) and batch[name]['heatmaps'].shape == (1, 16, 12, k)
    assert batch[name]['target_weights'].sum() > 0
  assert 'tensorflow' not in sys.modules


def test_eval_on_real_data_uses_the_official_ground_truth(real_config):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  # COCO: detector boxes (their scores), gt from the official json (14 annotations, 4 images).
  gt = pipeline.eval_ground_truth(real_config, 'coco')
  detections = _raw('coco', 'test_coco_det_AP_H_56.json')
  assert len(gt['annotations']) == 14 and len(gt['images']) == 4 and gt['keypoints'].shape == (118, 17, 3)
  batches = list(pipeline.make_eval_iterator(real_config, 'coco', 32))
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.sum() == 118 and len(valid) == 128
  np.testing.assert_allclose(
    np.concatenate([b['bbox_score'] for b in batches])[valid], [d['score'] for d in detections], rtol=1e-6
  )
  np.testing.assert_array_equal(np.concatenate([b['image_id'] for b in batches])[valid], gt['image_ids'])
  # MPII (GT boxes, several persons per image possible): per-instance arrays in iterator order.
  gt = pipeline.eval_ground_truth(real_config, 'mpii')
  batches = list(pipeline.make_eval_iterator(real_config, 'mpii', 4))
  ids = np.concatenate([b['instance_id'] for b in batches])[np.concatenate([b['valid'] for b in batches])]
  np.testing.assert_array_equal(ids, gt['instance_ids'])
  assert [a['id'] for a in gt['annotations']] == ids.tolist() and np.all(gt['head_size'] > 0)
  # AP-10K: the gt keeps the species categories; ground truth scored against itself gives AP 1.
  gt = pipeline.eval_ground_truth(real_config, 'ap10k')
  batches = list(pipeline.make_eval_iterator(real_config, 'ap10k', 2))
  assert sorted(np.concatenate([b['category_id'] for b in batches]).tolist()) == [1, 26]
  for name in ('ap10k', 'coco_wholebody', 'apt36k'):
    gt = pipeline.eval_ground_truth(real_config, name)
    coco = COCO()
    coco.dataset = {k: gt[k] for k in ('images', 'annotations', 'categories')}
    with contextlib.redirect_stdout(io.StringIO()):
      coco.createIndex()
      results = [dict(a, score=1.0) for a in gt['annotations'] if a['num_keypoints'] > 0]
      evaluator = COCOeval(coco, coco.loadRes(results), 'keypoints')
      evaluator.params.kpt_oks_sigmas = get_format(real_config.datasets[name].format).sigmas.astype(float)
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_3dpw_also_reads_a_coco_style_file(built, tmp_path):
  records = _records(built['data_dir'], 'pw3d', 'test')
  images, annotations = {}, []
  for record in records:
    images[int(record['image_id'])] = {
      'id': int(record['image_id']),
      'file_name': record['file_name'].decode(),
      'height': 1920,
      'width': 1080,
    }
    annotations.append(
      {
        'id': int(record['instance_id']),
        'image_id': int(record['image_id']),
        'category_id': 1,
        'bbox': record['bbox'].tolist(),
        'keypoints': record['keypoints'].reshape(-1).tolist(),
      }
    )
  (tmp_path / '3dpw_test.json').write_text(json.dumps({'images': list(images.values()), 'annotations': annotations}))
  summary = prepare.prepare_real(
    '3dpw',
    str(tmp_path),
    str(tmp_path / 'tfds'),
    annotation_files={'test': '3dpw_test.json'},
    image_dirs={'test': os.path.join(built['raw_3dpw'], 'imageFiles')},
    **QUIET,
  )
  assert summary['splits'] == {'test': len(records)}
  again = _records(str(tmp_path / 'tfds'), 'pw3d', 'test')
  for a, b in zip(again, records):
    np.testing.assert_array_equal(a['keypoints'], b['keypoints'])
    assert not a['joints_cam'].any() and a['sequence'] == b''
