"""3D pose metrics (docs/METHOD.md §3.7) and the per-benchmark protocols that select their joints.

Every metric takes poses as `(N, J, 3)` arrays in mm (camera frame) and a validity mask `(N, J)` bool, and is
a mean over the counted joints of all poses together (joint-weighted, not a mean of per-pose means):
- MPJPE: root-relative mean per-joint position error. Prediction and truth are each made relative to their own
  root joint; a joint counts when it and its pose's root are valid (the root itself counts, with error 0).
- PA-MPJPE: per pose, the similarity transform (rotation without reflection, uniform scale, translation) that
  best maps the prediction onto the truth over the valid joints (Umeyama's closed form through an SVD), then
  the mean error of the valid joints. A pose with one valid joint is aligned exactly (error 0).
- PCK150: % of counted joints whose root-relative error is strictly below 150 mm.
- AUC: mean PCK over the 31 thresholds 0, 5, ..., 150 mm (0 included, errors strictly below each threshold), in
  %: the MPI-INF-3DHP evaluation's `thresh = 0:5:150` and MeTRAbs' `eval_3dhp.get_auc`. Because the 0 mm
  threshold counts no joint, a perfect prediction scores 100 * 30 / 31 = 96.77, as in those tools.
- MPJPE-abs: mean error without any alignment (valid joints).

Protocols (`PROTOCOLS`): 'h36m' = 17 joints, root pelvis; '3dhp' = the same 17 joints for MPJPE / PA-MPJPE /
MPJPE-abs and 14 of them for PCK150 / AUC: the official MPI-INF-3DHP joint groups (`mpii_get_pck_auc_joint_groups`:
head top, neck, shoulders, elbows, wrists, hips, knees, ankles), i.e. the 17 without pelvis, spine and head, as
MeTRAbs' `rel_dist[:, :14]` does; '3dpw' = SMPL's 24 joints, root pelvis. Any other dataset name (a 3D format)
uses every joint of the ground-truth file and its "root".

Ground-truth files (`python -m posebh_jax.evaluate`): `{"joints": [names], "root": name, "annotations":
[{"image_id", "keypoints_3d": J x 3 mm, "valid": J booleans (optional, default all true)}]}`; results:
`[{"image_id", "keypoints_3d": J x 3 mm}]`, one per annotation. Results that all carry "ann_id" are matched to
the annotations' "id" instead (several people per image). Joint names may carry a format suffix ('lsho_h36m'):
a protocol's joints are found under one common suffix (or none).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.evaluation.coco import load_json
from posebh_jax.skeletons.registry3d import benchmark_joints

METRIC_NAMES = ('MPJPE', 'PA-MPJPE', 'PCK150', 'AUC', 'MPJPE-abs')
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)  # 0, 5, ..., 150 mm

# The benchmark joint sets, by short name (the 3D skeleton registry's; docs/METHOD.md §3.7).
H36M_JOINTS = benchmark_joints('h36m')
MPI_3DHP_JOINTS = benchmark_joints('3dhp')
MPI_3DHP_PCK_JOINTS = benchmark_joints('3dhp_pck')
SMPL24_JOINTS = benchmark_joints('3dpw')


# --- metric functions -------------------------------------------------------------------------------------------


def _checked(pred, gt, valid):
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  valid = np.asarray(valid, dtype=bool)
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
    raise ValueError(f'pred and gt must both be (N, J, 3), got {pred.shape} and {gt.shape}')
  if valid.shape != pred.shape[:2]:
    raise ValueError(f'valid must be {pred.shape[:2]}, got {valid.shape}')
  return pred, gt, valid


def _select(arrays, joints):
  if joints is None:
    return arrays
  joints = np.asarray(joints, dtype=np.int64)
  return tuple(a[:, joints] for a in arrays)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
  count = int(mask.sum())
  return float(np.sum(np.where(mask, values, 0.0)) / count) if count else float('nan')


def root_relative_errors(pred, gt, valid, root: int) -> tuple[np.ndarray, np.ndarray]:
  """Root-relative joint errors: `pred`, `gt` `(N, J, 3)` mm, `valid` `(N, J)` bool, `root` a joint index.
  Returns (`(N, J)` Euclidean error in mm of each joint after subtracting each pose's own root, `(N, J)` bool:
  the joint and its pose's root are both valid)."""
  pred, gt, valid = _checked(pred, gt, valid)
  rel_pred = pred - pred[:, root : root + 1]
  rel_gt = gt - gt[:, root : root + 1]
  counted = valid & valid[:, root : root + 1]
  errors = np.linalg.norm(np.where(counted[..., None], rel_pred - rel_gt, 0.0), axis=-1)
  return errors, counted


def mpjpe(pred, gt, valid, root: int, joints=None) -> float:
  """Root-relative MPJPE in mm of `pred` vs `gt` `(N, J, 3)` mm over `valid` `(N, J)` joints (see the module
  docstring); `joints` (indices) restricts the mean to those joints. NaN when no joint counts."""
  errors, counted = _select(root_relative_errors(pred, gt, valid, root), joints)
  return _masked_mean(errors, counted)


def mpjpe_abs(pred, gt, valid, joints=None) -> float:
  """Absolute MPJPE in mm (no alignment) of `pred` vs `gt` `(N, J, 3)` mm over `valid` `(N, J)` joints, optionally
  only `joints` (indices). NaN when no joint is valid."""
  pred, gt, valid = _select(_checked(pred, gt, valid), joints)
  return _masked_mean(np.linalg.norm(np.where(valid[..., None], pred - gt, 0.0), axis=-1), valid)


def procrustes_align(pred, gt, valid) -> np.ndarray:
  """`pred` `(N, J, 3)` mapped onto `gt` `(N, J, 3)` by each pose's least-squares similarity transform over its
  `valid` `(N, J)` joints: `s * R @ p + t` with R a proper rotation (det +1; a reflection is never used), s >= 0
  a uniform scale, t a translation (Umeyama 1991). Returns the aligned `(N, J, 3)` (every joint transformed; a
  pose with no valid joint is returned unchanged)."""
  pred, gt, valid = _checked(pred, gt, valid)
  mask = valid[..., None]  # (N, J, 1)
  count = np.maximum(mask.sum(axis=1, keepdims=True), 1)  # (N, 1, 1)
  mean_pred = np.where(mask, pred, 0.0).sum(axis=1, keepdims=True) / count
  mean_gt = np.where(mask, gt, 0.0).sum(axis=1, keepdims=True) / count
  centred_pred = np.where(mask, pred - mean_pred, 0.0)
  centred_gt = np.where(mask, gt - mean_gt, 0.0)
  covariance = np.einsum('nji,njk->nik', centred_gt, centred_pred)  # sum of g p^T, (N, 3, 3)
  u, singular, vt = np.linalg.svd(covariance)
  sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
  sign = np.where(sign == 0, 1.0, sign)
  correction = np.ones((pred.shape[0], 3))
  correction[:, 2] = sign  # flips the smallest singular direction when U V^T would be a reflection
  rotation = np.einsum('nij,nj,njk->nik', u, correction, vt)
  variance = np.sum(centred_pred**2, axis=(1, 2))
  trace = np.sum(singular * correction, axis=1)
  scale = np.where(variance > 0, trace / np.where(variance > 0, variance, 1.0), 0.0)
  aligned = scale[:, None, None] * np.einsum('nik,njk->nji', rotation, pred - mean_pred) + mean_gt
  has_valid = valid.any(axis=1)
  return np.where(has_valid[:, None, None], aligned, pred)


def pa_mpjpe(pred, gt, valid, joints=None) -> float:
  """PA-MPJPE in mm: the mean error over `valid` `(N, J)` joints of `pred` `(N, J, 3)` mm after each pose's
  similarity alignment onto `gt` (`procrustes_align`, fitted on the same joints); `joints` (indices) restricts
  both the fit and the mean. NaN when no joint is valid."""
  pred, gt, valid = _select(_checked(pred, gt, valid), joints)
  aligned = procrustes_align(pred, gt, valid)
  return _masked_mean(np.linalg.norm(np.where(valid[..., None], aligned - gt, 0.0), axis=-1), valid)


def pck(pred, gt, valid, root: int, threshold: float = PCK_THRESHOLD_MM, joints=None) -> float:
  """PCK in %: the share of counted joints (valid, with a valid root) whose root-relative error in mm is strictly
  below `threshold` mm. `pred`, `gt` `(N, J, 3)` mm, `valid` `(N, J)`, `root` index, `joints` optional indices.
  NaN when no joint counts."""
  errors, counted = _select(root_relative_errors(pred, gt, valid, root), joints)
  return 100.0 * _masked_mean((errors < threshold).astype(np.float64), counted)


def auc(pred, gt, valid, root: int, thresholds=AUC_THRESHOLDS_MM, joints=None) -> float:
  """AUC in %: the mean over `thresholds` (mm; default 0, 5, ..., 150, 0 included) of the root-relative PCK
  (errors strictly below the threshold). Arguments as `pck`. NaN when no joint counts."""
  errors, counted = _select(root_relative_errors(pred, gt, valid, root), joints)
  count = int(counted.sum())
  if not count:
    return float('nan')
  thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
  counted_errors = errors[counted]
  hits = np.sum(counted_errors[None, :] < thresholds[:, None], axis=1)
  return float(100.0 * np.mean(hits / count))


def pose3d_metrics(pred, gt, valid, root: int, joints=None, pck_joints=None) -> dict[str, float]:
  """The five summary metrics of a protocol: {'MPJPE', 'PA-MPJPE', 'PCK150', 'AUC', 'MPJPE-abs'} (mm, %).

  Args:
    pred, gt: `(N, J, 3)` mm; valid: `(N, J)` bool; root: index of the root joint.
    joints: indices of the joints of MPJPE, PA-MPJPE and MPJPE-abs (default all).
    pck_joints: indices of the joints of PCK150 and AUC (default `joints`).
  Returns: the metrics in `METRIC_NAMES` order (NaN where no joint counts).
  """
  pck_joints = joints if pck_joints is None else pck_joints
  return {
    'MPJPE': mpjpe(pred, gt, valid, root, joints),
    'PA-MPJPE': pa_mpjpe(pred, gt, valid, joints),
    'PCK150': pck(pred, gt, valid, root, PCK_THRESHOLD_MM, pck_joints),
    'AUC': auc(pred, gt, valid, root, AUC_THRESHOLDS_MM, pck_joints),
    'MPJPE-abs': mpjpe_abs(pred, gt, valid, joints),
  }


# --- protocols ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Protocol3D:
  """Which joints a benchmark scores: `joints` (MPJPE, PA-MPJPE, MPJPE-abs), `pck_joints` (PCK150, AUC; None =
  `joints`), `root`; `suffixes` are the format suffixes preferred when the ground truth's names are suffixed
  ('lsho_h36m'). `joints` None = every joint of the ground truth, with its "root"."""

  name: str
  joints: tuple[str, ...] | None = None
  root: str | None = None
  pck_joints: tuple[str, ...] | None = None
  suffixes: tuple[str, ...] = ()


PROTOCOLS = {
  'h36m': Protocol3D('h36m', H36M_JOINTS, 'pelv', suffixes=('h36m',)),
  '3dhp': Protocol3D('3dhp', MPI_3DHP_JOINTS, 'pelv', MPI_3DHP_PCK_JOINTS, suffixes=('3dhp', 'mpi_inf_3dhp')),
  '3dpw': Protocol3D('3dpw', SMPL24_JOINTS, 'pelv', suffixes=('smpl24', 'smpl', '3dpw')),
}


def _resolve_names(names: list[str], wanted: tuple[str, ...], protocol: Protocol3D) -> list[int]:
  """Indices in `names` of the `wanted` joints, all found under one common suffix: exactly (suffix ''), or as
  '<name>_<suffix>'. Raises UserError when none covers them all, or several do and none is preferred."""
  index = {name: i for i, name in enumerate(names)}

  def spelled(name, suffix):
    return f'{name}_{suffix}' if suffix else name

  suffixes = {''} | {n[len(w) + 1 :] for n in names for w in wanted if n.startswith(w + '_')}
  complete = [s for s in suffixes if all(spelled(w, s) in index for w in wanted)]
  if not complete:
    best = max(sorted(suffixes), key=lambda s: sum(spelled(w, s) in index for w in wanted))
    missing = [spelled(w, best) for w in wanted if spelled(w, best) not in index]
    raise UserError(
      f"the ground truth's joints lack {', '.join(missing)} of the {protocol.name} protocol "
      f'(it has {", ".join(names)}); evaluate with --dataset=<its format> to score all of its joints'
    )
  for preferred in (*protocol.suffixes, ''):
    if preferred in complete:
      return [index[spelled(w, preferred)] for w in wanted]
  if len(complete) > 1:
    raise UserError(
      f"the ground truth's joints hold the {protocol.name} joints under several suffixes "
      f'({", ".join(sorted(complete))}); keep one skeleton per ground-truth file'
    )
  return [index[spelled(w, complete[0])] for w in wanted]


# --- ground truth and results files -------------------------------------------------------------------------------


def is_3d_ground_truth(gt) -> bool:
  """Whether a parsed ground truth has the 3D layout (a "joints" list, or annotations with "keypoints_3d")."""
  if not isinstance(gt, dict):
    return False
  annotations = gt.get('annotations')
  has_3d = isinstance(annotations, list) and any(isinstance(a, dict) and 'keypoints_3d' in a for a in annotations)
  return 'joints' in gt or has_3d


def _poses(values, count: int, what: str) -> np.ndarray:
  try:
    array = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError):
    raise UserError(f'{what}: keypoints_3d must be {count} x 3 numbers (mm)') from None
  if array.size != 3 * count:
    raise UserError(
      f'{what} has {array.size / 3:g} joints but the ground truth names {count}; '
      'evaluate results against the ground truth they were predicted for'
    )
  return array.reshape(count, 3)


