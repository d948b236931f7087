"""Keypoint-format definitions, as plain data.

Every format is a dict with:
  keypoint_names  list of K names, in the dataset's own order (the index is the channel index)
  flip_pairs      (left_name, right_name) pairs swapped by a horizontal flip
  sigmas          K OKS sigmas (the per-keypoint constants of the dataset's OKS evaluation)
  links           (name_a, name_b) bones, for drawing
  upper_body      names used as the "upper" (animals: front) half in half-body augmentation
  lower_body      names of the "lower" (animals: back) half
  category        'human' | 'animal' | 'hand'
  parts           optional {part: [names]}; default is a single 'body' part with every keypoint

Names are lower-case snake case; a keypoint of the left side contains 'left', its mirror the same name with
'right'. Sources of the numbers are noted per format. `registry.py` turns these dicts into `SkeletonFormat`s
and validates them (unique names, sigmas length, flip pairs and links referring to existing names).

MAPPINGS holds correspondences between formats: {(source, target): {'by_name': bool, 'pairs': [...]}},
where pairs are (source, target) keypoint names or indices; with by_name every name the two formats share
is matched as well (explicit pairs win). The reverse direction is derived automatically.
"""

# --------------------------------------------------------------------------------------------------
# Building blocks shared by several formats.

_COCO_NAMES = [
  'nose',
  'left_eye',
  'right_eye',
  'left_ear',
  'right_ear',
  'left_shoulder',
  'right_shoulder',
  'left_elbow',
  'right_elbow',
  'left_wrist',
  'right_wrist',
  'left_hip',
  'right_hip',
  'left_knee',
  'right_knee',
  'left_ankle',
  'right_ankle',
]
# COCO keypoint evaluation (cocoapi cocoeval.py): sigmas = [.26, .25, ...] / 10.
_COCO_SIGMAS = [
  0.026,
  0.025,
  0.025,
  0.035,
  0.035,
  0.079,
  0.079,
  0.072,
  0.072,
  0.062,
  0.062,
  0.107,
  0.107,
  0.087,
  0.087,
  0.089,
  0.089,
]
# The skeleton stored in COCO person_keypoints json (there 1-based), written with names.
_COCO_LINKS = [
  ('left_ankle', 'left_knee'),
  ('left_knee', 'left_hip'),
  ('right_ankle', 'right_knee'),
  ('right_knee', 'right_hip'),
  ('left_hip', 'right_hip'),
  ('left_shoulder', 'left_hip'),
  ('right_shoulder', 'right_hip'),
  ('left_shoulder', 'right_shoulder'),
  ('left_shoulder', 'left_elbow'),
  ('right_shoulder', 'right_elbow'),
  ('left_elbow', 'left_wrist'),
  ('right_elbow', 'right_wrist'),
  ('left_eye', 'right_eye'),
  ('nose', 'left_eye'),
  ('nose', 'right_eye'),
  ('left_eye', 'left_ear'),
  ('right_eye', 'right_ear'),
  ('left_ear', 'left_shoulder'),
  ('right_ear', 'right_shoulder'),
]
_COCO_SIDE_JOINTS = ['eye', 'ear', 'shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle']
_COCO_FLIP = [(f'left_{j}', f'right_{j}') for j in _COCO_SIDE_JOINTS]
_COCO_UPPER = _COCO_NAMES[:11]
_COCO_LOWER = _COCO_NAMES[11:]

