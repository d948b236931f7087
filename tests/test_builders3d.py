"""3D builders (records3d layout): H36M, MPI-INF-3DHP and CMU-Panoptic on their $POSEBH_REALDATA samples, 3DPW 3D on
a fake official layout, the generic per-example builder (round trip), near-duplicate dropping, and every bad-input
case (a counted skip, or one error line naming file, record and field). Records are read back through
data_pipeline.pipeline (no TensorFlow); expected values are computed here from the raw files."""

import json
import os
import pickle
import shutil
import sys

import cv2
import numpy as np
import pytest

from data_pipeline import pipeline, prepare
from data_pipeline.builders import real
from data_pipeline.errors import RawDataError
from posebh_jax.skeletons import get_format3d
from realdata_samples import REALDATA, make_fake_3dpw, needs_realdata

QUIET = dict(log=lambda line: None)
H36M_RAW = os.path.join(REALDATA, 'h36m')
MPI_RAW = os.path.join(REALDATA, 'mpi_inf_3dhp')
PANOPTIC_RAW = os.path.join(REALDATA, 'panoptic_body3d')
H36M_FILES = {'train': 'test_h36m_body3d.npz', 'test': 'test_h36m_body3d.npz'}
MPI_FILES = {'train': 'test_3dhp_train.npz', 'test': 'test_3dhp_test.npz'}
# mmpose's 17-joint orders, as short names of the registry formats (written out here, independently of the builders).
H36M_17 = 'pelv rhip rkne rank lhip lkne lank spin neck head htop lsho lelb lwri rsho relb rwri'.split()
MPI_17 = 'htop neck rsho relb rwri lsho lelb lwri rhip rkne rank lhip lkne lank pelv spin head'.split()
PANOPTIC_19 = 'neck nose pelv lsho lelb lwri lhip lkne lank rsho relb rwri rhip rkne rank leye lear reye rear'.split()


def _records(data_dir, tfds_name, split):
  source = pipeline.open_source(tfds_name, split, data_dir)
  return [source[i] for i in range(len(source))]


def _gt(data_dir, tfds_name, split):
  with open(real.gt_json_path(tfds_name, split, data_dir)) as f:
    return json.load(f)


def _expected(format_name, order, joints_mm, valid):
  """(J, 3) joints and (J,) validity of `format_name` from source joints in `order` (short names)."""
  fmt = get_format3d(format_name)
  out, out_valid = np.zeros((fmt.num_joints, 3)), np.zeros(fmt.num_joints, bool)
  for i, name in enumerate(order):
    out[fmt.index(name)] = joints_mm[i] if valid[i] else 0.0
    out_valid[fmt.index(name)] = valid[i]
  return out, out_valid


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Every 3D builder prepared from its sample (3DPW: a fake official layout) into one data_dir."""
  data_dir = str(tmp_path_factory.mktemp('tfds3d'))
  summaries = {}
  if os.path.isdir(REALDATA):
    summaries['h36m'] = prepare.prepare_real('h36m', H36M_RAW, data_dir, annotation_files=H36M_FILES, **QUIET)
    summaries['mpi_inf_3dhp'] = prepare.prepare_real(
      'mpi_inf_3dhp', MPI_RAW, data_dir, annotation_files=MPI_FILES, **QUIET
    )
    summaries['panoptic'] = prepare.prepare_real(
      'panoptic', PANOPTIC_RAW, data_dir, options={'label_only': True, 'validation_sequences': '160906_band2'}, **QUIET
    )
  raw_3dpw = str(tmp_path_factory.mktemp('raw_3dpw'))
  sequences = make_fake_3dpw(raw_3dpw)
  summaries['pw3d_3d'] = prepare.prepare_real('pw3d_3d', raw_3dpw, data_dir, **QUIET)
  return {'data_dir': data_dir, 'summaries': summaries, 'sequences': sequences, 'raw_3dpw': raw_3dpw}


# --- H36M -------------------------------------------------------------------------------------------------------


def _h36m_project(points, camera):
  """Human3.6M's own distortion model (radial k, tangential p; see the geometry docs), written out here."""
  f, c = camera['f'].reshape(2), camera['c'].reshape(2)
  k, p = camera['k'].reshape(3), camera['p'].reshape(2)
  xy = points[:, :2] / points[:, 2:]
  r2 = (xy**2).sum(1)
  radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
  tangential = p[0] * xy[:, 1] + p[1] * xy[:, 0]
  distorted = xy * (radial + tangential)[:, None] + np.outer(r2, p[::-1])
  return distorted * f + c


