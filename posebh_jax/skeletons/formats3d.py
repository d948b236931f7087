"""3D skeleton formats of the multi-dataset 3D training (docs/METHOD.md §3): data only; `registry3d.py` builds it.

Sources (facts only: joint names, orders, counts; no code): the per-dataset joint lists of PosePile
(github.com/isarandi/PosePile, `posepile/ds/<dataset>/main.py`), its merge of 28 datasets into one joint set
(`posepile/merging/merged_dataset3d.py`, `make_huge8`) and its skeleton list (`create_skeleton_info_file.py`), and
the MeTRAbs evaluation scripts (github.com/isarandi/metrabs, `eval_3dhp.py`).

Formats (19, in the merged order; joints per format; total 555, as in the issue):

| format | joints | datasets (per-batch count) |
|---|---|---|
| smpl | 24 | SURREAL 5, AGORA 3 (also smplx), BEHAVE 3 (also coco), SPEC 2 |
| smplx | 42 | RICH 4, AGORA |
| h36m | 25 | H36M 4, Fit3D 2, CHI3D 1, HumanSC3D 1 |
| coco | 25 | CMU-Panoptic 7, AIST++ 6, HUMBI 5, BEHAVE |
| 3dhp | 28 | MuCo-3DHP 6, MPI-INF-3DHP 3 |
| sailvos | 26 | SAIL-VOS 5 |
| gpa | 34 | GPA 4 |
| aspset | 17 | ASPset 4 |
| 3doh | 14 | 3DOH 3 |
| 3dpeople | 29 | 3DPeople 4 |
| bmlmovi | 87 | BML-MoVi 5 |
| mads | 19 | MADS 2 |
| umpm | 15 | UMPM 2 |
| bmhad | 43 | Berkeley-MHAD 3 |
| totcap | 21 | TotalCapture 3 |
| jta | 22 | JTA 3 |
| ikea | 17 | IKEA-ASM 2 |
| human4d | 32 | Human4D 1 |
| ghum | 35 | HSPACE 3 |

The per-batch counts are METHOD.md §3.1's (sum 96). The format names are PosePile's merge suffixes, so merged names
read '<joint>_<format>' ('lsho_h36m', 'pelv_smpl'). Two datasets label two formats, as in PosePile: AGORA carries
SMPL and SMPL-X joints, BEHAVE SMPL joints and OpenPose-25 ('coco') keypoints; their examples hold the joints of both.
HUMBI is listed under 'coco' only: PosePile's merge keeps only its OpenPose keypoints. The 'coco' format is the
union of CMU-Panoptic's 19 joints and the six OpenPose foot points of HUMBI / BEHAVE (AIST++'s 19 are a subset).

Joint orders: each dataset's own where it has one (H36M: its raw 32-joint indices 0-10, 12-15, 17-19, 21, 22, 25-27,
29, 30; MPI-INF-3DHP: its 28 joints; SMPL / SMPL-X: the body model's; CMU-Panoptic: its joints19, then the feet),
otherwise PosePile's. PosePile's own merged list orders formats by dataset and is not contiguous per format (the
HUMBI foot points come later than the Panoptic joints); ours is contiguous, formats in the order above.

Names: PosePile's short names, with these changes (each format's `renamed` maps our name to PosePile's, so data or
checkpoints that use PosePile's names can still be matched):
- SMPL and SMPL-X spine: bell, spin, thor -> spi1, spi2, spi3 (the SMPL joint order names, as PosePile itself renames
  them when it lists skeletons).
- So that the prefix rule of METHOD.md §3.1 (a 2D keypoint supervises the mean of the 3D joints whose name begins
  with its name) picks only joints that are the same landmark, joints whose PosePile name begins with a 2D keypoint's
  short name but are another point are renamed: motion-capture skin markers get an 'm' after the side letter
  (BML-MoVi lshom, lelbm, lknem, lankm, lelbinner, lwrithumbside, lwripinkieside -> lmsho, lmelb, lmkne, lmank,
  lmelbinner, lmwrithumbside, lmwripinkieside; Berkeley-MHAD lsho1/2, lhan1/2/3, lhipb/f/l -> lmsho1/2, lmhan1/2/3,
  lmhipb/f/l; likewise on the right); SMPL-X's eyeball centres leyehf/reyehf -> lebc/rebc; Human4D's second and third
  neck points neck2/neck3 -> nec2/nec3 and toe tips ltoe2/rtoe2 -> lftip/rftip; GHUM's head2 -> hed2. MeTRAbs applies
  `startswith` to PosePile's names, so its 2D loss also averages those points in; ours does not (the difference is
  a few skin markers among ~20 joint centres per keypoint).
- 3DOH's LSP joint 'head' -> htop: LSP's 14th joint is the top of the head.
The 17 H36M benchmark joints keep their names (PosePile's 17-joint H36M list calls the spine 'tors'; its 25-joint
list, used here, calls it 'spin').

Left / right / centre: a joint is on a side when its name is 'l' or 'r' + a stem and the other side's name is in the
same format; every other joint is on the centre line. Human4D's nec3 sits between the right shoulder and the spine in
PosePile's stick figure and has no left partner (PosePile drops a 'neck4' listed after the right hand); it is treated
as a centre joint, as its name says.

Roots: 'pelv' where the format has it. IKEA-ASM (COCO's 17) and 3DOH (LSP's 14) have no pelvis: the mean of the two
hips stands in for it; Berkeley-MHAD (markers only): the mean of its six hip markers.

Links (drawing only): chains 'a-b-c' of centre and right-side joints; the registry adds each link's mirror image.
"""

