"""Tests of the 3D skeleton registry: the 28 datasets of METHOD.md §3, the 19 formats and their 555 merged joints,
left / right / centre and flips, the benchmark joint sets and the 2D-name -> 3D-joints prefix map."""

import pathlib
import re

import numpy as np
import pytest

from posebh_jax import skeletons
from posebh_jax.errors import UserError
from posebh_jax.skeletons import (
  DATASETS_3D,
  UnknownFormatError,
  benchmark_format,
  benchmark_joints,
  benchmark_merged_index,
  canonical_2d_name,
  dataset_merged_index,
  get_dataset3d,
  get_format,
  get_format3d,
  list_formats,
  list_formats3d,
  merged_flip_index,
  merged_index,
  merged_joint_names,
  merged_links,
  merged_sides,
  prefix_map,
  prefix_matrix,
)
from posebh_jax.skeletons import formats3d as data3d

METHOD_MD = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'METHOD.md'

# The issue's counts (PosePile's public skeleton lists), in the merged order.
ISSUE_COUNTS = {
  'smpl': 24, 'smplx': 42, 'h36m': 25, 'coco': 25, '3dhp': 28, 'sailvos': 26, 'gpa': 34, 'aspset': 17, '3doh': 14,
  '3dpeople': 29, 'bmlmovi': 87, 'mads': 19, 'umpm': 15, 'bmhad': 43, 'totcap': 21, 'jta': 22, 'ikea': 17,
  'human4d': 32, 'ghum': 35,
}  # fmt: skip
H36M_17 = 'pelv,rhip,rkne,rank,lhip,lkne,lank,spin,neck,head,htop,lsho,lelb,lwri,rsho,relb,rwri'.split(',')
TDHP_17 = 'htop,neck,rsho,relb,rwri,lsho,lelb,lwri,rhip,rkne,rank,lhip,lkne,lank,pelv,spin,head'.split(',')
SMPL_24 = (
  'pelv,lhip,rhip,spi1,lkne,rkne,spi2,lank,rank,spi3,ltoe,rtoe,neck,lcla,rcla,head,lsho,rsho,lelb,relb,lwri,rwri,'
  'lhan,rhan'
).split(',')


def _method_md_batch_table():
  """{dataset title: per-batch count} from the table of METHOD.md §3.1."""
  text = METHOD_MD.read_text()
  section = text[text.index('### 3.1') : text.index('### 3.2')]
  counts = {}
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 8 and all(re.fullmatch(r'\d+', c) for c in cells[1::2]):
      counts.update({title: int(n) for title, n in zip(cells[0::2], cells[1::2])})
  return counts


def test_28_datasets_with_method_md_batch_counts_summing_to_96():
  assert len(DATASETS_3D) == 28
  assert sum(d.per_batch for d in DATASETS_3D.values()) == 96
  table = _method_md_batch_table()
  assert len(table) == 28
  assert {d.title: d.per_batch for d in DATASETS_3D.values()} == table
  used = {f for d in DATASETS_3D.values() for f in d.formats}
  assert used == set(list_formats3d())
  assert DATASETS_3D['h36m'].format == 'h36m' and DATASETS_3D['mpi_inf_3dhp'].format == '3dhp'
  assert DATASETS_3D['agora'].formats == ('smpl', 'smplx') and DATASETS_3D['behave'].formats == ('smpl', 'coco')
  for name in ('fit3d', 'chi3d', 'humansc3d'):
    assert DATASETS_3D[name].formats == ('h36m',)


def test_19_formats_with_the_issue_counts_and_555_distinct_merged_names():
  assert list_formats3d() == tuple(ISSUE_COUNTS)
  assert {f: get_format3d(f).num_joints for f in list_formats3d()} == ISSUE_COUNTS
  names = merged_joint_names()
  assert len(names) == sum(ISSUE_COUNTS.values()) == 555
  assert len(set(names)) == 555
  assert names[0] == 'pelv_smpl' and names[-1] == 'rtoe_ghum'
  for f in list_formats3d():
    fmt = get_format3d(f)
    assert all(re.fullmatch(r'[a-z0-9]+', n) for n in fmt.joint_names)
    assert fmt.suffixed_names == tuple(f'{n}_{f}' for n in fmt.joint_names)
    assert len(set(fmt.source_names)) == fmt.num_joints


