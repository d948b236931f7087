"""init_from bookkeeping: where each dataset's prototype rows sit in the source run."""

import json

from posebh_jax import skeletons
from posebh_jax.init_from import _dataset_axis, _run_keypoint_counts


def test_source_only_datasets_keep_their_prototype_rows(tmp_path):
  # The source trained coco, aic and mpii; this run only knows coco and mpii. aic's 14 rows must still be
  # counted, or mpii's prototypes would be read from aic's rows.
  datasets = {name: {'format': name} for name in ('coco', 'aic', 'mpii')}
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'order': list(datasets), 'datasets': datasets}}))
  counts = _run_keypoint_counts(str(tmp_path), ('coco', 'aic', 'mpii'), {'coco': 17, 'mpii': 16})
  assert (
    counts
    == {name: skeletons.get_format(name).num_keypoints for name in datasets}
    == {'coco': 17, 'aic': 14, 'mpii': 16}
  )


def test_dataset_with_a_renamed_format_and_missing_config(tmp_path):
  datasets = {'people': {'format': 'crowdpose'}}
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'order': ['people'], 'datasets': datasets}}))
  assert _run_keypoint_counts(str(tmp_path), ('people',), {}) == {'people': 14}
  # No config.json: fall back to this run's counts, then to the registry by name.
  assert _run_keypoint_counts(str(tmp_path / 'missing'), ('x', 'aic'), {'x': 5}) == {'x': 5, 'aic': 14}


def test_expert_dataset_axis_needs_every_other_axis_to_agree():
  # Expert kernels (E, hidden, P): a run with 6 datasets into one with 7 maps along axis 0.
  assert _dataset_axis((7, 768, 48), (6, 768, 48), 7, 6) == 0
  assert _dataset_axis((6, 768, 48), (6, 768, 48), 6, 6) == 0
  # Another hidden size or expert width is another architecture, not a dataset mapping.
  assert _dataset_axis((7, 1024, 48), (6, 768, 48), 7, 6) is None
  assert _dataset_axis((7, 768, 64), (6, 768, 48), 7, 6) is None
  assert _dataset_axis((7, 48), (6, 768, 48), 7, 6) is None