# Merged order of the formats (the 555 merged joints are these formats' joints, one format after another).
FORMAT_ORDER = (
  'smpl', 'smplx', 'h36m', 'coco', '3dhp', 'sailvos', 'gpa', 'aspset', '3doh', '3dpeople', 'bmlmovi', 'mads',
  'umpm', 'bmhad', 'totcap', 'jta', 'ikea', 'human4d', 'ghum',
)  # fmt: skip

# Joint counts stated by the issue (from PosePile's skeleton lists); the registry checks the data against them.
EXPECTED_COUNTS = {
  'smpl': 24, 'smplx': 42, 'h36m': 25, 'coco': 25, '3dhp': 28, 'sailvos': 26, 'gpa': 34, 'aspset': 17, '3doh': 14,
  '3dpeople': 29, 'bmlmovi': 87, 'mads': 19, 'umpm': 15, 'bmhad': 43, 'totcap': 21, 'jta': 22, 'ikea': 17,
  'human4d': 32, 'ghum': 35,
}  # fmt: skip
EXPECTED_TOTAL = 555

_SMPL_JOINTS = (
  'pelv,lhip,rhip,spi1,lkne,rkne,spi2,lank,rank,spi3,ltoe,rtoe,neck,lcla,rcla,head,lsho,rsho,lelb,relb,lwri,rwri,'
  'lhan,rhan'
)
_SMPL_RENAMED = {'spi1': 'bell', 'spi2': 'spin', 'spi3': 'thor'}

