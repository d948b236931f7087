"""tfds builders for the COCO-format human keypoint datasets: COCO keypoints 2017, COCO-WholeBody, AI Challenger
(AIC), OCHuman, CrowdPose and Halpe-FullBody. Record schema, splits, skipping and ground-truth files: see
`data_pipeline.builders.real`.

Raw layouts (relative to `--manual_dir`; `--ann_file SPLIT=PATH` / `--image_dir SPLIT=DIR` override them):
  coco_keypoints  annotations/person_keypoints_{train,val}2017.json; images {train,val}2017/
  coco_wholebody  annotations/coco_wholebody_{train,val}_v1.0.json; images {train,val}2017/
  aic             annotations/aic_{train,val}.json (the COCO-style files mmpose distributes);
                  images ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902/ and
                  ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911/
  ochuman         annotations/ochuman_coco_format_{val,test}_range_0.00_1.00.json; images images/
  crowdpose       annotations/mmpose_crowdpose_{trainval,test}.json or json/crowdpose_{trainval,val,test}.json;
                  images images/
  halpe           annotations/halpe_{train,val}_v1.json; images hico_20160224_det/images/train2015/ (train),
                  val2017/ or coco/val2017/ (validation: Halpe annotates the COCO val2017 images)
Detector boxes (`--det_json`, e.g. COCO_val2017_detections_AP_H_56_person.json) are for: COCO, COCO-WholeBody
and OCHuman `validation`, CrowdPose `test`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from data_pipeline.builders.real import CocoStyleBuilder, SplitLayout, as_number, keypoints_from_fields


class CocoKeypoints(CocoStyleBuilder):
  """COCO keypoints 2017 (17 body keypoints)."""

  name = 'coco_keypoints'
  FORMAT = 'coco'
  DESCRIPTION = 'COCO 2017 person keypoints, one record per person instance.'
  LAYOUT = {
    'train': SplitLayout(('annotations/person_keypoints_train2017.json',), ('train2017', 'images/train2017')),
    'validation': SplitLayout(('annotations/person_keypoints_val2017.json',), ('val2017', 'images/val2017')),
  }
  DET_SPLIT = 'validation'


# COCO-WholeBody's per-part annotation fields, in the registry's keypoint order (body, foot, face, hands).
WHOLEBODY_PARTS = (
  ('keypoints', 17),
  ('foot_kpts', 6),
  ('face_kpts', 68),
  ('lefthand_kpts', 21),
  ('righthand_kpts', 21),
)


class CocoWholebody(CocoStyleBuilder):
  """COCO-WholeBody v1.0: 133 keypoints = body 17 + foot 6 + face 68 + left hand 21 + right hand 21.

  The gt json's `keypoints` holds all 133 (the part fields are merged into it); the part boxes and
  validity flags are kept.
  """

  name = 'coco_wholebody'
  FORMAT = 'coco_wholebody'
  DESCRIPTION = 'COCO-WholeBody v1.0 (133 keypoints), one record per person instance.'
  LAYOUT = {
    'train': SplitLayout(('annotations/coco_wholebody_train_v1.0.json',), ('train2017', 'images/train2017')),
    'validation': SplitLayout(('annotations/coco_wholebody_val_v1.0.json',), ('val2017', 'images/val2017')),
  }
  DET_SPLIT = 'validation'
  _KEPT = ('face_box', 'lefthand_box', 'righthand_box', 'face_valid', 'lefthand_valid', 'righthand_valid', 'foot_valid')

  def raw_keypoints(self, ann: Mapping, path: str, what: str) -> np.ndarray:
    return keypoints_from_fields(ann, WHOLEBODY_PARTS, path, what)

  def instance_extras(self, ann: Mapping, path: str, what: str) -> tuple[dict, dict]:
    return {}, {key: ann[key] for key in self._KEPT if key in ann}


class Aic(CocoStyleBuilder):
  """AI Challenger 2017 keypoints (14), from the COCO-style files distributed by mmpose (no `area`)."""

  name = 'aic'
  FORMAT = 'aic'
  DESCRIPTION = 'AI Challenger 2017 human keypoints (14), one record per person instance.'
  LAYOUT = {
    'train': SplitLayout(
      ('annotations/aic_train.json',), ('ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902',)
    ),
    'validation': SplitLayout(
      ('annotations/aic_val.json',), ('ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911',)
    ),
  }


class Ochuman(CocoStyleBuilder):
  """OCHuman (COCO 17 keypoints; evaluation only): validation and test splits."""

  name = 'ochuman'
  FORMAT = 'ochuman'
  DESCRIPTION = 'OCHuman (occluded humans, COCO keypoints), one record per person instance.'
  LAYOUT = {
    'validation': SplitLayout(('annotations/ochuman_coco_format_val_range_0.00_1.00.json',), ('images',)),
    'test': SplitLayout(('annotations/ochuman_coco_format_test_range_0.00_1.00.json',), ('images',)),
  }
  TRAIN_SPLITS = ()
  DET_SPLIT = 'validation'


class Crowdpose(CocoStyleBuilder):
  """CrowdPose (14 keypoints); every record keeps its image's `crowd_index` (the gt keeps `crowdIndex`)."""

  name = 'crowdpose'
  FORMAT = 'crowdpose'
  DESCRIPTION = 'CrowdPose (14 keypoints), one record per person instance.'
  LAYOUT = {
    'train': SplitLayout(('annotations/mmpose_crowdpose_trainval.json', 'json/crowdpose_trainval.json'), ('images',)),
    'validation': SplitLayout(('annotations/mmpose_crowdpose_val.json', 'json/crowdpose_val.json'), ('images',)),
    'test': SplitLayout(('annotations/mmpose_crowdpose_test.json', 'json/crowdpose_test.json'), ('images',)),
  }
  DET_SPLIT = 'test'
  IMAGE_EXTRAS = {'crowd_index': ((), np.float32, -1.0)}

  def image_extras(self, image: Mapping, path: str, what: str) -> tuple[dict, dict]:
    if 'crowdIndex' not in image:
      return {}, {}
    value = as_number(image['crowdIndex'], 'crowdIndex', path, what)
    return {'crowd_index': value}, {'crowdIndex': value}


class Halpe(CocoStyleBuilder):
  """Halpe-FullBody (136 keypoints; evaluation only here): train (HICO-DET images) and validation
  (COCO val2017 images)."""

  name = 'halpe'
  FORMAT = 'halpe'
  DESCRIPTION = 'Halpe-FullBody (136 keypoints), one record per person instance.'
  LAYOUT = {
    'train': SplitLayout(('annotations/halpe_train_v1.json',), ('hico_20160224_det/images/train2015',)),
    'validation': SplitLayout(('annotations/halpe_val_v1.json',), ('val2017', 'coco/val2017', 'images/val2017')),
  }
