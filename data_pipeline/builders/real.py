"""Shared base of the real-dataset tfds builders: raw-layout lookup, validation, records, ground-truth files.

A builder reads a dataset's official raw layout from a directory the user names (`manual_dir`), validates
it, and writes one ArrayRecord record per person (or animal, or hand) instance: top-down training and
evaluation crop one instance each. Features are `tfds.features.Tensor` only, so neither building nor
reading needs TensorFlow.

Record schema (every real builder):
  image        bytes    the original image file bytes (JPEG as distributed; never re-encoded)
  file_name    bytes    the image's file name as the annotation file gives it
  image_id     int64    the dataset's image id
  height, width int64   image size in px (from the annotation file, else from the JPEG header)
  category     bytes    the skeleton's category: b'human' | b'animal' | b'hand'
  category_id  int64    the annotation's category id (AP-10K / APT-36K: the species; humans: 1)
  instance_id  int64    the annotation id (> 0; MPII: 1 + position in the json list; detector splits: 1 +
                        position in the detection file)
  bbox         float32 (4,) x, y, w, h in px: the crop box (COCO-style sets: the annotated box cleaned as the
                        reference does: x1 = max(0, x), x2 = min(W - 1, x1 + max(0, w - 1)), the same for y,
                        box = [x1, y1, x2 - x1, y2 - y1]; detector splits: the detection box as given)
  area         float32  the annotation's area, else w * h of the box
  iscrowd      int64    the annotation's crowd flag (0 when absent)
  bbox_score   float32  1 for ground-truth boxes, the detector score in `<split>_det` splits
  head_size    float32  px, for PCKh (MPII; 0 where a dataset defines none)
  keypoints    float32 (K, 3) x, y, visibility in image px in the registry's keypoint order for the
                        dataset's format (visibility as the dataset gives it: > 0 labelled); all zeros in
                        detector splits
  plus per-dataset extras (see each builder: e.g. crowd_index, video_id/track_id, joints_cam, hand_type).

Splits: `train`, `validation`, `test` (those the raw layout has), and `<split>_det` when a detector result
file is given (`det_json`): one record per detection of a person with score >= `det_score_threshold` on the
images of `<split>`.

Skipping (counted per split and reason in `info.metadata['skipped']` and printed by `prepare`): instances
whose image file is missing or unreadable, boxes with non-positive size (or nothing left after clipping to
the image), and instances with no labelled keypoint (in every ground-truth-box split, as the reference
loaders do). Everything else that is wrong (unreadable or truncated annotation file, a missing field,
keypoints of the wrong length, an unknown category or image id, ...) raises `RawDataError` naming the
file, the record and the field.

Evaluation ground truth: for every non-train split the builder writes `gt_<split>.json` next to the
ArrayRecord files: the official annotations of the stored images in COCO format, normalised so that
`keypoints` holds all K keypoints in the registry order (COCO-WholeBody: body, foot, face, left hand, right
hand concatenated), `num_keypoints` counts labelled ones, categories carry the registry's keypoint names and
links, `area` is kept only where the dataset has one, and per-dataset fields (crowdIndex, head_size, ...)
are kept. `gt_json_path` returns its path (a `<split>_det` split uses the gt of `<split>`). Every split also
gets `records_<split>.npz` (`INDEX_FIELDS`, one row per record in record order) so that evaluation reads the
per-record ground truth (keypoints, head sizes, ids, boxes, box scores) without reading the images
(`read_record_index`; both live in `data_pipeline.builders.records` and are re-exported here).

Stored size: one record per instance repeats its image's bytes (COCO train: about 150k records).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import struct
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# gt_json_path and read_record_index are re-exported: readers of a prepared dataset find them here too.
from data_pipeline.builders.records import DET_SUFFIX, INDEX_FIELDS, gt_file_name, index_file_name
from data_pipeline.builders.records import gt_json_path as gt_json_path  # re-exported: builders' public helpers
from data_pipeline.builders.records import read_record_index as read_record_index  # re-exported
from data_pipeline.errors import RawDataError
from posebh_jax.skeletons import get_format

# mmpose's default detection-score threshold for top-down evaluation with detector boxes (det_bbox_thr=0.0
# in the ViTPose++ configs): every person detection is kept; OKS-NMS and rescoring handle the rest.
DEFAULT_DET_SCORE_THRESHOLD = 0.0
_EXAMPLES_PER_REASON = 3
_HEADER_BYTES = 1 << 17


# ----------------------------------------------------------------------------------------------- raw records


@dataclasses.dataclass
class RawImage:
  """One image of a split: `path` is the resolved file on disk (None when missing); sizes in px."""

  image_id: int
  file_name: str
  path: str | None
  height: int
  width: int
  extras: dict = dataclasses.field(default_factory=dict)  # per-image extra record fields
  gt_extras: dict = dataclasses.field(default_factory=dict)  # extra fields of the gt json's image entry


@dataclasses.dataclass
class RawInstance:
  """One instance record before its image is attached (see the module docstring for the fields)."""

  instance_id: int
  image_id: int
  category_id: int
  bbox: np.ndarray
  area: float
  keypoints: np.ndarray
  iscrowd: int = 0
  head_size: float = 0.0
  bbox_score: float = 1.0
  extras: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SplitData:
  """What a builder's loader returns for one split: images (in file order), instance records, and the
  normalised COCO-format ground truth (None for train splits)."""

  images: dict[int, RawImage]
  instances: list[RawInstance]
  gt: dict | None
  source: str


class SkipCounter:
  """Counts skipped records per split and reason, with the first few examples of each."""

  def __init__(self):
    self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self.examples: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))

  def skip(self, split: str, reason: str, example: str, count: int = 1) -> None:
    """Records `count` skipped instances of `split` for `reason`; `example` names one (file, record)."""
    self.counts[split][reason] += count
    examples = self.examples[split][reason]
    if len(examples) < _EXAMPLES_PER_REASON:
      examples.append(example)

  def summary(self) -> dict[str, dict[str, int]]:
    """{split: {reason: count}}."""
    return {split: dict(sorted(c.items())) for split, c in sorted(self.counts.items()) if c}

  def lines(self) -> list[str]:
    """Human-readable lines, one per split and reason, with examples."""
    out = []
    for split, counter in sorted(self.counts.items()):
      for reason, count in sorted(counter.items()):
        out.append(f'{split}: {count} {reason.replace("_", " ")} (e.g. {"; ".join(self.examples[split][reason])})')
    return out


# ----------------------------------------------------------------------------------------------- validation


def load_json(path: str):
  """Parses a JSON file; raises `RawDataError` naming the file if it is unreadable, malformed or truncated."""
  try:
    with open(path, 'rb') as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise RawDataError(
      f'{path}: not valid JSON (malformed or truncated: {err.msg} at line {err.lineno} '
      f'column {err.colno}); re-download or re-extract it'
    ) from None
  except UnicodeDecodeError as err:
    raise RawDataError(f'{path}: not a UTF-8 JSON file ({err.reason} at byte {err.start})') from None
  except OSError as err:
    raise RawDataError(f'{path}: cannot be read ({err.strerror})') from None


def require(record: Mapping, field: str, path: str, what: str):
  """Returns `record[field]`; raises `RawDataError` ('<path>: <what>: missing field ...') when absent."""
  if not isinstance(record, Mapping):
    raise RawDataError(f'{path}: {what}: expected an object, got {type(record).__name__}')
  if field not in record:
    raise RawDataError(f'{path}: {what}: missing field {field!r}')
  return record[field]


def as_number(value, field: str, path: str, what: str) -> float:
  """`value` as a finite float; raises `RawDataError` otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise RawDataError(f'{path}: {what}: field {field!r} must be a finite number, got {value!r}')
  return float(value)