# Each format: `joints` (comma-separated, in order), `title`, `links` (chains), `root` (a joint or None),
# `root_joints` (only where root is None: the joints whose mean stands in for it), `renamed` (our name ->
# PosePile's, where they differ).
FORMATS3D = {
  'smpl': dict(
    title='SMPL body model, 24 joints',
    joints=_SMPL_JOINTS,
    links='pelv-spi1-spi2-spi3-neck-head,spi3-rcla-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rtoe',
    root='pelv',
    renamed=_SMPL_RENAMED,
  ),
  'smplx': dict(
    title='SMPL-X body model: 22 body joints, jaw, eyeballs, two finger joints a hand, face and foot points',
    # SMPL-X joints 0-24, 28, 43, 55-66, 68, 71, 73 (PosePile's RICH / AGORA selection).
    joints=(
      'pelv,lhip,rhip,spi1,lkne,rkne,spi2,lank,rank,spi3,ltoe,rtoe,neck,lcla,rcla,head,lsho,rsho,lelb,relb,lwri,'
      'rwri,jaw,lebc,rebc,lmiddle1,rmiddle1,nose,reye,leye,rear,lear,lto2,lto3,lhee,rto2,rto3,rhee,lthu,lmiddle,'
      'rthu,rmiddle'
    ),
    links=(
      'pelv-spi1-spi2-spi3-neck-head-nose-reye-rear,neck-jaw,head-rebc,spi3-rcla-rsho-relb-rwri-rmiddle1-rmiddle,'
      'rwri-rthu,pelv-rhip-rkne-rank-rtoe-rto2,rtoe-rto3,rank-rhee'
    ),
    root='pelv',
    renamed={**_SMPL_RENAMED, 'lebc': 'leyehf', 'rebc': 'reyehf'},
  ),
  'h36m': dict(
    title='Human3.6M, 25 of its 32 mocap joints (the 7 duplicates dropped)',
    joints=(
      'pelv,rhip,rkne,rank,rfoo,rtoe,lhip,lkne,lank,lfoo,ltoe,spin,neck,head,htop,lsho,lelb,lwri,lthu,lfin,rsho,'
      'relb,rwri,rthu,rfin'
    ),
    links='pelv-spin-neck-head-htop,neck-rsho-relb-rwri-rthu,rwri-rfin,pelv-rhip-rkne-rank-rfoo-rtoe',
    root='pelv',
  ),
  'coco': dict(
    title='CMU-Panoptic joints19 (COCO keypoints, neck, pelvis) and the OpenPose-25 foot points',
    # OpenPose names as in PosePile: lfoo = big toe, ltoe = small toe, lhee = heel.
    joints=(
      'neck,nose,pelv,lsho,lelb,lwri,lhip,lkne,lank,rsho,relb,rwri,rhip,rkne,rank,leye,lear,reye,rear,lfoo,ltoe,'
      'lhee,rfoo,rtoe,rhee'
    ),
    links='pelv-neck-nose-reye-rear,neck-rsho-relb-rwri,pelv-rhip-rkne-rank-rhee,rank-rfoo-rtoe',
    root='pelv',
  ),
  '3dhp': dict(
    title='MPI-INF-3DHP, 28 joints',
    # 3DHP: spine3, spine4, spine2, spine, pelvis, neck, head, head_top, clavicle, shoulder, elbow, wrist, hand, ...
    joints=(
      'thor,spi4,spi2,spin,pelv,neck,head,htop,lcla,lsho,lelb,lwri,lhan,rcla,rsho,relb,rwri,rhan,lhip,lkne,lank,'
      'lfoo,ltoe,rhip,rkne,rank,rfoo,rtoe'
    ),
    links='pelv-spin-spi2-thor-spi4-neck-head-htop,neck-rcla-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rfoo-rtoe',
    root='pelv',
  ),
  'sailvos': dict(
    title='SAIL-VOS (GTA-V), 26 joints',
    joints=(
      'htop,neck,rsho,relb,rwri,lsho,lelb,lwri,rhip,rkne,rank,lhip,lkne,lank,spin,head,pelv,rtoe,ltoe,nose,reye,'
      'leye,rear,lear,rhan,lhan'
    ),
    links='pelv-spin-neck-head-htop,head-nose-reye-rear,neck-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rtoe',
    root='pelv',
  ),
  'gpa': dict(
    title='Geometric Pose Affordance, 34 joints',
    joints=(
      'pelv,spin,spi1,spi2,spi3,neck,head,htop,rcla,rsho,relb,rwri,rhan,rfin,rthu,rthu2,lcla,lsho,lelb,lwri,lhan,'
      'lfin,lthu,lthu2,rhip,rkne,rank,rfoo,rtoe,lhip,lkne,lank,lfoo,ltoe'
    ),
    links=(
      'pelv-spin-spi1-spi2-spi3-neck-head-htop,spi3-rcla-rsho-relb-rwri-rhan-rfin,rwri-rthu-rthu2,'
      'pelv-rhip-rkne-rank-rfoo-rtoe'
    ),
    root='pelv',
  ),
  'aspset': dict(
    title='ASPset-510, 17 joints',
    joints='rank,rkne,rhip,rwri,relb,rsho,lank,lkne,lhip,lwri,lelb,lsho,htop,head,neck,spin,pelv',
    links='pelv-spin-neck-head-htop,neck-rsho-relb-rwri,pelv-rhip-rkne-rank',
    root='pelv',
  ),
  '3doh': dict(
    title='3DOH50K, the 14 LSP joints',
    joints='rank,rkne,rhip,lhip,lkne,lank,rwri,relb,rsho,lsho,lelb,lwri,neck,htop',
    links='htop-neck-rsho-relb-rwri,rsho-rhip-rkne-rank,rhip-lhip',
    root=None,
    root_joints=('lhip', 'rhip'),
    renamed={'htop': 'head'},
  ),
  '3dpeople': dict(
    title='3DPeople, 29 joints',
    joints=(
      'pelv,spin,spi1,spi2,neck,head,reye,leye,htop,lcla,lsho,lelb,lwri,lhan,rcla,rsho,relb,rwri,rhan,lhip,lkne,'
      'lank,lfoo,ltoe,rhip,rkne,rank,rfoo,rtoe'
    ),
    links='pelv-spin-spi1-spi2-neck-head-htop,head-reye,spi2-rcla-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rfoo-rtoe',
    root='pelv',
  ),
  'bmlmovi': dict(
    title='BML-MoVi: 67 mocap markers and 20 virtual joints',
    joints=(
      'backneck,upperback,clavicle,sternum,umbilicus,lfronthead,lbackhead,lback,lmsho,lupperarm,lmelb,lforearm,'
      'lmwrithumbside,lmwripinkieside,lfin,lasis,lpsis,lfrontthigh,lthigh,lmkne,lmank,lhee,lfifthmetatarsal,ltoe,'
      'lcheek,lbreast,lmelbinner,lwaist,lthumb,lfrontinnerthigh,linnerknee,lshin,lfirstmetatarsal,lfourthtoe,'
      'lscapula,lbum,rfronthead,rbackhead,rback,rmsho,rupperarm,rmelb,rforearm,rmwrithumbside,rmwripinkieside,rfin,'
      'rasis,rpsis,rfrontthigh,rthigh,rmkne,rmank,rhee,rfifthmetatarsal,rtoe,rcheek,rbreast,rmelbinner,rwaist,'
      'rthumb,rfrontinnerthigh,rinnerknee,rshin,rfirstmetatarsal,rfourthtoe,rscapula,rbum,head,mhip,pelv,thor,lank,'
      'lelb,lhip,lhan,lkne,lsho,lwri,lfoo,rank,relb,rhip,rhan,rkne,rsho,rwri,rfoo'
    ),
    links='head-thor-pelv-mhip,thor-rsho-relb-rwri-rhan,mhip-rhip-rkne-rank-rfoo',
    root='pelv',
    renamed={
      f'{s}{new}': f'{s}{old}'
      for s in 'lr'
      for new, old in (
        ('msho', 'shom'),
        ('melb', 'elbm'),
        ('mkne', 'knem'),
        ('mank', 'ankm'),
        ('melbinner', 'elbinner'),
        ('mwrithumbside', 'writhumbside'),
        ('mwripinkieside', 'wripinkieside'),
      )
    },  # fmt: skip
  ),
  'mads': dict(
    title='MADS (martial arts, dancing, sports), 19 joints',
    joints='neck,pelv,lhip,lkne,lank,ltoe,rhip,rkne,rank,rtoe,lsho,lelb,lwri,lhan,rsho,relb,rwri,rhan,head',
    links='head-neck-pelv,neck-rsho-relb-rwri-rhan,pelv-rhip-rkne-rank-rtoe',
    root='pelv',
  ),
  'umpm': dict(
    title='Utrecht Multi-Person Motion, 15 joints',
    joints='pelv,neck,head,rsho,relb,rwri,lsho,lelb,lwri,rhip,lhip,rkne,lkne,rank,lank',
    links='head-neck-pelv,neck-rsho-relb-rwri,pelv-rhip-rkne-rank',
    root='pelv',
  ),
  'bmhad': dict(
    title='Berkeley-MHAD, 43 mocap markers',
    joints=(
      'head,lhead,rhead,rback,backl,backt,lback,lside,bell,chest,rside,lmsho1,lmsho2,larm,lelb,lwri,lmhan1,lmhan2,'
      'lmhan3,rmsho1,rmsho2,rarm,relb,rwri,rmhan1,rmhan2,rmhan3,lmhipb,lmhipf,lmhipl,lleg,lkne,lank,lhee,lfoo,'
      'rmhipb,rmhipf,rmhipl,rleg,rkne,rank,rhee,rfoo'
    ),
    links=(
      'head-rhead,backt-backl,backl-rback,chest-bell-rside,rmsho1-rmsho2-rarm-relb-rwri-rmhan1,rwri-rmhan2,'
      'rwri-rmhan3,rmhipb-rmhipl-rmhipf-rleg-rkne-rank-rhee,rank-rfoo,lmhipb-rmhipb'
    ),
    root=None,
    root_joints=('lmhipb', 'lmhipf', 'lmhipl', 'rmhipb', 'rmhipf', 'rmhipl'),
    renamed={
      f'{s}{new}': f'{s}{old}'
      for s in 'lr'
      for new, old in (
        ('msho1', 'sho1'),
        ('msho2', 'sho2'),
        ('mhan1', 'han1'),
        ('mhan2', 'han2'),
        ('mhan3', 'han3'),
        ('mhipb', 'hipb'),
        ('mhipf', 'hipf'),
        ('mhipl', 'hipl'),
      )
    },  # fmt: skip
  ),
  'totcap': dict(
    title='TotalCapture, 21 joints',
    joints=(
      'pelv,spin,spin1,spin2,spin3,neck,head,rcla,rsho,relb,rwri,lcla,lsho,lelb,lwri,rhip,rkne,rank,lhip,lkne,lank'
    ),
    links='pelv-spin-spin1-spin2-spin3-neck-head,neck-rcla-rsho-relb-rwri,pelv-rhip-rkne-rank',
    root='pelv',
  ),
  'jta': dict(
    title='JTA (GTA-V), 22 joints',
    joints=(
      'htop,head,neck,rcla,rsho,relb,rwri,lcla,lsho,lelb,lwri,spin0,spin1,spin2,spin3,pelv,rhip,rkne,rank,lhip,'
      'lkne,lank'
    ),
    links='pelv-spin3-spin2-spin1-spin0-neck-head-htop,neck-rcla-rsho-relb-rwri,pelv-rhip-rkne-rank',
    root='pelv',
  ),
  'ikea': dict(
    title="IKEA-ASM, COCO's 17 keypoints in 3D",
    joints='nose,leye,reye,lear,rear,lsho,rsho,lelb,relb,lwri,rwri,lhip,rhip,lkne,rkne,lank,rank',
    links='nose-reye-rear,reye-leye,rsho-relb-rwri,rsho-rhip-rkne-rank,rsho-lsho,rhip-lhip',
    root=None,
    root_joints=('lhip', 'rhip'),
  ),
  'human4d': dict(
    title='HUMAN4D, 32 of its 33 joints',
    joints=(
      'pelv,spin0,spin1,spin2,spin3,neck,nec2,head,htop,nec3,rsho,relb,rwri,rpinkie,rthu,lsho,lelb,lwri,lpinkie,'
      'lthu,rhip,rkne,rank,rfoo,rtoe,rftip,lhip,lkne,lank,lfoo,ltoe,lftip'
    ),
    links=(
      'pelv-spin0-spin1-spin2-spin3-neck-nec2-head-htop,spin3-nec3-rsho-relb-rwri-rpinkie,rwri-rthu,nec3-lsho,'
      'pelv-rhip-rkne-rank-rfoo-rtoe-rftip'
    ),
    root='pelv',
    renamed={'nec2': 'neck2', 'nec3': 'neck3', 'lftip': 'ltoe2', 'rftip': 'rtoe2'},
  ),
  'ghum': dict(
    title='GHUM (HSPACE), 35 of its 63 joints',
    joints=(
      'pelv,spin1,spin2,spin3,neck,head,hed2,lbrow1,rbrow1,lcla,lsho,lelb,lwri,lmiddle1,lmiddle3,lthu,rcla,rsho,'
      'relb,rwri,rmiddle1,rmiddle3,rthu,lhip,lkne,lank,lhee,lfoo,ltoe,rhip,rkne,rank,rhee,rfoo,rtoe'
    ),
    links=(
      'pelv-spin1-spin2-spin3-neck-head-hed2,head-rbrow1,spin3-rcla-rsho-relb-rwri-rmiddle1-rmiddle3,rwri-rthu,'
      'pelv-rhip-rkne-rank-rhee,rank-rfoo-rtoe'
    ),
    root='pelv',
    renamed={'hed2': 'head2'},
  ),
}

