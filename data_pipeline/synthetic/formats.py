"""Each skeleton format's keypoints as its own combination of body landmarks.

A keypoint is an affine combination of landmark positions (weights summing to 1), so a format is a (K, L)
matrix applied to the landmarks, in 3D, before projection. Formats disagree the way real datasets do:

- coco / ochuman / coco_wholebody body: joints at the joint centres, eyes/ears/nose on the face;
- aic: shoulders a little higher and wider (acromion), hips clearly higher and wider (iliac crest), head top
  slightly behind the crown, neck low on the neck;
- mpii: hips a little lower and wider, pelvis, thorax, upper neck and head top on the midline;
- crowdpose: shoulders a little higher, hips a little higher, 'head' in front of the crown, neck mid-way;
- halpe: 'head' below the crown, 'neck' between thorax and neck base, 'hip' above the pelvis centre,
  hand roots on the palm, jaw contour wider;
- coco_wholebody: 6 foot points, 68 face points, 21 points per hand on the fingers;
- ap10k vs apt36k: neck at the base vs along the neck, tail root at the root vs on the tail, shoulders and
  hips at the joints vs toward the back, paws on the pad vs toward the toes.

Keypoint names and order come from the `posebh_jax.skeletons` registry; definitions here are keyed by name.
"""

from __future__ import annotations

import functools

import numpy as np

from data_pipeline.synthetic import body as body_lib
from posebh_jax.geometry import combinations
from posebh_jax.skeletons import get_format

FORMATS_BY_CATEGORY = {
  'human': ('coco', 'aic', 'mpii', 'coco_wholebody', 'ochuman', 'crowdpose', 'halpe'),
  'animal': ('ap10k', 'apt36k'),
}
CATEGORY_OF_FORMAT = {f: c for c, fs in FORMATS_BY_CATEGORY.items() for f in fs}
# Formats defined on the landmarks but never annotated by the generator (so adding one changes no generated
# example): their keypoints are derived from an example's stored 3D joints when needed, e.g. SMPL-24 for the
# domain-transfer demo (data_pipeline/derived.py).
DERIVED_FORMATS = {'smpl24': 'human'}
LANDMARKS_BY_CATEGORY = {'human': body_lib.BIPED_LANDMARKS, 'animal': body_lib.QUADRUPED_LANDMARKS}


# ------------------------------------------------------------------------------------------------ combinators
# The generic combination algebra lives in posebh_jax.geometry.combinations; short names keep the tables below
# readable.
_at = combinations.at
_lerp = combinations.lerp
_vec = combinations.vector
_scale = combinations.scale
_sum = combinations.add


def _head_point(p, q, s):
  """Point (p, q, s) of the normalised head ellipsoid as a combination of the head landmarks.

  Basis: X = (left_ear - right_ear) / 2, Y = head_top - head_centre, Z = nose - head_centre, whose normalised
  coordinates are fixed by `body.EAR_PQS` / `body.NOSE_PQS`; solving p = u X_p, q = v + w Z_q, s = w Z_s.
  """
  ear_p = body_lib.EAR_PQS[0]
  nose_q, nose_s = body_lib.NOSE_PQS[1], body_lib.NOSE_PQS[2]
  u = p / ear_p
  w = s / nose_s
  v = q - w * nose_q
  return {'head_centre': 1.0 - v - w, 'head_top': v, 'nose': w, 'left_ear': 0.5 * u, 'right_ear': -0.5 * u}


def _other(side):
  return 'right' if side == 'left' else 'left'