# 68-point face (iBUG 300-W order) as used by COCO-WholeBody and Halpe: 'face-0' ... 'face-67'.
_FACE_NAMES = [f'face-{i}' for i in range(68)]
_FACE_MIRROR_INDEX_PAIRS = (
  [(i, 16 - i) for i in range(8)]  # jaw contour, 8 is the chin
  + [(17 + i, 26 - i) for i in range(5)]  # eyebrows
  + [(31, 35), (32, 34)]  # nostrils; 27-30 (bridge) and 33 central
  + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
  + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip; 51, 57 central
  + [(60, 64), (61, 63), (65, 67)]  # inner lip; 62, 66 central
)
_FACE_FLIP = [(f'face-{a}', f'face-{b}') for a, b in _FACE_MIRROR_INDEX_PAIRS]
_FACE_LINKS = (
  [(f'face-{i}', f'face-{i + 1}') for i in range(16)]  # jaw
  + [(f'face-{i}', f'face-{i + 1}') for i in list(range(17, 21)) + list(range(22, 26))]  # brows
  + [(f'face-{i}', f'face-{i + 1}') for i in list(range(27, 30)) + list(range(31, 35))]  # nose
  + [(f'face-{i}', f'face-{i + 1}') for i in range(36, 41)]
  + [('face-41', 'face-36')]  # right eye
  + [(f'face-{i}', f'face-{i + 1}') for i in range(42, 47)]
  + [('face-47', 'face-42')]  # left eye
  + [(f'face-{i}', f'face-{i + 1}') for i in range(48, 59)]
  + [('face-59', 'face-48')]  # outer lip
  + [(f'face-{i}', f'face-{i + 1}') for i in range(60, 67)]
  + [('face-67', 'face-60')]  # inner lip
)

# 21-point hand (COCO-WholeBody order): root (wrist), then per finger 1 (base) ... 4 (tip).
_FINGERS = ['thumb', 'forefinger', 'middle_finger', 'ring_finger', 'pinky_finger']


def _hand_names(side):
  return [f'{side}_hand_root'] + [f'{side}_{f}{j}' for f in _FINGERS for j in range(1, 5)]


def _hand_links(side, root):
  links = []
  for f in _FINGERS:
    chain = [root] + [f'{side}_{f}{j}' for j in range(1, 5)]
    links += list(zip(chain[:-1], chain[1:]))
  return links


_WB_HAND_FLIP = list(zip(_hand_names('left'), _hand_names('right')))

# COCO-WholeBody evaluation (jin-s13/COCO-WholeBody evaluation/myeval_wholebody.py, also in xtcocotools).
_WB_FOOT_SIGMAS = [0.068, 0.066, 0.066, 0.092, 0.094, 0.094]
_WB_FACE_SIGMAS = [
  0.042,
  0.043,
  0.044,
  0.043,
  0.040,
  0.035,
  0.031,
  0.025,
  0.020,
  0.023,
  0.029,
  0.032,
  0.037,
  0.038,
  0.043,
  0.041,
  0.045,
  0.013,
  0.012,
  0.011,
  0.011,
  0.012,
  0.012,
  0.011,
  0.011,
  0.013,
  0.015,
  0.009,
  0.007,
  0.007,
  0.007,
  0.012,
  0.009,
  0.008,
  0.016,
  0.010,
  0.017,
  0.011,
  0.009,
  0.011,
  0.009,
  0.007,
  0.013,
  0.008,
  0.011,
  0.012,
  0.010,
  0.034,
  0.008,
  0.008,
  0.009,
  0.008,
  0.008,
  0.007,
  0.010,
  0.008,
  0.009,
  0.009,
  0.009,
  0.007,
  0.007,
  0.008,
  0.011,
  0.008,
  0.008,
  0.008,
  0.010,
  0.008,
]
_WB_HAND_SIGMAS = [
  0.029,
  0.022,
  0.035,
  0.037,
  0.047,
  0.026,
  0.025,
  0.024,
  0.035,
  0.018,
  0.024,
  0.022,
  0.026,
  0.017,
  0.021,
  0.021,
  0.032,
  0.020,
  0.019,
  0.022,
  0.031,
]

# --------------------------------------------------------------------------------------------------
# Training formats (TRAIN_FORMATS order: coco, aic, mpii, ap10k, apt36k, coco_wholebody).

COCO = dict(
  keypoint_names=_COCO_NAMES,
  flip_pairs=_COCO_FLIP,
  sigmas=_COCO_SIGMAS,
  links=_COCO_LINKS,
  upper_body=_COCO_UPPER,
  lower_body=_COCO_LOWER,
  category='human',
)