# The 28 3D datasets of METHOD.md §3.1: (name, title as in METHOD.md, formats, examples per batch).
DATASETS3D = (
  ('h36m', 'H36M', ('h36m',), 4),
  ('muco_3dhp', 'MuCo-3DHP', ('3dhp',), 6),
  ('humbi', 'HUMBI', ('coco',), 5),
  ('3doh', '3DOH', ('3doh',), 3),
  ('agora', 'AGORA', ('smpl', 'smplx'), 3),
  ('surreal', 'SURREAL', ('smpl',), 5),
  ('panoptic', 'CMU-Panoptic', ('coco',), 7),
  ('aist', 'AIST++', ('coco',), 6),
  ('aspset', 'ASPset', ('aspset',), 4),
  ('gpa', 'GPA', ('gpa',), 4),
  ('3dpeople', '3DPeople', ('3dpeople',), 4),
  ('sailvos', 'SAIL-VOS', ('sailvos',), 5),
  ('bml_movi', 'BML-MoVi', ('bmlmovi',), 5),
  ('mads', 'MADS', ('mads',), 2),
  ('umpm', 'UMPM', ('umpm',), 2),
  ('bmhad', 'Berkeley-MHAD', ('bmhad',), 3),
  ('mpi_inf_3dhp', 'MPI-INF-3DHP', ('3dhp',), 3),
  ('totalcapture', 'TotalCapture', ('totcap',), 3),
  ('jta', 'JTA', ('jta',), 3),
  ('ikea_asm', 'IKEA-ASM', ('ikea',), 2),
  ('human4d', 'Human4D', ('human4d',), 1),
  ('behave', 'BEHAVE', ('smpl', 'coco'), 3),
  ('rich', 'RICH', ('smplx',), 4),
  ('spec', 'SPEC', ('smpl',), 2),
  ('fit3d', 'Fit3D', ('h36m',), 2),
  ('chi3d', 'CHI3D', ('h36m',), 1),
  ('humansc3d', 'HumanSC3D', ('h36m',), 1),
  ('hspace', 'HSPACE', ('ghum',), 3),
)