def as_int(value, field: str, path: str, what: str) -> int:
  """`value` as an int (integral floats accepted); raises `RawDataError` otherwise."""
  number = as_number(value, field, path, what)
  if number != int(number):
    raise RawDataError(f'{path}: {what}: field {field!r} must be an integer, got {value!r}')
  return int(number)


def as_array(value, shape: tuple[int, ...], field: str, path: str, what: str) -> np.ndarray:
  """`value` (nested lists of numbers) as a float64 array of `shape`; raises `RawDataError` naming the
  expected size otherwise (e.g. keypoints of the wrong length). A flat list of the right length, or an array
  that differs from `shape` only by singleton dimensions (e.g. joint_valid [42][1]), is accepted."""
  try:
    array = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    raise RawDataError(f'{path}: {what}: field {field!r} is not an array of numbers') from None
  squeezed = tuple(d for d in array.shape if d != 1)
  if array.size != int(np.prod(shape)) or (
    array.ndim > 1 and array.shape != shape and squeezed != tuple(d for d in shape if d != 1)
  ):
    dims = ' x '.join(str(d) for d in shape)
    raise RawDataError(
      f'{path}: {what}: field {field!r} has shape {list(array.shape)} ({array.size} values), '
      f'expected {dims} = {int(np.prod(shape))} values'
    )
  if not np.all(np.isfinite(array)):
    raise RawDataError(f'{path}: {what}: field {field!r} has non-finite values')
  return array.reshape(shape)