# AI Challenger (AIC) 2017 keypoint order. Sigmas: the official AIC evaluation script
# (AI_Challenger_2017 keypoint_eval.py, delta = 2 * sigma), as used by mmpose.
AIC = dict(
  keypoint_names=[
    'right_shoulder',
    'right_elbow',
    'right_wrist',
    'left_shoulder',
    'left_elbow',
    'left_wrist',
    'right_hip',
    'right_knee',
    'right_ankle',
    'left_hip',
    'left_knee',
    'left_ankle',
    'head_top',
    'neck',
  ],
  flip_pairs=[(f'left_{j}', f'right_{j}') for j in ['shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle']],
  sigmas=[
    0.01388152,
    0.01515228,
    0.01057665,
    0.01417709,
    0.01497891,
    0.01402144,
    0.03909642,
    0.03686941,
    0.01981803,
    0.03843971,
    0.03412318,
    0.02415081,
    0.01291456,
    0.01236173,
  ],
  # The skeleton of the AIC json converted to COCO style (there 1-based).
  links=[
    ('right_wrist', 'right_elbow'),
    ('right_elbow', 'right_shoulder'),
    ('right_shoulder', 'neck'),
    ('neck', 'left_shoulder'),
    ('left_shoulder', 'left_elbow'),
    ('left_elbow', 'left_wrist'),
    ('right_ankle', 'right_knee'),
    ('right_knee', 'right_hip'),
    ('right_hip', 'left_hip'),
    ('left_hip', 'left_knee'),
    ('left_knee', 'left_ankle'),
    ('head_top', 'neck'),
    ('right_shoulder', 'right_hip'),
    ('left_shoulder', 'left_hip'),
  ],
  upper_body=[
    'right_shoulder',
    'right_elbow',
    'right_wrist',
    'left_shoulder',
    'left_elbow',
    'left_wrist',
    'head_top',
    'neck',
  ],
  lower_body=['right_hip', 'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle'],
  category='human',
)

# MPII Human Pose joint order (0 r_ankle ... 9 head_top, 10 r_wrist ... 15 l_wrist). MPII is evaluated with
# PCKh, not OKS; the sigmas are the COCO-adapted values mmpose ships for MPII (used only if OKS is asked for).
MPII = dict(
  keypoint_names=[
    'right_ankle',
    'right_knee',
    'right_hip',
    'left_hip',
    'left_knee',
    'left_ankle',
    'pelvis',
    'thorax',
    'upper_neck',
    'head_top',
    'right_wrist',
    'right_elbow',
    'right_shoulder',
    'left_shoulder',
    'left_elbow',
    'left_wrist',
  ],
  flip_pairs=[(f'left_{j}', f'right_{j}') for j in ['ankle', 'knee', 'hip', 'wrist', 'elbow', 'shoulder']],
  sigmas=[
    0.089,
    0.083,
    0.107,
    0.107,
    0.083,
    0.089,
    0.026,
    0.026,
    0.026,
    0.026,
    0.062,
    0.072,
    0.179,
    0.179,
    0.072,
    0.062,
  ],
  links=[
    ('right_ankle', 'right_knee'),
    ('right_knee', 'right_hip'),
    ('right_hip', 'pelvis'),
    ('pelvis', 'left_hip'),
    ('left_hip', 'left_knee'),
    ('left_knee', 'left_ankle'),
    ('pelvis', 'thorax'),
    ('thorax', 'upper_neck'),
    ('upper_neck', 'head_top'),
    ('right_wrist', 'right_elbow'),
    ('right_elbow', 'right_shoulder'),
    ('right_shoulder', 'thorax'),
    ('thorax', 'left_shoulder'),
    ('left_shoulder', 'left_elbow'),
    ('left_elbow', 'left_wrist'),
  ],
  upper_body=[
    'thorax',
    'upper_neck',
    'head_top',
    'right_wrist',
    'right_elbow',
    'right_shoulder',
    'left_shoulder',
    'left_elbow',
    'left_wrist',
  ],
  lower_body=['right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle', 'pelvis'],
  category='human',
)

