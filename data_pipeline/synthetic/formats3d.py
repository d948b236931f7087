"""Synthetic 3D skeleton formats: three joint conventions computed from the generator's camera-frame 3D landmarks
(an example's `joints3d`, rows = `LANDMARK_NAMES`, mm), so that every format's ground truth exists for every
human example. They differ the way real 3D datasets do: other joint subsets, other landmark definitions of the
"same" joint, and surface markers instead of joint centres.

A joint is an affine combination of landmarks (`posebh_jax.geometry.combinations`) plus, optionally, a fixed offset
in mm in one of three body frames computed from the landmarks (columns x = the subject's left, y = up, z = the way
the torso / head faces; right-handed, orthonormal):

  pelvis  x = unit(left_hip - right_hip), y = unit(thorax - pelvis) made orthogonal to x, z = x × y
  chest   x = unit(left_shoulder - right_shoulder), y = unit(neck_base - spine) made orthogonal to x, z = x × y
  head    x = unit(left_ear - right_ear), y = unit(head_top - head_centre) made orthogonal to x, z = x × y

Offsets are given for the left joint; the right one mirrors them (x negated, right-side landmarks).

- 'syn_smpl' (24, SMPL's joint names and order, root 'pelv'): the generator's SMPL-like skeleton, exactly the
  landmark combinations of the derived 2D format 'smpl24' (`data_pipeline/synthetic/formats.py`): joints inside
  the body, root low in the pelvis, hips lower and narrower than the anatomical ones, three spine joints, collars,
  'head' at the skull base, 'ltoe' at the ball of the foot, 'lhan' near the knuckles.
- 'syn_h36m' (17, the H36M benchmark joints and order, root 'pelv'): knees, ankles, shoulders, elbows and wrists
  are the same points as syn_smpl's; the rest are other definitions with known offsets:
    lhip = syn_smpl lhip + pelvis (+30, +25, 0) mm   (wider and higher, like H36M's mocap hips)
    pelv = mean(syn_smpl lhip, rhip) + pelvis (0, +25, 0) mm   (= the mean of syn_h36m's hips)
    spin = mean(syn_smpl spi2, spi3);  neck = landmark neck_base;  htop = landmark head_top
    head = landmark head_centre + head (0, -10, +50) mm   (the face centre)
- 'syn_markers' (33, root 'msacr'): motion-capture-like skin markers, each a landmark (or a point on a bone) plus
  a fixed offset in the pelvis / chest / head frame (`_MARKERS` lists them all), e.g. the sacrum marker
  msacr = pelvis + pelvis-frame (0, +40, -100) mm, the acromion markers lmsho = left_shoulder + chest (+15, +45, 0)
  mm. Limb markers are offset in the torso frame they hang from, so they move rigidly with the torso, not the limb.
  Marker names carry an 'm' (after the side letter) like the registry's real marker formats, so that no 2D keypoint
  name is their prefix.

Every joint of every format is labelled in every human example (`valid` is False only where a landmark is not
finite). The formats are registered with the 3D skeleton registry (`posebh_jax.skeletons.registry3d.
register_format3d`) when this module is imported, so `get_format3d('syn_h36m')` finds them; they are not part of
the 555-joint merged list. Animal examples have no synthetic 3D format.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import numpy as np

from data_pipeline.synthetic import body as body_lib
from data_pipeline.synthetic import formats as formats_lib
from posebh_jax.geometry import combinations
from posebh_jax.skeletons.registry3d import get_format3d, register_format3d

LANDMARKS = body_lib.BIPED_LANDMARKS
# Bump when a definition below changes: the synthetic 3D builder stores it, so an old preparation is rebuilt.
FORMATS3D_VERSION = 1

# Body frames: (x from, x to, y from, y to) landmarks; see the module docstring.
FRAMES = {
  'pelvis': ('right_hip', 'left_hip', 'pelvis', 'thorax'),
  'chest': ('right_shoulder', 'left_shoulder', 'spine', 'neck_base'),
  'head': ('right_ear', 'left_ear', 'head_centre', 'head_top'),
}
FRAME_NAMES = tuple(FRAMES)

_at = combinations.at
_lerp = combinations.lerp
_add = combinations.add
_scale = combinations.scale


def _mean(*parts):
  return _scale(_add(*parts), 1.0 / len(parts))


@dataclasses.dataclass(frozen=True)
class JointDef:
  """One synthetic 3D joint: `combination` {landmark: weight} (weights sum to 1) plus `offset_mm` (x, y, z) in body
  frame `frame` (None: no offset)."""

  combination: Mapping[str, float]
  frame: str | None = None
  offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _sided(side: str, combination_of_side, frame=None, offset=(0.0, 0.0, 0.0)) -> JointDef:
  """The `side` ('left' | 'right') joint: `combination_of_side(side)` plus the left-side `offset` mirrored."""
  sign = 1.0 if side == 'left' else -1.0
  return JointDef(combination_of_side(side), frame, (sign * offset[0], offset[1], offset[2]))


# ------------------------------------------------------------------------------------------------ syn_smpl
# SMPL's 3D short names <- the 2D format smpl24's keypoint names (the same order).
_SMPL_FROM_2D = {
  'pelvis': 'pelv', 'spine1': 'spi1', 'spine2': 'spi2', 'spine3': 'spi3', 'neck': 'neck', 'head': 'head',
  'left_hip': 'lhip', 'left_knee': 'lkne', 'left_ankle': 'lank', 'left_foot': 'ltoe', 'left_collar': 'lcla',
  'left_shoulder': 'lsho', 'left_elbow': 'lelb', 'left_wrist': 'lwri', 'left_hand': 'lhan',
}  # fmt: skip
_SMPL_FROM_2D.update({'right' + k[4:]: 'r' + v[1:] for k, v in list(_SMPL_FROM_2D.items()) if k.startswith('left_')})


def _smpl_defs() -> dict[str, JointDef]:
  compiled = formats_lib.compiled_format('smpl24')
  defs = {}
  for name2d, row in zip(compiled.keypoint_names, compiled.weights):
    defs[_SMPL_FROM_2D[name2d]] = JointDef({LANDMARKS[i]: float(row[i]) for i in np.flatnonzero(row)})
  return defs


# ------------------------------------------------------------------------------------------------ syn_h36m
H36M_HIP_OFFSET_MM = (30.0, 25.0, 0.0)  # syn_h36m lhip - syn_smpl lhip, pelvis frame (right: x mirrored)
H36M_HEAD_OFFSET_MM = (0.0, -10.0, 50.0)  # syn_h36m head - head_centre, head frame


def _h36m_defs(smpl: Mapping[str, JointDef]) -> dict[str, JointDef]:
  defs = {
    'pelv': JointDef(
      _mean(smpl['lhip'].combination, smpl['rhip'].combination), 'pelvis', (0.0, H36M_HIP_OFFSET_MM[1], 0.0)
    ),
    'spin': JointDef(_mean(smpl['spi2'].combination, smpl['spi3'].combination)),
    'neck': JointDef(_at('neck_base')),
    'head': JointDef(_at('head_centre'), 'head', H36M_HEAD_OFFSET_MM),
    'htop': JointDef(_at('head_top')),
  }
  for side in ('left', 'right'):
    s = side[0]
    defs[f'{s}hip'] = _sided(side, lambda _, s=s: smpl[f'{s}hip'].combination, 'pelvis', H36M_HIP_OFFSET_MM)
    for joint in ('kne', 'ank', 'sho', 'elb', 'wri'):
      defs[f'{s}{joint}'] = smpl[f'{s}{joint}']
  return defs


# ------------------------------------------------------------------------------------------------ syn_markers
# (name, anchor combination, frame, offset mm). Sided markers: name with '{s}' for the side letter, the anchor a
# function of the side, the offset the left marker's (x = the subject's left, y = up, z = forward).
_MARKERS = (
  ('msacr', lambda _: _at('pelvis'), 'pelvis', (0.0, 40.0, -100.0)),  # sacrum (root)
  ('mt10', lambda _: _at('spine'), 'chest', (0.0, 0.0, -100.0)),  # 10th thoracic vertebra
  ('mc7', lambda _: _at('neck_base'), 'chest', (0.0, 20.0, -70.0)),  # 7th cervical vertebra
  ('mclav', lambda _: _at('neck_base'), 'chest', (0.0, -30.0, 55.0)),  # jugular notch
  ('mstrn', lambda _: _lerp('thorax', 'spine', 0.5), 'chest', (0.0, 0.0, 100.0)),  # sternum
  ('{s}mfhd', lambda _: _at('head_centre'), 'head', (45.0, 35.0, 80.0)),  # front head
  ('{s}mbhd', lambda _: _at('head_centre'), 'head', (45.0, 30.0, -85.0)),  # back head
  ('{s}msho', lambda side: _at(f'{side}_shoulder'), 'chest', (15.0, 45.0, 0.0)),  # acromion
  ('{s}muarm', lambda side: _lerp(f'{side}_shoulder', f'{side}_elbow', 0.5), 'chest', (50.0, 0.0, 0.0)),
  ('{s}melb', lambda side: _at(f'{side}_elbow'), 'chest', (35.0, 0.0, -10.0)),  # lateral epicondyle
  ('{s}mwri', lambda side: _at(f'{side}_wrist'), 'chest', (25.0, 0.0, 0.0)),
  ('{s}masi', lambda side: _at(f'{side}_hip'), 'pelvis', (35.0, 65.0, 60.0)),  # anterior superior iliac spine
  ('{s}mpsi', lambda side: _at(f'{side}_hip'), 'pelvis', (-45.0, 75.0, -95.0)),  # posterior superior iliac spine
  ('{s}mthi', lambda side: _lerp(f'{side}_hip', f'{side}_knee', 0.5), 'pelvis', (70.0, 0.0, 0.0)),
  ('{s}mkne', lambda side: _at(f'{side}_knee'), 'pelvis', (50.0, 0.0, 0.0)),
  ('{s}mtib', lambda side: _lerp(f'{side}_knee', f'{side}_ankle', 0.5), 'pelvis', (45.0, 0.0, 0.0)),
  ('{s}mank', lambda side: _at(f'{side}_ankle'), 'pelvis', (35.0, 0.0, 0.0)),  # lateral malleolus
  ('{s}mhee', lambda side: _at(f'{side}_heel'), 'pelvis', (0.0, 0.0, -20.0)),
  ('{s}mtoe', lambda side: _lerp(f'{side}_big_toe', f'{side}_small_toe', 0.5), 'pelvis', (0.0, 15.0, 0.0)),
)


def _marker_defs() -> dict[str, JointDef]:
  defs = {}
  for name, anchor, frame, offset in _MARKERS:
    if '{s}' not in name:
      defs[name] = JointDef(anchor(None), frame, offset)
      continue
    for side in ('left', 'right'):
      defs[name.format(s=side[0])] = _sided(side, anchor, frame, offset)
  return defs


def _all_defs() -> dict[str, dict[str, JointDef]]:
  smpl = _smpl_defs()
  return {'syn_smpl': smpl, 'syn_h36m': _h36m_defs(smpl), 'syn_markers': _marker_defs()}


_SMPL_JOINTS = (
  'pelv,lhip,rhip,spi1,lkne,rkne,spi2,lank,rank,spi3,ltoe,rtoe,neck,lcla,rcla,head,lsho,rsho,lelb,relb,lwri,rwri,'
  'lhan,rhan'
)
_H36M_JOINTS = 'pelv,rhip,rkne,rank,lhip,lkne,lank,spin,neck,head,htop,lsho,lelb,lwri,rsho,relb,rwri'
_MARKER_JOINTS = ','.join(
  n if '{s}' not in n else f'{n.format(s="l")},{n.format(s="r")}' for n, *_ in _MARKERS
)  # centre markers, then left/right pairs

# Registry specs (the keys of posebh_jax/skeletons/formats3d.py's FORMATS3D entries).
SYNTHETIC_FORMATS = {
  'syn_smpl': dict(
    title='synthetic SMPL-like skeleton, 24 joints (the generator\'s smpl24 landmark combinations)',
    joints=_SMPL_JOINTS,
    links='pelv-spi1-spi2-spi3-neck-head,spi3-rcla-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rtoe',
    root='pelv',
  ),
  'syn_h36m': dict(
    title='synthetic H36M-like skeleton, the 17 benchmark joints (other hips, pelvis, spine and head definitions)',
    joints=_H36M_JOINTS,
    links='pelv-spin-neck-head-htop,neck-rsho-relb-rwri,pelv-rhip-rkne-rank',
    root='pelv',
  ),
  'syn_markers': dict(
    title='synthetic motion-capture markers, 33 skin points at fixed offsets from the body landmarks',
    joints=_MARKER_JOINTS,
    links=(
      'msacr-mt10-mc7-rmfhd-rmbhd,mc7-mclav-mstrn,mclav-rmsho-rmuarm-rmelb-rmwri,'
      'msacr-rmpsi-rmasi-rmthi-rmkne-rmtib-rmank-rmhee-rmtoe'
    ),
    root='msacr',
  ),
}
SYNTHETIC_FORMAT_NAMES = tuple(SYNTHETIC_FORMATS)


def register() -> None:
  """Registers the synthetic formats with the 3D skeleton registry (idempotent; done on import)."""
  for name, spec in SYNTHETIC_FORMATS.items():
    register_format3d(name, spec)


register()


# ------------------------------------------------------------------------------------------------ compiled
@dataclasses.dataclass(frozen=True)
class CompiledFormat3D:
  """A synthetic 3D format compiled against `LANDMARKS`.

  Attributes:
    name: the format ('syn_h36m'); joint_names: J short names in the registry's order.
    weights: float64 (J, L) affine weights over the landmarks.
    frames: int64 (J,) index into FRAME_NAMES of the joint's offset frame, -1 for none.
    offsets_mm: float64 (J, 3) offset in that frame (zeros for none).
  """

  name: str
  joint_names: tuple[str, ...]
  weights: np.ndarray
  frames: np.ndarray
  offsets_mm: np.ndarray


@functools.lru_cache(maxsize=None)
def compiled_format3d(name: str) -> CompiledFormat3D:
  """The `CompiledFormat3D` of synthetic format `name`; raises ValueError for another name or when the
  definitions do not cover the registry's joints."""
  if name not in SYNTHETIC_FORMATS:
    raise ValueError(f'{name!r} is not a synthetic 3D format; use one of: {", ".join(SYNTHETIC_FORMAT_NAMES)}')
  defs = _all_defs()[name]
  joint_names = get_format3d(name).joint_names
  if set(defs) != set(joint_names):
    raise ValueError(f'synthetic 3D format {name!r}: definitions {sorted(defs)} differ from its joints')
  ordered = [defs[j] for j in joint_names]
  weights = combinations.combination_matrix([d.combination for d in ordered], LANDMARKS)
  frames = np.array([FRAME_NAMES.index(d.frame) if d.frame else -1 for d in ordered], np.int64)
  offsets = np.array([d.offset_mm if d.frame else (0.0, 0.0, 0.0) for d in ordered], np.float64)
  for array in (weights, frames, offsets):
    array.setflags(write=False)
  return CompiledFormat3D(name, tuple(joint_names), weights, frames, offsets)


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v)