def require_list(data, field: str, path: str) -> list:
  """`data[field]` as a list; raises `RawDataError` when `data` is no object or the field no list."""
  if not isinstance(data, Mapping):
    raise RawDataError(f'{path}: expected a JSON object with {field!r}, got {type(data).__name__}')
  value = require(data, field, path, 'top level')
  if not isinstance(value, list):
    raise RawDataError(f'{path}: top level: field {field!r} must be a list, got {type(value).__name__}')
  return value


def clip_box(bbox: np.ndarray, width: int, height: int) -> np.ndarray | None:
  """The reference's box cleaning: the box (x, y, w, h) clipped to the image [0, W-1] x [0, H-1];
  None when nothing is left (zero width or height)."""
  x, y, w, h = (float(v) for v in bbox)
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  if x2 <= x1 or y2 <= y1:
    return None
  return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)


# ----------------------------------------------------------------------------------------------- images


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
  """(height, width) from a JPEG (SOF marker) or PNG (IHDR) header, or None if neither parses."""
  if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24:
    width, height = struct.unpack('>II', data[16:24])
    return int(height), int(width)
  if data[:2] != b'\xff\xd8':
    return None
  i = 2
  while i + 4 <= len(data):
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
      i += 2
      continue
    length = struct.unpack('>H', data[i + 2 : i + 4])[0]
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      if i + 9 > len(data):
        return None
      height, width = struct.unpack('>HH', data[i + 5 : i + 9])
      return int(height), int(width)
    i += 2 + length
  return None


def check_image_bytes(data: bytes) -> str | None:
  """None if `data` looks like a complete JPEG or PNG file, else the problem ('not a JPEG or PNG image',
  'truncated JPEG (no end marker)')."""
  if image_size_from_bytes(data) is None:
    return 'not a JPEG or PNG image (or a corrupt header)'
  if data[:2] == b'\xff\xd8' and b'\xff\xd9' not in data[-1024:]:
    return 'truncated JPEG (no end-of-image marker)'
  return None


def image_size_from_file(path: str) -> tuple[int, int] | None:
  """(height, width) of an image file from its header (reads at most the whole file), or None."""
  with open(path, 'rb') as f:
    head = f.read(_HEADER_BYTES)
    size = image_size_from_bytes(head)
    if size is None and len(head) == _HEADER_BYTES:  # a large EXIF block before the frame header
      size = image_size_from_bytes(head + f.read())
  return size


def find_existing(root: str | None, candidates: Sequence[str]) -> str | None:
  """The first of `candidates` (relative to `root`, or absolute) that exists, or None."""
  for candidate in candidates:
    path = candidate if os.path.isabs(candidate) or root is None else os.path.join(root, candidate)
    if os.path.exists(path):
      return path
  return None


# ----------------------------------------------------------------------------------------------- gt files


def normalised_category(category: Mapping, format_name: str, path: str) -> dict:
  """A gt category entry: the raw id/name/supercategory with the registry's keypoint names and 1-based links."""
  skeleton = get_format(format_name)
  cat_id = as_int(require(category, 'id', path, 'category'), 'id', path, 'category')
  return {
    'id': cat_id,
    'name': str(category.get('name', skeleton.category)),
    'supercategory': str(category.get('supercategory', skeleton.category)),
    'keypoints': list(skeleton.keypoint_names),
    'skeleton': [[int(i) + 1, int(j) + 1] for i, j in skeleton.links],
  }


def gt_annotation(
  instance_id: int,
  image_id: int,
  category_id: int,
  keypoints: np.ndarray,
  bbox,
  area: float | None,
  iscrowd: int,
  **extras,
) -> dict:
  """A gt annotation entry (COCO format, all K keypoints flattened in `keypoints`)."""
  ann = {
    'id': int(instance_id),
    'image_id': int(image_id),
    'category_id': int(category_id),
    'keypoints': [float(v) for v in np.asarray(keypoints, np.float64).reshape(-1)],
    'num_keypoints': int(np.count_nonzero(np.asarray(keypoints)[:, 2] > 0)),
    'bbox': [float(v) for v in np.asarray(bbox, np.float64).reshape(4)],
    'iscrowd': int(iscrowd),
  }
  if area is not None:
    ann['area'] = float(area)
  ann.update(extras)
  return ann