_ANIMAL_NAMES = [
  'left_eye',
  'right_eye',
  'nose',
  'neck',
  'root_of_tail',
  'left_shoulder',
  'left_elbow',
  'left_front_paw',
  'right_shoulder',
  'right_elbow',
  'right_front_paw',
  'left_hip',
  'left_knee',
  'left_back_paw',
  'right_hip',
  'right_knee',
  'right_back_paw',
]
_ANIMAL_FLIP = [
  (f'left_{j}', f'right_{j}') for j in ['eye', 'shoulder', 'elbow', 'front_paw', 'hip', 'knee', 'back_paw']
]
# AP-10K json skeleton (there 1-based), written with names.
_ANIMAL_LINKS = [
  ('left_eye', 'right_eye'),
  ('left_eye', 'nose'),
  ('right_eye', 'nose'),
  ('nose', 'neck'),
  ('neck', 'root_of_tail'),
  ('neck', 'left_shoulder'),
  ('left_shoulder', 'left_elbow'),
  ('left_elbow', 'left_front_paw'),
  ('neck', 'right_shoulder'),
  ('right_shoulder', 'right_elbow'),
  ('right_elbow', 'right_front_paw'),
  ('root_of_tail', 'left_hip'),
  ('left_hip', 'left_knee'),
  ('left_knee', 'left_back_paw'),
  ('root_of_tail', 'right_hip'),
  ('right_hip', 'right_knee'),
  ('right_knee', 'right_back_paw'),
]
# AP-10K OKS sigmas (AP-10K paper / its cocoapi fork, as in mmpose ap10k).
_ANIMAL_SIGMAS = [
  0.025,
  0.025,
  0.026,
  0.035,
  0.035,
  0.079,
  0.072,
  0.062,
  0.079,
  0.072,
  0.062,
  0.107,
  0.087,
  0.089,
  0.107,
  0.087,
  0.089,
]
# Half-body augmentation for quadrupeds: front half (head, neck, forelegs) and back half (tail root, hind legs).
_ANIMAL_FRONT = [
  'left_eye',
  'right_eye',
  'nose',
  'neck',
  'left_shoulder',
  'left_elbow',
  'left_front_paw',
  'right_shoulder',
  'right_elbow',
  'right_front_paw',
]
_ANIMAL_BACK = ['root_of_tail', 'left_hip', 'left_knee', 'left_back_paw', 'right_hip', 'right_knee', 'right_back_paw']

AP10K = dict(
  keypoint_names=_ANIMAL_NAMES,
  flip_pairs=_ANIMAL_FLIP,
  sigmas=_ANIMAL_SIGMAS,
  links=_ANIMAL_LINKS,
  upper_body=_ANIMAL_FRONT,
  lower_body=_ANIMAL_BACK,
  category='animal',
)

# APT-36K uses the AP-10K 17-keypoint layout; its evaluation reuses the AP-10K sigmas.
APT36K = dict(AP10K)

COCO_WHOLEBODY = dict(
  keypoint_names=(
    _COCO_NAMES
    + ['left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe', 'right_heel']
    + _FACE_NAMES
    + _hand_names('left')
    + _hand_names('right')
  ),
  flip_pairs=(
    _COCO_FLIP + [(f'left_{j}', f'right_{j}') for j in ['big_toe', 'small_toe', 'heel']] + _FACE_FLIP + _WB_HAND_FLIP
  ),
  sigmas=_COCO_SIGMAS + _WB_FOOT_SIGMAS + _WB_FACE_SIGMAS + _WB_HAND_SIGMAS + _WB_HAND_SIGMAS,
  links=(
    _COCO_LINKS
    + [
      ('left_ankle', 'left_big_toe'),
      ('left_ankle', 'left_small_toe'),
      ('left_ankle', 'left_heel'),
      ('right_ankle', 'right_big_toe'),
      ('right_ankle', 'right_small_toe'),
      ('right_ankle', 'right_heel'),
    ]
    + _FACE_LINKS
    + _hand_links('left', 'left_hand_root')
    + _hand_links('right', 'right_hand_root')
  ),
  upper_body=_COCO_UPPER + _FACE_NAMES + _hand_names('left') + _hand_names('right'),
  lower_body=_COCO_LOWER
  + ['left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe', 'right_heel'],
  category='human',
  # The five keypoint groups that xtcocotools' whole-body evaluation scores separately, in its order.
  parts={
    'body': _COCO_NAMES,
    'foot': ['left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe', 'right_heel'],
    'face': _FACE_NAMES,
    'lefthand': _hand_names('left'),
    'righthand': _hand_names('right'),
  },
)

# --------------------------------------------------------------------------------------------------
# Evaluation / transfer formats.

# OCHuman annotates the COCO 17 keypoints and is evaluated with the COCO sigmas.
OCHUMAN = dict(COCO)

