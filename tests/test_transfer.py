"""Domain transfer (docs/METHOD.md §2): SMPL-24 keypoints derived from the synthetic 3D joints, the transfer objective
(new prototypes only), and `configs/demo.py:tiny,transfer` end to end from a tiny PoseBH run."""

import json
import os

import cv2
import jax
import numpy as np
from flax import traverse_util

from conftest import train
from configs import demo
from data_pipeline import derived, pipeline
from posebh_jax import checkpoint, skeletons, stages
from posebh_jax.posebh import objective, transfer

SHARED_WITH_COCO = (
  'left_shoulder',
  'right_shoulder',
  'left_elbow',
  'right_elbow',
  'left_wrist',
  'right_wrist',
  'left_knee',
  'right_knee',
  'left_ankle',
  'right_ankle',
)


def test_derived_smpl24_agrees_with_the_generators_coco_truth(data_dir):
  """SMPL-24's limb joints sit on the same body landmarks as COCO's: projected from the stored float32 3D joints
  at read time they must land where the generator put COCO's (its own float64 projection), and be in the image
  exactly when COCO's are. Animals carry no SMPL-24 truth."""
  source = derived.DerivedKeypointsSource(pipeline.open_source('posebh_synthetic', 'validation', data_dir), 'smpl24')
  smpl, coco = skeletons.get_format('smpl24'), skeletons.get_format('coco')
  humans = 0
  for record in source:
    is_human = record['category'] in (b'human', 'human')
    assert bool(record['has_smpl24']) == is_human
    kps = record['keypoints_smpl24']
    assert kps.shape == (24, 3) and np.array_equal(record['keypoints'], kps)
    if not is_human:
      assert not kps.any()
      continue
    humans += 1
    truth = record['keypoints_coco']
    for name in SHARED_WITH_COCO:
      ours, theirs = kps[smpl.index(name)], truth[coco.index(name)]
      assert (ours[2] > 0) == (theirs[2] > 0), name
      np.testing.assert_allclose(ours[:2], theirs[:2], atol=2e-3, err_msg=name)
    inside = kps[:, 2] > 0
    h, w = int(record['height']), int(record['width'])
    assert np.all(kps[inside, 0] <= w - 1) and np.all(kps[inside, 1] <= h - 1) and np.all(kps[inside, :2] >= 0)
  assert humans > 0
  train_source = derived.wrap_source(
    pipeline.open_source('posebh_synthetic', 'train_coco', data_dir),
    demo.get_config('tiny,transfer').data.datasets.smpl24,
  )
  assert train_source[0]['keypoints'].shape == (24, 3) and len(train_source) == 24


def _problem(seed=0, n=2, h=8, w=6, dim=4, sizes=(('old', 3), ('new', 2))):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  outputs = {'heatmaps': {}, 'embeddings': {}, 'cross': {}}
  batch, offsets, num_keypoints, start = {}, {}, {}, 0
  for name, k in sizes:
    gt = np.zeros((n, h, w, k), np.float32)
    for i in range(n):
      for j in range(k):
        x, y = rng.uniform(1, w - 2), rng.uniform(1, h - 2)
        gt[i, :, :, j] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)
    gt[gt < 0.05] = 0.0
    batch[name] = {'heatmaps': gt, 'target_weights': np.ones((n, k), np.float32)}
    outputs['heatmaps'][name] = rng.uniform(0, 1, (n, h, w, k)).astype(np.float32)
    outputs['embeddings'][name] = rng.normal(size=(n, h, w, dim)).astype(np.float32)
    offsets[name], num_keypoints[name], start = start, k, start + k
  protos = rng.normal(size=(start, 3, dim)).astype(np.float32)
  protos /= np.linalg.norm(protos, axis=-1, keepdims=True)
  extra = {'prototypes': protos, 'cluster_prototypes': protos}
  cfg = demo.get_config('tiny,transfer').posebh
  cfg.unlock()
  cfg.momentum = 0.5  # large steps, so that an update is plain to see
  return outputs, batch, extra, cfg, offsets, num_keypoints


def _phase(update):
  return stages.Phase(
    0, 0, 10, posebh=True, update_prototypes=update, prototype_datasets=('new',), embedding_frozen=True
  )


