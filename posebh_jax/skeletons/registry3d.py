"""3D skeleton registry (docs/METHOD.md §3): `Skeleton3DFormat` objects built from the data in `formats3d.py`, the
merged joint list (555 suffixed names), the 28 datasets, the benchmark joint sets and the 2D-name -> 3D-joints
prefix map through which 2D labels supervise 3D predictions.

Naming: a format's joints have short names ('lsho', 'pelv'); in the merged list each carries its format as a
suffix, '<short>_<format>' ('lsho_h36m'). Sided joints are 'l' / 'r' + a common stem; `formats3d.py`'s docstring
lists the sources and every choice.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from typing import NamedTuple

import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.skeletons import formats3d as _data
from posebh_jax.skeletons.registry import UnknownFormatError, get_format

SIDES = ('left', 'right', 'center')
_SHORT_NAME = re.compile(r'[a-z0-9]+')


def _split(names) -> tuple[str, ...]:
  return tuple(names.split(',')) if isinstance(names, str) else tuple(names)


def _side_of(name: str, names: frozenset[str]) -> str:
  """'left' / 'right' when `name` is 'l' / 'r' + a stem and the other side's name is in `names`, else 'center'."""
  if len(name) > 1 and name[0] in 'lr' and _mirrored(name) in names:
    return 'left' if name[0] == 'l' else 'right'
  return 'center'


def _mirrored(name: str) -> str:
  return {'l': 'r', 'r': 'l'}[name[0]] + name[1:]