@needs_realdata
def test_h36m_sample(built):
  data_dir, summary = built['data_dir'], built['summaries']['h36m']
  assert summary['splits'] == {'train': 4, 'test': 4} and summary['skipped'] == {}
  raw = np.load(os.path.join(H36M_RAW, 'test_h36m_body3d.npz'))
  with open(os.path.join(H36M_RAW, 'cameras.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  records = _records(data_dir, 'h36m', 'test')
  assert [r['file_name'].decode() for r in records] == list(raw['imgname'])
  for i, record in enumerate(records):
    subject, folder = raw['imgname'][i].split('/')[:2]
    camera = cameras[(subject, folder.split('.')[1])]
    expected, valid = _expected('h36m', H36M_17, raw['S'][i, :, :3] * 1000.0, raw['S'][i, :, 3] > 0)
    np.testing.assert_allclose(record['joints3d'], expected, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(record['valid'], valid)
    assert record['valid'].sum() == 17 and record['format'] == b'h36m' and record['distortion_model'] == b'h36m'
    np.testing.assert_allclose(record['intrinsics'][[0, 1], [2, 2]], camera['c'].reshape(2), rtol=1e-6)
    np.testing.assert_allclose(record['intrinsics'][[0, 1], [0, 1]], camera['f'].reshape(2), rtol=1e-6)
    k, p = camera['k'].reshape(3), camera['p'].reshape(2)
    np.testing.assert_allclose(record['distortion'], [k[0], k[1], p[0], p[1], k[2]], rtol=1e-6)
    # The stored joints (mm, camera frame) reproduce the released 2D labels with Human3.6M's distortion model.
    labelled = np.array([get_format3d('h36m').index(n) for n in H36M_17])
    np.testing.assert_allclose(_h36m_project(record['joints3d'][labelled], camera), raw['part'][i, :, :2], atol=1e-3)
    side = raw['scale'][i] * 200
    np.testing.assert_allclose(record['bbox'], [*(raw['center'][i] - side / 2), side, side], rtol=1e-5)
    image = cv2.imread(os.path.join(H36M_RAW, raw['imgname'][i]))
    assert (record['height'], record['width']) == image.shape[:2]  # the JPEG's (the camera's h differs for some)
    assert record['sequence'].decode() == folder.split('.')[0] and record['camera'].decode() == folder.split('.')[1]
    assert record['frame'] == int(raw['imgname'][i][-10:-4]) and record['image_id'] == record['instance_id'] == i + 1
    with open(os.path.join(H36M_RAW, raw['imgname'][i]), 'rb') as f:
      assert record['image'] == f.read()
  gt = _gt(data_dir, 'h36m', 'test')
  assert gt['root'] == 'pelv_h36m' and gt['joints'] == list(get_format3d('h36m').suffixed_names)
  assert [a['id'] for a in gt['annotations']] == [1, 2, 3, 4]
  np.testing.assert_allclose(gt['annotations'][2]['keypoints_3d'], records[2]['joints3d'], atol=1e-3)
  assert gt['annotations'][2]['valid'] == records[2]['valid'].tolist()
  assert 'tensorflow' not in sys.modules


# --- MPI-INF-3DHP ---------------------------------------------------------------------------------------------


@needs_realdata
def test_mpi_inf_3dhp_sample(built):
  data_dir, summary = built['data_dir'], built['summaries']['mpi_inf_3dhp']
  assert summary['splits'] == {'train': 2, 'test': 2} and summary['skipped'] == {}
  for split in ('train', 'test'):
    raw = np.load(os.path.join(MPI_RAW, f'test_3dhp_{split}.npz'))
    with open(os.path.join(MPI_RAW, f'cameras_{split}.pkl'), 'rb') as f:
      cameras = pickle.load(f)
    for i, record in enumerate(_records(data_dir, 'mpi_inf_3dhp', split)):
      name = raw['imgname'][i]
      camera = cameras[name.rsplit('_', 1)[0]]
      expected, valid = _expected('3dhp', MPI_17, raw['S'][i, :, :3] * 1000.0, raw['S'][i, :, 3] > 0)
      np.testing.assert_allclose(record['joints3d'], expected, rtol=1e-6, atol=1e-3)
      np.testing.assert_array_equal(record['valid'], valid)
      np.testing.assert_allclose(np.diag(record['intrinsics'])[:2], camera['f'].reshape(2), rtol=1e-6)
      assert not record['distortion'].any() and record['distortion_model'] == b'opencv'
      # Pinhole projection of the stored joints lands on the released 2D labels (within 3DHP's 2 px).
      fmt = get_format3d('3dhp')
      j = np.array([fmt.index(n) for n in MPI_17])[valid[[fmt.index(n) for n in MPI_17]]]
      uv = record['joints3d'][j, :2] / record['joints3d'][j, 2:] * camera['f'].reshape(2) + camera['c'].reshape(2)
      np.testing.assert_allclose(uv, raw['part'][i, raw['S'][i, :, 3] > 0, :2], atol=2.5)
      assert (record['height'], record['width']) == (2048, 2048) and record['frame'] == int(name[-10:-4])
  test = _records(data_dir, 'mpi_inf_3dhp', 'test')
  assert [r['sequence'] for r in test] == [b'TS1', b'TS2'] and test[1][
    'valid'
  ].sum() == 15  # 2 of TS2's 17 joints unlabelled
  train = _records(data_dir, 'mpi_inf_3dhp', 'train')
  assert [(r['sequence'], r['camera']) for r in train] == [(b'S4_Seq2', b'Cam0'), (b'S8_Seq1', b'Cam8')]
  assert _gt(data_dir, 'mpi_inf_3dhp', 'test')['root'] == 'pelv_3dhp'


# --- CMU Panoptic ---------------------------------------------------------------------------------------------


@needs_realdata
def test_panoptic_sample_converts_world_cm_to_each_hd_camera_in_mm(built):
  data_dir, summary = built['data_dir'], built['summaries']['panoptic']
  # band1 (train): 31 HD cameras x 3 bodies x 2 frames, 2 person-views out of the image, and every second-frame
  # view within 100 mm of the first: dropped. band2 (validation, not filtered): 31 x 3 x 2, all in view.
  assert summary['splits'] == {'train': 92, 'validation': 186}
  assert summary['skipped'] == {'train': {'near_duplicate': 92, 'person_not_in_view': 2}}
  with open(os.path.join(PANOPTIC_RAW, '160906_band2', 'calibration_160906_band2.json')) as f:
    cameras = {c['name']: c for c in json.load(f)['cameras']}
  records = _records(data_dir, 'panoptic', 'validation')
  for record in records[::37]:
    frame, camera = int(record['frame']), cameras[record['camera'].decode()]
    path = os.path.join(PANOPTIC_RAW, '160906_band2', 'hdPose3d_stage1_coco19', f'body3DScene_{frame:08d}.json')
    with open(path) as f:
      bodies = json.load(f)['bodies']
    world = [np.reshape(b['joints19'], (19, 4)) for b in bodies]
    cam_mm = [((np.array(camera['R']) @ w[:, :3].T).T + np.ravel(camera['t'])) * 10.0 for w in world]
    # Which body: the one whose conversion matches (records do not carry the person id).
    expected = [_expected('coco', PANOPTIC_19, c, w[:, 3] > 0.1) for c, w in zip(cam_mm, world)]
    errors = [np.abs(record['joints3d'] - e[0]).max() for e in expected]
    best = int(np.argmin(errors))
    assert errors[best] < 1e-2
    np.testing.assert_array_equal(record['valid'], expected[best][1])
    assert not record['valid'][19:].any()  # the OpenPose foot points: not labelled by Panoptic
    np.testing.assert_allclose(record['intrinsics'], camera['K'], rtol=1e-6)
    np.testing.assert_allclose(record['distortion'], camera['distCoef'], rtol=1e-5)
    assert record['image'] == b'' and (record['width'], record['height']) == tuple(camera['resolution'])
  assert {r['camera'] for r in records} == {n.encode() for n, c in cameras.items() if c['type'] == 'hd'}
  assert len({int(r['instance_id']) for r in records}) == 186
  gt = _gt(data_dir, 'panoptic', 'validation')
  assert gt['root'] == 'pelv_coco' and len(gt['annotations']) == 186


@needs_realdata
def test_panoptic_without_images_is_an_error_unless_label_only(tmp_path, capsys):
  status = prepare.main(['panoptic', f'--manual_dir={PANOPTIC_RAW}', f'--data_dir={tmp_path}'])
  err = capsys.readouterr().err.strip()
  assert status == 2 and '\n' not in err and 'has no usable example' in err and 'missing_image' in err
  assert '--label_only' in err and os.path.join(PANOPTIC_RAW, '160906_band1/hdImgs/00_00/00_00_00000168.jpg') in err


@needs_realdata
def test_panoptic_camera_option_and_bad_joints19(tmp_path):
  summary = prepare.prepare_real(
    'panoptic', PANOPTIC_RAW, str(tmp_path / 'a'), options={'label_only': True, 'cameras': '00_03,00_12'}, **QUIET
  )
  # Both sequences in train (neither is a default validation sequence): 2 x 2 frames x 3 bodies x 2 cameras.
  assert summary['splits'] == {'train': 12} and summary['skipped'] == {'train': {'near_duplicate': 12}}
  raw = tmp_path / 'raw'
  shutil.copytree(PANOPTIC_RAW, raw)
  path = raw / '160906_band1' / 'hdPose3d_stage1_coco19' / 'body3DScene_00000169.json'
  os.chmod(path, 0o644)
  data = json.loads(path.read_text())
  data['bodies'][1]['joints19'] = data['bodies'][1]['joints19'][:-4]
  path.write_text(json.dumps(data))
  with pytest.raises(RawDataError) as info:
    prepare.prepare_real('panoptic', str(raw), str(tmp_path / 'b'), options={'label_only': True}, **QUIET)
  message = str(info.value)
  assert '\n' not in message and message.startswith(f'{path}: body #1 (id 1): field \'joints19\' has shape')
  assert '72 values' in message and '76 values' in message


# --- 3DPW (fake official layout) ------------------------------------------------------------------------------


def test_pw3d_3d_fake_layout(built):
  sequences, summary = built['sequences'], built['summaries']['pw3d_3d']
  # a_seq: 3 frames x 2 people, b_seq: 2 frames x 1 person; each sequence's last person lacks frame 0's pose.
  assert summary['splits'] == {'test': 3 * 2 - 1 + 2 * 1 - 1}
  assert summary['skipped'] == {'test': {'invalid_camera_pose': 2}}
  for record in _records(built['data_dir'], 'pw3d_3d', 'test'):
    seq = sequences[record['sequence'].decode()]
    f_index = list(seq['img_frame_ids']).index(int(record['frame']))
    person = int(record['instance_id']) % 10 - 1
    world = seq['jointPositions'][person][f_index].reshape(24, 3)
    cam = (seq['cam_poses'][f_index] @ np.c_[world, np.ones(24)].T).T[:, :3]
    np.testing.assert_allclose(record['joints3d'], cam * 1000.0, rtol=1e-6)  # SMPL's order = the 'smpl' format's
    assert record['valid'].all() and record['format'] == b'smpl'
    np.testing.assert_allclose(record['intrinsics'], seq['cam_intrinsics'])
    assert (record['height'], record['width']) == (1920, 1080) and record['camera'] == b''
    assert int(record['image_id']) == 100000 * (1 + sorted(sequences).index(record['sequence'].decode())) + int(
      record['frame']
    )
  gt = _gt(built['data_dir'], 'pw3d_3d', 'test')
  assert gt['root'] == 'pelv_smpl' and gt['joints'][:3] == ['pelv_smpl', 'lhip_smpl', 'rhip_smpl']


def test_pw3d_3d_missing_field_and_unreadable_pickle(tmp_path):
  make_fake_3dpw(str(tmp_path))
  path = tmp_path / 'sequenceFiles' / 'test' / 'a_seq.pkl'
  with open(path, 'rb') as f:
    seq = pickle.load(f, encoding='latin1')
  del seq['cam_poses']
  with open(path, 'wb') as f:
    pickle.dump(seq, f, protocol=2)
  with pytest.raises(RawDataError, match=f"^{path}: sequence: missing field 'cam_poses'$"):
    prepare.prepare_real('pw3d_3d', str(tmp_path), str(tmp_path / 'tfds'), **QUIET)
  path.write_bytes(b'not a pickle')
  with pytest.raises(RawDataError, match=f'^{path}: not a readable pickle'):
    prepare.prepare_real('pw3d_3d', str(tmp_path), str(tmp_path / 'tfds'), **QUIET)


# --- generic per-example layout -------------------------------------------------------------------------------

PNG_1X1 = bytes.fromhex(
  '89504e470d0a1a0a0000000d4948445200000001000000010800000000'
  '3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082'
)


def _jpeg(path):
  ok, data = cv2.imencode('.jpg', np.full((48, 64, 3), 100, np.uint8))
  assert ok
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data.tobytes())
  return data.tobytes()


def _generic_layout(root, lines, split='validation'):
  (root / split).mkdir(parents=True, exist_ok=True)
  with open(root / split / 'examples.jsonl', 'w') as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + '\n')
  return root / split / 'examples.jsonl'


def _generic_example(**changes):
  fmt = get_format3d('aspset')
  joints = (np.arange(fmt.num_joints * 3).reshape(-1, 3) * 10.0 + [0, 0, 3000]).tolist()
  example = {
    'image': 'images/a.jpg',
    'bbox': [4, 5, 30, 40],
    'intrinsics': [[100, 0, 32], [0, 100, 24], [0, 0, 1]],
    'joints3d': joints,
    'sequence': 's1',
    'camera': 'c1',
    'frame': 7,
  }
  example.update(changes)
  return example


def test_generic3d_round_trip(tmp_path):
  fmt = get_format3d('aspset')
  jpeg = _jpeg(tmp_path / 'validation' / 'images' / 'a.jpg')
  (tmp_path / 'validation' / 'masks').mkdir()
  (tmp_path / 'validation' / 'masks' / 'a.png').write_bytes(PNG_1X1)
  first = _generic_example(distortion=[0.1, -0.2, 0.001, 0.002], mask='masks/a.png', image_id=11, instance_id=5)
  first['joints3d'][3] = None  # unlabelled
  by_name = {'lsho': [1.5, 2.5, 3000.5], 'rhip_aspset': [4, 5, 3006], fmt.source_names[0]: [7, 8, 3009]}
  second = _generic_example(joints3d=by_name, frame=8, distortion_model='h36m')
  third = _generic_example(valid=[i % 2 == 0 for i in range(fmt.num_joints)], image='images/missing.jpg')
  _generic_layout(tmp_path, [first, '# a comment', '', second, third])
  data_dir = str(tmp_path / 'tfds')
  summary = prepare.prepare_real('generic3d', str(tmp_path), data_dir, options={'dataset3d': 'aspset'}, **QUIET)
  assert summary['splits'] == {'validation': 2} and summary['skipped'] == {'validation': {'missing_image': 1}}
  assert summary['path'].endswith(os.path.join('generic3d', 'aspset', '1.0.0'))
  records = _records(data_dir, 'generic3d/aspset', 'validation')
  a, b = records
  expected = np.asarray(_generic_example()['joints3d'], np.float32)
  expected[3] = 0
  np.testing.assert_array_equal(a['joints3d'], expected)
  assert a['valid'].tolist() == [i != 3 for i in range(fmt.num_joints)]
  assert a['image'] == jpeg and a['mask'] == PNG_1X1 and (a['height'], a['width']) == (48, 64)
  np.testing.assert_allclose(a['distortion'], [0.1, -0.2, 0.001, 0.002, 0.0], rtol=1e-6)
  assert (a['image_id'], a['instance_id'], a['frame']) == (11, 5, 7) and a['format'] == b'aspset'
  assert a['sequence'] == b's1' and a['camera'] == b'c1' and a['file_name'] == b'images/a.jpg'
  assert b['valid'].sum() == 3 and b['distortion_model'] == b'h36m' and b['mask'] == b''
  np.testing.assert_array_equal(b['joints3d'][fmt.index('lsho')], [1.5, 2.5, 3000.5])
  np.testing.assert_array_equal(b['joints3d'][fmt.index('rhip')], [4, 5, 3006])
  np.testing.assert_array_equal(b['joints3d'][0], [7, 8, 3009])
  assert (b['image_id'], b['instance_id']) == (2, 2)
  gt = _gt(data_dir, 'generic3d/aspset', 'validation')
  root = fmt.joint_names[fmt.root_indices[0]]
  assert gt['root'] == f'{root}_aspset' and gt['joints'] == list(fmt.suffixed_names)
  assert [a['id'] for a in gt['annotations']] == [5, 2]
  # The command line: the same preparation is kept; label-only keeps the example without an image.
  status = prepare.main(
    ['generic3d', '--dataset3d=aspset', f'--manual_dir={tmp_path}', f'--data_dir={tmp_path / "t2"}', '--label_only']
  )
  assert status == 0 and len(_records(str(tmp_path / 't2'), 'generic3d/aspset', 'validation')) == 3


def test_near_duplicates_are_dropped_per_stream_in_train(tmp_path):
  """A synthetic stream: a pose moving 30 mm per frame in two cameras, and a second person in one of them."""
  _jpeg(tmp_path / 'train' / 'images' / 'a.jpg')
  base = np.asarray(_generic_example()['joints3d'])
  lines, kept = [], []
  for frame in range(10):
    for camera in ('c1', 'c2'):
      lines.append(_generic_example(joints3d=(base + [30.0 * frame, 0, 0]).tolist(), camera=camera, frame=frame))
    lines.append(
      _generic_example(joints3d=(base + [0, 0, 500.0 + 60 * frame]).tolist(), camera='c1', person=2, frame=frame)
    )

  # Independently: within a stream a frame is kept when it is >= 100 mm from the last kept one.
  def expected_kept(step):
    last, count = None, 0
    for frame in range(10):
      if last is None or step * (frame - last) >= 100:
        last, count = frame, count + 1
    return count

  kept = 2 * expected_kept(30) + expected_kept(60)
  _generic_layout(tmp_path, lines, split='train')
  summary = prepare.prepare_real(
    'generic3d', str(tmp_path), str(tmp_path / 'tfds'), options={'dataset3d': 'aspset'}, **QUIET
  )
  assert kept == 2 * 3 + 5
  assert summary['splits'] == {'train': kept} and summary['skipped'] == {'train': {'near_duplicate': 30 - kept}}
  frames = [int(r['frame']) for r in _records(str(tmp_path / 'tfds'), 'generic3d/aspset', 'train')]
  assert frames == [0, 0, 0, 2, 4, 4, 4, 6, 8, 8, 8]


@pytest.mark.parametrize(
  'change, expected',
  [
    (dict(joints3d=[[0, 0, 1000]] * 16), "line 1: field 'joints3d' has 16 joints, expected 17 (format 'aspset'"),
    (dict(bbox=None), "line 1: missing field 'bbox'"),
    (dict(joints3d={'lsho': [0, 0, 1], 'wing': [0, 0, 1]}), "line 1: field 'joints3d' names joint 'wing'"),
    (dict(intrinsics=[[1, 0], [0, 1]]), "line 1: field 'intrinsics' has shape [2, 2]"),
    (dict(valid=[True]), "line 1: field 'valid' must be a list of 17 booleans"),
    ('{"image": "a.jpg", ', 'line 1: not valid JSON'),
  ],
)
def test_generic3d_bad_inputs_are_one_line_errors(tmp_path, change, expected):
  if isinstance(change, dict):
    line = _generic_example(**change)
    line = {k: v for k, v in line.items() if v is not None}
  else:
    line = change
  path = _generic_layout(tmp_path, [line])
  with pytest.raises(RawDataError) as info:
    prepare.prepare_real('generic3d', str(tmp_path), str(tmp_path / 'tfds'), options={'dataset3d': 'aspset'}, **QUIET)
  message = str(info.value)
  assert '\n' not in message and message.startswith(f'{path}: {expected}'), message


def test_generic3d_needs_a_known_dataset(tmp_path, capsys):
  _generic_layout(tmp_path, [_generic_example()])
  assert prepare.main(['generic3d', f'--manual_dir={tmp_path}', f'--data_dir={tmp_path / "t"}']) == 2
  assert capsys.readouterr().err.strip().startswith('error: generic3d needs --dataset3d=<one of h36m, muco_3dhp,')
  assert prepare.main(['generic3d', '--dataset3d=nope', f'--manual_dir={tmp_path}', f'--data_dir={tmp_path}/t']) == 2
  assert "unknown 3D dataset 'nope'" in capsys.readouterr().err


# --- bad inputs of the npz builders ---------------------------------------------------------------------------


def _h36m_copy(tmp_path, mutate=None, drop_image=None):
  """The H36M sample under tmp_path/raw (images linked) with `mutate(dict of npz arrays)` applied."""
  raw = tmp_path / 'raw'
  data = dict(np.load(os.path.join(H36M_RAW, 'test_h36m_body3d.npz')))
  if mutate:
    mutate(data)
  raw.mkdir(parents=True)
  np.savez(raw / 'test.npz', **data)
  shutil.copy(os.path.join(H36M_RAW, 'cameras.pkl'), raw / 'cameras.pkl')
  for name in np.load(os.path.join(H36M_RAW, 'test_h36m_body3d.npz'))['imgname']:
    if name != drop_image:
      (raw / name).parent.mkdir(parents=True, exist_ok=True)
      os.symlink(os.path.join(H36M_RAW, name), raw / name)
  return raw


def _h36m_error(tmp_path, raw) -> str:
  with pytest.raises(RawDataError) as info:
    prepare.prepare_real('h36m', str(raw), str(tmp_path / 'tfds'), annotation_files={'test': 'test.npz'}, **QUIET)
  message = str(info.value)
  assert '\n' not in message
  return message


@needs_realdata
def test_h36m_missing_image_is_a_counted_skip(tmp_path):
  name = 'S5/S5_SittingDown.54138969/S5_SittingDown.54138969_002061.jpg'
  raw = _h36m_copy(tmp_path, drop_image=name)
  summary = prepare.prepare_real(
    'h36m', str(raw), str(tmp_path / 'tfds'), annotation_files={'test': 'test.npz'}, **QUIET
  )
  assert summary['splits'] == {'test': 3} and summary['skipped'] == {'test': {'missing_image': 1}}
  assert name in summary['skipped_lines'][0] and 'record #1' in summary['skipped_lines'][0]
  assert [a['id'] for a in _gt(str(tmp_path / 'tfds'), 'h36m', 'test')['annotations']] == [1, 3, 4]


@needs_realdata
def test_h36m_wrong_joint_count_missing_field_unknown_camera_and_unreadable_files(tmp_path):
  raw = _h36m_copy(tmp_path / 'a', lambda d: d.update(S=d['S'][:, :16]))
  message = _h36m_error(tmp_path / 'a', raw)
  assert message.startswith(f"{raw / 'test.npz'}: record #0 (S1/S1_Directions_1.54138969/")
  assert "field 'S' has shape [4, 16, 4], expected [4, 17, 4]" in message
  raw = _h36m_copy(tmp_path / 'b', lambda d: d.pop('scale'))
  assert _h36m_error(tmp_path / 'b', raw).startswith(f"{raw / 'test.npz'}: all records: missing field 'scale'")
  raw = _h36m_copy(
    tmp_path / 'c', lambda d: d['imgname'].__setitem__(2, d['imgname'][2].replace('55011271', '11111111'))
  )
  message = _h36m_error(tmp_path / 'c', raw)
  assert message.startswith(f"{raw / 'test.npz'}: record #2 (S7/S7_Greeting.11111111/")
  assert "field 'imgname': camera ('S7', '11111111') is not in" in message
  raw = _h36m_copy(tmp_path / 'd', lambda d: d['S'].__setitem__((3, 5, 0), np.nan))
  assert _h36m_error(tmp_path / 'd', raw).startswith(
    f"{raw / 'test.npz'}: record #3 (S8/S8_WalkDog_1.55011271/S8_WalkDog_1.55011271_000026.jpg): field joints3d has "
    'non-finite values'
  )
  raw = _h36m_copy(tmp_path / 'e')
  (raw / 'test.npz').write_bytes((raw / 'test.npz').read_bytes()[:500])
  assert _h36m_error(tmp_path / 'e', raw).startswith(f"{raw / 'test.npz'}: not a readable .npz file")
  raw = _h36m_copy(tmp_path / 'f')
  os.chmod(raw / 'cameras.pkl', 0o644)
  (raw / 'cameras.pkl').write_bytes(b'\x80\x04garbage')
  assert _h36m_error(tmp_path / 'f', raw).startswith(f"{raw / 'cameras.pkl'}: not a readable pickle")


@needs_realdata
def test_3dhp_camera_without_focal_length_is_an_error(tmp_path):
  raw = tmp_path / 'raw'
  raw.mkdir()
  for name in os.listdir(MPI_RAW):
    os.symlink(os.path.join(MPI_RAW, name), raw / name)
  with open(os.path.join(MPI_RAW, 'cameras_test.pkl'), 'rb') as f:
    cameras = pickle.load(f)
  del cameras['TS2']['f']
  os.remove(raw / 'cameras_test.pkl')
  with open(raw / 'cameras_test.pkl', 'wb') as f:
    pickle.dump(cameras, f)
  with pytest.raises(RawDataError, match=f"^{raw / 'cameras_test.pkl'}: camera 'TS2': missing field 'f'$"):
    prepare.prepare_real(
      'mpi_inf_3dhp', str(raw), str(tmp_path / 'tfds'), annotation_files={'test': MPI_FILES['test']}, **QUIET
    )


@needs_realdata
def test_prepare_command_line_builds_h36m(tmp_path, capsys):
  args = ['h36m', f'--manual_dir={H36M_RAW}', f'--data_dir={tmp_path}', '--ann_file=test=test_h36m_body3d.npz']
  assert prepare.main(args) == 0
  out = capsys.readouterr().out
  assert 'skipped: nothing' in out and 'h36m/1.0.0: 4 examples (test 4)' in out
