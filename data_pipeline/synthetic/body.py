"""3D kinematic bodies of the synthetic benchmark: a biped (human formats) and a quadruped (animal formats).

A body is sampled from a numpy Generator and a nuisance `level` in [0, 1] (the generator passes difficulty^2): random proportions, joint angles within anatomical limits, clothing /
fur colours. It is returned in its own frame (metres; x = the subject's left, y = up, z = the way it faces) as

- `landmarks`: float64 (L, 3), the named body points the keypoint formats are built from
  (`BIPED_LANDMARKS` / `QUADRUPED_LANDMARKS`);
- `parts`: the solid primitives the renderer draws (capsules = tapered cylinders with round ends, ellipsoids,
  thin sticks for fingers), each with a colour and a name;
- per landmark: the parts it lies inside ("own" parts, which cannot hide it) and the limb radius around it,
  which the occlusion test uses.

Face landmarks of the 68-point layout are fixed points of a unit-sphere template (`FACE68_TEMPLATE`) scaled by the
head ellipsoid's semi-axes, so that formats can express them as linear combinations of the head landmarks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CAPSULE, ELLIPSOID, STICK = 0, 1, 2
SIDES = (('left', 1.0), ('right', -1.0))

# Head landmarks in normalised head-ellipsoid coordinates (p: toward the subject's left, q: up, s: forward), in
# units of the semi-axes (ax, ay, az). Points with p^2 + q^2 + s^2 = 1 lie on the head's surface.
NOSE_PQS = (0.0, -0.12, 1.16)
EYE_PQS = (0.36, 0.12, math.sqrt(1.0 - 0.36**2 - 0.12**2))
EAR_PQS = (0.97, -0.02, -0.24)
HEAD_TOP_PQS = (0.0, 1.0, 0.0)
UPPER_NECK_PQS = (0.0, -0.62, -0.25)
_FINGERS = ('thumb', 'index', 'middle', 'ring', 'pinky')
FINGER_JOINTS = {'thumb': ('cmc', 'mcp', 'ip', 'tip')}
for _f in _FINGERS[1:]:
  FINGER_JOINTS[_f] = ('mcp', 'pip', 'dip', 'tip')
FINGER_LANDMARKS = tuple(f'{f}_{j}' for f in _FINGERS for j in FINGER_JOINTS[f])

_BIPED_CENTRE = ('pelvis', 'spine', 'thorax', 'neck_base', 'upper_neck', 'head_centre', 'head_top', 'chin', 'nose')
_BIPED_SIDE = (
  'eye',
  'ear',
  'shoulder',
  'elbow',
  'wrist',
  'hip',
  'knee',
  'ankle',
  'heel',
  'big_toe',
  'small_toe',
) + FINGER_LANDMARKS
BIPED_LANDMARKS = _BIPED_CENTRE + tuple(f'{s}_{n}' for s, _ in SIDES for n in _BIPED_SIDE)

_QUAD_CENTRE = (
  'nose',
  'head_centre',
  'head_top',
  'head_base',
  'neck_mid',
  'neck_base',
  'withers',
  'spine_mid',
  'tail_root',
  'tail_mid',
  'tail_tip',
)
_QUAD_SIDE = (
  'eye',
  'ear',
  'shoulder',
  'elbow',
  'front_wrist',
  'front_paw',
  'front_paw_tip',
  'hip',
  'knee',
  'hock',
  'back_paw',
  'back_paw_tip',
)
QUADRUPED_LANDMARKS = _QUAD_CENTRE + tuple(f'{s}_{n}' for s, _ in SIDES for n in _QUAD_SIDE)


def _face68_template() -> np.ndarray:
  """(68, 3) normalised (p, q, s) head coordinates of the iBUG 68-point face layout.

  Point 0 is on the subject's right (the image left of a frontal face), as in 300-W / COCO-WholeBody.
  """
  pts = []

  def on_surface(p, q, bump=0.0):
    pts.append((p, q, math.sqrt(max(1.0 - p * p - q * q, 0.0)) + bump))

  for i in range(17):  # jaw, ear to ear under the chin
    phi = math.pi * i / 16
    on_surface(-0.93 * math.cos(phi), 0.05 - 0.90 * math.sin(phi))
  for side in (-1, 1):  # brows: right brow outer->inner (17-21), left brow inner->outer (22-26)
    ts = np.linspace(0, 1, 5)
    for t in ts if side < 0 else ts[::-1]:
      p = side * (0.62 - 0.48 * t)
      on_surface(p, 0.36 + 0.06 * math.sin(math.pi * (1 - t) * 0.9 + 0.2), 0.02)
  nose_q = (0.22, 0.10, -0.02)
  for q, bump in zip(nose_q, (0.02, 0.05, 0.09)):  # bridge 27-29, then 30 = nose tip
    on_surface(0.0, q, bump)
  pts.append(NOSE_PQS)
  for p, q, bump in zip(
    (-0.16, -0.08, 0.0, 0.08, 0.16), (-0.2, -0.22, -0.23, -0.22, -0.2), (0.02, 0.05, 0.06, 0.05, 0.02)
  ):  # nostrils 31-35
    on_surface(p, q, bump)
  ep, eq = EYE_PQS[0], EYE_PQS[1]
  eye_offsets = ((-0.13, 0.0), (-0.05, 0.05), (0.05, 0.05), (0.13, 0.0), (0.05, -0.045), (-0.05, -0.045))
  for dp, dq in eye_offsets:  # right eye 36-41: outer corner, upper lid, inner corner, lower lid
    on_surface(-ep + dp, eq + dq, 0.01)
  for dp, dq in eye_offsets:  # left eye 42-47: inner corner, upper lid, outer corner, lower lid
    on_surface(ep + dp, eq + dq, 0.01)
  mq = -0.5
  outer = (
    (-0.3, 0.0),
    (-0.19, 0.06),
    (-0.08, 0.09),
    (0.0, 0.075),
    (0.08, 0.09),
    (0.19, 0.06),
    (0.3, 0.0),
    (0.19, -0.08),
    (0.08, -0.11),
    (0.0, -0.115),
    (-0.08, -0.11),
    (-0.19, -0.08),
  )
  inner = (
    (-0.24, 0.0),
    (-0.08, 0.03),
    (0.0, 0.03),
    (0.08, 0.03),
    (0.24, 0.0),
    (0.08, -0.03),
    (0.0, -0.03),
    (-0.08, -0.03),
  )
  for p, dq in outer + inner:
    on_surface(p, mq + dq, 0.03)
  out = np.asarray(pts, dtype=np.float64)
  assert out.shape == (68, 3)
  return out


FACE68_TEMPLATE = _face68_template()
CHIN_PQS = tuple(FACE68_TEMPLATE[8])


# ------------------------------------------------------------------------------------------------ rotations
def rot_x(a: float) -> np.ndarray:
  """3x3 rotation by `a` radians about x."""
  c, s = math.cos(a), math.sin(a)
  return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
  """3x3 rotation by `a` radians about y."""
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
  """3x3 rotation by `a` radians about z."""
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _deg(x):
  return x * (math.pi / 180.0)


# ------------------------------------------------------------------------------------------------ data types
@dataclasses.dataclass
class Part:
  """One drawable solid. Capsule/stick: segment p0-p1 with radii r0, r1. Ellipsoid: centre p0, rotation
  `rot` (columns = its axes), semi-axes `axes`. Units: metres. `depth_bias` (m) is added to the painter's
  sort key (positive = drawn earlier), so that limbs win ties against the torso they attach to."""

  name: str
  kind: int
  p0: np.ndarray
  colour: tuple
  p1: np.ndarray | None = None
  r0: float = 0.0
  r1: float = 0.0
  rot: np.ndarray | None = None
  axes: np.ndarray | None = None
  depth_bias: float = 0.0
  layers: int = 3


@dataclasses.dataclass
class Body:
  """A posed body in its own frame (metres). See the module docstring."""

  category: str
  landmark_names: tuple
  landmarks: np.ndarray  # (L, 3)
  parts: list  # [Part]
  own_parts: dict  # landmark name -> tuple of part names that cannot occlude it
  landmark_radius: np.ndarray  # (L,) limb radius around the landmark (m)
  head_part: str  # name of the head ellipsoid (face drawing, normal tests)
  style: dict  # colours and flags for details (eyes, mouth, ...)

  def index(self, name: str) -> int:
    """Row of landmark `name` in `landmarks`."""
    return self.landmark_names.index(name)

  def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> 'Body':
    """Returns the body moved by x -> rotation @ x + translation (e.g. into the camera frame)."""

    def tf(p):
      return None if p is None else rotation @ p + translation

    parts = [
      dataclasses.replace(p, p0=tf(p.p0), p1=tf(p.p1), rot=None if p.rot is None else rotation @ p.rot)
      for p in self.parts
    ]
    return dataclasses.replace(self, landmarks=self.landmarks @ rotation.T + translation, parts=parts)


# ------------------------------------------------------------------------------------------------ colours
_SKIN_TONES = np.array(
  [(255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 90), (150, 96, 62), (105, 68, 45), (80, 52, 36)],
  dtype=np.float64,
)
_HAIR = np.array(
  [(25, 20, 18), (60, 40, 28), (110, 70, 40), (170, 130, 80), (220, 190, 130), (140, 140, 140), (150, 50, 30)],
  dtype=np.float64,
)
_FUR = np.array(
  [
    (120, 80, 45),
    (170, 120, 70),
    (200, 160, 110),
    (90, 90, 90),
    (150, 150, 150),
    (40, 35, 30),
    (230, 225, 215),
    (205, 110, 40),
    (95, 60, 35),
    (180, 170, 140),
  ],
  dtype=np.float64,
)


def random_colour(rng: np.random.Generator, sat=(0.25, 0.9), val=(0.25, 0.95)) -> np.ndarray:
  """A random RGB colour (float64 (3,), 0..255) from uniform hue and the given saturation/value ranges."""
  h = rng.uniform(0, 6)
  s = rng.uniform(*sat)
  v = rng.uniform(*val) * 255.0
  i = int(h) % 6
  f = h - int(h)
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _jitter(rng, colour, amount=12.0):
  return np.clip(colour + rng.normal(0, amount, 3), 0, 255)


def _side_tint(colour, side_sign, amount):
  """Left side a little lighter, right a little darker: a consistent but subtle left/right cue."""
  return tuple(np.clip(colour * (1.0 + side_sign * amount), 0, 255))


# ------------------------------------------------------------------------------------------------ biped
def _biped_pose(rng: np.random.Generator, level: float) -> dict:
  """Joint angles (radians) of one biped pose, mixed from a few pose families; wider with level."""
  ext = 0.6 + 0.8 * level
  p_active = 0.04 + 0.46 * level * level  # 7% at difficulty 0.5 (level 0.25), 50% at 1
  calm = np.array([0.4, 0.4, 0.0, 0.2]) * (1.0 - p_active)
  mode = ('stand', 'walk', 'active', 'crouch')[rng.choice(4, p=calm + np.array([0.0, 0.0, p_active, 0.0]))]
  a = {}
  a['spine_fwd'] = np.clip(rng.normal(4, 8 * ext), -25, 60)
  a['spine_lat'] = np.clip(rng.normal(0, 5 * ext), -25, 25)
  a['spine_twist'] = np.clip(rng.normal(0, 10 * ext), -40, 40)
  a['head_pitch'] = np.clip(rng.normal(0, 12 * ext), -40, 45)
  a['head_yaw'] = np.clip(rng.normal(0, 25 * ext), -75, 75)
  a['head_roll'] = np.clip(rng.normal(0, 7 * ext), -30, 30)
  swing = rng.uniform(10, 35) * rng.choice([-1, 1])
  for side, s in SIDES:
    if mode == 'stand':
      sh_flex, sh_abd, elbow = rng.normal(5, 15), rng.uniform(4, 25), rng.uniform(5, 45)
      hip_flex, hip_abd, knee = rng.normal(0, 6), rng.uniform(0, 12), rng.uniform(0, 15)
    elif mode == 'walk':
      sign = s
      sh_flex, sh_abd, elbow = -sign * swing * 1.2 + rng.normal(0, 8), rng.uniform(4, 15), rng.uniform(10, 60)
      hip_flex = sign * swing + rng.normal(0, 5)
      hip_abd = rng.uniform(0, 8)
      knee = rng.uniform(5, 25) if hip_flex > 0 else rng.uniform(5, 70)
    elif mode == 'crouch':
      sh_flex, sh_abd, elbow = rng.uniform(-10, 90), rng.uniform(5, 40), rng.uniform(20, 120)
      hip_flex, hip_abd, knee = rng.uniform(50, 110), rng.uniform(5, 35), rng.uniform(60, 140)
    else:
      sh_flex, sh_abd, elbow = rng.uniform(-40, 170), rng.uniform(-5, 150), rng.uniform(0, 145)
      hip_flex, hip_abd, knee = rng.uniform(-25, 105), rng.uniform(-10, 45), rng.uniform(0, 140)
    a[f'{side}_sh_flex'] = sh_flex
    a[f'{side}_sh_abd'] = sh_abd
    a[f'{side}_sh_twist'] = np.clip(rng.normal(0, 25 * ext), -60, 70)
    a[f'{side}_elbow'] = np.clip(elbow, 0, 145)
    a[f'{side}_pronation'] = rng.uniform(-30, 90)
    a[f'{side}_wrist_flex'] = np.clip(rng.normal(0, 18 * ext), -60, 70)
    a[f'{side}_wrist_dev'] = np.clip(rng.normal(0, 8), -20, 25)
    a[f'{side}_curl'] = rng.uniform(0, 1) ** 1.3
    a[f'{side}_hip_flex'] = hip_flex
    a[f'{side}_hip_abd'] = hip_abd
    a[f'{side}_hip_twist'] = np.clip(rng.normal(5, 10 * ext), -30, 40)
    a[f'{side}_knee'] = np.clip(knee, 0, 145)
    a[f'{side}_ankle'] = np.clip(rng.normal(5, 10 * ext), -25, 40)
  if mode == 'crouch':
    a['spine_fwd'] = np.clip(a['spine_fwd'] + rng.uniform(10, 40), -25, 70)
  return {k: (_deg(v) if not k.endswith('curl') else v) for k, v in a.items()}


def _biped_own_parts() -> dict:
  own = {
    'pelvis': ('pelvis', 'abdomen', 'left_thigh', 'right_thigh'),
    'spine': ('abdomen', 'chest', 'pelvis'),
    'thorax': ('chest', 'shoulders', 'neck'),
    'neck_base': ('chest', 'shoulders', 'neck'),
    'upper_neck': ('neck', 'head', 'hair'),
    'head_centre': ('head', 'hair', 'neck', 'nose', 'left_ear', 'right_ear'),
    'head_top': ('head', 'hair'),
    'chin': ('head', 'hair', 'neck'),
    'nose': ('head', 'hair', 'nose'),
  }
  for side, _ in SIDES:
    sp = lambda *names: tuple(f'{side}_{n}' for n in names)  # noqa: E731
    own[f'{side}_eye'] = ('head', 'hair', 'nose')
    own[f'{side}_ear'] = ('head', 'hair', f'{side}_ear')
    own[f'{side}_shoulder'] = ('chest', 'shoulders') + sp('upper_arm')
    own[f'{side}_elbow'] = sp('upper_arm', 'forearm')
    own[f'{side}_wrist'] = sp('forearm', 'palm', 'thumb_0')
    own[f'{side}_hip'] = ('pelvis', 'abdomen') + sp('thigh')
    own[f'{side}_knee'] = sp('thigh', 'shank')
    own[f'{side}_ankle'] = sp('shank', 'foot')
    for n in ('heel', 'big_toe', 'small_toe'):
      own[f'{side}_{n}'] = sp('foot', 'shank')
    for f in _FINGERS:
      joints = FINGER_JOINTS[f]
      own[f'{side}_{f}_{joints[0]}'] = sp('palm', f'{f}_0', 'forearm')
      own[f'{side}_{f}_{joints[1]}'] = sp('palm', f'{f}_0', f'{f}_1')
      own[f'{side}_{f}_{joints[2]}'] = sp(f'{f}_1', f'{f}_2')
      own[f'{side}_{f}_{joints[3]}'] = sp(f'{f}_2')
  return own


_BIPED_OWN = _biped_own_parts()


def sample_biped(rng: np.random.Generator, level: float) -> Body:
  """Samples a posed human-like biped (proportions, pose, clothing) in its own frame; see `Body`."""
  ang = _biped_pose(rng, level)
  h = rng.uniform(0.85, 1.1)

  def seg(x):
    return x * h * rng.normal(1.0, 0.05)

  width = rng.uniform(0.9, 1.3)
  limb_w = rng.uniform(0.95, 1.3)
  l_low, l_up, l_neck = seg(0.14), seg(0.22), seg(0.09)
  sh_half, hip_half = seg(0.18) * (0.9 + 0.1 * width), seg(0.088) * (0.9 + 0.15 * width)
  l_ua, l_fa, l_th, l_sh = seg(0.29), seg(0.26), seg(0.45), seg(0.44)
  palm_len, palm_w = seg(0.09), seg(0.082)
  ankle_h, heel_back, foot_len = seg(0.065), seg(0.05), seg(0.16)
  ax, ay, az = h * 0.078 * rng.normal(1, 0.05), h * 0.108 * rng.normal(1, 0.04), h * 0.098 * rng.normal(1, 0.04)

  lm = {}
  parts = []
  radius = {}
  lm['pelvis'] = np.zeros(3)
  r_sp = rot_x(0.5 * ang['spine_fwd']) @ rot_z(0.5 * ang['spine_lat']) @ rot_y(0.5 * ang['spine_twist'])
  lm['spine'] = r_sp @ np.array([0.0, l_low, -0.01 * h])
  r_ch = r_sp @ rot_x(0.5 * ang['spine_fwd']) @ rot_z(0.5 * ang['spine_lat']) @ rot_y(0.5 * ang['spine_twist'])
  lm['thorax'] = lm['spine'] + r_ch @ np.array([0.0, l_up, 0.0])
  lm['neck_base'] = lm['thorax'] + r_ch @ np.array([0.0, 0.045 * h, -0.015 * h])
  neck_tilt = _deg(12)
  r_nk = (
    r_ch @ rot_x(neck_tilt + 0.4 * ang['head_pitch']) @ rot_y(0.4 * ang['head_yaw']) @ rot_z(0.4 * ang['head_roll'])
  )
  lm['upper_neck'] = lm['neck_base'] + r_nk @ np.array([0.0, l_neck, 0.0])
  r_hd = (
    r_nk @ rot_x(-neck_tilt + 0.6 * ang['head_pitch']) @ rot_y(0.6 * ang['head_yaw']) @ rot_z(0.6 * ang['head_roll'])
  )
  head_scale = np.array([ax, ay, az])

  def head_point(pqs):
    return lm['head_centre'] + r_hd @ (np.asarray(pqs) * head_scale)

  lm['head_centre'] = lm['upper_neck'] - r_hd @ (np.asarray(UPPER_NECK_PQS) * head_scale)
  lm['head_top'] = head_point(HEAD_TOP_PQS)
  lm['chin'] = head_point(CHIN_PQS)
  lm['nose'] = head_point(NOSE_PQS)
  for side, s in SIDES:
    lm[f'{side}_eye'] = head_point((s * EYE_PQS[0], EYE_PQS[1], EYE_PQS[2]))
    lm[f'{side}_ear'] = head_point((s * EAR_PQS[0], EAR_PQS[1], EAR_PQS[2]))

  # Clothing and skin.
  skin = _jitter(rng, _SKIN_TONES[rng.integers(len(_SKIN_TONES))], 10)
  shirt = random_colour(rng)
  pants = random_colour(rng, sat=(0.1, 0.7), val=(0.15, 0.8))
  if np.abs(shirt - pants).sum() < 90:  # keep upper and lower body apart
    pants = np.clip(255 - shirt * 0.8, 0, 255)
  shoes = random_colour(rng, sat=(0.0, 0.5), val=(0.1, 0.9))
  hair_col = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 10)
  long_sleeves = rng.random() < 0.5
  bare_arms = rng.random() < 0.12
  shorts = rng.random() < 0.35
  lr = (0.05 + 0.25 * (1.0 - level)) * rng.uniform(0.8, 1.0)
  style = dict(
    skin=skin,
    hair=hair_col,
    lip=np.clip(skin * np.array([0.85, 0.55, 0.55]), 0, 255),
    eye_white=np.array([235.0, 235, 230]),
    iris=random_colour(rng, sat=(0.3, 0.8), val=(0.15, 0.5)),
    brow=np.clip(hair_col * 0.8, 0, 255),
  )

  # Torso.
  parts.append(
    Part(
      'pelvis',
      ELLIPSOID,
      lm['pelvis'] + np.array([0.0, 0.04 * h, -0.01 * h]),
      tuple(pants),
      rot=np.eye(3),
      axes=np.array([hip_half + 0.065 * h * width, 0.10 * h, 0.095 * h * width]),
      depth_bias=0.03 * h,
    )
  )
  parts.append(
    Part(
      'abdomen',
      ELLIPSOID,
      lm['spine'],
      tuple(shirt),
      rot=r_sp,
      axes=np.array([0.13 * h * width, 0.12 * h, 0.095 * h * width]),
      depth_bias=0.03 * h,
    )
  )
  parts.append(
    Part(
      'chest',
      ELLIPSOID,
      0.5 * (lm['spine'] + lm['thorax']) + r_ch @ np.array([0, 0.0, -0.005]),
      tuple(shirt),
      rot=r_ch,
      axes=np.array([0.86 * sh_half, 0.5 * l_up + 0.035 * h, 0.105 * h * width]),
      depth_bias=0.03 * h,
    )
  )
  parts.append(
    Part(
      'neck',
      CAPSULE,
      lm['neck_base'] - r_nk @ np.array([0, 0.02 * h, 0]),
      tuple(skin * 0.93),
      p1=lm['upper_neck'],
      r0=0.05 * h,
      r1=0.045 * h,
      depth_bias=0.02 * h,
    )
  )
  parts.append(Part('head', ELLIPSOID, lm['head_centre'], tuple(skin), rot=r_hd, axes=head_scale))
  hair_kind = rng.choice(3, p=[0.15, 0.55, 0.3])  # bald, short, long
  if hair_kind > 0:
    off = np.array([0.0, 0.1, -0.12]) if hair_kind == 1 else np.array([0.0, -0.02, -0.2])
    grow = np.array([1.05, 0.98, 1.0]) if hair_kind == 1 else np.array([1.1, 1.12, 1.0])
    parts.append(Part('hair', ELLIPSOID, head_point(off), tuple(hair_col), rot=r_hd, axes=head_scale * grow, layers=2))
  nose_r = 0.11 * ax
  parts.append(
    Part(
      'nose',
      CAPSULE,
      head_point((0.0, 0.0, 0.8)),
      tuple(skin * 0.97),
      p1=head_point(NOSE_PQS) - r_hd @ np.array([0.0, 0.0, nose_r]),
      r0=nose_r * 0.9,
      r1=nose_r,
      layers=1,
    )
  )
  for side, s in SIDES:
    parts.append(
      Part(
        f'{side}_ear',
        ELLIPSOID,
        lm[f'{side}_ear'],
        tuple(skin * 0.9),
        rot=r_hd,
        axes=np.array([0.15, 0.3, 0.2]) * ay,
        layers=1,
      )
    )
  parts.append(
    Part(
      'shoulders',
      CAPSULE,
      lm['thorax'] + r_ch @ np.array([sh_half * 0.85, -0.01 * h, -0.02 * h]),
      tuple(shirt),
      p1=lm['thorax'] + r_ch @ np.array([-sh_half * 0.85, -0.01 * h, -0.02 * h]),
      r0=0.055 * h * limb_w,
      r1=0.055 * h * limb_w,
      depth_bias=0.025 * h,
    )
  )
  radius.update(
    pelvis=0.08 * h,
    spine=0.09 * h,
    thorax=0.09 * h,
    neck_base=0.045 * h,
    upper_neck=0.04 * h,
    head_centre=0.5 * az,
    head_top=0.0,
    chin=0.0,
    nose=0.0,
  )

  # Arms, hands and fingers.
  for side, s in SIDES:
    lm[f'{side}_shoulder'] = lm['thorax'] + r_ch @ np.array([s * sh_half, -0.01 * h, -0.025 * h])
    r_ua = (
      r_ch @ rot_z(s * ang[f'{side}_sh_abd']) @ rot_x(-ang[f'{side}_sh_flex']) @ rot_y(-s * ang[f'{side}_sh_twist'])
    )
    lm[f'{side}_elbow'] = lm[f'{side}_shoulder'] + r_ua @ np.array([0.0, -l_ua, 0.0])
    r_fa = r_ua @ rot_x(-ang[f'{side}_elbow'])
    lm[f'{side}_wrist'] = lm[f'{side}_elbow'] + r_fa @ np.array([0.0, -l_fa, 0.0])
    r_hand = (
      r_fa
      @ rot_y(-s * ang[f'{side}_pronation'])
      @ rot_z(-s * ang[f'{side}_wrist_flex'])
      @ rot_x(ang[f'{side}_wrist_dev'])
    )
    wrist = lm[f'{side}_wrist']
    d, t, n = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([-s, 0.0, 0.0])
    curl = ang[f'{side}_curl']
    finger_parts = []
    for fi, f in enumerate(_FINGERS):
      joints = FINGER_JOINTS[f]
      if f == 'thumb':
        base = wrist + r_hand @ (d * 0.2 * palm_len + t * 0.3 * palm_w + n * 0.012 * h)
        lens = (0.045, 0.032, 0.027)
        r_f = r_hand @ rot_x(-_deg(rng.uniform(30, 55))) @ rot_z(-s * _deg(10 + 35 * curl))
        flex = np.array([0.0, 25.0, 35.0]) * curl + rng.normal(0, 5, 3)
        rad = 0.0105
      else:
        offset = (0.38, 0.12, -0.13, -0.37)[fi - 1]
        base = wrist + r_hand @ (d * palm_len + t * offset * palm_w)
        lens = ((0.042, 0.025, 0.02), (0.046, 0.028, 0.021), (0.043, 0.027, 0.02), (0.034, 0.02, 0.018))[fi - 1]
        spread = (8.0, 0.0, -6.0, -14.0)[fi - 1] * rng.uniform(0.4, 1.5)
        r_f = r_hand @ rot_x(-_deg(spread))
        flex = np.array([75.0, 95.0, 60.0]) * np.clip(curl + rng.normal(0, 0.08), 0, 1) + rng.normal(0, 5, 3)
        rad = (0.0095, 0.0098, 0.0092, 0.0082)[fi - 1]
      p = base
      lm[f'{side}_{f}_{joints[0]}'] = p
      cum = 0.0
      for k in range(3):
        cum += _deg(flex[k])
        q = p + r_f @ rot_z(-s * cum) @ np.array([0.0, -lens[k] * h, 0.0])
        lm[f'{side}_{f}_{joints[k + 1]}'] = q
        finger_parts.append(Part(f'{side}_{f}_{k}', STICK, p, None, p1=q, r0=rad * h, r1=rad * h * 0.9, layers=1))
        p = q
      for j in joints:
        radius[f'{side}_{f}_{j}'] = rad * h
    sleeve = shirt if long_sleeves and not bare_arms else skin
    upper = skin if bare_arms else shirt
    parts.append(
      Part(
        f'{side}_upper_arm',
        CAPSULE,
        lm[f'{side}_shoulder'],
        _side_tint(upper, s, lr),
        p1=lm[f'{side}_elbow'],
        r0=0.048 * h * limb_w,
        r1=0.038 * h * limb_w,
      )
    )
    parts.append(
      Part(
        f'{side}_forearm',
        CAPSULE,
        lm[f'{side}_elbow'],
        _side_tint(sleeve, s, lr),
        p1=lm[f'{side}_wrist'],
        r0=0.037 * h * limb_w,
        r1=0.026 * h * limb_w,
      )
    )
    hand_col = _side_tint(skin, s, 0.5 * lr)
    parts.append(
      Part(
        f'{side}_palm',
        ELLIPSOID,
        wrist + r_hand @ (d * 0.55 * palm_len),
        hand_col,
        rot=r_hand,
        axes=np.array([0.016 * h, 0.55 * palm_len, 0.5 * palm_w]),
        layers=2,
      )
    )
    for fp in finger_parts:
      fp.colour = hand_col
    parts.extend(finger_parts)
    radius.update({f'{side}_shoulder': 0.048 * h, f'{side}_elbow': 0.038 * h, f'{side}_wrist': 0.026 * h})

  # Legs and feet.
  for side, s in SIDES:
    lm[f'{side}_hip'] = np.array([s * hip_half, 0.0, 0.0])
    r_th = rot_z(s * ang[f'{side}_hip_abd']) @ rot_x(-ang[f'{side}_hip_flex']) @ rot_y(-s * ang[f'{side}_hip_twist'])
    lm[f'{side}_knee'] = lm[f'{side}_hip'] + r_th @ np.array([0.0, -l_th, 0.0])
    r_sh = r_th @ rot_x(ang[f'{side}_knee'])
    lm[f'{side}_ankle'] = lm[f'{side}_knee'] + r_sh @ np.array([0.0, -l_sh, 0.0])
    r_ft = r_sh @ rot_x(-ang[f'{side}_ankle'])
    ankle = lm[f'{side}_ankle']
    # Foot points sit just inside the shoe's surface (heel back, tips of the big and small toe).
    lm[f'{side}_heel'] = ankle + r_ft @ np.array([0.0, -ankle_h + 0.008 * h, -heel_back])
    lm[f'{side}_big_toe'] = ankle + r_ft @ np.array([-s * 0.018 * h, -ankle_h + 0.006 * h, foot_len - 0.01 * h])
    lm[f'{side}_small_toe'] = ankle + r_ft @ np.array([s * 0.03 * h, -ankle_h + 0.008 * h, 0.8 * foot_len])
    shank_col = skin if shorts else pants
    parts.append(
      Part(
        f'{side}_thigh',
        CAPSULE,
        lm[f'{side}_hip'],
        _side_tint(pants, s, lr),
        p1=lm[f'{side}_knee'],
        r0=0.078 * h * limb_w,
        r1=0.052 * h * limb_w,
      )
    )
    parts.append(
      Part(
        f'{side}_shank',
        CAPSULE,
        lm[f'{side}_knee'],
        _side_tint(shank_col, s, lr),
        p1=ankle,
        r0=0.052 * h * limb_w,
        r1=0.036 * h * limb_w,
      )
    )
    foot_r0, foot_r1 = 0.03 * h, 0.034 * h
    heel_surface = ankle + r_ft @ np.array([0.0, -ankle_h, -heel_back])
    parts.append(
      Part(
        f'{side}_foot',
        CAPSULE,
        heel_surface + r_ft @ np.array([0.0, 0.7, 0.7]) * foot_r0,
        _side_tint(shoes, s, lr),
        p1=ankle + r_ft @ np.array([s * 0.008 * h, -ankle_h + foot_r1 * 0.8, foot_len - foot_r1]),
        r0=foot_r0,
        r1=foot_r1,
        layers=2,
      )
    )
    radius.update(
      {
        f'{side}_hip': 0.07 * h,
        f'{side}_knee': 0.052 * h,
        f'{side}_ankle': 0.036 * h,
        f'{side}_heel': 0.0,
        f'{side}_big_toe': 0.0,
        f'{side}_small_toe': 0.0,
        f'{side}_eye': 0.0,
        f'{side}_ear': 0.0,
      }
    )

  landmarks = np.stack([lm[n] for n in BIPED_LANDMARKS])
  rad = np.array([radius[n] for n in BIPED_LANDMARKS])
  return Body('human', BIPED_LANDMARKS, landmarks, parts, _BIPED_OWN, rad, 'head', style)


# ------------------------------------------------------------------------------------------------ quadruped
def _quad_own_parts() -> dict:
  own = {
    'nose': ('muzzle', 'head'),
    'head_centre': ('head', 'neck', 'muzzle', 'left_ear', 'right_ear'),
    'head_top': ('head', 'left_ear', 'right_ear'),
    'head_base': ('head', 'neck'),
    'neck_mid': ('neck',),
    'neck_base': ('neck', 'trunk_front'),
    'withers': ('trunk_front', 'neck'),
    'spine_mid': ('trunk_front', 'trunk_back'),
    'tail_root': ('trunk_back', 'tail_0'),
    'tail_mid': ('tail_0', 'tail_1'),
    'tail_tip': ('tail_1',),
  }
  for side, _ in SIDES:
    sp = lambda *names: tuple(f'{side}_{n}' for n in names)  # noqa: E731
    own[f'{side}_eye'] = ('head', 'muzzle')
    own[f'{side}_ear'] = ('head',) + sp('ear')
    own[f'{side}_shoulder'] = ('trunk_front',) + sp('front_upper')
    own[f'{side}_elbow'] = ('trunk_front',) + sp('front_upper', 'front_lower')
    own[f'{side}_front_wrist'] = sp('front_lower', 'front_cannon')
    own[f'{side}_front_paw'] = sp('front_cannon', 'front_paw')
    own[f'{side}_front_paw_tip'] = sp('front_paw', 'front_cannon')
    own[f'{side}_hip'] = ('trunk_back',) + sp('back_upper')
    own[f'{side}_knee'] = ('trunk_back',) + sp('back_upper', 'back_lower')
    own[f'{side}_hock'] = sp('back_lower', 'back_cannon')
    own[f'{side}_back_paw'] = sp('back_cannon', 'back_paw')
    own[f'{side}_back_paw_tip'] = sp('back_paw', 'back_cannon')
  return own


_QUAD_OWN = _quad_own_parts()


def sample_quadruped(rng: np.random.Generator, level: float) -> Body:
  """Samples a posed four-legged animal (proportions from cat-like to horse-like, gait, fur) in its own
  frame; see `Body`."""
  ext = 0.6 + 0.8 * level
  size = rng.uniform(0.5, 1.6)
  L = size * rng.uniform(0.85, 1.15)
  th, tw = size * rng.uniform(0.15, 0.24), size * rng.uniform(0.11, 0.18)
  leg = size * rng.uniform(0.5, 1.2)
  leg_w = size * rng.uniform(0.8, 1.3)
  neck_len = size * rng.uniform(0.22, 0.55)
  ah = size * rng.uniform(0.075, 0.11)
  hx, hy, hz = 0.85 * ah, 0.85 * ah, 1.1 * ah
  muzzle_len = size * rng.uniform(0.03, 0.2)
  tail_len = size * rng.uniform(0.15, 0.75)

  fur = _jitter(rng, _FUR[rng.integers(len(_FUR))], 12)
  if rng.random() < 0.15:
    fur = random_colour(rng, sat=(0.2, 0.6), val=(0.3, 0.9))
  belly = np.clip(fur * rng.uniform(0.8, 1.3), 0, 255)
  lr = (0.05 + 0.25 * (1.0 - level)) * rng.uniform(0.8, 1.0)
  style = dict(
    skin=fur, eye_white=np.array([40.0, 30, 20]), iris=np.array([15.0, 10, 5]), nose_tip=np.array([30.0, 25, 25])
  )

  lm, parts, radius = {}, [], {}
  pitch = _deg(np.clip(rng.normal(0, 4 * ext), -20, 25))
  r_tr = rot_x(-pitch)  # positive pitch lifts the front
  base_h = leg + 0.05 * size
  lm['withers'] = r_tr @ np.array([0.0, 0.85 * th, 0.42 * L]) + np.array([0, base_h, 0])
  lm['tail_root'] = r_tr @ np.array([0.0, 0.7 * th, -0.5 * L]) + np.array([0, base_h, 0])
  lm['spine_mid'] = r_tr @ np.array([0.0, 0.8 * th, 0.0]) + np.array([0, base_h, 0])
  lm['neck_base'] = r_tr @ np.array([0.0, 0.45 * th, 0.5 * L]) + np.array([0, base_h, 0])

  def trunk_point(v):
    return r_tr @ np.asarray(v) + np.array([0, base_h, 0])

  parts.append(
    Part(
      'trunk_front',
      ELLIPSOID,
      trunk_point([0, 0.05 * th, 0.2 * L]),
      tuple(fur),
      rot=r_tr,
      axes=np.array([tw, th, 0.36 * L]),
      depth_bias=0.04 * size,
    )
  )
  parts.append(
    Part(
      'trunk_back',
      ELLIPSOID,
      trunk_point([0, 0.02 * th, -0.22 * L]),
      tuple(fur * 0.96),
      rot=r_tr,
      axes=np.array([0.95 * tw, 0.93 * th, 0.34 * L]),
      depth_bias=0.04 * size,
    )
  )

  # Neck and head.
  neck_pitch = _deg(rng.uniform(10, 65))
  yaw = _deg(np.clip(rng.normal(0, 20 * ext), -60, 60))
  r_nk = r_tr @ rot_y(0.5 * yaw) @ rot_x(-neck_pitch)
  lm['head_base'] = lm['neck_base'] + r_nk @ np.array([0.0, 0.0, neck_len])
  lm['neck_mid'] = 0.5 * (lm['neck_base'] + lm['head_base'])
  head_pitch = _deg(np.clip(rng.normal(20, 18 * ext), -25, 70))
  r_hd = r_tr @ rot_y(yaw) @ rot_x(head_pitch) @ rot_z(_deg(np.clip(rng.normal(0, 7 * ext), -30, 30)))
  hs = np.array([hx, hy, hz])
  lm['head_centre'] = lm['head_base'] + r_hd @ (np.array([0.0, -0.45, 0.75]) * hs)

  def head_point(pqs):
    return lm['head_centre'] + r_hd @ (np.asarray(pqs) * hs)

  lm['head_top'] = head_point((0.0, 1.0, 0.0))
  lm['nose'] = head_point((0.0, -0.35, 1.0)) + r_hd @ np.array([0.0, 0.0, muzzle_len])
  parts.append(
    Part(
      'neck',
      CAPSULE,
      lm['neck_base'] - r_nk @ np.array([0, 0, 0.1 * neck_len]),
      tuple(fur),
      p1=lm['head_base'] + r_hd @ np.array([0, -0.3 * hy, 0.3 * hz]),
      r0=min(0.75 * th, 0.85 * tw) * rng.uniform(0.8, 1.0),
      r1=0.55 * hx,
      depth_bias=0.02 * size,
    )
  )
  parts.append(Part('head', ELLIPSOID, lm['head_centre'], tuple(fur), rot=r_hd, axes=hs))
  muzzle_r1 = 0.38 * hy
  parts.append(
    Part(
      'muzzle',
      CAPSULE,
      head_point((0.0, -0.3, 0.35)),
      tuple(np.clip(belly * 1.02, 0, 255)),
      p1=lm['nose'] - r_hd @ np.array([0.0, 0.0, muzzle_r1]),
      r0=0.6 * hy,
      r1=muzzle_r1,
      layers=2,
    )
  )
  ear_len = ah * rng.uniform(0.5, 1.3)
  floppy = rng.random() < 0.3
  for side, s in SIDES:
    lm[f'{side}_eye'] = head_point((s * 0.6, 0.3, math.sqrt(1 - 0.36 - 0.09)))
    lm[f'{side}_ear'] = head_point((s * 0.5, 0.78, -0.3))
    tip_dir = np.array([s * 0.5, -0.6, -0.1]) if floppy else np.array([s * 0.25, 1.0, -0.15])
    parts.append(
      Part(
        f'{side}_ear',
        CAPSULE,
        lm[f'{side}_ear'],
        _side_tint(fur * 0.85, s, lr),
        p1=lm[f'{side}_ear'] + r_hd @ (tip_dir / np.linalg.norm(tip_dir) * ear_len),
        r0=0.3 * hx,
        r1=0.08 * hx,
        layers=1,
      )
    )
    radius.update({f'{side}_eye': 0.0, f'{side}_ear': 0.0})

  # Tail.
  droop = _deg(rng.uniform(-20, 80))
  tail_yaw = _deg(rng.normal(0, 25 * ext))
  curl = _deg(rng.normal(0, 30 * ext))
  r_t1 = r_tr @ rot_y(tail_yaw) @ rot_x(-droop)  # rot_x(-a) tilts the -z direction downward for a > 0
  lm['tail_mid'] = lm['tail_root'] + r_t1 @ np.array([0.0, 0.0, -0.5 * tail_len])
  r_t2 = r_t1 @ rot_x(-curl)
  lm['tail_tip'] = lm['tail_mid'] + r_t2 @ np.array([0.0, 0.0, -0.5 * tail_len])
  tail_r = size * rng.uniform(0.025, 0.07)
  parts.append(
    Part(
      'tail_0', CAPSULE, lm['tail_root'], tuple(fur * 0.95), p1=lm['tail_mid'], r0=tail_r, r1=tail_r * 0.85, layers=2
    )
  )
  parts.append(
    Part(
      'tail_1',
      CAPSULE,
      lm['tail_mid'],
      tuple(fur * 0.9),
      p1=lm['tail_tip'],
      r0=tail_r * 0.85,
      r1=tail_r * rng.uniform(0.3, 1.1),
      layers=2,
    )
  )

  # Legs: three segments and a paw. Angles are pitches from straight down, positive = toward the front.
  gait = rng.choice(['stand', 'walk', 'run'], p=[0.35, 0.4, 0.25])
  amp = {'stand': 6, 'walk': 18, 'run': 35}[gait] * ext
  phase = rng.uniform(0, 2 * math.pi)
  leg_phase = {'left_front': 0.0, 'right_front': math.pi, 'left_back': math.pi, 'right_back': 0.0}
  for side, s in SIDES:
    for end in ('front', 'back'):
      swing = amp * math.sin(phase + leg_phase[f'{side}_{end}']) + rng.normal(0, 4 * ext)
      lift = max(0.0, math.sin(phase + leg_phase[f'{side}_{end}'] + 1.2)) * amp * 1.2
      if end == 'front':
        root = trunk_point([s * 0.72 * tw, -0.05 * th, 0.34 * L])
        lens = np.array([0.33, 0.38, 0.24]) * leg
        pitches = np.array([-30.0 + swing, swing - lift * 0.3, swing - lift * 1.3 + 6])
        names = ('shoulder', 'elbow', 'front_wrist', 'front_paw')
        radii = np.array([0.085, 0.05, 0.036, 0.03]) * leg_w
      else:
        root = trunk_point([s * 0.66 * tw, 0.05 * th, -0.36 * L])
        lens = np.array([0.35, 0.38, 0.26]) * leg
        pitches = np.array([28.0 + swing + lift * 0.5, -38.0 + swing - lift * 0.4, 4.0 + swing - lift])
        names = ('hip', 'knee', 'hock', 'back_paw')
        radii = np.array([0.1, 0.05, 0.035, 0.03]) * leg_w
      pitches = _deg(pitches + rng.normal(0, 4 * ext, 3))
      abd = _deg(rng.normal(2, 4 * ext))
      p = root
      lm[f'{side}_{names[0]}'] = p
      seg_names = ('upper', 'lower', 'cannon')
      for k in range(3):
        r_seg = r_tr @ rot_z(s * abd) @ rot_x(-pitches[k])
        q = p + r_seg @ np.array([0.0, -lens[k], 0.0])
        lm[f'{side}_{names[k + 1]}'] = q
        col = fur if k == 0 else fur * (0.95 - 0.05 * k)
        parts.append(
          Part(
            f'{side}_{end}_{seg_names[k]}',
            CAPSULE,
            p,
            _side_tint(col, s, lr),
            p1=q,
            r0=radii[k],
            r1=radii[k + 1] * (1.0 if k < 2 else 1.1),
            layers=3 if k == 0 else 2,
          )
        )
        p = q
      paw_len = 0.09 * leg * rng.uniform(0.8, 1.3)
      r_paw = r_tr @ rot_y(_deg(rng.normal(0, 5)))
      tip = p + r_paw @ np.array([0.0, -0.6 * radii[3], paw_len])
      lm[f'{side}_{names[3]}_tip'] = tip
      parts.append(
        Part(
          f'{side}_{end}_paw',
          CAPSULE,
          p + r_paw @ np.array([0.0, -0.2 * radii[3], 0.0]),
          _side_tint(fur * 0.85, s, lr),
          p1=tip - r_paw @ np.array([0, 0, 0.8 * radii[3]]),
          r0=radii[3] * 1.1,
          r1=radii[3] * 0.9,
          layers=1,
        )
      )
      for k, n in enumerate(names):
        radius[f'{side}_{n}'] = radii[k] * (0.6 if k == 0 else 1.0)
      radius[f'{side}_{names[3]}_tip'] = 0.0
  radius.update(
    nose=0.0,
    head_centre=0.5 * hx,
    head_top=0.0,
    head_base=0.5 * hx,
    neck_mid=0.4 * th,
    neck_base=0.5 * th,
    withers=0.0,
    spine_mid=0.5 * th,
    tail_root=tail_r,
    tail_mid=tail_r,
    tail_tip=0.0,
  )
  landmarks = np.stack([lm[n] for n in QUADRUPED_LANDMARKS])
  rad = np.array([radius[n] for n in QUADRUPED_LANDMARKS])
  return Body('animal', QUADRUPED_LANDMARKS, landmarks, parts, _QUAD_OWN, rad, 'head', style)