def _readonly(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class Skeleton3DFormat:
  """One 3D skeleton format (a joint convention that one or more 3D datasets label).

  Attributes:
    name: registry name and merged-name suffix, e.g. 'h36m'.
    title: a line saying what the joints are.
    joint_names: J short names without suffix ('lsho'); position = joint index.
    sides: per joint 'left' | 'right' | 'center'.
    flip_index: int32 (J,) permutation: flip_index[j] is the joint that j becomes under a horizontal flip.
    links: (i, j) joint-index pairs of bones, for drawing.
    root: the root joint's name ('pelv'), or None where the format has no pelvis.
    root_indices: the root joint's index, or the joints whose mean stands in for a missing root.
    source_names: per joint, PosePile's name for it (differs from `joint_names` where formats3d.py renames).
  """

  name: str
  title: str
  joint_names: tuple[str, ...]
  sides: tuple[str, ...]
  flip_index: np.ndarray
  links: tuple[tuple[int, int], ...]
  root: str | None
  root_indices: tuple[int, ...]
  source_names: tuple[str, ...]

  def __post_init__(self):
    j = len(self.joint_names)
    where = f'3D skeleton format {self.name!r}'
    if len(set(self.joint_names)) != j:
      raise ValueError(f'{where}: joint names are not unique')
    bad = [n for n in self.joint_names if not _SHORT_NAME.fullmatch(n)]
    if bad:
      raise ValueError(f'{where}: joint names must be lowercase letters and digits, got {bad}')
    if len(self.sides) != j or any(s not in SIDES for s in self.sides):
      raise ValueError(f'{where}: need one side of {SIDES} per joint')
    flip = np.asarray(self.flip_index, dtype=np.int32)
    if flip.shape != (j,) or sorted(flip.tolist()) != list(range(j)) or np.any(flip[flip] != np.arange(j)):
      raise ValueError(f'{where}: flip_index must be an involutive permutation of {j} joints')
    opposite = {'left': 'right', 'right': 'left', 'center': 'center'}
    if any(self.sides[int(flip[i])] != opposite[self.sides[i]] for i in range(j)):
      raise ValueError(f'{where}: flip_index must swap left and right joints and fix centre joints')
    object.__setattr__(self, 'flip_index', _readonly(flip))
    if any(not (0 <= a < j and 0 <= b < j) or a == b for a, b in self.links):
      raise ValueError(f'{where}: link out of range')
    if not self.root_indices or any(not 0 <= i < j for i in self.root_indices):
      raise ValueError(f'{where}: root indices out of range')
    if self.root is not None and self.root_indices != (self.joint_names.index(self.root),):
      raise ValueError(f'{where}: root_indices must be the index of root {self.root!r}')
    if len(self.source_names) != j:
      raise ValueError(f'{where}: need one source name per joint')

  @property
  def num_joints(self) -> int:
    """Number of joints J."""
    return len(self.joint_names)

  @functools.cached_property
  def suffixed_names(self) -> tuple[str, ...]:
    """The joints' merged names, '<short>_<format>' ('lsho_h36m')."""
    return tuple(f'{n}_{self.name}' for n in self.joint_names)

  @functools.cached_property
  def _name_to_index(self) -> dict[str, int]:
    return {n: i for i, n in enumerate(self.joint_names)}

  def index(self, name: str) -> int:
    """Returns the index of joint `name` (short or suffixed); raises ValueError (one line) if the format lacks it."""
    short = name[: -len(self.name) - 1] if name.endswith(f'_{self.name}') else name
    try:
      return self._name_to_index[short]
    except KeyError:
      raise ValueError(
        f'3D skeleton format {self.name!r} has no joint {name!r} ({self.num_joints} joints, e.g. '
        f'{", ".join(self.joint_names[:5])}, ...); see get_format3d({self.name!r}).joint_names'
      ) from None

  def side_indices(self, side: str) -> np.ndarray:
    """Returns the int32 indices of the joints on `side` ('left' | 'right' | 'center'), in joint order."""
    if side not in SIDES:
      raise ValueError(f'side must be one of {SIDES}, got {side!r}')
    return _readonly(np.asarray([i for i, s in enumerate(self.sides) if s == side], dtype=np.int32))

  @functools.cached_property
  def flip_pairs(self) -> tuple[tuple[int, int], ...]:
    """(left, right) index pairs that a horizontal flip swaps, in the left joints' order."""
    return tuple((i, int(self.flip_index[i])) for i, s in enumerate(self.sides) if s == 'left')

  def __repr__(self) -> str:
    return f'Skeleton3DFormat({self.name!r}, J={self.num_joints})'


def _build(name: str, spec: dict) -> Skeleton3DFormat:
  names = _split(spec['joints'])
  lookup = {n: i for i, n in enumerate(names)}
  name_set = frozenset(names)

  def idx(joint):
    if joint not in lookup:
      raise ValueError(f'3D skeleton format {name!r} data refers to unknown joint {joint!r}')
    return lookup[joint]

  sides = tuple(_side_of(n, name_set) for n in names)
  flip = np.asarray([lookup[_mirrored(n)] if s != 'center' else i for i, (n, s) in enumerate(zip(names, sides))])
  links, seen = [], set()
  for chain in spec['links'].split(','):
    joints = chain.split('-')
    for a, b in zip(joints, joints[1:]):
      for pair in ((idx(a), idx(b)), (int(flip[idx(a)]), int(flip[idx(b)]))):
        if frozenset(pair) not in seen:
          seen.add(frozenset(pair))
          links.append(pair)
  root = spec['root']
  root_indices = (idx(root),) if root is not None else tuple(idx(n) for n in spec['root_joints'])
  renamed = spec.get('renamed', {})
  for joint in renamed:
    idx(joint)
  return Skeleton3DFormat(
    name=name,
    title=spec['title'],
    joint_names=names,
    sides=sides,
    flip_index=flip,
    links=tuple(links),
    root=root,
    root_indices=root_indices,
    source_names=tuple(renamed.get(n, n) for n in names),
  )


def _build_all() -> dict[str, Skeleton3DFormat]:
  if tuple(_data.FORMATS3D) != _data.FORMAT_ORDER:
    raise ValueError('formats3d.FORMATS3D must list the formats in FORMAT_ORDER')
  formats = {name: _build(name, spec) for name, spec in _data.FORMATS3D.items()}
  counts = {name: f.num_joints for name, f in formats.items()}
  if counts != _data.EXPECTED_COUNTS or sum(counts.values()) != _data.EXPECTED_TOTAL:
    raise ValueError(f'3D format joint counts {counts} differ from formats3d.EXPECTED_COUNTS')
  return formats


_REGISTRY: dict[str, Skeleton3DFormat] = _build_all()


def list_formats3d() -> tuple[str, ...]:
  """Returns the 3D format names in the merged order."""
  return _data.FORMAT_ORDER


def get_format3d(name: str) -> Skeleton3DFormat:
  """Returns the `Skeleton3DFormat` called `name`; raises `UnknownFormatError` listing the known names."""
  fmt = _REGISTRY.get(name)
  if fmt is None:
    raise UnknownFormatError(f'unknown 3D skeleton format {name!r}; known: {", ".join(_data.FORMAT_ORDER)}')
  return fmt


_EXTRA_SPECS: dict[str, dict] = {}


def register_format3d(name: str, spec: dict) -> Skeleton3DFormat:
  """Adds a 3D format outside the merged list, so that `get_format3d(name)` finds it: `spec` has the keys of a
  `formats3d.FORMATS3D` entry. The 555 merged joints, the datasets and the benchmarks do not change (used for the
  synthetic 3D datasets' formats, `data_pipeline/synthetic/formats3d.py`). Returns the format; registering an equal
  spec again returns the registered one. Raises ValueError for a name already taken by a real format or by another
  spec, and for a spec the registry rejects."""
  if name in _data.FORMATS3D or (name in _EXTRA_SPECS and _EXTRA_SPECS[name] != spec):
    raise ValueError(f'3D skeleton format {name!r} is already registered with another definition')
  if name not in _EXTRA_SPECS:
    _REGISTRY[name] = _build(name, spec)
    _EXTRA_SPECS[name] = dict(spec)
  return _REGISTRY[name]


# --- datasets -------------------------------------------------------------------------------------------------------


class Dataset3D(NamedTuple):
  """One 3D training dataset: the formats its examples label (joints of all of them, in this order), the number
  of its examples in every batch, and its name as METHOD.md writes it."""

  formats: tuple[str, ...]
  per_batch: int
  title: str

  @property
  def format(self) -> str:
    """The dataset's (first) format; AGORA and BEHAVE label a second one too (see `formats`)."""
    return self.formats[0]


def _build_datasets() -> types.MappingProxyType:
  datasets = {}
  for name, title, formats, per_batch in _data.DATASETS3D:
    if name in datasets or not formats or any(f not in _REGISTRY for f in formats) or per_batch < 1:
      raise ValueError(f'formats3d.DATASETS3D: bad entry for {name!r}')
    datasets[name] = Dataset3D(tuple(formats), int(per_batch), title)
  return types.MappingProxyType(datasets)


# Dataset name -> Dataset3D(formats, per_batch, title), in METHOD.md §3.1's order (28 datasets, 96 per batch).
DATASETS_3D = _build_datasets()


def get_dataset3d(name: str) -> Dataset3D:
  """Returns the `Dataset3D` entry of 3D dataset `name`; raises UserError listing the known names."""
  if name not in DATASETS_3D:
    raise UserError(f'unknown 3D dataset {name!r}; known: {", ".join(DATASETS_3D)}')
  return DATASETS_3D[name]


# --- the merged joint list ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _offsets() -> dict[str, int]:
  offsets, total = {}, 0
  for name in _data.FORMAT_ORDER:
    offsets[name] = total
    total += _REGISTRY[name].num_joints
  return offsets


@functools.lru_cache(maxsize=None)
def merged_joint_names() -> tuple[str, ...]:
  """Returns the 555 merged names: the formats in `list_formats3d()` order, each format's suffixed joints in order."""
  names = tuple(n for f in _data.FORMAT_ORDER for n in _REGISTRY[f].suffixed_names)
  if len(set(names)) != len(names):
    raise ValueError('merged 3D joint names are not distinct')
  return names


def merged_index(format_name: str) -> np.ndarray:
  """Returns the int32 indices of format `format_name`'s joints in the merged list (in the format's joint order)."""
  fmt = get_format3d(format_name)
  start = _offsets()[format_name]
  return _readonly(np.arange(start, start + fmt.num_joints, dtype=np.int32))


def dataset_merged_index(dataset: str) -> np.ndarray:
  """Returns the int32 merged indices of the joints that dataset `dataset`'s examples carry (its formats, in order)."""
  return _readonly(np.concatenate([merged_index(f) for f in get_dataset3d(dataset).formats]))


@functools.lru_cache(maxsize=None)
def merged_sides() -> tuple[str, ...]:
  """Returns 'left' | 'right' | 'center' per merged joint (the left / right / centre partition of all 555)."""
  return tuple(s for f in _data.FORMAT_ORDER for s in _REGISTRY[f].sides)


@functools.lru_cache(maxsize=None)
def _merged_flip() -> np.ndarray:
  return _readonly(np.concatenate([_offsets()[f] + _REGISTRY[f].flip_index for f in _data.FORMAT_ORDER]))


def merged_flip_index() -> np.ndarray:
  """Returns the int32 (555,) flip permutation of the merged list (each format's flip_index, offset)."""
  return _merged_flip()


@functools.lru_cache(maxsize=None)
def merged_links() -> tuple[tuple[int, int], ...]:
  """Returns every format's links as merged-index pairs, for drawing all 555 joints."""
  return tuple((a + _offsets()[f], b + _offsets()[f]) for f in _data.FORMAT_ORDER for a, b in _REGISTRY[f].links)


# --- benchmarks -----------------------------------------------------------------------------------------------------


def _benchmark(protocol: str) -> tuple[str, str]:
  if protocol not in _data.BENCHMARKS:
    raise UserError(f'unknown 3D benchmark protocol {protocol!r}; known: {", ".join(_data.BENCHMARKS)}')
  return _data.BENCHMARKS[protocol]


def benchmark_joints(protocol: str) -> tuple[str, ...]:
  """Returns the ordered short joint names that benchmark `protocol` scores.

  'h36m': the 17 H36M joints; '3dhp': 3DHP's 17 (test-set order); '3dhp_pck': the 14 of them that PCK / AUC use
  (without pelvis, spine, head); '3dpw': SMPL's 24. Raises UserError for another name.
  """
  return _split(_benchmark(protocol)[1])


def benchmark_format(protocol: str) -> str:
  """Returns the 3D format whose joints benchmark `protocol` scores ('h36m', '3dhp' or 'smpl')."""
  return _benchmark(protocol)[0]


def benchmark_merged_index(protocol: str) -> np.ndarray:
  """Returns the int32 merged indices of benchmark `protocol`'s joints, in `benchmark_joints(protocol)` order."""
  fmt = get_format3d(benchmark_format(protocol))
  start = _offsets()[fmt.name]
  return _readonly(np.asarray([start + fmt.index(n) for n in benchmark_joints(protocol)], dtype=np.int32))


# --- 2D labels supervising 3D joints --------------------------------------------------------------------------------


def canonical_2d_name(format2d_name: str, keypoint: str) -> str | None:
  """Returns the short name ('lsho') of keypoint `keypoint` of 2D format `format2d_name` ('left_shoulder'), or None
  when no 3D joint name corresponds (toes, face, fingers, every animal keypoint)."""
  fmt = get_format(format2d_name)
  if fmt.category == 'animal':
    return None
  override = _data.OVERRIDES_2D.get(format2d_name, {})
  if keypoint in override:
    return override[keypoint]
  for prefix, letter in (('left_', 'l'), ('right_', 'r')):
    if keypoint.startswith(prefix):
      stem = _data.STEMS_2D.get(keypoint[len(prefix) :])
      return None if stem is None else letter + stem
  return _data.CENTER_2D.get(keypoint)


@functools.lru_cache(maxsize=None)
def _prefix_map(format2d_name: str) -> tuple[tuple[int, ...], ...]:
  fmt = get_format(format2d_name)
  names = merged_joint_names()
  result = []
  for keypoint in fmt.keypoint_names:
    short = canonical_2d_name(format2d_name, keypoint)
    result.append(() if short is None else tuple(i for i, n in enumerate(names) if n.startswith(short)))
  return tuple(result)


def prefix_map(format2d_name: str) -> list[list[int]]:
  """For each keypoint of 2D format `format2d_name` (in its order), the sorted merged indices of the 3D joints whose
  name begins with the keypoint's short name (METHOD.md §3.1: a 2D label supervises the projection of their mean).

  A keypoint without a short name, and every keypoint of an animal format, maps to an empty list. Raises
  UnknownFormatError for an unknown 2D format.
  """
  return [list(ids) for ids in _prefix_map(format2d_name)]


def prefix_matrix(format2d_name: str, joint_names=None) -> np.ndarray:
  """Returns float32 (K, J) averaging weights over `joint_names` (suffixed 3D joint names, default the 555 merged
  ones, J of them): row k holds 1/n at the n joints whose name begins with keypoint k's short name
  (`canonical_2d_name`), zeros where none does; `prefix_matrix(f) @ joints` is the mean that keypoint k supervises."""
  if joint_names is None:
    ids = _prefix_map(format2d_name)
    width = len(merged_joint_names())
  else:
    fmt = get_format(format2d_name)
    shorts = [canonical_2d_name(format2d_name, keypoint) for keypoint in fmt.keypoint_names]
    ids = [() if s is None else tuple(i for i, n in enumerate(joint_names) if n.startswith(s)) for s in shorts]
    width = len(joint_names)
  matrix = np.zeros((len(ids), width), dtype=np.float32)
  for k, row in enumerate(ids):
    if row:
      matrix[k, list(row)] = 1.0 / len(row)
  return matrix
