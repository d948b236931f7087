"""Shared base of the 3D tfds builders (H36M, MPI-INF-3DHP, CMU-Panoptic, 3DPW 3D, the generic builder).

A builder reads a dataset's raw layout from `manual_dir` (each builder's module docstring says which files, field
by field), validates it and writes one ArrayRecord record per person example in the one 3D record layout of
`data_pipeline.builders.records3d` (image bytes, box, intrinsics, distortion, camera-frame joints in mm in the
registry order of the builder's 3D format, validity, optional mask, sequence / camera / frame). Neither building nor
reading needs TensorFlow. Conventions follow the 2D builders (`data_pipeline.builders.real`, whose constructor,
option handling and layout lookup `Real3DBuilder` inherits):

- Splits: those of the builder's `LAYOUT` whose files exist (or that `--ann_file SPLIT=PATH` names).
- Joints are mapped from the source's joint names to the format's by name (a table in each builder); a format joint
  the source does not label is stored as zeros with `valid` False.
- Skipping (counted per split and reason in `info.metadata['skipped']` and printed by `prepare`): examples whose
  image file is missing (unless the option `label_only` is set: then the record holds `image` b'' and the image
  size the calibration gives, for evaluation without images) or unreadable, whose mask file is missing or not a PNG,
  whose box is empty, and near-duplicates (reason `near_duplicate`: in train splits, an example whose every joint
  labelled in both is within `records3d.NEAR_DUPLICATE_MM` = 100 mm of the last kept example of the same stream;
  a stream is (sequence, camera), and (sequence, camera, person) in multi-person datasets, so that two people of one
  video do not take turns as each other's reference). Evaluation splits keep every frame (the benchmarks are
  defined on fixed frame sets); the option `near_duplicates_all_splits` filters them too.
- Everything else that is wrong (an unreadable or truncated annotation file, a missing field, joints of the wrong
  count, an unknown camera) raises `RawDataError` with one line naming the file, the record and the field.
- Every non-train split gets `gt_<split>.json` (`records3d.gt_json`: suffixed joint names `<short>_<format>`, the
  format's root, or for a format without one its first stand-in joint) next to the ArrayRecord files.
- Every record's `distortion_model` is the builder's `DISTORTION_MODEL` ('opencv', or 'h36m' for Human3.6M, whose
  tangential coefficients follow its own calibration code: `posebh_jax.geometry.camera`; the generic builder: per
  example).
- `info.metadata`: `source` (the raw-source settings), `format`, `distortion_model`, `near_duplicate_mm` and
  `skipped`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from typing import Hashable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline.builders import records3d
from data_pipeline.builders.real import (
  RealPoseBuilder,
  SkipCounter,
  SplitLayout,
  check_image_bytes,
  image_size_from_bytes,
)
from data_pipeline.builders.records import gt_file_name
from data_pipeline.errors import RawDataError
from posebh_jax.skeletons import get_format3d

__all__ = [
  'Example3D',
  'Real3DBuilder',
  'SkipCounter',
  'Split3D',
  'SplitLayout',
  'box_from_center_scale',
  'intrinsics_matrix',
  'joint_table',
  'map_joints',
]

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def joint_table(format_name: str, source_to_format: Sequence[tuple[str, str | None]]) -> np.ndarray:
  """Index table from a source's joints to a 3D format's joints, built by name.

  Args:
    format_name: the registry3d format name.
    source_to_format: per source joint in the source's order, (source name, format short name or None when the
      format has no such joint).
  Returns:
    int32 (J,) array: for each format joint, the source joint index that labels it, or -1 (unlabelled).
  Raises:
    ValueError: a format name the format lacks, or two source joints mapped to one format joint.
  """
  fmt = get_format3d(format_name)
  table = np.full(fmt.num_joints, -1, np.int32)
  for source_index, (_, target) in enumerate(source_to_format):
    if target is None:
      continue
    j = fmt.index(target)
    if table[j] >= 0:
      raise ValueError(f'{format_name}: joint {target!r} is mapped twice')
    table[j] = source_index
  return table


def map_joints(table: np.ndarray, joints: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Source joints (S, 3) with validity (S,) -> the format's joints (J, 3) float64 and validity (J,) bool through
  `table` (from `joint_table`); unlabelled format joints hold zeros and are invalid."""
  joints = np.asarray(joints, np.float64)
  labelled = table >= 0
  out = np.zeros((len(table), 3))
  out[labelled] = joints[table[labelled]]
  out_valid = np.zeros(len(table), bool)
  out_valid[labelled] = np.asarray(valid, bool)[table[labelled]]
  return out, out_valid


