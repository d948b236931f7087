"""tfds builder `generic3d`: any of the 28 3D datasets from a documented per-example layout that a user writes from
the dataset's own preprocessing (records: `records3d`; base and skipping: `data_pipeline.builders.real3d`).

  python -m data_pipeline.prepare generic3d --dataset3d=<name> --manual_dir=DIR [--label_only]

`--dataset3d` names the dataset: one of `posebh_jax.skeletons.DATASETS_3D` ('aspset', 'gpa', 'bml_movi', ...), whose
(first) format the records have, or '<dataset>_<format>' for the second format of AGORA ('agora_smplx') and BEHAVE
('behave_coco'). Each name is a tfds config: the prepared data lives in `<data_dir>/generic3d/<name>/1.0.0` and is
opened as 'generic3d/<name>' (e.g. `data_pipeline.pipeline.open_source('generic3d/aspset', 'train', data_dir)`).

Layout (relative to --manual_dir): per split (train, validation, test) a JSON-lines file `<split>/examples.jsonl` or
`<split>.jsonl` (or `--ann_file SPLIT=PATH`), one JSON object per line and person example:

  image       str, required   the image file, relative to the .jsonl file's directory (or absolute); stored as is
  bbox        [x, y, w, h]    required: the person box in px of the original image
  intrinsics  3x3             required: the camera matrix K in px (pixel centres at integer coordinates)
  joints3d    required        camera-frame joints in mm (x right, y down, z forward), either a list of J [x, y, z]
                              in the format's registry order (`get_format3d(format).joint_names`; null = unlabelled)
                              or an object {joint name: [x, y, z]} with the format's short names ('lsho'), suffixed
                              names ('lsho_aspset') or PosePile's names (`source_names`); joints left out are
                              unlabelled
  valid       J booleans      optional: which joints are labelled (default: those given and not null)
  distortion  4 or 5 numbers  optional: k1, k2, p1, p2[, k3] (default none)
  distortion_model  str       optional: 'opencv' (default) or 'h36m'
  sequence, camera  str       optional (default ''): the near-duplicate stream is (sequence, camera, person)
  person      str or int      optional (default ''): the person's track id within the sequence
  frame       int             optional (default -1)
  image_id, instance_id int   optional (default 1 + the line's index among the file's examples; both must be unique
                              per split where given: instance_id > 0)
  mask        str             optional: a PNG of the person's segmentation mask (path as `image`)
  height, width int           optional: the image size, needed only for label-only records (`--label_only`)

Blank lines and lines starting with '#' are ignored. A missing image or mask file is a counted skip (images: unless
`--label_only`); a line that is not JSON, a missing required field, joints of another count than the format's, an
unknown joint name or a non-finite value is one `error:` line naming the file, the line and the field.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline.builders.real import as_array, as_int, require
from data_pipeline.builders.real3d import Example3D, Real3DBuilder, Split3D, SplitLayout
from data_pipeline.errors import RawDataError
from posebh_jax.geometry.camera import DISTORTION_MODELS
from posebh_jax.skeletons import DATASETS_3D, get_format3d


def _config_formats() -> dict[str, str]:
  configs = {}
  for name, dataset in DATASETS_3D.items():
    configs[name] = dataset.formats[0]
    for extra in dataset.formats[1:]:
      configs[f'{name}_{extra}'] = extra
  return configs


CONFIG_FORMATS = _config_formats()


def _split_layout(split: str) -> SplitLayout:
  return SplitLayout((f'{split}/examples.jsonl', f'{split}.jsonl'), ('',))


class Generic3D(Real3DBuilder):
  """The generic 3D builder (one tfds config per dataset name), see the module docstring."""

  name = 'generic3d'
  DESCRIPTION = 'A 3D dataset from the generic per-example layout (examples.jsonl), one record per person example.'
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=name, description=f'format {fmt}') for name, fmt in CONFIG_FORMATS.items()
  ]
  LAYOUT = {split: _split_layout(split) for split in ('train', 'validation', 'test')}

  def __init__(self, *, options=None, **kwargs):
    """As `Real3DBuilder`; `options['dataset3d']` picks the config (the dataset name, see the module docstring)."""
    dataset = (options or {}).get('dataset3d')
    if dataset is not None and kwargs.get('config') is None:
      if dataset not in CONFIG_FORMATS:
        raise RawDataError(
          f'unknown 3D dataset {dataset!r} for generic3d (--dataset3d); known: {", ".join(CONFIG_FORMATS)}'
        )
      kwargs['config'] = dataset
    super().__init__(options=options, **kwargs)

  @property
  def format_name(self) -> str:
    """The records' 3D format: that of the config's dataset."""
    return CONFIG_FORMATS[self.builder_config.name]

  def _split_generators(self, dl_manager):
    if self.option('dataset3d') is None:
      raise RawDataError(f'generic3d needs --dataset3d=<one of {", ".join(CONFIG_FORMATS)}>')
    return super()._split_generators(dl_manager)

  def _joints(self, value, path: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The example's `joints3d` as ((J, 3) float64 mm, given (J,) bool)."""
    fmt = get_format3d(self.format_name)
    num = fmt.num_joints
    joints, given = np.zeros((num, 3)), np.zeros(num, bool)
    if isinstance(value, dict):
      by_source = {n: i for i, n in enumerate(fmt.source_names)}
      for name, xyz in value.items():
        if name in by_source:
          index = by_source[name]
        else:
          try:
            index = fmt.index(str(name))
          except ValueError:
            raise RawDataError(
              f"{path}: {what}: field 'joints3d' names joint {name!r}, which format {fmt.name!r} lacks "
              f'(it has {", ".join(fmt.joint_names)})'
            ) from None
        if xyz is not None:
          joints[index] = as_array(xyz, (3,), f'joints3d.{name}', path, what)
          given[index] = True
      return joints, given
    if not isinstance(value, list):
      raise RawDataError(f"{path}: {what}: field 'joints3d' must be a list of J [x, y, z] or an object of joints")
    if len(value) != num:
      raise RawDataError(
        f"{path}: {what}: field 'joints3d' has {len(value)} joints, expected {num} (format {fmt.name!r}: "
        f'{", ".join(fmt.joint_names[:4])}, ...)'
      )
    for index, xyz in enumerate(value):
      if xyz is not None:
        joints[index] = as_array(xyz, (3,), f'joints3d[{index}]', path, what)
        given[index] = True
    return joints, given

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> Split3D:
    path = annotation_path
    base = os.path.dirname(path)
    num = get_format3d(self.format_name).num_joints
    examples, instance_ids = [], set()
    try:
      with open(path, encoding='utf-8') as f:
        lines = f.readlines()
    except (OSError, UnicodeDecodeError) as err:
      raise RawDataError(f'{path}: cannot be read ({err})') from None
    for line_number, line in enumerate(lines, 1):
      text = line.strip()
      if not text or text.startswith('#'):
        continue
      what = f'line {line_number}'
      try:
        entry = json.loads(text)
      except json.JSONDecodeError as err:
        raise RawDataError(f'{path}: {what}: not valid JSON ({err.msg} at column {err.colno})') from None
      image = require(entry, 'image', path, what)
      if not isinstance(image, str) or not image:
        raise RawDataError(f"{path}: {what}: field 'image' must be a non-empty string")
      bbox = as_array(require(entry, 'bbox', path, what), (4,), 'bbox', path, what)
      intrinsics = as_array(require(entry, 'intrinsics', path, what), (3, 3), 'intrinsics', path, what)
      joints, given = self._joints(require(entry, 'joints3d', path, what), path, what)
      if 'valid' in entry:
        flags = entry['valid']
        if not isinstance(flags, list) or len(flags) != num or not all(isinstance(v, (bool, int)) for v in flags):
          raise RawDataError(f"{path}: {what}: field 'valid' must be a list of {num} booleans")
        valid = np.asarray(flags, bool) & given
      else:
        valid = given
      distortion = np.asarray(entry.get('distortion') or np.zeros(5), np.float64)
      if distortion.size == 4:
        distortion = np.concatenate([distortion.reshape(-1), [0.0]])
      distortion = as_array(distortion, (5,), 'distortion', path, what)
      model = entry.get('distortion_model', 'opencv')
      if model not in DISTORTION_MODELS:
        raise RawDataError(
          f"{path}: {what}: field 'distortion_model' must be one of {DISTORTION_MODELS}, got {model!r}"
        )
      index = len(examples)
      image_id = as_int(entry.get('image_id', index + 1), 'image_id', path, what)
      instance_id = as_int(entry.get('instance_id', index + 1), 'instance_id', path, what)
      if instance_id <= 0 or instance_id in instance_ids:
        raise RawDataError(f"{path}: {what}: field 'instance_id' must be positive and unique, got {instance_id}")
      instance_ids.add(instance_id)
      sequence, camera = str(entry.get('sequence', '')), str(entry.get('camera', ''))
      image_path = image if os.path.isabs(image) else os.path.join(base, image)
      mask = entry.get('mask')
      if mask is not None and (not isinstance(mask, str) or not mask):
        raise RawDataError(f"{path}: {what}: field 'mask' must be a path string")
      frame = as_int(entry.get('frame', -1), 'frame', path, what)
      height = as_int(entry.get('height', 0), 'height', path, what)
      width = as_int(entry.get('width', 0), 'width', path, what)
      examples.append(
        Example3D(
          source=path,
          what=what,
          file_name=image,
          image_path=image_path,
          image_id=image_id,
          instance_id=instance_id,
          bbox=bbox,
          intrinsics=intrinsics,
          distortion=distortion,
          distortion_model=model,
          joints3d=joints,
          valid=valid,
          sequence=sequence,
          camera=camera,
          frame=frame,
          height=height,
          width=width,
          mask_path=None if mask is None else (mask if os.path.isabs(mask) else os.path.join(base, mask)),
          stream=(sequence, camera, str(entry.get('person', ''))),
        )
      )
    return Split3D(examples, path)
