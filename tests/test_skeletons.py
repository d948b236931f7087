"""Tests of the keypoint-format registry against the real annotation files and the published conventions."""

import json
import pathlib
import re

import numpy as np
import pytest
from pycocotools.cocoeval import Params

import realdata_samples
from posebh_jax import skeletons
from posebh_jax.skeletons import (
  TRAIN_FORMATS,
  UnknownFormatError,
  format_mapping,
  get_format,
  global_index,
  list_formats,
)
from posebh_jax.skeletons import formats as format_data

REALDATA = pathlib.Path(realdata_samples.REALDATA)
METHOD_MD = pathlib.Path(realdata_samples.REPO) / 'docs' / 'METHOD.md'

EXPECTED_COUNTS = {
  'coco': 17,
  'aic': 14,
  'mpii': 16,
  'ap10k': 17,
  'apt36k': 17,
  'coco_wholebody': 133,
  'ochuman': 17,
  'crowdpose': 14,
  'halpe': 136,
  'interhand': 42,
  'smpl24': 24,
  'unified21': 21,
}


def _load(relpath):
  path = REALDATA / relpath
  if not path.exists():
    pytest.skip(f'real-data sample {path} not found; set POSEBH_REALDATA')
  with open(path) as f:
    return json.load(f)


def _normalise(name):
  """'Right Shoulder' / 'Head top' -> 'right_shoulder' / 'head_top' (AIC json spells names this way)."""
  return re.sub(r'[\s\-]+', '_', name.strip().lower())


def _links_from_json(skeleton_1based):
  return {frozenset((a - 1, b - 1)) for a, b in skeleton_1based}


def _links(fmt):
  return {frozenset(link) for link in fmt.links}


# ---------------------------------------------------------------------------------------------- basics


def test_registry_lists_every_format_with_expected_counts():
  assert set(list_formats()) == set(EXPECTED_COUNTS)
  for name, k in EXPECTED_COUNTS.items():
    fmt = get_format(name)
    assert fmt.name == name
    assert fmt.num_keypoints == k == len(fmt.keypoint_names)
    assert fmt.category in ('human', 'animal', 'hand')
  assert TRAIN_FORMATS == ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')
  assert isinstance(get_format('coco'), skeletons.SkeletonFormat)


@pytest.mark.parametrize('name', sorted(EXPECTED_COUNTS))
def test_flip_index_is_an_involution_swapping_left_and_right_names(name):
  fmt = get_format(name)
  flip = fmt.flip_index
  assert flip.shape == (fmt.num_keypoints,) and np.issubdtype(flip.dtype, np.integer)
  np.testing.assert_array_equal(np.sort(flip), np.arange(fmt.num_keypoints))
  np.testing.assert_array_equal(flip[flip], np.arange(fmt.num_keypoints))
  names = fmt.keypoint_names
  for i, n in enumerate(names):
    mirror = names[flip[i]]
    if 'left' in n:
      assert mirror == n.replace('left', 'right'), (n, mirror)
    elif 'right' in n:
      assert mirror == n.replace('right', 'left'), (n, mirror)
    elif not n.startswith('face-'):
      assert mirror == n, f'{name}: centre keypoint {n} flips to {mirror}'
  # Every name with a side has its mirror in the format (nothing left unpaired).
  for n in names:
    if 'left' in n:
      assert n.replace('left', 'right') in names


@pytest.mark.parametrize('name', sorted(EXPECTED_COUNTS))
def test_flip_maps_skeleton_links_onto_links(name):
  """The mirror of a bone is a bone: checks flip pairs (incl. the 68 face points) against the links,
  which are written independently (and, for COCO/AIC/AP-10K, checked against the json files below)."""
  fmt = get_format(name)
  links = _links(fmt)
  flipped = {frozenset(int(fmt.flip_index[i]) for i in link) for link in links}
  assert flipped == links