@pytest.mark.parametrize('name', data3d.FORMAT_ORDER)
def test_flip_index_is_an_involution_that_swaps_sides_by_name(name):
  fmt = get_format3d(name)
  flip = fmt.flip_index
  assert flip.dtype == np.int32 and flip.shape == (fmt.num_joints,)
  assert sorted(flip.tolist()) == list(range(fmt.num_joints))
  np.testing.assert_array_equal(flip[flip], np.arange(fmt.num_joints))
  for i, (joint, side) in enumerate(zip(fmt.joint_names, fmt.sides)):
    other = fmt.joint_names[flip[i]]
    if side == 'center':
      assert flip[i] == i, joint
      assert not (joint[0] in 'lr' and ('rl'['lr'.index(joint[0])] + joint[1:]) in fmt.joint_names), joint
    else:
      assert joint[0] == side[0], joint
      assert other == {'l': 'r', 'r': 'l'}[joint[0]] + joint[1:]
      assert fmt.sides[flip[i]] == ('right' if side == 'left' else 'left')
  parts = [fmt.side_indices(s) for s in ('left', 'right', 'center')]
  assert sorted(np.concatenate(parts).tolist()) == list(range(fmt.num_joints))
  assert sorted(flip[parts[0]].tolist()) == parts[1].tolist()
  assert list(fmt.flip_pairs) == [(a, int(flip[a])) for a in parts[0].tolist()]
  # Drawing links are in range and the mirror image of the set is the set.
  links = {frozenset(p) for p in fmt.links}
  assert all(len(p) == 2 for p in links)
  assert {frozenset((int(flip[a]), int(flip[b]))) for a, b in fmt.links} == links


def test_roots():
  for name in data3d.FORMAT_ORDER:
    fmt = get_format3d(name)
    if 'pelv' in fmt.joint_names:
      assert fmt.root == 'pelv' and fmt.root_indices == (fmt.index('pelv'),)
    else:
      assert fmt.root is None and len(fmt.root_indices) >= 2
      assert sorted(fmt.sides[i] for i in fmt.root_indices).count('left') == len(fmt.root_indices) // 2
  assert {n for n in data3d.FORMAT_ORDER if get_format3d(n).root is None} == {'3doh', 'bmhad', 'ikea'}


def test_benchmark_joints_and_the_formats_that_hold_them():
  assert list(benchmark_joints('h36m')) == H36M_17
  assert list(benchmark_joints('3dhp')) == TDHP_17
  assert list(benchmark_joints('3dhp_pck')) == TDHP_17[:14]
  assert set(TDHP_17) - set(benchmark_joints('3dhp_pck')) == {'pelv', 'spin', 'head'}
  assert list(benchmark_joints('3dpw')) == SMPL_24
  assert list(get_format3d('smpl').joint_names) == SMPL_24
  assert set(H36M_17) <= set(get_format3d('h36m').joint_names)
  assert set(TDHP_17) <= set(get_format3d('3dhp').joint_names)
  assert set(H36M_17) == set(TDHP_17)
  names = merged_joint_names()
  for protocol, fmt in (('h36m', 'h36m'), ('3dhp', '3dhp'), ('3dhp_pck', '3dhp'), ('3dpw', 'smpl')):
    assert benchmark_format(protocol) == fmt
    assert [names[i] for i in benchmark_merged_index(protocol)] == [f'{n}_{fmt}' for n in benchmark_joints(protocol)]
  with pytest.raises(UserError, match='known: h36m, 3dhp, 3dhp_pck, 3dpw'):
    benchmark_joints('mupots')


def test_prefix_map_coco_maps_each_keypoint_to_its_stem_in_every_format():
  names = merged_joint_names()
  pm = prefix_map('coco')
  coco = get_format('coco')
  assert len(pm) == coco.num_keypoints
  lsho = pm[coco.index('left_shoulder')]
  assert lsho == [i for i, n in enumerate(names) if re.fullmatch(r'lsho_[a-z0-9]+', n)]
  assert len(lsho) == 18  # every format but Berkeley-MHAD (shoulder markers only)
  assert pm[coco.index('nose')] == [i for i, n in enumerate(names) if n.startswith('nose_')]
  assert [names[i] for i in pm[coco.index('nose')]] == ['nose_smplx', 'nose_coco', 'nose_sailvos', 'nose_ikea']
  for keypoint, ids in zip(coco.keypoint_names, pm):
    assert ids and ids == sorted(set(ids)), keypoint
  # Every format with a joint of that name contributes it once; with our names prefix matching is exact matching.
  short = canonical_2d_name('coco', 'right_ankle')
  assert short == 'rank'
  assert [names[i] for i in pm[coco.index('right_ankle')]] == [
    f'rank_{f}' for f in list_formats3d() if 'rank' in get_format3d(f).joint_names
  ]