def _parse_ground_truth(gt):
  layout = '{"joints": [names], "root": name, "annotations": [{"image_id", "keypoints_3d", "valid"}]}'
  if not isinstance(gt, dict) or not isinstance(gt.get('joints'), list) or not isinstance(gt.get('annotations'), list):
    raise UserError(f'a 3D ground truth must be {layout}')
  names = gt['joints']
  if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
    raise UserError('the ground truth\'s "joints" must be a non-empty list of distinct joint names')
  if not gt['annotations']:
    raise UserError('the ground truth has no annotations; pass an eval split\'s gt.json')
  poses, valid, keys_by_image, keys_by_id = [], [], [], []
  for i, ann in enumerate(gt['annotations']):
    if not isinstance(ann, dict) or 'image_id' not in ann or 'keypoints_3d' not in ann:
      raise UserError(f'ground-truth annotation {i} lacks "image_id" or "keypoints_3d"; each must be {layout}')
    what = f'ground-truth annotation {i} (image_id {ann["image_id"]})'
    pose = _poses(ann['keypoints_3d'], len(names), what)
    mask = np.asarray(ann.get('valid', [True] * len(names)), dtype=bool).reshape(-1)
    if mask.size != len(names):
      raise UserError(f'{what} has {mask.size} "valid" flags but {len(names)} joints')
    if not np.all(np.isfinite(pose[mask])):
      raise UserError(f'{what} has a non-finite coordinate at a valid joint; mark that joint invalid')
    poses.append(np.where(mask[:, None], pose, 0.0))
    valid.append(mask)
    keys_by_image.append(ann['image_id'])
    keys_by_id.append(ann.get('id'))
  return names, np.stack(poses), np.stack(valid), keys_by_image, keys_by_id