# CrowdPose: 12 COCO limb joints + head (top of head) + neck. Sigmas: CrowdPose's crowdposetools
# (COCO values for the limbs, 0.079 for head and neck).
CROWDPOSE = dict(
  keypoint_names=[
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'left_hip',
    'right_hip',
    'left_knee',
    'right_knee',
    'left_ankle',
    'right_ankle',
    'head',
    'neck',
  ],
  flip_pairs=[(f'left_{j}', f'right_{j}') for j in ['shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle']],
  sigmas=[0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079],
  # (The CrowdPose json ships the 17-keypoint COCO skeleton, which does not fit its 14 keypoints.)
  links=[
    ('head', 'neck'),
    ('neck', 'left_shoulder'),
    ('neck', 'right_shoulder'),
    ('left_shoulder', 'left_elbow'),
    ('left_elbow', 'left_wrist'),
    ('right_shoulder', 'right_elbow'),
    ('right_elbow', 'right_wrist'),
    ('left_shoulder', 'left_hip'),
    ('right_shoulder', 'right_hip'),
    ('left_hip', 'right_hip'),
    ('left_hip', 'left_knee'),
    ('left_knee', 'left_ankle'),
    ('right_hip', 'right_knee'),
    ('right_knee', 'right_ankle'),
  ],
  upper_body=[
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'head',
    'neck',
  ],
  lower_body=['left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle'],
  category='human',
)

# Halpe-FullBody 136: 26 body (COCO 17, head, neck, hip, 6 foot points), 68 face, 21 left + 21 right hand.
# Sigmas: Halpe's own evaluation (halpecocotools cocoeval.py): COCO body, 0.08 for head/neck/hip,
# 0.089 for the feet and 0.015 for every face and hand point.
_HALPE_FOOT = ['left_big_toe', 'right_big_toe', 'left_small_toe', 'right_small_toe', 'left_heel', 'right_heel']
HALPE = dict(
  keypoint_names=(
    _COCO_NAMES + ['head', 'neck', 'hip'] + _HALPE_FOOT + _FACE_NAMES + _hand_names('left') + _hand_names('right')
  ),
  flip_pairs=(
    _COCO_FLIP + [(f'left_{j}', f'right_{j}') for j in ['big_toe', 'small_toe', 'heel']] + _FACE_FLIP + _WB_HAND_FLIP
  ),
  sigmas=_COCO_SIGMAS + [0.08] * 3 + [0.089] * 6 + [0.015] * (68 + 42),
  links=(
    [
      ('left_ankle', 'left_knee'),
      ('left_knee', 'left_hip'),
      ('left_hip', 'hip'),
      ('right_ankle', 'right_knee'),
      ('right_knee', 'right_hip'),
      ('right_hip', 'hip'),
      ('head', 'neck'),
      ('neck', 'hip'),
      ('neck', 'left_shoulder'),
      ('left_shoulder', 'left_elbow'),
      ('left_elbow', 'left_wrist'),
      ('neck', 'right_shoulder'),
      ('right_shoulder', 'right_elbow'),
      ('right_elbow', 'right_wrist'),
      ('left_eye', 'right_eye'),
      ('nose', 'left_eye'),
      ('nose', 'right_eye'),
      ('left_eye', 'left_ear'),
      ('right_eye', 'right_ear'),
      ('left_ear', 'left_shoulder'),
      ('right_ear', 'right_shoulder'),
    ]
    + [
      ('left_ankle', 'left_big_toe'),
      ('left_ankle', 'left_small_toe'),
      ('left_ankle', 'left_heel'),
      ('right_ankle', 'right_big_toe'),
      ('right_ankle', 'right_small_toe'),
      ('right_ankle', 'right_heel'),
    ]
    + _FACE_LINKS
    + _hand_links('left', 'left_hand_root')
    + _hand_links('right', 'right_hand_root')
  ),
  upper_body=_COCO_UPPER + ['head', 'neck'] + _FACE_NAMES + _hand_names('left') + _hand_names('right'),
  lower_body=_COCO_LOWER + ['hip'] + _HALPE_FOOT,
  category='human',
)


