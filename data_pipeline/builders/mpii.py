"""tfds builder `mpii`: MPII Human Pose from the json files mmpose distributes (record schema, skipping and
ground truth: see `data_pipeline.builders.real`).

Raw layout (relative to `--manual_dir`):
  annotations/mpii_train.json, annotations/mpii_val.json: a list of {image, center [x, y], scale, joints
    [16][2], joints_vis [16]} in MATLAB (1-based) pixel coordinates, one entry per person;
  annotations/mpii_gt_val.mat (optional): the official evaluation ground truth, whose `headboxes_src`
    (2, 2, N) holds each validation person's head box;
  images/: the images.

Conversions (as the reference loader does):
  keypoints  = joints - 1 (0-based px), visibility = joints_vis (1 labelled, 0 not);
  bbox       = the square of side 200 * scale px centred at (center - 1) moved down by 15 * scale px; the
               pipeline's bbox padding (1.25) then gives the reference's crop;
  image_id   = the image file's number (e.g. 005808361.jpg -> 5808361), or the image's position among
               the file's distinct images when a name is not a number;
  instance_id = 1 + the person's position in the json list (so aligned with `headboxes_src`; the gt
               annotation id too: COCO evaluation needs ids > 0);
  missing or unreadable images are skipped and counted once per image file;
  head_size  = PCKh's normaliser: 0.6 x the diagonal of the official head box when head boxes are given
               (option `headboxes`: a .mat with `headboxes_src` (2, 2, N), or a .json / .npy array (N, 2, 2)
               of [[x1, y1], [x2, y2]], aligned with the split's json list; `annotations/mpii_gt_val.mat` is
               used for `validation` when present), else the head segment length |head_top - upper_neck|
               of the annotation (the PCKh definition of Andriluka et al. 2014 that the head-box formula
               approximates; 0 when either joint is unlabelled). `info.metadata['head_size_source']` says
               which was used per split.
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipeline.builders.real import (
  RawImage,
  RawInstance,
  RealPoseBuilder,
  SplitData,
  SplitLayout,
  as_array,
  as_number,
  gt_annotation,
  gt_image,
  image_size_from_file,
  require,
)
from data_pipeline.errors import RawDataError
from posebh_jax.skeletons import get_format

NUM_JOINTS = 16
PIXEL_STD = 200.0  # MPII's scale unit: box size = scale * 200 px
CENTER_SHIFT = 15.0  # the reference moves the centre down by 15 * scale px
HEADBOX_FACTOR = 0.6  # SC_BIAS of the official PCKh evaluation
HEAD_TOP, UPPER_NECK = 9, 8


def head_sizes_from_boxes(boxes: np.ndarray) -> np.ndarray:
  """PCKh normalisers (N,) from head boxes (N, 2, 2) [[x1, y1], [x2, y2]]: 0.6 x the box diagonal."""
  boxes = np.asarray(boxes, np.float64)
  return HEADBOX_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)


def load_headboxes(path: str) -> np.ndarray:
  """Head boxes (N, 2, 2) from the official `mpii_gt_val.mat` (`headboxes_src` (2, 2, N)) or a .json/.npy
  array (N, 2, 2); raises `RawDataError` naming the file."""
  try:
    if path.endswith('.mat'):
      from scipy.io import loadmat  # lazy: scipy is only needed for the official .mat head boxes

      mat = loadmat(path)
      if 'headboxes_src' not in mat:
        raise RawDataError(f'{path}: missing field \'headboxes_src\' (expected the official mpii_gt_val.mat)')
      boxes = np.transpose(np.asarray(mat['headboxes_src'], np.float64), (2, 0, 1))
    elif path.endswith('.npy'):
      boxes = np.load(path).astype(np.float64)
    else:
      with open(path) as f:
        boxes = np.asarray(json.load(f), np.float64)
  except (OSError, ValueError) as err:
    if isinstance(err, RawDataError):
      raise
    raise RawDataError(f'{path}: cannot read head boxes ({err})') from None
  if boxes.ndim != 3 or boxes.shape[1:] != (2, 2):
    raise RawDataError(f'{path}: head boxes have shape {list(boxes.shape)}, expected (N, 2, 2)')
  return boxes


class Mpii(RealPoseBuilder):
  """MPII Human Pose (16 keypoints), see the module docstring."""

  name = 'mpii'
  FORMAT = 'mpii'
  DESCRIPTION = 'MPII Human Pose (16 keypoints), one record per annotated person.'
  LAYOUT = {
    'train': SplitLayout(('annotations/mpii_train.json',), ('images',)),
    'validation': SplitLayout(('annotations/mpii_val.json',), ('images',)),
  }
  DEFAULT_HEADBOXES = {'validation': 'annotations/mpii_gt_val.mat'}

  def _headboxes(self, split: str, count: int) -> tuple[np.ndarray | None, str]:
    option = self.option('headboxes')
    path = None
    if option and split == 'validation':
      path = self.resolve(option)
      if not os.path.isfile(path):
        raise RawDataError(f'{path}: head-box file does not exist (--headboxes)')
    elif split in self.DEFAULT_HEADBOXES and self._manual_dir:
      candidate = os.path.join(self._manual_dir, self.DEFAULT_HEADBOXES[split])
      path = candidate if os.path.isfile(candidate) else None
    if path is None:
      return None, 'head segment |head_top - upper_neck|'
    boxes = load_headboxes(path)
    if len(boxes) != count:
      raise RawDataError(
        f'{path}: has {len(boxes)} head boxes but split {split!r} has {count} persons; '
        f'the head boxes must follow the annotation list'
      )
    return head_sizes_from_boxes(boxes), f'0.6 x head-box diagonal from {path}'

  def load_split(self, split: str, annotation_path: str, image_dir: str) -> SplitData:
    path = annotation_path
    entries = self.cached_json(path)
    if not isinstance(entries, list):
      raise RawDataError(
        f'{path}: expected a JSON list of {{image, center, scale, joints, joints_vis}}, got {type(entries).__name__}'
      )
    head_sizes, head_source = self._headboxes(split, len(entries))
    self.info.metadata.setdefault('head_size_source', {})[split] = head_source
    is_train = split in self.TRAIN_SPLITS
    names = {}
    for entry in entries:
      name = entry.get('image') if isinstance(entry, dict) else None
      if isinstance(name, str) and name not in names:
        names[name] = len(names)
    numeric = all(os.path.splitext(os.path.basename(n))[0].isdigit() for n in names)
    images: dict[int, RawImage] = {}
    missing: dict[int, str] = {}
    instances, gt_annotations = [], []
    for index, entry in enumerate(entries):
      what = f'person #{index}'
      file_name = require(entry, 'image', path, what)
      if not isinstance(file_name, str) or not file_name:
        raise RawDataError(f'{path}: {what}: field \'image\' must be a non-empty string')
      what = f'person #{index} ({file_name})'
      center = as_array(require(entry, 'center', path, what), (2,), 'center', path, what)
      scale = as_number(require(entry, 'scale', path, what), 'scale', path, what)
      joints = as_array(require(entry, 'joints', path, what), (NUM_JOINTS, 2), 'joints', path, what)
      visible = as_array(require(entry, 'joints_vis', path, what), (NUM_JOINTS,), 'joints_vis', path, what)
      image_id = int(os.path.splitext(os.path.basename(file_name))[0]) if numeric else names[file_name]
      if image_id not in images and image_id not in missing:
        located = self.locate_image(image_dir, file_name)
        size = image_size_from_file(located) if located else None
        if located is None or size is None:
          missing[image_id] = file_name
          self.skipped.skip(
            split,
            'missing_image' if located is None else 'unreadable_image',
            f'{os.path.join(image_dir, file_name)} ({what})',
          )
        else:
          images[image_id] = RawImage(image_id, file_name, located, size[0], size[1])
      if image_id in missing:
        continue
      keypoints = np.concatenate([joints - 1.0, visible[:, None]], axis=1).astype(np.float32)
      if head_sizes is not None:
        head_size = float(head_sizes[index])
      elif visible[HEAD_TOP] > 0 and visible[UPPER_NECK] > 0:
        head_size = float(np.linalg.norm(joints[HEAD_TOP] - joints[UPPER_NECK]))
      else:
        head_size = 0.0
      side = scale * PIXEL_STD
      cx, cy = center[0] - 1.0, center[1] - 1.0 + CENTER_SHIFT * scale
      bbox = np.array([cx - side / 2, cy - side / 2, side, side], np.float32)
      if not is_train:
        gt_annotations.append(
          gt_annotation(index + 1, image_id, 1, keypoints, bbox, float(side * side), 0, head_size=head_size)
        )
      if scale <= 0:
        self.skipped.skip(split, 'bad_bbox', f'{path}: {what} (scale {scale})')
        continue
      if not self.keep_instance(split, keypoints, path, what):
        continue
      instances.append(
        RawInstance(
          instance_id=index + 1,
          image_id=image_id,
          category_id=1,
          bbox=bbox,
          area=float(side * side),
          keypoints=keypoints,
          head_size=head_size,
        )
      )
    gt = None
    if not is_train:
      skeleton = get_format(self.FORMAT)
      category = {
        'id': 1,
        'name': 'person',
        'supercategory': 'person',
        'keypoints': list(skeleton.keypoint_names),
        'skeleton': [[int(i) + 1, int(j) + 1] for i, j in skeleton.links],
      }
      gt = {
        'info': {
          'description': f'mpii {split}: normalised ground truth of {path} (0-based px; head_size: {head_source})'
        },
        'images': [gt_image(im) for im in images.values()],
        'annotations': gt_annotations,
        'categories': [category],
      }
    return SplitData(images=images, instances=instances, gt=gt, source=path)
