"""Where the tiny official-format real-data samples are (the one setting POSEBH_REALDATA, default ../shared/realdata
next to the repository; read there, never copied), how to prepare each real-dataset builder from them, and fake
raw layouts for the datasets without a sample (APT-36K, 3DPW). Shared by the real-data test files and the session
fixture in tests/conftest.py."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALDATA = os.path.abspath(os.environ.get('POSEBH_REALDATA') or os.path.join(REPO, '..', 'shared', 'realdata'))
MISSING = f'real-data samples not found at {REALDATA}; set POSEBH_REALDATA'
# For tests that read the samples (the others in the same file run without them).
needs_realdata = pytest.mark.skipif(not os.path.isdir(REALDATA), reason=MISSING)


def require_realdata() -> str:
  """Skips the calling test (or fixture) where the samples are missing; returns their directory."""
  if not os.path.isdir(REALDATA):
    pytest.skip(MISSING)
  return REALDATA


def _path(*parts):
  return os.path.join(REALDATA, *parts)


# prepare name -> prepare_real keyword arguments (the samples' file names differ from the official layouts,
# so the annotation files are named per split; a sample serves as both train and eval split where both exist).
SAMPLES = {
  'coco_keypoints': dict(
    manual_dir=_path('coco'),
    annotation_files={'train': 'test_coco.json', 'validation': 'test_coco.json'},
    det_json=_path('coco', 'test_coco_det_AP_H_56.json'),
  ),
  'aic': dict(manual_dir=_path('aic'), annotation_files={'train': 'test_aic.json', 'validation': 'test_aic.json'}),
  'mpii': dict(manual_dir=_path('mpii'), annotation_files={'train': 'test_mpii.json', 'validation': 'test_mpii.json'}),
  'ap10k': dict(
    manual_dir=_path('ap10k'), annotation_files={'train': 'test_ap10k.json', 'validation': 'test_ap10k.json'}
  ),
  'coco_wholebody': dict(
    manual_dir=_path('coco'),
    annotation_files={'train': 'test_coco_wholebody.json', 'validation': 'test_coco_wholebody.json'},
    det_json=_path('coco', 'test_coco_det_AP_H_56.json'),
  ),
  'ochuman': dict(manual_dir=_path('ochuman'), annotation_files={'validation': 'test_ochuman.json'}),
  'crowdpose': dict(
    manual_dir=_path('crowdpose'),
    annotation_files={'test': 'test_crowdpose.json'},
    det_json=_path('crowdpose', 'test_crowdpose_det_AP_40.json'),
  ),
  'halpe': dict(
    manual_dir=_path('halpe'),
    annotation_files={'validation': 'test_halpe.json'},
    image_dirs={'validation': _path('coco')},
  ),
  'interhand': dict(
    manual_dir=_path('interhand2.6m'),
    annotation_files={'train': 'test_interhand2.6m_data.json', 'test': 'test_interhand2.6m_data.json'},
  ),
}


def cli_args(name: str, options: dict) -> list[str]:
  """`python -m data_pipeline.prepare` arguments equivalent to `prepare_real(name, **options)`."""
  args = [name]
  if options.get('manual_dir'):
    args.append(f'--manual_dir={options["manual_dir"]}')
  for split, path in options.get('annotation_files', {}).items():
    args.append(f'--ann_file={split}={path}')
  for split, path in options.get('image_dirs', {}).items():
    args.append(f'--image_dir={split}={path}')
  if options.get('det_json'):
    args.append(f'--det_json={options["det_json"]}')
  return args


def _link(source: str, target: str) -> None:
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.symlink(source, target)


# --- APT-36K: no sample exists; a tiny raw layout built from the AP-10K sample images ------------------------

APT36K_SPECIES = ('01antelope', '29wolf')
APT36K_VIDEOS_PER_SPECIES = 10
APT36K_FRAMES = 2


def make_fake_apt36k(root: str) -> dict:
  """Writes a tiny APT-36K raw layout under `root`: annotations/apt36k_annotations.json (the official file's
  fields: Windows `file_name`s, `video_id` on images and annotations, `track_id`, `is_crowd`) and images under
  AP-36k-patr1/<species>/<clip>/frame<i>.jpg (links to the AP-10K sample images). 2 species x 10 videos x 2
  frames, one animal per frame (two in the first frame of every video). Returns the annotation dict."""
  ap10k = json.load(open(_path('ap10k', 'test_ap10k.json')))
  sources = [(_path('ap10k', im['file_name']), im['height'], im['width']) for im in ap10k['images']]
  images, annotations = [], []
  image_id, ann_id, video_id = 1, 1, 1
  rng = np.random.default_rng(0)
  for s_index, species in enumerate(APT36K_SPECIES):
    for clip in range(APT36K_VIDEOS_PER_SPECIES):
      for frame in range(APT36K_FRAMES):
        source, height, width = sources[(clip + frame) % len(sources)]
        rel = os.path.join('AP-36k-patr1', species, f'v{clip}c1', f'frame{frame + 1}.jpg')
        _link(source, os.path.join(root, rel))
        images.append(
          {
            'id': image_id,
            'file_name': 'D:\\Animal_pose\\' + rel.replace('/', '\\'),
            'height': height,
            'width': width,
            'video_id': video_id,
          }
        )
        for track in range(2 if frame == 0 else 1):
          kps = np.zeros((17, 3))
          kps[:, 0] = rng.uniform(10, width - 10, 17).round(1)
          kps[:, 1] = rng.uniform(10, height - 10, 17).round(1)
          kps[:, 2] = 2
          kps[rng.integers(0, 17), :] = 0
          annotations.append(
            {
              'id': ann_id,
              'image_id': image_id,
              'category_id': s_index + 1,
              'bbox': [5.0, 6.0, width / 2, height / 2],
              'area': width * height / 4.0,
              'is_crowd': 0,
              'num_keypoints': 16,
              'keypoints': kps.reshape(-1).tolist(),
              'video_id': video_id,
              'track_id': track + 1,
            }
          )
          ann_id += 1
        image_id += 1
      video_id += 1
  categories = [dict(ap10k['categories'][0], id=i + 1, name=s[2:]) for i, s in enumerate(APT36K_SPECIES)]
  data = {
    'info': {'description': 'fake APT-36K'},
    'images': images,
    'annotations': annotations,
    'categories': categories,
  }
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  with open(os.path.join(root, 'annotations', 'apt36k_annotations.json'), 'w') as f:
    json.dump(data, f)
  return data


# --- 3DPW: no sample exists; a tiny official layout (sequence pickles + imageFiles) ---------------------------


def fake_3dpw_sequence(name: str, num_frames: int, num_people: int, seed: int) -> dict:
  """A 3DPW-style sequence dict: people standing ~4 m in front of a camera that looks along +z."""
  rng = np.random.default_rng(seed)
  joints, valid = [], []
  for p in range(num_people):
    base = rng.normal(0, 0.25, (24, 3)) + np.array([0.6 * p - 0.3, 0.0, 4.0])
    base[:, 1] += np.linspace(-0.8, 0.8, 24)
    frames = np.stack([base + 0.01 * f for f in range(num_frames)])
    joints.append(frames.reshape(num_frames, 72))
    valid.append(np.ones(num_frames))
  valid[-1][0] = 0  # the last person's first frame has no valid camera pose
  cam_poses = np.tile(np.eye(4), (num_frames, 1, 1))
  cam_poses[:, 0, 3] = 0.05 * np.arange(num_frames)  # the camera moves
  intrinsics = np.array([[1000.0, 0.0, 540.0], [0.0, 1000.0, 960.0], [0.0, 0.0, 1.0]])
  return {
    'sequence': name,
    'jointPositions': joints,
    'cam_poses': cam_poses,
    'cam_intrinsics': intrinsics,
    'campose_valid': valid,
    'img_frame_ids': np.arange(num_frames) * 3,
    'genders': ['m'] * num_people,
  }


def make_fake_3dpw(root: str, split: str = 'test') -> dict:
  """Writes a tiny 3DPW layout under `root`: sequenceFiles/<split>/{a_seq,b_seq}.pkl (protocol 2, like the
  release) and imageFiles/<seq>/image_<frame:05d>.jpg (a grey 1080x1920 JPEG). Returns {name: sequence dict}."""
  import cv2

  sequences = {'b_seq': fake_3dpw_sequence('b_seq', 2, 1, 1), 'a_seq': fake_3dpw_sequence('a_seq', 3, 2, 0)}
  image = np.full((1920, 1080, 3), 90, np.uint8)
  ok, jpeg = cv2.imencode('.jpg', image)
  assert ok
  os.makedirs(os.path.join(root, 'sequenceFiles', split), exist_ok=True)
  for name, seq in sequences.items():
    with open(os.path.join(root, 'sequenceFiles', split, f'{name}.pkl'), 'wb') as f:
      pickle.dump(seq, f, protocol=2)
    for frame in seq['img_frame_ids']:
      path = os.path.join(root, 'imageFiles', name, f'image_{int(frame):05d}.jpg')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:
        f.write(jpeg.tobytes())
  return sequences