# Benchmark protocols (METHOD.md §3.7): (format, ordered joints).
# 'h36m': the standard 17 H36M joints. '3dhp': 3DHP's 17 in its test-set order; '3dhp_pck': the first 14 of them
# (the 17 without pelvis, spine and head), which 3DHP's official PCK / AUC joint groups cover and MeTRAbs'
# eval_3dhp.py scores (`rel_dist[:, :14]`). '3dpw': SMPL's 24.
BENCHMARKS = {
  'h36m': ('h36m', 'pelv,rhip,rkne,rank,lhip,lkne,lank,spin,neck,head,htop,lsho,lelb,lwri,rsho,relb,rwri'),
  '3dhp': ('3dhp', 'htop,neck,rsho,relb,rwri,lsho,lelb,lwri,rhip,rkne,rank,lhip,lkne,lank,pelv,spin,head'),
  '3dhp_pck': ('3dhp', 'htop,neck,rsho,relb,rwri,lsho,lelb,lwri,rhip,rkne,rank,lhip,lkne,lank'),
  '3dpw': ('smpl', _SMPL_JOINTS),
}

# 2D keypoint name -> canonical short name, for the prefix map. A sided 2D name 'left_<stem>' / 'right_<stem>' maps to
# 'l' / 'r' + STEMS_2D[stem]; a centre name through CENTER_2D; OVERRIDES_2D first, per 2D format. 2D keypoints with
# no entry (toes, face, fingers, animal points) supervise no 3D joint.
STEMS_2D = {
  'eye': 'eye', 'ear': 'ear', 'shoulder': 'sho', 'elbow': 'elb', 'wrist': 'wri', 'hip': 'hip', 'knee': 'kne',
  'ankle': 'ank', 'heel': 'hee', 'collar': 'cla', 'hand': 'han',
}  # fmt: skip
CENTER_2D = {
  'nose': 'nose', 'neck': 'neck', 'upper_neck': 'neck', 'thorax': 'thor', 'pelvis': 'pelv', 'head_top': 'htop',
  'head': 'head', 'spine1': 'spi1', 'spine2': 'spi2', 'spine3': 'spi3',
}  # fmt: skip
OVERRIDES_2D = {
  # CrowdPose's and Halpe's 'head' is the top of the head; Halpe's 'hip' is the mid-hip point.
  'crowdpose': {'head': 'htop'},
  'halpe': {'head': 'htop', 'hip': 'pelv'},
  # SMPL's foot joint is the ball of the foot, 'ltoe' / 'rtoe' in the SMPL format.
  'smpl24': {'left_foot': 'ltoe', 'right_foot': 'rtoe'},
}