# ------------------------------------------------------------------------------------------------ human
def _coco_body():
  defs = {n: (_at(n), n) for n in ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear')}
  for side in ('left', 'right'):
    for j in ('shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle'):
      defs[f'{side}_{j}'] = (_at(f'{side}_{j}'), f'{side}_{j}')
  return defs


def _face(jaw_scale=1.0):
  defs = {}
  for i, (p, q, s) in enumerate(body_lib.FACE68_TEMPLATE):
    if i <= 16 and jaw_scale != 1.0:
      p, q = p * jaw_scale, q * (1.0 + 0.5 * (jaw_scale - 1.0))
      s = float(np.sqrt(max(1.0 - p * p - q * q, 0.0)))
    defs[f'face-{i}'] = (_head_point(p, q, s), 'nose' if i > 16 else 'chin')
  return defs


_WB_FINGER = {
  'thumb': 'thumb',
  'forefinger': 'index',
  'middle_finger': 'middle',
  'ring_finger': 'ring',
  'pinky_finger': 'pinky',
}


def _hands(root_on_palm=0.0):
  defs = {}
  for side in ('left', 'right'):
    wrist = f'{side}_wrist'
    root = _lerp(wrist, f'{side}_middle_mcp', root_on_palm) if root_on_palm else _at(wrist)
    defs[f'{side}_hand_root'] = (root, wrist)
    for wb, ours in _WB_FINGER.items():
      joints = body_lib.FINGER_JOINTS[ours]
      for k, j in enumerate(joints):
        lm = f'{side}_{ours}_{j}'
        defs[f'{side}_{wb}{k + 1}'] = (_at(lm), lm)
  return defs


def _feet():
  defs = {}
  for side in ('left', 'right'):
    for n in ('big_toe', 'small_toe', 'heel'):
      defs[f'{side}_{n}'] = (_at(f'{side}_{n}'), f'{side}_{n}')
  return defs


def _human_defs():
  coco = _coco_body()
  up = _vec('thorax', 'neck_base')  # ~4.5 cm up along the upper torso
  lower_up = _vec('pelvis', 'spine')  # ~14 cm up along the lower torso

  aic = {}
  for side in ('left', 'right'):
    o = _other(side)
    aic[f'{side}_shoulder'] = (
      _sum(_at(f'{side}_shoulder'), _scale(_vec(f'{o}_shoulder', f'{side}_shoulder'), 0.08), _scale(up, 0.45)),
      f'{side}_shoulder',
    )
    aic[f'{side}_hip'] = (
      _sum(_at(f'{side}_hip'), _scale(_vec(f'{o}_hip', f'{side}_hip'), 0.22), _scale(lower_up, 0.32)),
      f'{side}_hip',
    )
    for j in ('elbow', 'wrist', 'knee', 'ankle'):
      aic[f'{side}_{j}'] = coco[f'{side}_{j}']
  aic['head_top'] = (_head_point(0.0, 0.97, -0.24), 'head_top')
  aic['neck'] = (_lerp('neck_base', 'upper_neck', 0.2), 'neck_base')

  mpii = {}
  for side in ('left', 'right'):
    o = _other(side)
    mpii[f'{side}_hip'] = (
      _sum(_at(f'{side}_hip'), _scale(_vec(f'{o}_hip', f'{side}_hip'), 0.1), _scale(lower_up, -0.1)),
      f'{side}_hip',
    )
    for j in ('shoulder', 'elbow', 'wrist', 'knee', 'ankle'):
      mpii[f'{side}_{j}'] = coco[f'{side}_{j}']
  for n in ('pelvis', 'thorax', 'upper_neck', 'head_top'):
    mpii[n] = (_at(n), n)

  crowd = {}
  for side in ('left', 'right'):
    crowd[f'{side}_shoulder'] = (_sum(_at(f'{side}_shoulder'), _scale(up, 0.3)), f'{side}_shoulder')
    crowd[f'{side}_hip'] = (_sum(_at(f'{side}_hip'), _scale(lower_up, 0.12)), f'{side}_hip')
    for j in ('elbow', 'wrist', 'knee', 'ankle'):
      crowd[f'{side}_{j}'] = coco[f'{side}_{j}']
  crowd['head'] = (_head_point(0.0, 0.95, 0.31), 'head_top')
  crowd['neck'] = (_lerp('neck_base', 'upper_neck', 0.55), 'neck_base')

  halpe = dict(coco)
  halpe['head'] = (_head_point(0.0, 0.88, 0.1), 'head_top')
  halpe['neck'] = (_lerp('thorax', 'neck_base', 0.5), 'thorax')
  halpe['hip'] = (_sum(_at('pelvis'), _scale(lower_up, 0.15)), 'pelvis')
  halpe.update(_feet())
  halpe.update(_face(jaw_scale=1.06))
  halpe.update(_hands(root_on_palm=0.2))

  wholebody = dict(coco)
  wholebody.update(_feet())
  wholebody.update(_face())
  wholebody.update(_hands())
  return {
    'coco': coco,
    'ochuman': dict(coco),
    'aic': aic,
    'mpii': mpii,
    'crowdpose': crowd,
    'halpe': halpe,
    'coco_wholebody': wholebody,
  }


def _smpl24_defs():
  """SMPL's 24 joints the way a fitted body model places them: inside the body, not on its surface. The root
  sits low in the pelvis with the hip joints a little lower and narrower than the anatomical ones, three spine
  joints along the torso, collars between the neck base and the shoulders, 'head' at the skull base, 'foot' at
  the ball of the foot and 'hand' near the knuckles."""
  lower_up = _vec('pelvis', 'spine')
  defs = {
    'pelvis': (_sum(_at('pelvis'), _scale(lower_up, -0.12)), 'pelvis'),
    'spine1': (_lerp('pelvis', 'spine', 0.55), 'spine'),
    'spine2': (_lerp('spine', 'thorax', 0.3), 'spine'),
    'spine3': (_lerp('spine', 'thorax', 0.8), 'thorax'),
    'neck': (_lerp('neck_base', 'upper_neck', 0.3), 'neck_base'),
    'head': (_lerp('upper_neck', 'head_centre', 0.55), 'head_centre'),
  }
  for side in ('left', 'right'):
    o = _other(side)
    defs[f'{side}_hip'] = (
      _sum(_at(f'{side}_hip'), _scale(_vec(f'{o}_hip', f'{side}_hip'), -0.06), _scale(lower_up, -0.12)),
      f'{side}_hip',
    )
    for j in ('knee', 'ankle', 'shoulder', 'elbow', 'wrist'):
      defs[f'{side}_{j}'] = (_at(f'{side}_{j}'), f'{side}_{j}')
    defs[f'{side}_foot'] = (
      _sum(
        _scale(_at(f'{side}_big_toe'), 0.35), _scale(_at(f'{side}_small_toe'), 0.35), _scale(_at(f'{side}_ankle'), 0.3)
      ),
      f'{side}_big_toe',
    )
    defs[f'{side}_collar'] = (_lerp('neck_base', f'{side}_shoulder', 0.4), 'neck_base')
    defs[f'{side}_hand'] = (_lerp(f'{side}_wrist', f'{side}_middle_mcp', 0.8), f'{side}_wrist')
  return defs


# ------------------------------------------------------------------------------------------------ animal
def _animal_defs():
  ap = {n: (_at(n), n) for n in ('left_eye', 'right_eye', 'nose')}
  apt = dict(ap)
  ap['neck'] = (_at('neck_base'), 'neck_base')
  ap['root_of_tail'] = (_at('tail_root'), 'tail_root')
  apt['neck'] = (_lerp('neck_base', 'head_base', 0.35), 'neck_mid')
  apt['root_of_tail'] = (_lerp('tail_root', 'tail_mid', 0.15), 'tail_root')
  for side in ('left', 'right'):
    for ours, theirs in (
      ('shoulder', 'shoulder'),
      ('elbow', 'elbow'),
      ('front_paw', 'front_paw'),
      ('hip', 'hip'),
      ('knee', 'knee'),
      ('back_paw', 'back_paw'),
    ):
      ap[f'{side}_{theirs}'] = (_at(f'{side}_{ours}'), f'{side}_{ours}')
    apt[f'{side}_elbow'] = ap[f'{side}_elbow']
    apt[f'{side}_knee'] = ap[f'{side}_knee']
    apt[f'{side}_shoulder'] = (_lerp(f'{side}_shoulder', 'withers', 0.15), f'{side}_shoulder')
    apt[f'{side}_hip'] = (_lerp(f'{side}_hip', 'tail_root', 0.15), f'{side}_hip')
    apt[f'{side}_front_paw'] = (_lerp(f'{side}_front_paw', f'{side}_front_paw_tip', 0.6), f'{side}_front_paw')
    apt[f'{side}_back_paw'] = (_lerp(f'{side}_back_paw', f'{side}_back_paw_tip', 0.6), f'{side}_back_paw')
  return {'ap10k': ap, 'apt36k': apt}


_DEFINITIONS = {**_human_defs(), **_animal_defs(), 'smpl24': _smpl24_defs()}


# ------------------------------------------------------------------------------------------------ compiled
class FormatProjection:
  """A format compiled against the landmark list of its category.

  Attributes:
    name, category: the format and 'human' | 'animal'.
    keypoint_names: K names in the registry's order.
    weights: float64 (K, L) affine weights over the category's landmarks.
    anchors: int (K,) landmark row whose own parts / limb radius decide the keypoint's occlusion.
    exact_landmark: int (K,) landmark row when the keypoint is exactly that landmark, else -1.
    links: (i, j) keypoint index pairs, for drawing.
  """

  def __init__(self, name: str):
    fmt = get_format(name)  # the registry owns names and order
    self.name = name
    self.category = CATEGORY_OF_FORMAT.get(name) or DERIVED_FORMATS[name]
    defs = _DEFINITIONS[name]
    missing = [n for n in fmt.keypoint_names if n not in defs]
    if missing:
      raise ValueError(
        f'synthetic format {name!r} does not define keypoints {missing[:5]} of the registry; '
        'update data_pipeline/synthetic/formats.py'
      )
    lms = LANDMARKS_BY_CATEGORY[self.category]
    row = {n: i for i, n in enumerate(lms)}
    self.keypoint_names = tuple(fmt.keypoint_names)
    self.weights = combinations.combination_matrix([defs[kp][0] for kp in self.keypoint_names], lms)
    self.anchors = np.array([row[defs[kp][1]] for kp in self.keypoint_names], dtype=np.int64)
    self.exact_landmark = combinations.exact_landmarks(self.weights)
    self.links = tuple(fmt.links)

  def points3d(self, landmarks: np.ndarray) -> np.ndarray:
    """(L, 3) landmarks of this format's category -> (K, 3) keypoint positions (same frame and units)."""
    return combinations.apply(self.weights, landmarks)


@functools.lru_cache(maxsize=None)
def compiled_format(name: str) -> FormatProjection:
  """The `FormatProjection` of a synthetic format (annotated or DERIVED_FORMATS); raises ValueError for names
  the generator does not define."""
  if name not in CATEGORY_OF_FORMAT and name not in DERIVED_FORMATS:
    known = ', '.join([f for fs in FORMATS_BY_CATEGORY.values() for f in fs] + list(DERIVED_FORMATS))
    raise ValueError(f'the synthetic generator has no format {name!r}; use one of: {known}')
  return FormatProjection(name)


def keypoints_3d(format_name: str, joints3d: np.ndarray) -> np.ndarray:
  """3D keypoints (K, 3) of `format_name` from an example's 'joints3d' (len(LANDMARK_NAMES), 3), same units.

  For animal formats only the first len(QUADRUPED_LANDMARKS) rows of joints3d are used.
  """
  fp = compiled_format(format_name)
  return fp.points3d(np.asarray(joints3d, dtype=np.float64)[: fp.weights.shape[1]])