def _match_results(results, keys_by_image, keys_by_id, count: int) -> np.ndarray:
  if not isinstance(results, list) or not all(isinstance(r, dict) and 'keypoints_3d' in r for r in results):
    raise UserError('3D results must be a list of {"image_id", "keypoints_3d": J x 3 mm} dicts')
  by_ann = bool(results) and all('ann_id' in r for r in results)
  if by_ann:
    field, keys = 'ann_id', keys_by_id
    if any(k is None for k in keys):
      raise UserError('the results carry "ann_id" but some ground-truth annotations have no "id"')
  else:
    field, keys = 'image_id', keys_by_image
    if any('image_id' not in r for r in results):
      raise UserError('every 3D result needs an "image_id" (or every result an "ann_id")')
  position = {}
  for i, key in enumerate(keys):
    if key in position:
      raise UserError(
        f'the ground truth has several annotations with {field} {key}; give each person an "id" and its result '
        'that "ann_id"'
      )
    position[key] = i
  pred = np.full((len(keys), count, 3), np.nan)
  seen = np.zeros(len(keys), dtype=bool)
  for r in results:
    key = r[field]
    if key not in position:
      raise UserError(f'the results have {field} {key}, which the ground truth lacks; use one file pair')
    if seen[position[key]]:
      raise UserError(f'the results have several predictions for {field} {key}; keep one per annotation')
    pose = _poses(r['keypoints_3d'], count, f'the result for {field} {key}')
    if not np.all(np.isfinite(pose)):
      raise UserError(f'the result for {field} {key} has a non-finite coordinate')
    pred[position[key]] = pose
    seen[position[key]] = True
  if not seen.all():
    missing = [keys[i] for i in np.flatnonzero(~seen)]
    raise UserError(
      f'the results lack {len(missing)} of the ground truth\'s {len(keys)} annotations (first: {field} {missing[0]}); '
      'predict every annotation'
    )
  return pred