@pytest.mark.parametrize('name', sorted(EXPECTED_COUNTS))
def test_sigmas_links_halves_and_parts_are_consistent(name):
  fmt = get_format(name)
  k = fmt.num_keypoints
  assert fmt.sigmas.dtype == np.float32 and fmt.sigmas.shape == (k,)
  assert np.all(fmt.sigmas > 0) and np.all(fmt.sigmas < 0.2)
  for i, j in fmt.links:
    assert 0 <= i < k and 0 <= j < k and i != j
  assert len(fmt.link_colors) == len(fmt.links) and len(fmt.keypoint_colors) == k
  upper, lower = set(fmt.upper_body_ids), set(fmt.lower_body_ids)
  assert not upper & lower
  if fmt.category == 'hand':
    assert not upper and not lower
  else:
    assert upper | lower == set(range(k)), 'half-body split must cover every keypoint'
  # Half-body halves are closed under flipping (a flipped upper keypoint is still upper).
  assert {int(fmt.flip_index[i]) for i in upper} == upper
  all_part_ids = np.concatenate(list(fmt.parts.values()))
  np.testing.assert_array_equal(np.sort(all_part_ids), np.arange(k))
  if name != 'coco_wholebody':
    assert list(fmt.parts) == ['body']


def test_arrays_are_read_only():
  fmt = get_format('coco')
  with pytest.raises(ValueError):
    fmt.sigmas[0] = 1.0
  with pytest.raises(ValueError):
    fmt.flip_index[0] = 3


def test_coco_sigmas_match_pycocotools():
  expected = Params(iouType='keypoints').kpt_oks_sigmas
  for name in ('coco', 'ochuman'):
    np.testing.assert_allclose(get_format(name).sigmas, expected, rtol=1e-6)
  for name in ('coco_wholebody', 'halpe', 'unified21'):
    np.testing.assert_allclose(get_format(name).sigmas[:17], expected, rtol=1e-6)
  # CrowdPose: COCO values for the 12 limb joints it shares with COCO.
  crowd, coco = get_format('crowdpose'), get_format('coco')
  shared = [coco.index(n) for n in crowd.keypoint_names[:12]]
  np.testing.assert_allclose(crowd.sigmas[:12], np.asarray(expected)[shared], rtol=1e-6)


def test_unknown_format_error_is_one_line_and_lists_known_names():
  with pytest.raises(UnknownFormatError) as info:
    get_format('cocoo')
  assert isinstance(info.value, ValueError)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith("unknown skeleton format 'cocoo'; known formats: ")
  listed = message.split('known formats: ')[1].split(', ')
  assert listed == list(list_formats())


def test_index_lookup_and_unknown_keypoint():
  fmt = get_format('mpii')
  for i, n in enumerate(fmt.keypoint_names):
    assert fmt.index(n) == i
  assert fmt.index('head_top') == 9 and fmt.index('right_ankle') == 0 and fmt.index('left_wrist') == 15
  with pytest.raises(ValueError) as info:
    get_format('coco_wholebody').index('left_pinky')
  message = str(info.value)
  assert '\n' not in message and 'left_pinky' in message and len(message) < 300


# ---------------------------------------------------------------------------------------------- global index


def test_global_index_offsets_and_round_trip():
  gi = global_index()
  assert gi.total == 214
  assert gi.offsets == {'coco': 0, 'aic': 17, 'mpii': 31, 'ap10k': 47, 'apt36k': 64, 'coco_wholebody': 81}
  assert gi.slice('coco') == slice(0, 17)
  assert gi.slice('coco_wholebody') == slice(81, 214)
  assert gi.lookup('coco/left_knee') == 13
  assert gi.name(13) == 'coco/left_knee'
  assert gi.name(30) == 'aic/neck'
  assert gi.name(31) == 'mpii/right_ankle'
  names = [gi.name(i) for i in range(gi.total)]
  assert len(set(names)) == 214
  assert [gi.lookup(n) for n in names] == list(range(214))
  with pytest.raises(ValueError):
    gi.name(214)
  with pytest.raises(ValueError):
    gi.lookup('halpe/nose')  # not part of this index
  small = global_index(('mpii', 'coco'))
  assert small.total == 33 and small.offsets == {'mpii': 0, 'coco': 16}


# ---------------------------------------------------------------------------------------------- real files


def test_coco_names_and_skeleton_match_annotation_file():
  cat = _load('coco/test_coco.json')['categories'][0]
  fmt = get_format('coco')
  assert tuple(cat['keypoints']) == fmt.keypoint_names
  assert _links_from_json(cat['skeleton']) == _links(fmt)
  anns = _load('coco/test_coco.json')['annotations']
  assert all(len(a['keypoints']) == 3 * fmt.num_keypoints for a in anns)


