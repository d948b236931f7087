"""Keypoint-format registry: `SkeletonFormat` objects built from the data in `formats.py`."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from posebh_jax.skeletons import formats as _data

TRAIN_FORMATS = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')

_CATEGORIES = ('human', 'animal', 'hand')
# Drawing colours (RGB): left side, right side, centre line.
_LEFT_COLOR = (0, 255, 0)
_RIGHT_COLOR = (255, 128, 0)
_CENTER_COLOR = (51, 153, 255)


class UnknownFormatError(ValueError):
  """Raised for a skeleton format name that is not registered."""


def _side(name: str) -> str:
  if name.startswith('left') or '_left' in name:
    return 'left'
  if name.startswith('right') or '_right' in name:
    return 'right'
  return 'center'


@dataclasses.dataclass(frozen=True, eq=False)
class SkeletonFormat:
  """One keypoint format (a dataset's keypoint convention).

  Attributes:
    name: registry name, e.g. 'coco'.
    keypoint_names: K names; position = channel index.
    flip_pairs: (i, j) index pairs swapped by a horizontal flip.
    sigmas: float32 (K,) OKS sigmas.
    links: (i, j) index pairs of bones, for drawing.
    upper_body_ids / lower_body_ids: indices of the two halves used by half-body augmentation
      (animals: front / back half; empty for hands).
    category: 'human' | 'animal' | 'hand'.
    parts: part name -> int index array (coco_wholebody: body, foot, face, lefthand, righthand;
      other formats: a single 'body' part with every keypoint).
  """

  name: str
  keypoint_names: tuple[str, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  sigmas: np.ndarray
  links: tuple[tuple[int, int], ...]
  upper_body_ids: tuple[int, ...]
  lower_body_ids: tuple[int, ...]
  category: str
  parts: dict[str, np.ndarray]

  def __post_init__(self):
    k = len(self.keypoint_names)
    if len(set(self.keypoint_names)) != k:
      raise ValueError(f'skeleton format {self.name!r}: keypoint names are not unique')
    if self.category not in _CATEGORIES:
      raise ValueError(f'skeleton format {self.name!r}: category must be one of {_CATEGORIES}, got {self.category!r}')
    sigmas = np.asarray(self.sigmas, dtype=np.float32)
    if sigmas.shape != (k,) or not np.all(sigmas > 0):
      raise ValueError(f'skeleton format {self.name!r}: need {k} positive sigmas, got shape {sigmas.shape}')
    sigmas.setflags(write=False)
    object.__setattr__(self, 'sigmas', sigmas)
    seen = set()
    for i, j in self.flip_pairs:
      if not (0 <= i < k and 0 <= j < k) or i == j or i in seen or j in seen:
        raise ValueError(f'skeleton format {self.name!r}: bad flip pair ({i}, {j})')
      seen.update((i, j))
    for i, j in self.links:
      if not (0 <= i < k and 0 <= j < k):
        raise ValueError(f'skeleton format {self.name!r}: link ({i}, {j}) out of range')
    for ids in (self.upper_body_ids, self.lower_body_ids):
      if any(not 0 <= i < k for i in ids):
        raise ValueError(f'skeleton format {self.name!r}: half-body index out of range')
    parts = {}
    for part, ids in self.parts.items():
      arr = np.asarray(ids, dtype=np.int32)
      if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise ValueError(f'skeleton format {self.name!r}: part {part!r} index out of range')
      arr.setflags(write=False)
      parts[part] = arr
    object.__setattr__(self, 'parts', parts)

  @property
  def num_keypoints(self) -> int:
    """Number of keypoints K."""
    return len(self.keypoint_names)

  @functools.cached_property
  def flip_index(self) -> np.ndarray:
    """int32 (K,) permutation: flip_index[i] is the keypoint that i becomes after a horizontal flip."""
    perm = np.arange(self.num_keypoints, dtype=np.int32)
    for i, j in self.flip_pairs:
      perm[i], perm[j] = j, i
    perm.setflags(write=False)
    return perm

  @functools.cached_property
  def _name_to_index(self) -> dict[str, int]:
    return {n: i for i, n in enumerate(self.keypoint_names)}

  def index(self, name: str) -> int:
    """Returns the channel index of keypoint `name`; raises ValueError (one line) if unknown."""
    try:
      return self._name_to_index[name]
    except KeyError:
      examples = ', '.join(self.keypoint_names[:5])
      raise ValueError(
        f'skeleton format {self.name!r} has no keypoint {name!r} ({self.num_keypoints} keypoints, '
        f'e.g. {examples}, ...); see get_format({self.name!r}).keypoint_names'
      ) from None

  @functools.cached_property
  def keypoint_colors(self) -> tuple[tuple[int, int, int], ...]:
    """RGB colour per keypoint for drawing: left side, right side or centre colour."""
    by_side = {'left': _LEFT_COLOR, 'right': _RIGHT_COLOR, 'center': _CENTER_COLOR}
    return tuple(by_side[_side(n)] for n in self.keypoint_names)

  @functools.cached_property
  def link_colors(self) -> tuple[tuple[int, int, int], ...]:
    """RGB colour per link: a side's colour when both ends are on that side, else the centre colour."""
    colors = []
    for i, j in self.links:
      a, b = _side(self.keypoint_names[i]), _side(self.keypoint_names[j])
      side = a if a == b else 'center'
      colors.append({'left': _LEFT_COLOR, 'right': _RIGHT_COLOR, 'center': _CENTER_COLOR}[side])
    return tuple(colors)

  def __repr__(self) -> str:
    return f'SkeletonFormat({self.name!r}, K={self.num_keypoints}, category={self.category!r})'


def _build(name: str, spec: dict) -> SkeletonFormat:
  names = tuple(spec['keypoint_names'])
  lookup = {n: i for i, n in enumerate(names)}

  def ids(seq):
    try:
      return tuple(lookup[n] for n in seq)
    except KeyError as e:
      raise ValueError(f'skeleton format {name!r} data refers to unknown keypoint {e.args[0]!r}') from None

  parts = spec.get('parts') or {'body': names}
  return SkeletonFormat(
    name=name,
    keypoint_names=names,
    flip_pairs=tuple(ids(p) for p in spec['flip_pairs']),
    sigmas=np.asarray(spec['sigmas'], dtype=np.float32),
    links=tuple(ids(p) for p in spec['links']),
    upper_body_ids=ids(spec['upper_body']),
    lower_body_ids=ids(spec['lower_body']),
    category=spec['category'],
    parts={part: np.asarray(ids(members), dtype=np.int32) for part, members in parts.items()},
  )


_REGISTRY: dict[str, SkeletonFormat] = {n: _build(n, s) for n, s in _data.FORMATS.items()}


def list_formats() -> tuple[str, ...]:
  """Returns the registered format names, sorted."""
  return tuple(sorted(_REGISTRY))


def get_format(name: str) -> SkeletonFormat:
  """Returns the `SkeletonFormat` called `name`; raises `UnknownFormatError` listing the known names."""
  fmt = _REGISTRY.get(name)
  if fmt is None:
    raise UnknownFormatError(f'unknown skeleton format {name!r}; known formats: {", ".join(list_formats())}')
  return fmt


@dataclasses.dataclass(frozen=True, eq=False)
class GlobalKeypointIndex:
  """Concatenation of several formats' keypoints into one global channel index.

  Attributes:
    formats: the format names, in order.
    offsets: format name -> index of its first keypoint in the global index.
    total: total number of keypoints (sum of K over formats).
  """

  formats: tuple[str, ...]
  offsets: dict[str, int]
  total: int

  def slice(self, format_name: str) -> slice:
    """Returns the global index range `slice(start, stop)` of `format_name`'s keypoints."""
    if format_name not in self.offsets:
      raise ValueError(f'format {format_name!r} is not in this global index; it holds: {", ".join(self.formats)}')
    start = self.offsets[format_name]
    return slice(start, start + get_format(format_name).num_keypoints)

  def name(self, global_i: int) -> str:
    """Returns 'format/keypoint' for global index `global_i` in [0, total)."""
    global_i = int(global_i)
    if not 0 <= global_i < self.total:
      raise ValueError(f'global keypoint index {global_i} out of range [0, {self.total})')
    for fmt in reversed(self.formats):
      if global_i >= self.offsets[fmt]:
        return f'{fmt}/{get_format(fmt).keypoint_names[global_i - self.offsets[fmt]]}'
    raise AssertionError('unreachable')

  def lookup(self, qualified_name: str) -> int:
    """Returns the global index of 'format/keypoint' (e.g. 'coco/left_knee')."""
    fmt, sep, kpt = qualified_name.partition('/')
    if not sep:
      raise ValueError(f'expected "format/keypoint" (e.g. "coco/left_knee"), got {qualified_name!r}')
    start = self.slice(fmt).start
    return start + get_format(fmt).index(kpt)


def global_index(formats: tuple[str, ...] = TRAIN_FORMATS) -> GlobalKeypointIndex:
  """Lays out the keypoints of `formats` one after another; returns offsets and the total count."""
  formats = tuple(formats)
  if len(set(formats)) != len(formats):
    raise ValueError(f'formats in a global index must be distinct, got {formats}')
  offsets, total = {}, 0
  for f in formats:
    offsets[f] = total
    total += get_format(f).num_keypoints
  return GlobalKeypointIndex(formats=formats, offsets=offsets, total=total)


def _resolve(fmt: SkeletonFormat, key) -> int:
  if isinstance(key, (int, np.integer)):
    if not 0 <= key < fmt.num_keypoints:
      raise ValueError(f'mapping data: index {key} out of range for {fmt.name!r}')
    return int(key)
  return fmt.index(key)


@functools.lru_cache(maxsize=None)
def _direct_mapping(source: str, target: str) -> tuple[tuple[int, int], ...]:
  spec = _data.MAPPINGS[(source, target)]
  src, tgt = get_format(source), get_format(target)
  pairs = [(_resolve(src, a), _resolve(tgt, b)) for a, b in spec['pairs']]
  if spec['by_name']:
    used_src = {a for a, _ in pairs}
    used_tgt = {b for _, b in pairs}
    for i, n in enumerate(src.keypoint_names):
      j = tgt._name_to_index.get(n)
      if j is not None and i not in used_src and j not in used_tgt:
        pairs.append((i, j))
  if len({a for a, _ in pairs}) != len(pairs) or len({b for _, b in pairs}) != len(pairs):
    raise ValueError(f'mapping {source}->{target} is not one-to-one')
  return tuple(sorted(pairs))


def format_mapping(source: str, target: str) -> list[tuple[int, int]]:
  """Keypoint correspondences between two formats.

  Returns a list of (source_index, target_index) pairs, sorted by source index, of keypoints that mean the
  same landmark (one-to-one). Identity for source == target; the reverse of a defined mapping is derived.
  Raises UnknownFormatError for unknown names, ValueError if no mapping is defined.
  """
  get_format(source)
  get_format(target)
  if source == target:
    return [(i, i) for i in range(get_format(source).num_keypoints)]
  if (source, target) in _data.MAPPINGS:
    return list(_direct_mapping(source, target))
  if (target, source) in _data.MAPPINGS:
    return sorted((a, b) for b, a in _direct_mapping(target, source))
  defined = sorted({t for s, t in _data.MAPPINGS if s == source} | {s for s, t in _data.MAPPINGS if t == source})
  raise ValueError(
    f'no keypoint mapping defined from {source!r} to {target!r}; {source!r} maps to: '
    f'{", ".join(defined) or "nothing"} (add one to posebh_jax/skeletons/formats.py MAPPINGS)'
  )


def remap_keypoints(values, source: str, target: str, axis: int = -1, fill: float = 0.0) -> np.ndarray:
  """Per-keypoint `values` of format `source` (size K_source along `axis`: heatmap channels, target weights,
  keypoint rows) placed at `target`'s keypoints (`format_mapping`): K_target along `axis`, `fill` where a target
  keypoint has no source partner (e.g. COCO's examples in the unified format: weight 0 at pelvis, thorax, neck,
  head top). NumPy in, NumPy out, dtype kept."""
  values = np.asarray(values)
  axis = axis % values.ndim
  if values.shape[axis] != get_format(source).num_keypoints:
    raise ValueError(
      f'{values.shape[axis]} values along axis {axis}, but {source!r} has {get_format(source).num_keypoints} keypoints'
    )
  shape = list(values.shape)
  shape[axis] = get_format(target).num_keypoints
  out = np.full(shape, fill, dtype=values.dtype)
  pairs = np.asarray(format_mapping(source, target), dtype=np.int64).reshape(-1, 2)
  index = [slice(None)] * values.ndim
  source_index, target_index = list(index), list(index)
  source_index[axis], target_index[axis] = pairs[:, 0], pairs[:, 1]
  out[tuple(target_index)] = values[tuple(source_index)]
  return out