@dataclasses.dataclass
class Example3D:
  """One person example before its image is read (fields as in `records3d`; lengths in mm, camera frame).

  `image_path`: the image file where it should be (a missing one is skipped, or with `label_only` kept without
  image bytes). `height`/`width`: the image size the calibration gives (used for label-only records; a read
  image's header wins), 0 when unknown. `mask_path`: a PNG
  mask file or None. `stream`: the near-duplicate stream key (default (sequence, camera)). `source`/`what`: the
  raw file and the record within it, for messages."""

  source: str
  what: str
  file_name: str
  image_path: str | None
  image_id: int
  instance_id: int
  bbox: np.ndarray
  intrinsics: np.ndarray
  joints3d: np.ndarray
  valid: np.ndarray
  distortion: np.ndarray | None = None
  sequence: str = ''
  camera: str = ''
  frame: int = -1
  height: int = 0
  width: int = 0
  mask_path: str | None = None
  stream: Hashable | None = None
  distortion_model: str | None = None  # None: the builder's DISTORTION_MODEL


@dataclasses.dataclass
class Split3D:
  """What a 3D builder's loader returns for one split: the examples in file order and the file it read."""

  examples: list[Example3D]
  source: str


class Real3DBuilder(RealPoseBuilder, skip_registration=True):
  """Base of the 3D builders (see the module docstring). Subclasses set `FORMAT`, `LAYOUT`, `DESCRIPTION`
  (optionally `DISTORTION_MODEL`, `TRAIN_SPLITS`) and implement `load_split(split, annotation_path, image_dir) ->
  Split3D`; `split_sources()` may replace the LAYOUT lookup (Panoptic: sequence directories)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version: the records3d layout, one record per person example.'}
  code_path = epath.Path(__file__)
  DISTORTION_MODEL = 'opencv'

  @property
  def format_name(self) -> str:
    """The 3D format of every record (the class's `FORMAT`; the generic builder: its config's)."""
    return self.FORMAT

  def _info(self) -> tfds.core.DatasetInfo:
    fmt = get_format3d(self.format_name)
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=records3d.tfds_features(fmt.num_joints),
      metadata=tfds.core.MetadataDict(
        source=self.source_settings(),
        format=fmt.name,
        distortion_model=self.DISTORTION_MODEL,
        near_duplicate_mm=self.near_duplicate_mm,
      ),
      disable_shuffling=True,
    )

  @property
  def near_duplicate_mm(self) -> float:
    """The near-duplicate threshold in mm (option `near_duplicate_mm`, default `records3d.NEAR_DUPLICATE_MM`)."""
    return float(self.option('near_duplicate_mm', records3d.NEAR_DUPLICATE_MM))

  @property
  def label_only(self) -> bool:
    """Whether examples without an image file are kept as label-only records (option `label_only`)."""
    return bool(self.option('label_only', False))

  # -- splits

  def split_sources(self) -> dict[str, tuple[str, str]]:
    """{split: (annotation path, image directory)} of the splits present (default: `LAYOUT` and `--ann_file`)."""
    splits = [s for s in self.LAYOUT] + [s for s in self._annotation_files if s not in self.LAYOUT]
    out = {}
    for split in splits:
      path = self.annotation_path(split)
      if path is not None:
        out[split] = (path, self.image_dir(split, path))
    return out

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._det_json is not None:
      raise RawDataError(f'{self._det_json}: {self.name} has no detector-box split; drop --det_json')
    if self._manual_dir is not None and not os.path.isdir(self._manual_dir):
      raise RawDataError(f'{self._manual_dir}: raw data directory does not exist (--manual_dir)')
    if self._manual_dir is None and not self._annotation_files:
      raise RawDataError(
        f'no raw data directory given for {self.name}; pass --manual_dir=<the directory with its raw layout>'
      )
    sources = self.split_sources()
    if not sources:
      expected = '; '.join(f'{s}: {" or ".join(layout.annotations)}' for s, layout in self.LAYOUT.items())
      raise RawDataError(
        f'{self._manual_dir}: no annotation file of {self.name} found; expected (relative to --manual_dir) '
        f'{expected or "see the builder docstring"}, or name files with --ann_file SPLIT=PATH'
      )
    loaded = {}
    for split, (path, image_dir) in sources.items():
      self._log(f'{self.name} {split}: reading {path}')
      data = self.load_split(split, path, image_dir)
      data = Split3D([ex for ex in data.examples if self._has_image(split, ex)], data.source)
      self._check_usable(split, data)
      loaded[split] = data
    self._json_cache.clear()
    self.info.metadata['skipped'] = self.skipped.summary()
    return {split: self._generate_examples(split, data) for split, data in loaded.items()}

  def _has_image(self, split: str, example: Example3D) -> bool:
    if example.image_path is not None and os.path.isfile(example.image_path):
      return True
    if self.label_only:
      example.image_path = None
      return True
    self.skipped.skip(
      split, 'missing_image', f'{example.image_path or example.file_name} ({example.source}: {example.what})'
    )
    return False

  def _check_usable(self, split: str, data: Split3D) -> None:
    if data.examples:
      return
    reasons = '; '.join(f'{r}: {c}' for r, c in self.skipped.summary().get(split, {}).items()) or 'none'
    by_count = sorted(self.skipped.examples[split].items(), key=lambda item: -self.skipped.counts[split][item[0]])
    examples = [e for _, found in by_count for e in found][:2]
    hint = '; pass --label_only to keep records without images' if 'missing_image' in reasons else ''
    raise RawDataError(
      f'{data.source}: split {split!r} of {self.name} has no usable example (skipped: {reasons}'
      f'{"; e.g. " + "; ".join(examples) if examples else ""}); check --manual_dir and the image directory{hint}'
    )

  def _filters_near_duplicates(self, split: str) -> bool:
    return split in self.TRAIN_SPLITS or bool(self.option('near_duplicates_all_splits', False))

  def _generate_examples(self, split: str, data: Split3D):
    fmt = get_format3d(self.format_name)
    dedup = records3d.NearDuplicateFilter(self.near_duplicate_mm) if self._filters_near_duplicates(split) else None
    gt_records = []
    total, key = len(data.examples), 0
    every = max(100, total // 10)
    start = time.perf_counter()
    for done, ex in enumerate(data.examples, 1):
      where = f'{ex.source}: {ex.what}'
      if dedup is not None:
        stream = ex.stream if ex.stream is not None else (ex.sequence, ex.camera)
        if not dedup.keep(stream, None, ex.joints3d, ex.valid):
          self.skipped.skip(split, 'near_duplicate', where)
          continue
      payload, height, width = b'', ex.height, ex.width
      if ex.image_path is not None:
        with open(ex.image_path, 'rb') as f:
          payload = f.read()
        problem = check_image_bytes(payload)
        if problem is not None:
          self.skipped.skip(split, 'unreadable_image', f'{ex.image_path}: {problem} ({where})')
          continue
        height, width = image_size_from_bytes(payload)
      mask = b''
      if ex.mask_path is not None:
        if not os.path.isfile(ex.mask_path):
          self.skipped.skip(split, 'missing_mask', f'{ex.mask_path} ({where})')
          continue
        with open(ex.mask_path, 'rb') as f:
          mask = f.read()
        if not mask.startswith(PNG_MAGIC):
          self.skipped.skip(split, 'unreadable_mask', f'{ex.mask_path}: not a PNG file ({where})')
          continue
      bbox = np.asarray(ex.bbox, np.float64).reshape(-1)
      if bbox.size != 4 or not np.all(np.isfinite(bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
        self.skipped.skip(split, 'bad_bbox', f'{where} (bbox {bbox.tolist()})')
        continue
      fields = dict(
        image=payload,
        file_name=ex.file_name,
        image_id=ex.image_id,
        instance_id=ex.instance_id,
        height=height,
        width=width,
        bbox=bbox,
        intrinsics=ex.intrinsics,
        distortion=np.zeros(5) if ex.distortion is None else ex.distortion,
        distortion_model=ex.distortion_model or self.DISTORTION_MODEL,
        joints3d=ex.joints3d,
        valid=ex.valid,
        mask=mask,
        sequence=ex.sequence,
        camera=ex.camera,
        frame=ex.frame,
        format=fmt.name,
      )
      try:
        record = records3d.make_record(fields, fmt.num_joints)
      except ValueError as err:
        raise RawDataError(f'{where}: {err}') from None
      if split not in self.TRAIN_SPLITS:
        gt_records.append({k: record[k] for k in ('instance_id', 'image_id', 'joints3d', 'valid')})
      yield key, record
      key += 1
      if done % every == 0 or done == total:
        rate = done / max(time.perf_counter() - start, 1e-9)
        self._log(f'{self.name} {split}: {done}/{total} examples ({rate:.0f}/s)')
    if key == 0:
      reasons = ', '.join(f'{r} {c}' for r, c in self.skipped.summary().get(split, {}).items())
      raise RawDataError(f'{data.source}: split {split!r} of {self.name}: no example left ({reasons})')
    if split not in self.TRAIN_SPLITS:
      root = fmt.root if fmt.root is not None else fmt.joint_names[fmt.root_indices[0]]
      gt = records3d.gt_json(gt_records, fmt.suffixed_names, f'{root}_{fmt.name}')
      with open(os.path.join(self.data_dir, gt_file_name(split)), 'w') as f:
        json.dump(gt, f)
    self.info.metadata['skipped'] = self.skipped.summary()

  # -- loading

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> Split3D:
    """Reads and validates one split of the raw data (see `Split3D`)."""
    raise NotImplementedError


def box_from_center_scale(center, scale: float, pixel_std: float = 200.0) -> np.ndarray:
  """mmpose's body3d box (`center` (2,) px, `scale` = side / 200) as x, y, w, h px: the square of side
  `scale * pixel_std` centred at `center`."""
  side = float(scale) * pixel_std
  return np.array([center[0] - side / 2, center[1] - side / 2, side, side], np.float64)


def intrinsics_matrix(focal, principal) -> np.ndarray:
  """The 3x3 camera matrix from focal lengths (fx, fy) and principal point (cx, cy), px."""
  fx, fy = (float(v) for v in np.asarray(focal, np.float64).reshape(2))
  cx, cy = (float(v) for v in np.asarray(principal, np.float64).reshape(2))
  return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------- raw readers


def load_pickle(path: str):
  """Unpickles a file (Python 2 pickles as latin-1); raises `RawDataError` naming the file if it cannot be read."""
  try:
    with open(path, 'rb') as f:
      return pickle.load(f, encoding='latin1')
  except OSError as err:
    raise RawDataError(f'{path}: cannot be read ({err.strerror})') from None
  except Exception as err:  # pickle raises many kinds on corrupt input
    raise RawDataError(f'{path}: not a readable pickle ({type(err).__name__}: {err})') from None


def load_npz(path: str, fields: Sequence[str]) -> dict[str, np.ndarray]:
  """The arrays `fields` of an .npz file; raises `RawDataError` naming the file (and the missing field)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [name for name in fields if name not in data.files]
      if missing:
        raise RawDataError(f'{path}: all records: missing field {missing[0]!r} (it has {", ".join(data.files)})')
      return {name: np.asarray(data[name]) for name in fields}
  except RawDataError:
    raise
  except OSError as err:
    raise RawDataError(f'{path}: cannot be read ({err.strerror or err})') from None
  except Exception as err:  # zipfile / format errors of a truncated or foreign file
    raise RawDataError(f'{path}: not a readable .npz file ({type(err).__name__}: {err})') from None