def test_ochuman_names_and_skeleton_match_annotation_file():
  data = _load('ochuman/test_ochuman.json')
  cat = data['categories'][0]
  fmt = get_format('ochuman')
  assert tuple(cat['keypoints']) == fmt.keypoint_names
  assert _links_from_json(cat['skeleton']) == _links(fmt)
  assert all(len(a['keypoints']) == 3 * fmt.num_keypoints for a in data['annotations'])


def test_aic_names_and_skeleton_match_annotation_file():
  data = _load('aic/test_aic.json')
  cat = data['categories'][0]
  fmt = get_format('aic')
  assert tuple(_normalise(n) for n in cat['keypoints']) == fmt.keypoint_names
  assert _links_from_json(cat['skeleton']) == _links(fmt)
  assert all(len(a['keypoints']) == 3 * fmt.num_keypoints for a in data['annotations'])


@pytest.mark.parametrize('name', ['ap10k', 'apt36k'])
def test_animal_names_and_skeleton_match_ap10k_file(name):
  data = _load('ap10k/test_ap10k.json')
  fmt = get_format(name)
  assert len(data['categories']) == 54
  for cat in data['categories']:
    assert tuple(cat['keypoints']) == fmt.keypoint_names, cat['name']
    assert _links_from_json(cat['skeleton']) == _links(fmt), cat['name']


def test_crowdpose_names_match_annotation_files():
  fmt = get_format('crowdpose')
  for rel in ('crowdpose/test_crowdpose.json', 'xtcocoapi/example_crowdpose_val.json'):
    data = _load(rel)
    assert tuple(data['categories'][0]['keypoints']) == fmt.keypoint_names
    assert all(len(a['keypoints']) == 3 * fmt.num_keypoints for a in data['annotations'])
    # The file's 'skeleton' is COCO's 17-keypoint one (refers to keypoint 17 of 14), so links are not
    # compared; the registry defines its own CrowdPose links.
    assert max(max(p) for p in data['categories'][0]['skeleton']) > fmt.num_keypoints