# InterHand2.6M: 21 right-hand joints then 21 left-hand joints; per hand thumb4 (tip) ... thumb1, index
# (forefinger) 4..1, middle 4..1, ring 4..1, pinky 4..1, wrist. InterHand2.6M is evaluated with MPJPE/EPE, not
# OKS; the sigmas here are the COCO-WholeBody hand sigmas moved to this order (a choice of ours, so that OKS is
# defined for hands too).
def _interhand_names(side):
  return [f'{side}_{f}{j}' for f in _FINGERS for j in range(4, 0, -1)] + [f'{side}_wrist']


def _interhand_sigmas():
  wb = dict(zip(_hand_names('right'), _WB_HAND_SIGMAS))
  wb['right_wrist'] = wb['right_hand_root']
  return [wb[n] for n in _interhand_names('right')]


INTERHAND = dict(
  keypoint_names=_interhand_names('right') + _interhand_names('left'),
  flip_pairs=list(zip(_interhand_names('left'), _interhand_names('right'))),
  sigmas=_interhand_sigmas() * 2,
  links=_hand_links('right', 'right_wrist') + _hand_links('left', 'left_wrist'),
  # Hands have no upper/lower half; half-body augmentation does not apply.
  upper_body=[],
  lower_body=[],
  category='hand',
)

# SMPL's 24 joints as 3DPW provides them (projected to 2D). No OKS convention exists; sigmas are our choice:
# the COCO value of the nearest COCO joint (hips 0.107, knees 0.087, ankles/feet 0.089, shoulders and
# collars 0.079, elbows 0.072, wrists/hands 0.062), 0.079 for the torso/neck/head joints (like CrowdPose's
# head and neck).
SMPL24 = dict(
  keypoint_names=[
    'pelvis',
    'left_hip',
    'right_hip',
    'spine1',
    'left_knee',
    'right_knee',
    'spine2',
    'left_ankle',
    'right_ankle',
    'spine3',
    'left_foot',
    'right_foot',
    'neck',
    'left_collar',
    'right_collar',
    'head',
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'left_hand',
    'right_hand',
  ],
  flip_pairs=[
    (f'left_{j}', f'right_{j}')
    for j in ['hip', 'knee', 'ankle', 'foot', 'collar', 'shoulder', 'elbow', 'wrist', 'hand']
  ],
  sigmas=[
    0.079,
    0.107,
    0.107,
    0.079,
    0.087,
    0.087,
    0.079,
    0.089,
    0.089,
    0.079,
    0.089,
    0.089,
    0.079,
    0.079,
    0.079,
    0.079,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.062,
    0.062,
  ],
  # SMPL kinematic tree (child, parent).
  links=[
    ('left_hip', 'pelvis'),
    ('right_hip', 'pelvis'),
    ('spine1', 'pelvis'),
    ('left_knee', 'left_hip'),
    ('right_knee', 'right_hip'),
    ('spine2', 'spine1'),
    ('left_ankle', 'left_knee'),
    ('right_ankle', 'right_knee'),
    ('spine3', 'spine2'),
    ('left_foot', 'left_ankle'),
    ('right_foot', 'right_ankle'),
    ('neck', 'spine3'),
    ('left_collar', 'spine3'),
    ('right_collar', 'spine3'),
    ('head', 'neck'),
    ('left_shoulder', 'left_collar'),
    ('right_shoulder', 'right_collar'),
    ('left_elbow', 'left_shoulder'),
    ('right_elbow', 'right_shoulder'),
    ('left_wrist', 'left_elbow'),
    ('right_wrist', 'right_elbow'),
    ('left_hand', 'left_wrist'),
    ('right_hand', 'right_wrist'),
  ],
  upper_body=[
    'spine2',
    'spine3',
    'neck',
    'left_collar',
    'right_collar',
    'head',
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'left_hand',
    'right_hand',
  ],
  lower_body=[
    'pelvis',
    'left_hip',
    'right_hip',
    'spine1',
    'left_knee',
    'right_knee',
    'left_ankle',
    'right_ankle',
    'left_foot',
    'right_foot',
  ],
  category='human',
)