def test_transfer_objective_touches_only_the_new_prototypes():
  outputs, batch, extra, cfg, offsets, num_keypoints = _problem()
  total, terms, new_extra = transfer.transfer_objective(
    outputs, batch, extra, _phase(True), cfg, offsets, num_keypoints
  )
  protos, updated = extra['prototypes'], np.asarray(new_extra['prototypes'])
  np.testing.assert_array_equal(updated[:3], protos[:3])
  assert not np.array_equal(updated[3:], protos[3:])
  np.testing.assert_allclose(np.linalg.norm(updated, axis=-1), 1.0, atol=1e-5)
  # Reference: the new skeleton alone, as if its prototypes were the whole table.
  ref_total, ref_terms, ref_extra = objective.posebh_objective(
    {'heatmaps': {'new': outputs['heatmaps']['new']}, 'embeddings': {'new': outputs['embeddings']['new']}, 'cross': {}},
    {'new': batch['new']},
    {'prototypes': protos[3:], 'cluster_prototypes': protos[3:]},
    _phase(True),
    cfg,
    {'new': 0},
    {'new': 2},
  )
  np.testing.assert_allclose(updated[3:], ref_extra['prototypes'], atol=1e-6)
  np.testing.assert_allclose(total, ref_total, rtol=1e-6)
  # The old prototypes are not read: changing them changes nothing.
  other = dict(extra, prototypes=np.concatenate([-protos[:3][:, ::-1], protos[3:]]))
  total_other, terms_other, extra_other = transfer.transfer_objective(
    outputs, batch, other, _phase(True), cfg, offsets, num_keypoints
  )
  np.testing.assert_allclose(total_other, total, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(extra_other['prototypes'])[3:], updated[3:], atol=1e-6)
  assert set(terms) == {'phm', 'ppc', 'ppd'}
  # After the prototype epochs nothing moves.
  _, _, frozen = transfer.transfer_objective(outputs, batch, extra, _phase(False), cfg, offsets, num_keypoints)
  np.testing.assert_array_equal(np.asarray(frozen['prototypes']), protos)


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree))


def test_transfer_run_end_to_end(posebh_workdir, data_dir, tmp_path):
  workdir = tmp_path / 'transfer'
  result = train(
    workdir,
    data_dir,
    '--config.total_steps=3',
    '--config.transfer.prototype_epochs=10.0',
    '--config.checkpoint_every_steps=1',
    '--config.keep_checkpoints=5',
    '--config.eval_every_steps=3',
    '--config.viz_formats=True',
    f'--config.init_from={posebh_workdir}',
    config='configs/demo.py:tiny,transfer',
    fast_compile=True,  # `conftest.FAST_COMPILE`: 3 steps, whose time is mostly compilation
  )
  assert 'partly fresh: head_smpl24' in result.stdout  # its deconvolutions start as COCO's, its last conv fresh
  source, _ = checkpoint.read_state(posebh_workdir)
  first, _ = checkpoint.read_state(str(workdir / 'checkpoints' / '1'))
  last, step = checkpoint.read_state(str(workdir))
  assert step == 3
  old = np.asarray(source['extra']['prototypes'])
  new = np.asarray(last['extra']['prototypes'])
  # J grows by SMPL-24's K; the old prototypes are bit-identical, the new ones keep moving by momentum.
  assert old.shape == (214, 3, 8) and new.shape == (214 + 24, 3, 8)
  np.testing.assert_array_equal(new[:214], old)
  assert not np.array_equal(new[214:], np.asarray(first['extra']['prototypes'])[214:])
  np.testing.assert_allclose(np.linalg.norm(new, axis=-1), 1.0, atol=1e-5)
  # The embedding module (parameters and BatchNorm statistics) is frozen; the backbone and heads train.
  for collection in ('params', 'batch_stats'):
    before, after = _flat(source[collection]['embedding']), _flat(last[collection]['embedding'])
    assert before.keys() == after.keys()
    for key in before:
      np.testing.assert_array_equal(after[key], before[key], err_msg=f'{collection}/embedding/{key}')
  backbone_before, backbone_after = _flat(source['params']['backbone']), _flat(last['params']['backbone'])
  assert any(
    not np.array_equal(backbone_after[k], backbone_before[k])
    for k in backbone_before
    if np.shape(backbone_after[k]) == np.shape(backbone_before[k])
  )
  head_first, head_last = _flat(first['params']['head_smpl24']), _flat(last['params']['head_smpl24'])
  assert any(not np.array_equal(head_last[k], head_first[k]) for k in head_first)
  # Evaluation of the new format: COCO-style AP with SMPL-24's sigmas on the human validation examples.
  with open(workdir / 'metrics.jsonl') as f:
    evals = [r for r in map(json.loads, f) if 'eval/smpl24/AP' in r]
  assert evals and evals[-1]['step'] == 3 and 0.0 <= evals[-1]['eval/smpl24/AP'] <= 1.0
  with open(workdir / 'eval' / 'smpl24_gt.json') as f:
    gt = json.load(f)
  validation = pipeline.open_source('posebh_synthetic', 'validation', data_dir)
  humans = [i for i in range(len(validation)) if validation[i]['category'] in (b'human', 'human')]
  assert len(gt['annotations']) == len(humans) > 0
  assert gt['categories'][0]['keypoints'] == list(skeletons.get_format('smpl24').keypoint_names)
  assert os.path.exists(workdir / 'eval' / 'smpl24_results_step3.json')
  assert os.path.exists(workdir / 'viz' / 'smpl24_step3.png')
  # The eval's formats picture: the first COCO and AP-10K validation images, one 192 x 256 panel per head.
  formats_png = cv2.imread(str(workdir / 'viz' / 'formats_step3.png'))
  assert formats_png is not None and formats_png.shape == (2 * 256, 7 * 192, 3)