def gt_image(image: RawImage) -> dict:
  """A gt image entry: id, file_name, height, width plus the image's gt extras."""
  return {
    'id': int(image.image_id),
    'file_name': image.file_name,
    'height': int(image.height),
    'width': int(image.width),
    **image.gt_extras,
  }


# ----------------------------------------------------------------------------------------------- builder


@dataclasses.dataclass(frozen=True)
class SplitLayout:
  """Default raw layout of one split: annotation candidates and image-directory candidates, relative to
  the raw directory (the first that exists is used)."""

  annotations: tuple[str, ...]
  images: tuple[str, ...] = ('',)


def _tensor(shape, dtype):
  return tfds.features.Tensor(shape=shape, dtype=dtype)


class RealPoseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the real-dataset builders (see the module docstring). Subclasses set `FORMAT`, `LAYOUT`,
  `DESCRIPTION` and implement `load_split`; optionally `DET_SPLIT`, `IMAGE_EXTRAS`, `INSTANCE_EXTRAS`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version: one record per instance, original image bytes, normalised gt.'}
  code_path = epath.Path(__file__)

  FORMAT: str = ''
  DESCRIPTION: str = ''
  LAYOUT: dict[str, SplitLayout] = {}
  TRAIN_SPLITS: tuple[str, ...] = ('train',)
  DET_SPLIT: str | None = None  # the split a detection file (det_json) is for
  # name -> (shape, dtype, default) of extra per-image / per-instance record fields.
  IMAGE_EXTRAS: dict[str, tuple] = {}
  INSTANCE_EXTRAS: dict[str, tuple] = {}

  def __init__(
    self,
    *,
    manual_dir: str | None = None,
    annotation_files: Mapping[str, str] | None = None,
    image_dirs: Mapping[str, str] | None = None,
    det_json: str | None = None,
    det_score_threshold: float = DEFAULT_DET_SCORE_THRESHOLD,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs,
  ):
    """Keyword args:
      manual_dir: the raw dataset directory in the official layout (see the subclass's `LAYOUT`).
      annotation_files: {split: path} overriding the layout's annotation file of a split (a split named
        here is built even if the layout has no such file); paths relative to `manual_dir` or absolute.
      image_dirs: {split: directory} overriding the layout's image directory of a split.
      det_json: COCO detection results (list of {image_id, category_id, bbox xywh, score}) for the
        images of `DET_SPLIT`; adds the split `<DET_SPLIT>_det`.
      det_score_threshold: detections scoring below it are skipped (counted).
      options: builder-specific settings (e.g. MPII's `headboxes`).
      log: progress lines (default print).
    plus tfds builder args (`data_dir`, ...). The file format is ArrayRecord."""
    kwargs.setdefault('file_format', 'array_record')
    self._manual_dir = os.path.abspath(manual_dir) if manual_dir else None
    self._annotation_files = dict(annotation_files or {})
    self._image_dirs = dict(image_dirs or {})
    self._det_json = os.path.abspath(det_json) if det_json else None
    self._det_score_threshold = float(det_score_threshold)
    self._options = dict(options or {})
    self._log = log or (lambda line: print(line, flush=True))
    self._json_cache: dict[str, Any] = {}
    self.skipped = SkipCounter()
    super().__init__(**kwargs)

  # -- configuration

  def source_settings(self) -> dict:
    """The requested raw source as a JSON-serialisable dict (kept in `info.metadata['source']`)."""
    return {
      'manual_dir': self._manual_dir,
      'annotation_files': dict(sorted(self._annotation_files.items())),
      'image_dirs': dict(sorted(self._image_dirs.items())),
      'det_json': self._det_json,
      'det_score_threshold': self._det_score_threshold,
      'options': {k: v for k, v in sorted(self._options.items())},
    }

  @property
  def stored_source(self) -> dict | None:
    """The raw-source settings of the prepared data on disk (None if not prepared)."""
    metadata = self.info.metadata
    return dict(metadata['source']) if metadata and 'source' in metadata else None

  def option(self, name: str, default=None):
    """A builder-specific option (from `options`)."""
    return self._options.get(name, default)

  def resolve(self, path: str) -> str:
    """`path` relative to the raw directory (unchanged when absolute)."""
    if os.path.isabs(path) or self._manual_dir is None:
      return os.path.abspath(path)
    return os.path.join(self._manual_dir, path)

  def annotation_path(self, split: str) -> str | None:
    """The annotation file (or directory) of `split`: the override, else the first existing layout entry."""
    if split in self._annotation_files:
      path = self.resolve(self._annotation_files[split])
      if not os.path.exists(path):
        raise RawDataError(f'{path}: annotation file of split {split!r} does not exist')
      return path
    layout = self.LAYOUT.get(split)
    return find_existing(self._manual_dir, layout.annotations) if layout else None

  def image_dir(self, split: str, annotation_path: str | None = None) -> str:
    """The image directory of `split`: the override, else the first existing layout entry, else the raw
    directory (or the annotation file's directory when no raw directory is given)."""
    if split in self._image_dirs:
      path = self.resolve(self._image_dirs[split])
      if not os.path.isdir(path):
        raise RawDataError(f'{path}: image directory of split {split!r} does not exist')
      return path
    layout = self.LAYOUT.get(split)
    found = find_existing(self._manual_dir, layout.images) if layout and self._manual_dir else None
    if found:
      return found
    return self._manual_dir or os.path.dirname(annotation_path or '.')

  def cached_json(self, path: str):
    """`load_json(path)`, parsed once per build (several splits may share one file)."""
    if path not in self._json_cache:
      self._json_cache[path] = load_json(path)
    return self._json_cache[path]

  # -- tfds

  def _info(self) -> tfds.core.DatasetInfo:
    num_keypoints = get_format(self.FORMAT).num_keypoints
    features = {
      'image': _tensor((), np.object_),
      'file_name': _tensor((), np.object_),
      'image_id': _tensor((), np.int64),
      'height': _tensor((), np.int64),
      'width': _tensor((), np.int64),
      'category': _tensor((), np.object_),
      'category_id': _tensor((), np.int64),
      'instance_id': _tensor((), np.int64),
      'bbox': _tensor((4,), np.float32),
      'area': _tensor((), np.float32),
      'iscrowd': _tensor((), np.int64),
      'bbox_score': _tensor((), np.float32),
      'head_size': _tensor((), np.float32),
      'keypoints': _tensor((num_keypoints, 3), np.float32),
    }
    for name, (shape, dtype, _) in {**self.IMAGE_EXTRAS, **self.INSTANCE_EXTRAS}.items():
      features[name] = _tensor(shape, dtype)
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=tfds.features.FeaturesDict(features),
      metadata=tfds.core.MetadataDict(source=self.source_settings(), format=self.FORMAT),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._manual_dir is not None and not os.path.isdir(self._manual_dir):
      raise RawDataError(f'{self._manual_dir}: raw data directory does not exist (--manual_dir)')
    if self._manual_dir is None and not self._annotation_files:
      raise RawDataError(
        f'no raw data directory given for {self.name}; pass --manual_dir=<the directory with the official layout>'
      )
    splits = [s for s in self.LAYOUT] + [s for s in self._annotation_files if s not in self.LAYOUT]
    loaded: dict[str, SplitData] = {}
    for split in splits:
      path = self.annotation_path(split)
      if path is None:
        continue
      self._log(f'{self.name} {split}: reading {path}')
      data = self.load_split(split, path, self.image_dir(split, path))
      self._check_not_empty(split, data)
      loaded[split] = data
    if not loaded:
      expected = '; '.join(f'{s}: {" or ".join(l.annotations)}' for s, l in self.LAYOUT.items())
      raise RawDataError(
        f'{self._manual_dir}: no annotation file of {self.name} found; expected (relative '
        f'to --manual_dir) {expected}, or name files with --ann_file SPLIT=PATH'
      )
    if self._det_json is not None:
      if self.DET_SPLIT is None:
        raise RawDataError(f'{self._det_json}: {self.name} has no detector-box split; drop --det_json')
      if self.DET_SPLIT not in loaded:
        raise RawDataError(
          f'{self._det_json}: detections are for split {self.DET_SPLIT!r}, which the raw '
          f'data of {self.name} does not have'
        )
      det_split = self.DET_SPLIT + DET_SUFFIX
      loaded[det_split] = self.detection_split(det_split, loaded[self.DET_SPLIT])
      self._check_not_empty(det_split, loaded[det_split])
    self._json_cache.clear()
    self.info.metadata['skipped'] = self.skipped.summary()
    return {split: self._generate_examples(split, data) for split, data in loaded.items()}

  def _check_not_empty(self, split: str, data: SplitData) -> None:
    if data.instances:
      return
    reasons = '; '.join(f'{r}: {c}' for r, c in self.skipped.summary().get(split, {}).items()) or 'none'
    examples = [e for r in self.skipped.examples[split].values() for e in r][:2]
    raise RawDataError(
      f'{data.source}: split {split!r} of {self.name} has no usable instance (skipped: '
      f'{reasons}{"; e.g. " + "; ".join(examples) if examples else ""}); check --manual_dir '
      f'and the image directory'
    )

  def _generate_examples(self, split: str, data: SplitData):
    by_image: dict[int, list[RawInstance]] = collections.defaultdict(list)
    for instance in data.instances:
      by_image[instance.image_id].append(instance)
    total, done, key = len(data.instances), 0, 0
    every = max(100, total // 10)
    start = time.perf_counter()
    category = get_format(self.FORMAT).category
    index = collections.defaultdict(list)
    unreadable = set()
    for image_id, instances in by_image.items():
      image = data.images[image_id]
      with open(image.path, 'rb') as f:
        payload = f.read()
      problem = check_image_bytes(payload)
      done += len(instances)
      if problem is not None:
        unreadable.add(image_id)
        self.skipped.skip(split, 'unreadable_image', f'{image.path}: {problem}')
        continue
      for instance in instances:
        record = {
          'image': payload,
          'file_name': image.file_name,
          'image_id': np.int64(image.image_id),
          'height': np.int64(image.height),
          'width': np.int64(image.width),
          'category': category,
          'category_id': np.int64(instance.category_id),
          'instance_id': np.int64(instance.instance_id),
          'bbox': np.asarray(instance.bbox, np.float32).reshape(4),
          'area': np.float32(instance.area),
          'iscrowd': np.int64(instance.iscrowd),
          'bbox_score': np.float32(instance.bbox_score),
          'head_size': np.float32(instance.head_size),
          'keypoints': np.asarray(instance.keypoints, np.float32),
        }
        for name, (shape, dtype, default) in self.IMAGE_EXTRAS.items():
          record[name] = _extra_value(image.extras.get(name, default), shape, dtype)
        for name, (shape, dtype, default) in self.INSTANCE_EXTRAS.items():
          record[name] = _extra_value(instance.extras.get(name, default), shape, dtype)
        for field in INDEX_FIELDS:
          index[field].append(record[field])
        yield key, record
        key += 1
      if done % every < len(instances) or done == total:
        rate = done / max(time.perf_counter() - start, 1e-9)
        self._log(f'{self.name} {split}: {done}/{total} instances ({rate:.0f}/s)')
    if key == 0:
      raise RawDataError(
        f'{data.source}: split {split!r} of {self.name}: no image could be read '
        f'(e.g. {self.skipped.examples[split].get("unreadable_image", ["?"])[0]})'
      )
    if data.gt is not None and not split.endswith(DET_SUFFIX):
      gt = dict(data.gt)
      if unreadable:
        gt['images'] = [im for im in gt['images'] if im['id'] not in unreadable]
        gt['annotations'] = [a for a in gt['annotations'] if a['image_id'] not in unreadable]
      with open(os.path.join(self.data_dir, gt_file_name(split)), 'w') as f:
        json.dump(gt, f)
    np.savez(
      os.path.join(self.data_dir, index_file_name(split)),
      **{field: np.stack(values) for field, values in index.items()},
    )
    self.info.metadata['skipped'] = self.skipped.summary()

  # -- loading

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> SplitData:
    """Reads and validates one split of the raw data (see `SplitData`); counts skips in `self.skipped`."""
    raise NotImplementedError

  def locate_image(self, image_dir: str, file_name: str) -> str | None:
    """The file of an image named `file_name` in the annotations, or None if it does not exist."""
    path = os.path.join(image_dir, file_name)
    return path if os.path.isfile(path) else None

  def keep_instance(self, split: str, keypoints: np.ndarray, source: str, what: str) -> bool:
    """False (and counted) when an instance has no labelled keypoint (skipped in every gt-box split)."""
    if np.any(keypoints[:, 2] > 0):
      return True
    self.skipped.skip(split, 'no_labelled_keypoints', f'{source}: {what}')
    return False

  def detection_split(self, split: str, base: SplitData) -> SplitData:
    """Detector-box instances (one per person detection with score >= threshold) on `base`'s images."""
    path = self._det_json
    detections = self.cached_json(path)
    if not isinstance(detections, list):
      raise RawDataError(
        f'{path}: expected a JSON list of detections {{image_id, category_id, bbox, score}}, '
        f'got {type(detections).__name__}'
      )
    num_keypoints = get_format(self.FORMAT).num_keypoints
    instances = []
    for index, det in enumerate(detections):
      what = f'detection #{index}'
      image_id = as_int(require(det, 'image_id', path, what), 'image_id', path, what)
      category_id = as_int(det.get('category_id', 1), 'category_id', path, what)
      bbox = as_array(require(det, 'bbox', path, what), (4,), 'bbox', path, what)
      score = as_number(require(det, 'score', path, what), 'score', path, what)
      if category_id != 1:
        self.skipped.skip(split, 'detection_not_person', f'{path}: {what} (category_id {category_id})')
        continue
      if score < self._det_score_threshold:
        self.skipped.skip(split, 'detection_below_score_threshold', f'{path}: {what} (score {score:.3g})')
        continue
      image = base.images.get(image_id)
      if image is None:
        self.skipped.skip(split, 'detection_on_unknown_image', f'{path}: {what} (image_id {image_id})')
        continue
      if bbox[2] <= 0 or bbox[3] <= 0:
        self.skipped.skip(split, 'bad_bbox', f'{path}: {what} (bbox {bbox.tolist()})')
        continue
      instances.append(
        RawInstance(
          instance_id=index + 1,
          image_id=image_id,
          category_id=1,
          bbox=bbox.astype(np.float32),
          area=float(bbox[2] * bbox[3]),
          keypoints=np.zeros((num_keypoints, 3), np.float32),
          bbox_score=score,
        )
      )
    return SplitData(images=base.images, instances=instances, gt=None, source=path)


def _extra_value(value, shape, dtype):
  if dtype == np.object_:
    return value if isinstance(value, bytes) else str(value)
  return np.asarray(value, dtype).reshape(shape)


# ----------------------------------------------------------------------------------------------- COCO style


class CocoStyleBuilder(RealPoseBuilder, skip_registration=True):
  """A builder for COCO-format keypoint files ({images, annotations, categories}).

  Subclasses set `FORMAT` and `LAYOUT`, and override `raw_keypoints` when the K keypoints are not the
  annotation's `keypoints` list (COCO-WholeBody), `image_extras` / `instance_extras` for extra fields, and
  `select_images` to build a split from part of a file (APT-36K).
  """

  REQUIRE_CATEGORIES = False  # a file without 'categories' is read as one category (id 1)

  def raw_keypoints(self, ann: Mapping, path: str, what: str) -> np.ndarray:
    """The annotation's K keypoints as float64 (K, 3) in registry order (validated)."""
    k = get_format(self.FORMAT).num_keypoints
    return as_array(require(ann, 'keypoints', path, what), (k, 3), 'keypoints', path, what)

  def image_extras(self, image: Mapping, path: str, what: str) -> tuple[dict, dict]:
    """(record extras, gt-image extras) of an image entry."""
    return {}, {}

  def instance_extras(self, ann: Mapping, path: str, what: str) -> tuple[dict, dict]:
    """(record extras, gt-annotation extras) of an annotation."""
    return {}, {}

  def select_images(self, split: str, data: Mapping, path: str) -> set[int] | None:
    """The image ids of `split` in this file (None: all of them)."""
    return None

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> SplitData:
    path = annotation_path
    data = self.cached_json(path)
    raw_images = require_list(data, 'images', path)
    raw_annotations = require_list(data, 'annotations', path)
    if 'categories' in data or self.REQUIRE_CATEGORIES:
      raw_categories = require_list(data, 'categories', path)
    else:
      raw_categories = [{'id': 1}]
    categories = {}
    for index, category in enumerate(raw_categories):
      entry = normalised_category(category, self.FORMAT, path)
      categories[entry['id']] = entry
    selected = self.select_images(split, data, path)

    images: dict[int, RawImage] = {}
    missing: set[int] = set()
    all_ids: set[int] = set()
    for index, image in enumerate(raw_images):
      what = f'image #{index}'
      image_id = as_int(require(image, 'id', path, what), 'id', path, what)
      what = f'image id={image_id} (#{index})'
      if image_id in all_ids:
        raise RawDataError(f'{path}: {what}: duplicate image id')
      all_ids.add(image_id)
      if selected is not None and image_id not in selected:
        continue
      file_name = require(image, 'file_name', path, what)
      if not isinstance(file_name, str) or not file_name:
        raise RawDataError(f'{path}: {what}: field \'file_name\' must be a non-empty string')
      height = as_int(require(image, 'height', path, what), 'height', path, what)
      width = as_int(require(image, 'width', path, what), 'width', path, what)
      if height <= 0 or width <= 0:
        raise RawDataError(f'{path}: {what}: fields \'height\'/\'width\' must be positive, got {height}/{width}')
      extras, gt_extras = self.image_extras(image, path, what)
      located = self.locate_image(image_dir, file_name)
      if located is None:
        missing.add(image_id)
      images[image_id] = RawImage(image_id, file_name, located, height, width, extras, gt_extras)

    gt_annotations, instances = [], []
    is_train = split in self.TRAIN_SPLITS
    for index, ann in enumerate(raw_annotations):
      what = f'annotation #{index}'
      ann_id = as_int(require(ann, 'id', path, what), 'id', path, what)
      what = f'annotation id={ann_id} (#{index})'
      image_id = as_int(require(ann, 'image_id', path, what), 'image_id', path, what)
      if image_id not in all_ids:
        raise RawDataError(f'{path}: {what}: field \'image_id\' is {image_id}, which is not in \'images\'')
      if image_id not in images:
        continue  # another split's image
      category_id = as_int(ann.get('category_id', 1), 'category_id', path, what)
      if category_id not in categories:
        raise RawDataError(
          f'{path}: {what}: field \'category_id\' is {category_id}, an unknown category '
          f'(known: {sorted(categories)[:10]})'
        )
      keypoints = self.raw_keypoints(ann, path, what)
      bbox = as_array(require(ann, 'bbox', path, what), (4,), 'bbox', path, what)
      area = as_number(ann['area'], 'area', path, what) if 'area' in ann else None
      iscrowd = as_int(ann.get('iscrowd', ann.get('is_crowd', 0)), 'iscrowd', path, what)
      extras, gt_extras = self.instance_extras(ann, path, what)
      if image_id in missing:
        continue
      if not is_train:
        gt_annotations.append(gt_annotation(ann_id, image_id, category_id, keypoints, bbox, area, iscrowd, **gt_extras))
      image = images[image_id]
      if bbox[2] <= 0 or bbox[3] <= 0:
        self.skipped.skip(split, 'bad_bbox', f'{path}: {what} (bbox {bbox.tolist()})')
        continue
      if not self.keep_instance(split, keypoints, path, what):
        continue
      crop_box = clip_box(bbox, image.width, image.height)
      if crop_box is None:
        self.skipped.skip(split, 'bbox_outside_image', f'{path}: {what} (bbox {bbox.tolist()})')
        continue
      instances.append(
        RawInstance(
          instance_id=ann_id,
          image_id=image_id,
          category_id=category_id,
          bbox=crop_box,
          area=float(area) if area is not None else float(bbox[2] * bbox[3]),
          keypoints=keypoints.astype(np.float32),
          iscrowd=iscrowd,
          extras=extras,
        )
      )
    self._count_missing(split, path, images, missing, raw_annotations)
    for image_id in missing:
      del images[image_id]
    gt = None
    if not is_train:
      gt = {
        'info': {'description': f'{self.name} {split}: normalised ground truth of {path}'},
        'images': [gt_image(im) for im in images.values()],
        'annotations': gt_annotations,
        'categories': list(categories.values()),
      }
    return SplitData(images=images, instances=instances, gt=gt, source=path)

  def _count_missing(self, split, path, images, missing, raw_annotations) -> None:
    """Counts each missing image file once ('missing_image'), naming its annotations."""
    if not missing:
      return
    per_image = collections.Counter(a.get('image_id') for a in raw_annotations if isinstance(a, Mapping))
    for image_id in sorted(missing):
      image = images[image_id]
      self.skipped.skip(
        split, 'missing_image', f'{image.file_name} (image id {image_id}, {per_image.get(image_id, 0)} annotations)'
      )


def keypoints_from_fields(ann: Mapping, fields: Iterable[tuple[str, int]], path: str, what: str) -> np.ndarray:
  """Concatenates (K_i, 3) keypoint lists from several annotation fields ((field, K_i) pairs)."""
  parts = [as_array(require(ann, field, path, what), (k, 3), field, path, what) for field, k in fields]
  return np.concatenate(parts, axis=0)
