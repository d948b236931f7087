"""3D metrics (posebh_jax.evaluation.pose3d): every metric against a plain per-pose NumPy / SciPy implementation
written here (loops, Kabsch through scipy.spatial.transform.Rotation.align_vectors plus the closed-form scale),
closed forms, the H36M / 3DHP / 3DPW / generic protocols, and `python -m posebh_jax.evaluate` on 3D files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from posebh_jax import evaluate as evaluate_lib
from posebh_jax.errors import UserError
from posebh_jax.evaluation import get_evaluator, get_evaluator3d, list_evaluators, pose3d
from posebh_jax.evaluation.registry import dataset_nms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ('MPJPE', 'PA-MPJPE', 'PCK150', 'AUC', 'MPJPE-abs')
H36M = (
  'pelv', 'rhip', 'rkne', 'rank', 'lhip', 'lkne', 'lank', 'spin', 'neck', 'head', 'htop',
  'lsho', 'lelb', 'lwri', 'rsho', 'relb', 'rwri',
)  # fmt: skip
# The MPI-INF-3DHP test set's joint order; its first 14 are the PCK / AUC joints of the official evaluation.
MPI_3DHP_ORDER = (
  'htop', 'neck', 'rsho', 'relb', 'rwri', 'lsho', 'lelb', 'lwri', 'rhip', 'rkne', 'rank', 'lhip', 'lkne', 'lank',
  'pelv', 'spin', 'head',
)  # fmt: skip
SMPL24 = (
  'pelv', 'lhip', 'rhip', 'spi1', 'lkne', 'rkne', 'spi2', 'lank', 'rank', 'spi3', 'ltoe', 'rtoe',
  'neck', 'lcla', 'rcla', 'head', 'lsho', 'rsho', 'lelb', 'relb', 'lwri', 'rwri', 'lhan', 'rhan',
)  # fmt: skip


# --- the independent reference ----------------------------------------------------------------------------------


def _distance(a, b):
  return float(np.sqrt(sum((float(a[k]) - float(b[k])) ** 2 for k in range(3))))


def _ref_root_relative(pred, gt, valid, root, joints):
  """Root-relative errors of the counted joints, pose by pose, joint by joint."""
  errors = []
  for n in range(pred.shape[0]):
    if not valid[n, root]:
      continue
    for j in joints:
      if valid[n, j]:
        errors.append(_distance(pred[n, j] - pred[n, root], gt[n, j] - gt[n, root]))
  return errors


def _ref_align(p, g):
  """The similarity transform of p onto g (both (M, 3)) by a different route: Kabsch's proper rotation from
  Rotation.align_vectors on the centred points, then the least-squares scale for that rotation."""
  if len(p) == 1:
    return g.copy()
  pc, gc = p - p.mean(0), g - g.mean(0)
  rotation, _ = Rotation.align_vectors(gc, pc)  # gc ~ R pc
  rotated = rotation.apply(pc)
  scale = np.sum(gc * rotated) / np.sum(pc * pc)
  return scale * rotated + g.mean(0)


def _reference(pred, gt, valid, root, joints, pck_joints=None):
  pck_joints = joints if pck_joints is None else pck_joints
  rel = _ref_root_relative(pred, gt, valid, root, joints)
  rel_pck = _ref_root_relative(pred, gt, valid, root, pck_joints)
  aligned, absolute = [], []
  for n in range(pred.shape[0]):
    js = [j for j in joints if valid[n, j]]
    if not js:
      continue
    fitted = _ref_align(pred[n, js], gt[n, js])
    aligned += [_distance(fitted[i], gt[n, j]) for i, j in enumerate(js)]
    absolute += [_distance(pred[n, j], gt[n, j]) for j in js]
  thresholds = range(0, 151, 5)
  return {
    'MPJPE': sum(rel) / len(rel),
    'PA-MPJPE': sum(aligned) / len(aligned),
    'PCK150': 100.0 * sum(e < 150 for e in rel_pck) / len(rel_pck),
    'AUC': 100.0 * sum(sum(e < t for e in rel_pck) / len(rel_pck) for t in thresholds) / len(thresholds),
    'MPJPE-abs': sum(absolute) / len(absolute),
  }


def _random_poses(seed, n=12, j=17, noise=60.0, min_valid=4):
  rng = np.random.default_rng(seed)
  gt = rng.normal(0.0, 250.0, (n, j, 3)) + np.array([0.0, 0.0, 4000.0])
  pred = gt + rng.normal(0.0, noise, gt.shape) + rng.normal(0.0, 80.0, (n, 1, 3))
  valid = rng.random((n, j)) < 0.8
  for i in range(n):  # at least `min_valid` valid joints, so that the reference's Kabsch is well defined
    valid[i, rng.choice(j, min_valid, replace=False)] = True
  valid[0, 0] = False  # a pose without its root: no root-relative joint of it counts
  return pred, gt, valid


def _assert_close(ours, expected, tol=1e-9):
  assert list(ours) == list(NAMES)
  for name in NAMES:
    assert ours[name] == pytest.approx(expected[name], rel=tol, abs=tol), name


# --- the metric functions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_metrics_match_the_reference(seed):
  pred, gt, valid = _random_poses(seed)
  ours = pose3d.pose3d_metrics(pred, gt, valid, root=0)
  _assert_close(ours, _reference(pred, gt, valid, 0, range(17)))
  assert 0 < ours['PCK150'] < 100 and 0 < ours['AUC'] < ours['PCK150']  # errors spread across the thresholds
  # Joint subsets, another root, and invalid joints holding garbage (NaN) that must not leak into any metric.
  joints, pck_joints = [1, 2, 3, 5, 8, 9, 11, 13, 16], [2, 5, 8, 11]
  pred[~valid] = np.nan
  gt[~valid] = np.nan
  ours = pose3d.pose3d_metrics(pred, gt, valid, root=3, joints=joints, pck_joints=pck_joints)
  _assert_close(ours, _reference(pred, gt, valid, 3, joints, pck_joints))


def test_procrustes_is_the_optimal_proper_similarity():
  pred, gt, valid = _random_poses(3, n=6)
  aligned = pose3d.procrustes_align(pred, gt, valid)
  for n in range(6):
    js = np.flatnonzero(valid[n])
    np.testing.assert_allclose(aligned[n, js], _ref_align(pred[n, js], gt[n, js]), atol=1e-7)
    # No other proper similarity does better: random perturbations of the fit only increase the error.
    best = np.sum((aligned[n, js] - gt[n, js]) ** 2)
    rng = np.random.default_rng(n)
    for _ in range(20):
      small = Rotation.from_rotvec(rng.normal(0, 0.02, 3)).as_matrix()
      centre = aligned[n, js].mean(0)
      moved = (1 + rng.normal(0, 0.01)) * (aligned[n, js] - centre) @ small.T + centre + rng.normal(0, 1.0, 3)
      assert np.sum((moved - gt[n, js]) ** 2) >= best


def test_closed_forms():
  _, gt, valid = _random_poses(4)
  valid[0, 0] = True
  rotation = Rotation.random(2, random_state=5).as_matrix()
  # A rotated, uniformly scaled, translated copy aligns exactly.
  for i, (scale, shift) in enumerate([(1.7, (120.0, -40.0, 900.0)), (0.4, (-3000.0, 5.0, 0.0))]):
    copy = scale * gt @ rotation[i].T + np.array(shift)
    assert pose3d.pa_mpjpe(copy, gt, valid) < 1e-6
    np.testing.assert_allclose(pose3d.procrustes_align(copy, gt, valid)[valid], gt[valid], atol=1e-6)
  # A mirrored copy: a reflection would align it (scipy's orthogonal Procrustes allows one), a rotation cannot.
  mirrored = gt * np.array([-1.0, 1.0, 1.0]) + np.array([10.0, 0.0, 0.0])
  centred = gt[1] - gt[1].mean(0)
  reflection, _ = orthogonal_procrustes(mirrored[1] - mirrored[1].mean(0), centred)
  assert np.linalg.det(reflection) < 0
  np.testing.assert_allclose((mirrored[1] - mirrored[1].mean(0)) @ reflection, centred, atol=1e-8)
  assert pose3d.pa_mpjpe(mirrored, gt, np.ones_like(valid)) > 50.0
  # A translated copy: root-relative MPJPE 0, absolute MPJPE the translation's length.
  shift = np.array([30.0, -40.0, 120.0])
  assert pose3d.mpjpe(gt + shift, gt, valid, root=0) < 1e-9
  assert pose3d.mpjpe_abs(gt + shift, gt, valid) == pytest.approx(130.0, abs=1e-9)
  metrics = pose3d.pose3d_metrics(gt + shift, gt, valid, root=0)
  assert metrics['PCK150'] == 100.0 and metrics['MPJPE-abs'] == pytest.approx(130.0)
  # Errors of exactly 0 mm: the 0 mm threshold counts nothing (MPI-INF-3DHP / MeTRAbs convention) -> 100 * 30 / 31;
  # over 5, ..., 150 mm it is 100.
  assert metrics['AUC'] == pytest.approx(100.0 * 30 / 31, abs=1e-9)
  assert pose3d.auc(gt, gt, valid, 0, thresholds=np.arange(5.0, 151.0, 5.0)) == pytest.approx(100.0, abs=1e-12)
  assert len(pose3d.AUC_THRESHOLDS_MM) == 31 and pose3d.AUC_THRESHOLDS_MM[[0, 1, -1]].tolist() == [0.0, 5.0, 150.0]


def test_pck_is_strict_at_150_mm():
  gt = np.zeros((1, 4, 3))
  gt[0, 1:] = [[10.0, 20.0, 30.0], [-50.0, 0.0, 0.0], [0.0, 0.0, 70.0]]
  pred = gt + np.array([500.0, 0.0, 0.0])  # the same offset for all: root-relative errors 0
  pred[0, 1, 0] += 150.0  # exactly 150 mm: not correct
  pred[0, 2, 1] += np.nextafter(150.0, 0.0)  # just below: correct
  pred[0, 3, 2] += 90.0  # 90 mm
  valid = np.ones((1, 4), bool)
  assert pose3d.pck(pred, gt, valid, root=0) == pytest.approx(75.0)
  assert pose3d.pck(pred, gt, valid, root=0, threshold=np.nextafter(150.0, 200.0)) == pytest.approx(100.0)
  errors, counted = pose3d.root_relative_errors(pred, gt, valid, 0)
  assert errors[0, 1] == 150.0 and counted.all()
  # AUC: joint 0 correct at 30 thresholds, joint 1 (150 mm) at none, joint 2 (just below 150) at 1 (150), joint 3
  # (90 mm) at 95 .. 150 (12).
  assert pose3d.auc(pred, gt, valid, root=0) == pytest.approx(100.0 * (30 + 0 + 1 + 12) / (4 * 31))


def test_degenerate_poses():
  gt = np.random.default_rng(7).normal(0, 100, (3, 5, 3))
  pred = gt + 25.0
  valid = np.zeros((3, 5), bool)
  valid[0, 2] = True  # one valid joint: the similarity fits it exactly
  valid[2] = True
  pred[2] += np.random.default_rng(8).normal(0, 10, (5, 3))
  aligned = pose3d.procrustes_align(pred, gt, valid)
  np.testing.assert_allclose(aligned[0, 2], gt[0, 2], atol=1e-9)
  np.testing.assert_array_equal(aligned[1], pred[1])  # no valid joint: unchanged, and not counted
  expected = _reference(pred, gt, valid, 2, range(5))
  assert pose3d.pa_mpjpe(pred, gt, valid) == pytest.approx(expected['PA-MPJPE'], rel=1e-9)
  assert np.isnan(pose3d.mpjpe(pred, gt, np.zeros((3, 5), bool), root=0))
  with pytest.raises(ValueError, match=r'valid must be \(3, 5\)'):
    pose3d.mpjpe(pred, gt, valid[:, :4], root=0)


# --- protocols, files and the command ---------------------------------------------------------------------------


def _files(tmp_path, names, gt, pred, valid=None, root=None, image_ids=None, name='x'):
  image_ids = list(range(100, 100 + len(gt))) if image_ids is None else image_ids
  annotations = []
  for i, pose in enumerate(gt):
    ann = {'image_id': image_ids[i], 'keypoints_3d': pose.tolist()}
    if valid is not None:
      ann['valid'] = valid[i].tolist()
    annotations.append(ann)
  gt_json = {'joints': list(names), 'annotations': annotations}
  if root is not None:
    gt_json['root'] = root
  results = [{'image_id': image_ids[i], 'keypoints_3d': p.tolist()} for i, p in enumerate(pred)]
  gt_path, res_path = tmp_path / f'{name}_gt.json', tmp_path / f'{name}_results.json'
  gt_path.write_text(json.dumps(gt_json))
  res_path.write_text(json.dumps(results))
  return gt_json, results, str(gt_path), str(res_path)


def _cli(capsys, *args):
  status = evaluate_lib.main(list(args))
  out, err = capsys.readouterr()
  return status, out, err


def test_h36m_protocol_with_suffixed_names(tmp_path, capsys):
  rng = np.random.default_rng(10)
  extra = ('nose', 'lhan')  # joints of the file outside the protocol: never scored
  order = list(rng.permutation(list(H36M) + list(extra)))
  names = [f'{n}_h36m' for n in order]
  pred, gt, valid = _random_poses(11, n=8, j=len(names))
  for j, n in enumerate(order):
    if n in extra:
      pred[:, j] += 5000.0
  gt[~valid] = np.nan  # written as NaN: an invalid joint's coordinates are never read
  _, _, gt_path, res_path = _files(tmp_path, names, gt, pred, valid, root='nose_h36m')
  status, out, err = _cli(capsys, '--dataset=h36m', f'--gt={gt_path}', f'--results={res_path}')
  assert status == 0, err
  printed = json.loads(out)
  protocol = [order.index(n) for n in H36M]
  _assert_close(printed, _reference(pred, gt, valid, order.index('pelv'), protocol))
  assert get_evaluator('h36m').evaluate(gt_path, res_path) == printed
  # The evaluator on arrays gives the same.
  assert get_evaluator3d('h36m')(pred, gt, valid, names) == pytest.approx(printed, rel=1e-12)


def test_3dhp_protocol_17_and_14_joints(tmp_path, capsys):
  pred, gt, valid = _random_poses(12, n=10, j=17, noise=20.0)
  valid[:] = True
  for name in ('spin', 'head'):  # large errors outside the 14 PCK joints
    pred[:, MPI_3DHP_ORDER.index(name)] += 400.0
  _, _, gt_path, res_path = _files(tmp_path, MPI_3DHP_ORDER, gt, pred, name='3dhp')  # no "valid": all valid
  status, out, err = _cli(capsys, '--dataset=3dhp', f'--gt={gt_path}', f'--results={res_path}')
  assert status == 0, err
  printed = json.loads(out)
  root = MPI_3DHP_ORDER.index('pelv')
  expected = _reference(pred, gt, valid, root, range(17), pck_joints=range(14))
  _assert_close(printed, expected)
  all17 = _reference(pred, gt, valid, root, range(17))
  assert printed['PCK150'] > all17['PCK150'] and printed['MPJPE'] == pytest.approx(all17['MPJPE'])
  assert sorted(pose3d.MPI_3DHP_PCK_JOINTS) == sorted(MPI_3DHP_ORDER[:14])


def test_3dpw_and_generic_formats(tmp_path, capsys):
  pred, gt, valid = _random_poses(13, n=6, j=24)
  names = [f'{n}_smpl24' for n in SMPL24]
  _, _, gt_path, res_path = _files(tmp_path, names, gt, pred, valid, name='3dpw')
  status, out, err = _cli(capsys, '--dataset=3dpw', f'--gt={gt_path}', f'--results={res_path}')
  assert status == 0, err
  _assert_close(json.loads(out), _reference(pred, gt, valid, 0, range(24)))
  # Any other name: every joint of the file, root = the file's "root".
  pred, gt, valid = _random_poses(14, n=5, j=6)
  names = ['a', 'b', 'c', 'd', 'e', 'f']
  _, _, gt_path, res_path = _files(tmp_path, names, gt, pred, valid, root='c', name='generic')
  status, out, err = _cli(capsys, '--dataset=my_format3d', f'--gt={gt_path}', f'--results={res_path}')
  assert status == 0, err
  _assert_close(json.loads(out), _reference(pred, gt, valid, 2, range(6)))
  # The 2D name 'smpl24' stays the 2D OKS evaluator; with a 3D ground truth the command scores it in 3D.
  assert get_evaluator('smpl24').kind == 'oks' and get_evaluator3d('smpl24').kind == 'pose3d'
  status, out, err = _cli(capsys, '--dataset=smpl24', f'--gt={gt_path}', f'--results={res_path}')
  assert status == 0 and list(json.loads(out)) == list(NAMES), err


def test_several_people_per_image_match_by_ann_id(tmp_path):
  pred, gt, valid = _random_poses(15, n=4, j=17)
  gt_json, results, _, _ = _files(tmp_path, H36M, gt, pred, valid, image_ids=[7, 7, 8, 8])
  for i, (ann, res) in enumerate(zip(gt_json['annotations'], results)):
    ann['id'], res['ann_id'] = 50 + i, 50 + i
  results.reverse()
  ours = get_evaluator('h36m').evaluate(gt_json, results)
  _assert_close(ours, _reference(pred, gt, valid, 0, range(17)))
  for res in results:
    del res['ann_id']
  with pytest.raises(UserError, match='several annotations with image_id 7'):
    get_evaluator('h36m').evaluate(gt_json, results)


def test_registry_and_table():
  assert {'h36m', '3dhp', '3dpw'} <= set(list_evaluators())
  for name in ('h36m', '3dhp', '3dpw'):
    evaluator = get_evaluator(name)
    assert evaluator.kind == 'pose3d' and evaluator.metric_names == NAMES and evaluator.primary_metric == 'MPJPE'
    assert dataset_nms(name) is None
  assert get_evaluator3d('3dhp').protocol.pck_joints == pose3d.MPI_3DHP_PCK_JOINTS
  assert get_evaluator3d('anything').protocol.joints is None
  logged = {
    'eval/h36m/MPJPE': 54.321,
    'eval/h36m/PA-MPJPE': 38.04,
    'eval/h36m/PCK150': 96.55,
    'eval/h36m/AUC': 51.27,
    'eval/h36m/MPJPE-abs': 210.0,
    'eval/coco/AP': 0.75,
    'eval/interhand/AUC': 0.8,
    'eval/interhand/EPE': 3.0,
  }
  table = evaluate_lib.format_table(logged).splitlines()
  rows = {line.split()[0]: line.split()[1:] for line in table[1:] if line and not line.startswith('|')}
  assert rows['h36m'] == ['MPJPE', '54.3', 'PA-MPJPE', '38.0', 'PCK150', '96.5', 'AUC', '51.3', 'MPJPE-abs', '210.0']
  assert rows['interhand'][:2] == ['AUC', '80.0'] and rows['coco'][:2] == ['AP', '75.0']
  assert [c.strip() for c in table[-1].split('|')[1:-1]][1] == '75.0'
  # A 3D run alone: the rows, no all-'-' row of the 2D results table.
  only_3d = evaluate_lib.format_table({k: v for k, v in logged.items() if k.startswith('eval/h36m/')}).splitlines()
  assert len(only_3d) == 2 and not any(line.startswith('|') for line in only_3d)


def test_cli_user_errors(tmp_path, capsys):
  pred, gt, valid = _random_poses(16, n=3, j=17)
  _, _, gt_path, res_path = _files(tmp_path, [f'{n}_h36m' for n in H36M], gt, pred, valid)
  no_htop_path = _files(tmp_path, [f'{n}_h36m' for n in H36M[:10]], gt[:, :10], pred[:, :10], name='a')[2]
  both = [f'{n}_h36m' for n in H36M] + [f'{n}_smpl' for n in H36M]  # one skeleton twice, under two suffixes
  _, _, both_path, both_res = _files(tmp_path, both, np.tile(gt, (1, 2, 1)), np.tile(pred, (1, 2, 1)), name='two')
  results = [{'image_id': 100 + i, 'keypoints_3d': p.tolist()} for i, p in enumerate(pred)]
  fewer = tmp_path / 'fewer.json'
  fewer.write_text(json.dumps(results[:2]))
  unknown = tmp_path / 'unknown.json'
  unknown.write_text(json.dumps(results + [{'image_id': 9, 'keypoints_3d': pred[0].tolist()}]))
  short = tmp_path / 'short.json'
  short.write_text(json.dumps([{'image_id': 100 + i, 'keypoints_3d': p[:16].tolist()} for i, p in enumerate(pred)]))
  doubled = tmp_path / 'doubled.json'
  doubled.write_text(json.dumps(results[:1] * 2))
  bad = tmp_path / 'bad.json'
  bad.write_text('not json')
  _, _, rootless_path, rootless_res = _files(tmp_path, ['a', 'b', 'c'], gt[:, :3], pred[:, :3], root='z', name='z')
  empty = tmp_path / 'empty.json'
  empty.write_text(json.dumps({'joints': ['a'], 'root': 'a', 'annotations': []}))
  no_root = _files(tmp_path, H36M, gt, pred, np.ones_like(valid) & (np.arange(17) > 0), name='no_root')
  cases = {
    "the ground truth's joints lack htop_h36m, lsho_h36m": (
      '--dataset=h36m',
      f'--gt={no_htop_path}',
      f'--results={res_path}',
    ),
    'under several suffixes (h36m, smpl)': ('--dataset=3dhp', f'--gt={both_path}', f'--results={both_res}'),
    'the results lack 1 of the ground truth\'s 3 annotations (first: image_id 102)': (
      '--dataset=h36m',
      f'--gt={gt_path}',
      f'--results={fewer}',
    ),
    'the results have image_id 9, which the ground truth lacks': (
      '--dataset=h36m',
      f'--gt={gt_path}',
      f'--results={unknown}',
    ),
    'has 16 joints but the ground truth names 17': ('--dataset=h36m', f'--gt={gt_path}', f'--results={short}'),
    'several predictions for image_id 100': ('--dataset=h36m', f'--gt={gt_path}', f'--results={doubled}'),
    'is not valid JSON': ('--dataset=h36m', f'--gt={gt_path}', f'--results={bad}'),
    'no ground-truth joint counts for MPJPE, PCK150, AUC under the h36m protocol': (
      '--dataset=h36m',
      f'--gt={no_root[2]}',
      f'--results={no_root[3]}',
    ),
    'results file not found': ('--dataset=h36m', f'--gt={gt_path}', f'--results={tmp_path / "none.json"}'),
    'the ground truth\'s "root" \'z\' is not one of its joints': (
      '--dataset=fmt',
      f'--gt={rootless_path}',
      f'--results={rootless_res}',
    ),
    'the ground truth has no annotations': ('--dataset=fmt', f'--gt={empty}', f'--results={res_path}'),
    '--topdown and --nms apply to 2D results only': (
      '--dataset=h36m',
      f'--gt={gt_path}',
      f'--results={res_path}',
      '--topdown',
    ),
  }
  for message, args in cases.items():
    status, out, err = _cli(capsys, *args)
    assert status == 2 and out == '', (message, out)
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, (message, err)


def test_command_end_to_end(tmp_path):
  pred, gt, valid = _random_poses(17, n=4, j=17)
  _, _, gt_path, res_path = _files(tmp_path, MPI_3DHP_ORDER, gt, pred, valid)
  env = dict(os.environ, PYTHONPATH=REPO)
  run = subprocess.run(
    [sys.executable, '-m', 'posebh_jax.evaluate', '--dataset=3dhp', f'--gt={gt_path}', f'--results={res_path}'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert run.returncode == 0, run.stderr
  root = MPI_3DHP_ORDER.index('pelv')
  _assert_close(json.loads(run.stdout), _reference(pred, gt, valid, root, range(17), pck_joints=range(14)))