def body_frame(joints3d: np.ndarray, frame: str) -> np.ndarray:
  """float64 (3, 3) rotation of body frame `frame` ('pelvis' | 'chest' | 'head') from an example's joints3d (L, 3):
  columns x (the subject's left), y (up), z (forward) in the joints' frame."""
  if frame not in FRAMES:
    raise ValueError(f'unknown body frame {frame!r}; use one of {FRAME_NAMES}')
  x0, x1, y0, y1 = (LANDMARKS.index(n) for n in FRAMES[frame])
  joints3d = np.asarray(joints3d, np.float64)
  x = _unit(joints3d[x1] - joints3d[x0])
  y = joints3d[y1] - joints3d[y0]
  y = _unit(y - np.dot(y, x) * x)
  return np.stack([x, y, np.cross(x, y)], axis=1)


def joints_in_format(example_joints3d: np.ndarray, format_name: str) -> tuple[np.ndarray, np.ndarray]:
  """A human example's joints in synthetic 3D format `format_name`.

  Args:
    example_joints3d: (len(LANDMARK_NAMES), 3) the generator's camera-frame landmarks in mm (`joints3d`).
    format_name: one of SYNTHETIC_FORMAT_NAMES.
  Returns:
    (float64 (J, 3) joints in mm, same frame, in the registry's order; bool (J,) valid: the joint and the landmarks
    it depends on are finite; an invalid joint holds zeros).
  """
  compiled = compiled_format3d(format_name)
  landmarks = np.asarray(example_joints3d, np.float64)
  if landmarks.shape != (len(LANDMARKS), 3):
    raise ValueError(f'example_joints3d must be ({len(LANDMARKS)}, 3), got {landmarks.shape}')
  finite = np.all(np.isfinite(landmarks), axis=1)
  safe = np.where(finite[:, None], landmarks, 0.0)
  points = combinations.apply(compiled.weights, safe)
  used = np.abs(compiled.weights) > 0
  valid = ~np.any(used & ~finite[None, :], axis=1)
  for f, frame in enumerate(FRAME_NAMES):
    rows = compiled.frames == f
    if not rows.any():
      continue
    needed = [LANDMARKS.index(n) for n in FRAMES[frame]]
    if not finite[needed].all():
      valid &= ~rows
      continue
    points[rows] += compiled.offsets_mm[rows] @ body_frame(safe, frame).T
  valid &= np.all(np.isfinite(points), axis=1)
  return np.where(valid[:, None], points, 0.0), valid
