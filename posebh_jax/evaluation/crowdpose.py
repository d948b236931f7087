"""CrowdPose keypoint AP/AR with the easy / medium / hard split, as the CrowdPose toolkit (and xtcocotools'
iouType 'keypoints_crowd') computes it.

The protocol, from the toolkit: OKS with the CrowdPose sigmas and 0.53 x box area (annotations have no area);
a person is ignored when its annotation's `num_keypoints` is 0 (in CrowdPose that counts only part of the
joints, so it is read from the file, not recounted); at most 20 results per image; AP / AR over all images
(no area ranges). The split is by the image's `crowdIndex`: easy < 0.2 <= medium < 0.8 <= hard. AP (E/M/H) is
the mean of the precision table (IoU thresholds x recall thresholds, 'all' area) of an evaluation restricted
to that split's images, rounded to 4 decimals as the toolkit does; -1 when the split has no image or no person.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from posebh_jax.evaluation.coco import (
  check_sigmas,
  load_json,
  prepare_ground_truth,
  prepare_results,
  run_cocoeval,
  summarize,
)

CROWDPOSE_NAMES = ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75", "AP (E)", "AP (M)", "AP (H)")
CROWD_INDEX_SPLITS = (0.2, 0.8)


def crowd_index_split(
  images: Sequence[dict], first: float = CROWD_INDEX_SPLITS[0], second: float = CROWD_INDEX_SPLITS[1]
) -> tuple[list, list, list] | None:
  """Image ids split by `crowdIndex` into (easy < first, medium < second, hard); None if an image lacks it."""
  if not images or any("crowdIndex" not in image for image in images):
    return None
  easy = [im["id"] for im in images if im["crowdIndex"] < first]
  medium = [im["id"] for im in images if first <= im["crowdIndex"] < second]
  hard = [im["id"] for im in images if not im["crowdIndex"] < second]  # as the toolkit: "else" (NaN too)
  return easy, medium, hard


def evaluate_crowdpose(
  gt: dict | str,
  results: list[dict] | str,
  sigmas,
  *,
  use_area: bool = False,
  max_dets: int = 20,
  score_key: str = "score",
  verbose: bool = False,
) -> dict[str, float]:
  """CrowdPose AP/AR and AP (E), AP (M), AP (H) of `results` against `gt`.

  Args:
    gt: CrowdPose COCO-format ground truth (dict or JSON path); images carry `crowdIndex`.
    results: `[{'image_id', 'category_id', 'keypoints' [x, y, score] * 14, 'score'}]` or a JSON path.
    sigmas: `(14,)` CrowdPose OKS sigmas.
    use_area: the toolkit uses 0.53 x box area (False); True uses the annotations' `area`.
  Returns: `{name: value}` for `CROWDPOSE_NAMES`, in [0, 1] (-1 where there is nothing to average). The
    E/M/H entries are left out when an image has no `crowdIndex` (e.g. a training-time split).
  """
  sigmas = check_sigmas(sigmas)
  gt = load_json(gt, "ground truth")
  gt_prepared = prepare_ground_truth(gt, ("keypoints",), sigmas.size, use_area, "num_keypoints", renumber=True)
  known = {img["id"] for img in gt_prepared["images"]}
  prepared = prepare_results(load_json(results, "results"), ("keypoints",), sigmas.size, score_key, known)
  names = CROWDPOSE_NAMES[:6]
  if not prepared:
    stats = {name: 0.0 for name in names}
  else:
    stats = summarize(run_cocoeval(gt_prepared, prepared, sigmas, max_dets, verbose=verbose), names)
  split = crowd_index_split(gt_prepared["images"])
  if split is None:
    return stats
  for name, image_ids in zip(CROWDPOSE_NAMES[6:], split):
    # The toolkit sets imgIds to the split and averages the whole precision table (also its -1 entries).
    if not image_ids or not prepared:
      split_ids = set(image_ids)
      has_people = any(
        a["image_id"] in split_ids and a["num_keypoints"] > 0 and not a["iscrowd"] for a in gt_prepared["annotations"]
      )
      stats[name] = 0.0 if (image_ids and has_people) else -1.0
      continue
    coco_eval = run_cocoeval(gt_prepared, prepared, sigmas, max_dets, image_ids=image_ids, verbose=verbose)
    stats[name] = float(round(np.mean(coco_eval.eval["precision"][:, :, :, 0, :]), 4))
  return stats