def test_coco_wholebody_parts_match_annotation_files():
  fmt = get_format('coco_wholebody')
  assert list(fmt.parts) == ['body', 'foot', 'face', 'lefthand', 'righthand']
  json_keys = {
    'body': 'keypoints',
    'foot': 'foot_kpts',
    'face': 'face_kpts',
    'lefthand': 'lefthand_kpts',
    'righthand': 'righthand_kpts',
  }
  for rel in ('coco/test_coco_wholebody.json', 'xtcocoapi/example_wholebody_val.json'):
    data = _load(rel)
    cat = data['categories'][0]
    assert tuple(cat['keypoints']) == fmt.keypoint_names[:17]
    assert _links_from_json(cat['skeleton']) <= _links(fmt)
    start = 0
    for part, key in json_keys.items():
      sizes = {len(a[key]) // 3 for a in data['annotations']}
      assert sizes == {len(fmt.parts[part])}, (rel, part, sizes)
      # Parts are contiguous and in the order the annotation keys are concatenated.
      np.testing.assert_array_equal(fmt.parts[part], np.arange(start, start + len(fmt.parts[part])))
      start += len(fmt.parts[part])
    assert start == 133
  np.testing.assert_allclose(fmt.sigmas[fmt.parts['lefthand']], fmt.sigmas[fmt.parts['righthand']])


def test_coco_wholebody_face_flip_matches_real_faces():
  """Mirroring a real face about its nose bridge and permuting by the flip index should roughly give the
  face back; the identity permutation (a missing or wrong face flip) should not."""
  fmt = get_format('coco_wholebody')
  face_ids = fmt.parts['face']
  face_flip = fmt.flip_index[face_ids] - face_ids[0]
  data = _load('xtcocoapi/example_wholebody_val.json')
  err_flip = err_identity = 0.0
  n_faces = 0
  for ann in data['annotations']:
    if not ann.get('face_valid'):
      continue
    face = np.asarray(ann['face_kpts'], dtype=np.float64).reshape(68, 3)
    midline = face[27:31, 0].mean()  # nose bridge

    def residual(perm, face=face, midline=midline):
      return np.mean(np.abs(face[:, 0] + face[perm, 0] - 2 * midline) + np.abs(face[:, 1] - face[perm, 1]))

    err_flip += residual(face_flip)
    err_identity += residual(np.arange(68))
    n_faces += 1
  assert n_faces >= 5
  assert err_flip < 0.6 * err_identity


def test_halpe_file_has_136_keypoints_per_person():
  data = _load('halpe/test_halpe.json')
  fmt = get_format('halpe')
  # The sample ships no keypoint names (empty list), only the flattened annotations.
  assert all(len(a['keypoints']) == 3 * fmt.num_keypoints for a in data['annotations'])
  assert fmt.keypoint_names[17:20] == ('head', 'neck', 'hip')


def test_mpii_and_interhand_files_have_registry_counts():
  mpii = _load('mpii/test_mpii.json')
  assert all(len(a['joints']) == get_format('mpii').num_keypoints for a in mpii)
  interhand = _load('interhand2.6m/test_interhand2.6m_data.json')
  assert all(len(a['joint_valid']) == get_format('interhand').num_keypoints for a in interhand['annotations'])
  fmt = get_format('interhand')
  assert fmt.keypoint_names[0] == 'right_thumb4' and fmt.keypoint_names[20] == 'right_wrist'
  assert fmt.keypoint_names[21] == 'left_thumb4' and fmt.keypoint_names[41] == 'left_wrist'


# ---------------------------------------------------------------------------------------------- mappings


def test_mpii_to_unified_mapping_matches_method_md():
  line = next(ln for ln in METHOD_MD.read_text().splitlines() if ln.startswith('MPII → unified:'))
  expected = sorted((int(a), int(b)) for a, b in re.findall(r'(\d+)→(\d+)', line))
  assert len(expected) == 16
  assert format_mapping('mpii', 'unified21') == expected
  mpii, unified = get_format('mpii'), get_format('unified21')
  for a, b in expected:
    assert mpii.keypoint_names[a] == unified.keypoint_names[b]
  assert format_mapping('unified21', 'mpii') == sorted((b, a) for a, b in expected)


def test_coco_to_unified_is_identity_on_first_17():
  assert format_mapping('coco', 'unified21') == [(i, i) for i in range(17)]
  assert format_mapping('unified21', 'coco') == [(i, i) for i in range(17)]
  assert format_mapping('aic', 'aic') == [(i, i) for i in range(14)]


@pytest.mark.parametrize('pair', sorted(format_data.MAPPINGS))
def test_defined_mappings_are_one_to_one_and_invertible(pair):
  source, target = pair
  forward = format_mapping(source, target)
  src, tgt = get_format(source), get_format(target)
  assert forward, 'a defined mapping must not be empty'
  assert len({a for a, _ in forward}) == len(forward) == len({b for _, b in forward})
  assert all(0 <= a < src.num_keypoints and 0 <= b < tgt.num_keypoints for a, b in forward)
  # A correspondence must respect left/right.
  for a, b in forward:
    for side in ('left', 'right'):
      assert (side in src.keypoint_names[a]) == (side in tgt.keypoint_names[b]), (a, b)
  assert sorted((b, a) for a, b in format_mapping(target, source)) == forward


def test_specific_mappings():
  halpe = dict(format_mapping('halpe', 'unified21'))
  h, u = get_format('halpe'), get_format('unified21')
  assert halpe[h.index('hip')] == u.index('pelvis')
  assert halpe[h.index('head')] == u.index('head_top')
  assert len(format_mapping('mpii', 'coco')) == 12
  assert len(format_mapping('crowdpose', 'coco')) == 12
  hand = dict(format_mapping('interhand', 'coco_wholebody'))
  ih, wb = get_format('interhand'), get_format('coco_wholebody')
  assert len(hand) == 42
  assert hand[ih.index('right_wrist')] == wb.index('right_hand_root')
  assert hand[ih.index('left_thumb4')] == wb.index('left_thumb4')


def test_mapping_errors():
  with pytest.raises(UnknownFormatError):
    format_mapping('coco', 'nope')
  with pytest.raises(ValueError) as info:
    format_mapping('smpl24', 'ap10k')
  assert '\n' not in str(info.value)