# ----------------------------------------------------------------------------------------------- mmpose body3d


class Body3DNpzBuilder(Real3DBuilder, skip_registration=True):
  """Base of the builders reading mmpose's preprocessed body3d layout (Human3.6M, MPI-INF-3DHP): per split one
  .npz with `imgname` (N,) image paths, `center` (N, 2) px and `scale` (N,) (the box: a square of side 200 *
  scale px centred at `center`), `S` (N, K, 4) camera-frame joints in metres plus a visibility flag (> 0:
  labelled), and camera pickles {key: {f (2, 1), c (2, 1), optionally k (3, 1), p (2, 1), w, h, ...}}. (`part`,
  the 2D projection, is not read.) Subclasses set `SOURCE_JOINTS` ((source name, format short name), in the
  source's order), `CAMERA_FILES` (candidates, every existing one is read and merged) and `parse_name`."""

  SOURCE_JOINTS: tuple[tuple[str, str | None], ...] = ()
  CAMERA_FILES: tuple[str, ...] = ()

  def parse_name(self, imgname: str) -> tuple[Hashable, str, str, int, tuple[str, ...]] | None:
    """(camera key, sequence, camera, frame, image path candidates relative to the image directory) of an
    `imgname`, or None when it does not follow the dataset's naming."""
    raise NotImplementedError

  def camera_files(self) -> list[str]:
    """The camera pickles to read: option `cameras` (comma-separated paths), else the existing `CAMERA_FILES`."""
    option = self.option('cameras')
    if option:
      paths = [self.resolve(p) for p in str(option).split(',') if p]
      for path in paths:
        if not os.path.isfile(path):
          raise RawDataError(f'{path}: camera file does not exist (option cameras)')
      return paths
    return [p for p in (os.path.join(self._manual_dir or '', c) for c in self.CAMERA_FILES) if os.path.isfile(p)]

  def cameras(self) -> tuple[dict, str]:
    """({camera key: camera dict}, description of the files) from `camera_files()`."""
    paths = self.camera_files()
    if not paths:
      raise RawDataError(
        f'{self._manual_dir}: no camera file of {self.name} found; expected one of {", ".join(self.CAMERA_FILES)} '
        f'(relative to --manual_dir)'
      )
    cameras = {}
    for path in paths:
      data = self._json_cache.get(path)
      if data is None:
        data = self._json_cache[path] = load_pickle(path)
      if not isinstance(data, dict):
        raise RawDataError(f'{path}: expected a dict of cameras, got {type(data).__name__}')
      cameras.update({key: (path, value) for key, value in data.items()})
    return cameras, ' + '.join(paths)

  @staticmethod
  def camera_array(camera, field: str, size: int, path: str, what: str, default=None) -> np.ndarray:
    """Field `field` of a camera dict as a float64 (size,) array; raises `RawDataError` (missing or wrong size)."""
    if not isinstance(camera, Mapping):
      raise RawDataError(f'{path}: {what}: expected a dict of camera parameters, got {type(camera).__name__}')
    if field not in camera:
      if default is not None:
        return np.asarray(default, np.float64)
      raise RawDataError(f'{path}: {what}: missing field {field!r}')
    try:
      value = np.asarray(camera[field], np.float64).reshape(-1)
    except (TypeError, ValueError):
      raise RawDataError(f'{path}: {what}: field {field!r} is not an array of numbers') from None
    if value.size != size or not np.all(np.isfinite(value)):
      raise RawDataError(f'{path}: {what}: field {field!r} has {value.size} values, expected {size} finite ones')
    return value

  def camera_size(self, camera: Mapping) -> tuple[int, int]:
    """(height, width) px from a camera dict's h / w, (0, 0) when absent or not numbers."""
    try:
      return int(float(camera.get('h', 0))), int(float(camera.get('w', 0)))
    except (TypeError, ValueError):
      return 0, 0

  def distortion(self, camera: Mapping, path: str, what: str) -> np.ndarray:
    """OpenCV-ordered k1, k2, p1, p2, k3 of a camera dict (zeros where it has no k / p)."""
    k = self.camera_array(camera, 'k', 3, path, what, default=np.zeros(3))
    p = self.camera_array(camera, 'p', 2, path, what, default=np.zeros(2))
    return np.array([k[0], k[1], p[0], p[1], k[2]])

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> Split3D:
    path = annotation_path
    data = load_npz(path, ('imgname', 'center', 'scale', 'S'))
    names, centers, scales, joints = data['imgname'], data['center'], data['scale'], data['S']
    count, num_source = len(names), len(self.SOURCE_JOINTS)
    for field, shape, what in (
      ('center', (count, 2), 'x, y px'),
      ('scale', (count,), 'box side / 200'),
      ('S', (count, num_source, 4), f'{num_source} joints x, y, z m and visibility'),
    ):
      array = data[field]
      if array.shape != shape:
        record = f'record #0 ({names[0]}) and every other' if count else 'every record'
        raise RawDataError(
          f'{path}: {record}: field {field!r} has shape {list(array.shape)}, expected {list(shape)} ({what})'
        )
    cameras, camera_source = self.cameras()
    table = joint_table(self.format_name, self.SOURCE_JOINTS)
    examples = []
    for index in range(count):
      imgname = str(names[index])
      what = f'record #{index} ({imgname})'
      parsed = self.parse_name(imgname)
      if parsed is None:
        raise RawDataError(f'{path}: {what}: field \'imgname\' does not follow the {self.name} naming')
      key, sequence, camera_name, frame, candidates = parsed
      if key not in cameras:
        raise RawDataError(f'{path}: {what}: field \'imgname\': camera {key!r} is not in {camera_source}')
      camera_path, camera = cameras[key]
      cwhat = f'camera {key!r}'
      intrinsics = intrinsics_matrix(
        self.camera_array(camera, 'f', 2, camera_path, cwhat), self.camera_array(camera, 'c', 2, camera_path, cwhat)
      )
      source = np.asarray(joints[index], np.float64)
      mapped, valid = map_joints(table, source[:, :3] * 1000.0, source[:, 3] > 0)
      paths = [os.path.join(image_dir, c) for c in candidates]
      located = next((p for p in paths if os.path.isfile(p)), paths[0])
      height, width = self.camera_size(camera)
      examples.append(
        Example3D(
          source=path,
          what=what,
          file_name=imgname,
          image_path=located,
          image_id=index + 1,
          instance_id=index + 1,
          bbox=box_from_center_scale(centers[index], float(scales[index])),
          intrinsics=intrinsics,
          distortion=self.distortion(camera, camera_path, cwhat),
          joints3d=mapped,
          valid=valid,
          sequence=sequence,
          camera=camera_name,
          frame=frame,
          height=height,
          width=width,
        )
      )
    return Split3D(examples, path)