# --- evaluator --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pose3DEvaluator:
  """A 3D benchmark's metrics: {'MPJPE', 'PA-MPJPE', 'PCK150', 'AUC', 'MPJPE-abs'} (mm; PCK150 and AUC in %).

  Call as `evaluator(pred, gt, valid, joint_names, root=None)` on arrays, or `evaluate(gt, results)` on the
  ground-truth / results files (dicts / lists or JSON paths) of the module docstring.
  """

  format_name: str
  protocol: Protocol3D
  kind = 'pose3d'
  metric_names = METRIC_NAMES
  primary_metric = 'MPJPE'  # lower is better
  # Every ground-truth person is scored once, paired with its prediction (no NMS).
  scores_each_person = True
  needs_head_size = False

  def joint_indices(self, joint_names, root: str | None = None) -> tuple[list[int], int, list[int]]:
    """(metric joints, root joint, PCK/AUC joints) as indices into `joint_names` (the ground truth's joints);
    `root` is the ground truth's root name, which protocols without their own root need. Raises UserError."""
    names = list(joint_names)
    protocol = self.protocol
    if protocol.joints is None:
      if root is None or root not in names:
        raise UserError(
          f'the ground truth\'s "root" {root!r} is not one of its joints ({", ".join(names)}); name its root joint'
        )
      joints = list(range(len(names)))
      return joints, names.index(root), joints
    resolved = _resolve_names(names, (protocol.root, *protocol.joints), protocol)
    root_index, joints = resolved[0], resolved[1:]
    pck_joints = joints
    if protocol.pck_joints is not None:
      by_name = dict(zip(protocol.joints, joints))
      pck_joints = [by_name[name] for name in protocol.pck_joints]
    return joints, root_index, pck_joints

  def __call__(self, pred, gt, valid, joint_names, root: str | None = None) -> dict[str, float]:
    """The metrics of `pred` vs `gt` `(N, J, 3)` mm with `valid` `(N, J)`, whose J joints are `joint_names`."""
    joints, root_index, pck_joints = self.joint_indices(joint_names, root)
    metrics = pose3d_metrics(pred, gt, valid, root_index, joints, pck_joints)
    empty = [name for name, value in metrics.items() if not np.isfinite(value)]
    if empty:
      raise UserError(
        f'no ground-truth joint counts for {", ".join(empty)} under the {self.protocol.name} protocol '
        '(every joint, or every root, is marked invalid)'
      )
    return metrics

  def evaluate(self, gt, results) -> dict[str, float]:
    """The metrics of 3D `results` (list or JSON path) against a 3D ground truth (dict or JSON path)."""
    gt = load_json(gt, 'ground truth')
    results = load_json(results, 'results')
    names, gt_poses, valid, keys_by_image, keys_by_id = _parse_ground_truth(gt)
    root = gt.get('root')
    self.joint_indices(names, root)  # the protocol's errors before the results' errors
    pred = _match_results(results, keys_by_image, keys_by_id, len(names))
    return self(pred, gt_poses, valid, names, root)


def list_protocols() -> tuple[str, ...]:
  """Dataset names with a benchmark protocol of their own; every other name scores all ground-truth joints."""
  return tuple(PROTOCOLS)


def get_evaluator3d(name: str) -> Pose3DEvaluator:
  """The 3D evaluator of dataset `name`: the benchmark protocol of 'h36m', '3dhp' or '3dpw', otherwise (a 3D
  format name) every joint of the ground-truth file with its "root"."""
  if not isinstance(name, str) or not name:
    raise UserError('a 3D evaluation needs a dataset name (h36m, 3dhp, 3dpw or a 3D format name)')
  return Pose3DEvaluator(name, PROTOCOLS.get(name, Protocol3D(name)))