# Unified 21-keypoint skeleton of docs/METHOD.md §4 (Khan et al. 2024): COCO's 17 in COCO order, then MPII's
# pelvis (17), thorax (18), upper_neck (19), head_top (20); the four added points are centre points (no flip pair).
# Sigmas: COCO's for 0-16. For the four added points 0.08, the value Halpe's own evaluation (halpecocotools
# cocoeval.py) gives its head, neck and hip points (CrowdPose's crowdposetools uses the near-equal 0.079 for head and
# neck): the paper scores the 21 points on Halpe, where pelvis, thorax and head_top are Halpe's hip, neck and head
# (MAPPINGS below), so OKS on this format then agrees with Halpe's. upper_neck has no public OKS convention; it
# takes the same 0.08. (MPII's 0.026 for these points is a COCO-eye-like value, far too strict for a torso point.)
UNIFIED21 = dict(
  keypoint_names=_COCO_NAMES + ['pelvis', 'thorax', 'upper_neck', 'head_top'],
  flip_pairs=_COCO_FLIP,
  sigmas=_COCO_SIGMAS + [0.08, 0.08, 0.08, 0.08],
  links=_COCO_LINKS
  + [
    ('pelvis', 'left_hip'),
    ('pelvis', 'right_hip'),
    ('thorax', 'left_shoulder'),
    ('thorax', 'right_shoulder'),
    ('thorax', 'pelvis'),
    ('upper_neck', 'thorax'),
    ('head_top', 'upper_neck'),
  ],
  upper_body=_COCO_UPPER + ['thorax', 'upper_neck', 'head_top'],
  lower_body=_COCO_LOWER + ['pelvis'],
  category='human',
)

FORMATS = {
  'coco': COCO,
  'aic': AIC,
  'mpii': MPII,
  'ap10k': AP10K,
  'apt36k': APT36K,
  'coco_wholebody': COCO_WHOLEBODY,
  'ochuman': OCHUMAN,
  'crowdpose': CROWDPOSE,
  'halpe': HALPE,
  'interhand': INTERHAND,
  'smpl24': SMPL24,
  'unified21': UNIFIED21,
}

# --------------------------------------------------------------------------------------------------
# Correspondences between formats: (source, target) -> pairs of keypoints meaning the same landmark.

MAPPINGS = {
  # docs/METHOD.md §4, verbatim (MPII index -> unified index).
  ('mpii', 'unified21'): dict(
    by_name=False,
    pairs=[
      (13, 5),
      (12, 6),
      (14, 7),
      (11, 8),
      (15, 9),
      (10, 10),
      (3, 11),
      (2, 12),
      (4, 13),
      (1, 14),
      (5, 15),
      (0, 16),
      (6, 17),
      (7, 18),
      (8, 19),
      (9, 20),
    ],
  ),
  ('coco', 'unified21'): dict(by_name=True, pairs=[]),  # identity on 0-16
  ('ochuman', 'coco'): dict(by_name=True, pairs=[]),
  ('coco_wholebody', 'coco'): dict(by_name=True, pairs=[]),
  ('halpe', 'coco'): dict(by_name=True, pairs=[]),
  ('crowdpose', 'coco'): dict(by_name=True, pairs=[]),
  ('aic', 'coco'): dict(by_name=True, pairs=[]),
  ('ap10k', 'apt36k'): dict(by_name=True, pairs=[]),
  ('mpii', 'coco'): dict(by_name=True, pairs=[]),  # the 12 limb joints
  # Halpe-26 body <-> unified21, for scoring the 21 outputs on Halpe (its 'body' part: the first 20 keypoints).
  # The COCO 17 by name; Halpe's 'hip' (19) is the mid-hip point = pelvis; 'head' (17) the top of the head =
  # head_top; 'neck' (18) sits at the base of the neck between the shoulders, which is MPII's thorax, not MPII's
  # upper_neck (the neck's top, under the chin). 20 pairs: unified upper_neck and Halpe's six foot points are unmatched.
  ('halpe', 'unified21'): dict(by_name=True, pairs=[('hip', 'pelvis'), ('neck', 'thorax'), ('head', 'head_top')]),
  ('crowdpose', 'unified21'): dict(by_name=True, pairs=[('head', 'head_top')]),
  ('interhand', 'coco_wholebody'): dict(
    by_name=True, pairs=[('right_wrist', 'right_hand_root'), ('left_wrist', 'left_hand_root')]
  ),
}