@pytest.mark.parametrize('format2d', list_formats())
def test_prefix_map_of_every_2d_format(format2d):
  fmt2d = get_format(format2d)
  names = merged_joint_names()
  pm = prefix_map(format2d)
  matrix = prefix_matrix(format2d)
  assert len(pm) == fmt2d.num_keypoints and matrix.shape == (fmt2d.num_keypoints, 555)
  if fmt2d.category == 'animal':
    assert all(ids == [] for ids in pm) and not matrix.any()
    return
  for keypoint, ids in zip(fmt2d.keypoint_names, pm):
    assert len(ids) == len(set(ids)), keypoint
    short = canonical_2d_name(format2d, keypoint)
    assert ids == [i for i, n in enumerate(names) if short and n.startswith(short)]
    # The names were chosen so that no other landmark's name begins with a 2D keypoint's short name.
    assert all(names[i].rsplit('_', 1)[0] == short for i in ids), (keypoint, [names[i] for i in ids])
  np.testing.assert_allclose(matrix.sum(axis=1), [1.0 if ids else 0.0 for ids in pm], rtol=1e-6)


def test_prefix_map_of_the_2d_datasets_of_section_3():
  # MPII's 16 and COCO's 17 all supervise some 3D joints; the head top and thorax only a few formats have.
  mpii = get_format('mpii')
  pm = prefix_map('mpii')
  assert all(pm)
  names = merged_joint_names()
  assert {names[i] for i in pm[mpii.index('thorax')]} == {'thor_3dhp', 'thor_bmlmovi'}
  without_neck = {'ikea', 'bmhad', 'bmlmovi'}
  assert {names[i] for i in pm[mpii.index('upper_neck')]} == {
    f'neck_{f}' for f in list_formats3d() if f not in without_neck
  }
  assert canonical_2d_name('crowdpose', 'head') == 'htop' and canonical_2d_name('smpl24', 'head') == 'head'
  assert canonical_2d_name('coco_wholebody', 'left_big_toe') is None
  assert canonical_2d_name('ap10k', 'left_eye') is None
  with pytest.raises(UnknownFormatError):
    prefix_map('no_such_format')


def test_merged_index_round_trip():
  names = merged_joint_names()
  seen = []
  for f in list_formats3d():
    ids = merged_index(f)
    assert ids.dtype == np.int32
    assert [names[i] for i in ids] == list(get_format3d(f).suffixed_names)
    seen.extend(ids.tolist())
  assert seen == list(range(555))
  for name, entry in DATASETS_3D.items():
    ids = dataset_merged_index(name)
    assert [names[i].rsplit('_', 1)[1] for i in ids] == [f for f in entry.formats for _ in get_format3d(f).joint_names]
  assert get_dataset3d('rich').formats == ('smplx',)
  with pytest.raises(UserError, match='unknown 3D dataset'):
    get_dataset3d('mupots')


def test_merged_partition_and_flip():
  sides = merged_sides()
  flip = merged_flip_index()
  names = merged_joint_names()
  assert len(sides) == 555 and flip.shape == (555,)
  np.testing.assert_array_equal(flip[flip], np.arange(555))
  for i in range(555):
    assert names[flip[i]].rsplit('_', 1)[1] == names[i].rsplit('_', 1)[1]
    assert sides[flip[i]] == {'left': 'right', 'right': 'left', 'center': 'center'}[sides[i]]
  assert sides.count('left') == sides.count('right')
  links = merged_links()
  assert all(names[a].rsplit('_', 1)[1] == names[b].rsplit('_', 1)[1] for a, b in links)


def test_renames_keep_posepile_names():
  smpl = get_format3d('smpl')
  assert [smpl.source_names[smpl.index(n)] for n in ('spi1', 'spi2', 'spi3')] == ['bell', 'spin', 'thor']
  movi = get_format3d('bmlmovi')
  assert movi.source_names[movi.index('lmsho')] == 'lshom'
  assert movi.source_names[movi.index('rmwripinkieside')] == 'rwripinkieside'
  bmhad = get_format3d('bmhad')
  assert bmhad.source_names[bmhad.index('rmhipf')] == 'rhipf'
  assert get_format3d('3doh').source_names[get_format3d('3doh').index('htop')] == 'head'
  h36m = get_format3d('h36m')
  assert h36m.source_names == h36m.joint_names
  assert h36m.index('lsho_h36m') == h36m.index('lsho') == 15


def test_errors_are_one_line():
  with pytest.raises(UnknownFormatError, match='known: smpl, smplx') as info:
    get_format3d('h36m_17')
  assert isinstance(info.value, ValueError) and '\n' not in str(info.value)
  with pytest.raises(ValueError, match="no joint 'nose'"):
    get_format3d('h36m').index('nose')


def test_package_exports():
  for name in ('get_format3d', 'merged_joint_names', 'merged_index', 'prefix_map', 'benchmark_joints', 'DATASETS_3D'):
    assert name in skeletons.__all__ and hasattr(skeletons, name)
