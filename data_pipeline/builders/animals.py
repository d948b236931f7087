"""tfds builders for the animal datasets AP-10K and APT-36K (17 keypoints, AP-10K layout). Record schema,
skipping and ground truth: see `data_pipeline.builders.real`; `category_id` is the species.

AP-10K raw layout (relative to `--manual_dir`): annotations/ap10k-{train,val,test}-split1.json (option
`ap10k_split` picks split 1, 2 or 3), images data/.

APT-36K raw layout: the single official annotation file annotations/apt36k_annotations.json (or
apt36k_annotations.json at the top), COCO format plus `video_id` on images and annotations, `track_id` on
annotations, `is_crowd` instead of `iscrowd`, and image `file_name`s that are the authors' Windows paths
(e.g. 'D:\\Animal_pose\\AP-36k-patr1\\29wolf\\v3c2\\frame7.jpg'). Images are found by the trailing path
components (species/clip/frame) under the raw directory, `images/`, `data/`, or any of its subdirectories
(e.g. AP-36k-patr1/).
APT-36K has no official split: `apt36k_video_splits` assigns whole videos to train / validation / test in the
ratio 7:1:2 within each species, deterministically (see there), as PoseBH's preprocessing does.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from data_pipeline.builders.real import CocoStyleBuilder, SplitLayout, as_int, require, require_list
from data_pipeline.errors import RawDataError

APT36K_SPLITS = ('train', 'validation', 'test')
APT36K_RATIOS = (0.7, 0.8)  # cumulative: train up to 70 %, validation up to 80 %, test the rest


class Ap10k(CocoStyleBuilder):
  """AP-10K (54 species, 17 keypoints): train / validation / test of split 1 (option `ap10k_split`)."""

  name = 'ap10k'
  FORMAT = 'ap10k'
  DESCRIPTION = 'AP-10K animal keypoints (17), one record per animal instance.'
  REQUIRE_CATEGORIES = True

  @property
  def LAYOUT(self):  # noqa: N802 (the class attribute of the other builders)
    n = int(self.option('ap10k_split', 1))
    if n not in (1, 2, 3):
      raise RawDataError(f'AP-10K has splits 1, 2 and 3; got ap10k_split={n}')
    return {
      split: SplitLayout((f'annotations/ap10k-{raw}-split{n}.json',), ('data',))
      for split, raw in (('train', 'train'), ('validation', 'val'), ('test', 'test'))
    }


def path_parts(file_name: str) -> list[str]:
  """The components of a file name written with '/' or '\\' separators (drive prefix dropped)."""
  parts = [p for p in re.split(r'[\\/]+', file_name) if p]
  if parts and re.fullmatch(r'[A-Za-z]:', parts[0]):
    parts = parts[1:]
  return parts


def apt36k_video_splits(images: list[Mapping], path: str = 'apt36k') -> dict[int, str]:
  """Assigns every APT-36K video to 'train', 'validation' or 'test'.

  Videos are grouped by species (the third-last component of the image path, e.g. '29wolf'; 'all' when the
  path is shorter), in order of first appearance in `images`; within a species, with n videos, the first
  int((n + 1) * 0.7) go to train, the videos up to int((n + 1) * 0.8) to validation, the rest to test (with
  80 clips per species: 56 / 8 / 16, the split of PoseBH's preprocessing). Deterministic: depends only on
  the order of the annotation file.

  Args: `images`: the file's image entries (each with `video_id` and `file_name`).
  Returns: {video_id: split name}.
  """
  by_species: dict[str, list[int]] = {}
  seen: set[int] = set()
  for index, image in enumerate(images):
    what = f'image #{index}'
    video = as_int(require(image, 'video_id', path, what), 'video_id', path, what)
    parts = path_parts(str(require(image, 'file_name', path, what)))
    species = parts[-3] if len(parts) >= 3 else 'all'
    if video not in seen:
      seen.add(video)
      by_species.setdefault(species, []).append(video)
  assignment = {}
  for videos in by_species.values():
    n = len(videos)
    train_end, val_end = (int((n + 1) * r) for r in APT36K_RATIOS)
    for position, video in enumerate(videos):
      assignment[video] = 'train' if position < train_end else 'validation' if position < val_end else 'test'
  return assignment


class Apt36k(CocoStyleBuilder):
  """APT-36K (30 species, 17 keypoints in the AP-10K layout), split 7:1:2 by video (see the module docstring).

  Extra fields: `video_id` (per image) and `track_id` (per instance; -1 when absent).
  """

  name = 'apt36k'
  FORMAT = 'apt36k'
  DESCRIPTION = 'APT-36K animal keypoints (17), split 7:1:2 by video; one record per animal instance.'
  REQUIRE_CATEGORIES = True
  LAYOUT = {
    split: SplitLayout(('annotations/apt36k_annotations.json', 'apt36k_annotations.json')) for split in APT36K_SPLITS
  }
  IMAGE_EXTRAS = {'video_id': ((), np.int64, -1)}
  INSTANCE_EXTRAS = {'track_id': ((), np.int64, -1)}

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._prefixes: list[tuple[str, int]] | None = None

  def select_images(self, split: str, data: Mapping, path: str) -> set[int]:
    images = require_list(data, 'images', path)
    assignment = apt36k_video_splits(images, path)
    return {
      as_int(require(im, 'id', path, f'image #{i}'), 'id', path, f'image #{i}')
      for i, im in enumerate(images)
      if assignment[int(im['video_id'])] == split
    }

  def image_extras(self, image: Mapping, path: str, what: str) -> tuple[dict, dict]:
    video = as_int(require(image, 'video_id', path, what), 'video_id', path, what)
    return {'video_id': video}, {'video_id': video}

  def instance_extras(self, ann: Mapping, path: str, what: str) -> tuple[dict, dict]:
    extras, gt = {}, {}
    if 'track_id' in ann:
      extras['track_id'] = gt['track_id'] = as_int(ann['track_id'], 'track_id', path, what)
    if 'video_id' in ann:
      gt['video_id'] = as_int(ann['video_id'], 'video_id', path, what)
    return extras, gt

  def locate_image(self, image_dir: str, file_name: str) -> str | None:
    """Finds `file_name` (a Windows path) by its trailing components under the known image roots; the
    (root, number of components) that worked first is tried first for the next image."""
    parts = path_parts(file_name)
    if self._prefixes is None:
      roots = [image_dir] + [os.path.join(image_dir, d) for d in ('images', 'data')]
      if os.path.isdir(image_dir):
        roots += sorted(
          os.path.join(image_dir, d) for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d))
        )
      self._prefixes = [(root, k) for k in (3, 2, 1, 4) for root in dict.fromkeys(roots)]
    for position, (root, k) in enumerate(self._prefixes):
      if len(parts) < k:
        continue
      candidate = os.path.join(root, *parts[-k:])
      if os.path.isfile(candidate):
        if position:
          self._prefixes.insert(0, self._prefixes.pop(position))
        return candidate
    return None
