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


def test_experts_map_by_expert_name_into_a_run_with_a_shared_3d_expert(tmp_path):
  """A 2D run's experts (one per dataset) initialise a run where two 3D datasets share the expert '3d': the 2D
  datasets' experts are copied by name, the shared one stays fresh, and the 2D heads are loaded."""
  import jax
  import numpy as np

  from configs import common, demo
  from posebh_jax import inference, init_from
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import trainer as trainer_lib

  source_config = demo.get_config('tiny')
  with source_config.unlocked():
    source_config.data.order = ('coco', 'mpii')
  mesh = sharding_lib.make_mesh(source_config.mesh)
  source = trainer_lib.Trainer(source_config, mesh, 10, {'coco': 4, 'mpii': 4})
  source_state = jax.device_get(source.init_state(1))
  inference.write_weights(str(tmp_path / 'source'), source_config, source_state)

  target_config = demo.get_config('tiny')
  with target_config.unlocked():
    target_config.data.order = ('mpii', 'coco')
    common.add_synthetic3d(target_config, ('syn_smpl', 'syn_h36m'))
  target = trainer_lib.Trainer(target_config, mesh, 10, {n: 8 for n in target_config.data.order})
  fresh = jax.device_get(target.init_state(2))
  loaded = jax.device_get(init_from.load_initial_weights(target, target.init_state(2), str(tmp_path / 'source')))
  for key in ('expert_kernel', 'expert_bias'):
    src = source_state['params']['backbone']['block_0']['mlp'][key]
    got = loaded['params']['backbone']['block_0']['mlp'][key]
    assert got.shape[0] == 3  # mpii, coco, '3d'
    np.testing.assert_array_equal(got[0], src[1])  # mpii
    np.testing.assert_array_equal(got[1], src[0])  # coco
    np.testing.assert_array_equal(got[2], fresh['params']['backbone']['block_0']['mlp'][key][2])
  jax.tree.map(np.testing.assert_array_equal, loaded['params']['head_coco'], source_state['params']['head_coco'])
