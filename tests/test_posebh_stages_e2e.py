"""PoseBH stages 2 and 3 (cross-type self-supervision and the cluster-prototype terms) on 8 simulated devices vs 1.

Its own file so that pytest-xdist (`--dist loadfile`) can run it beside tests/test_posebh_e2e.py's other long runs.
"""

import jax
import numpy as np

from conftest import records as _records
from conftest import train

CONFIG = 'configs/demo.py:tiny,posebh'


def _train(workdir, data_dir, *overrides, devices=1):
  # Compiled fast (`conftest.FAST_COMPILE`): two steps each, almost all of the runs' time is compilation.
  return train(
    workdir, data_dir, '--config.eval_every_steps=0', *overrides, devices=devices, config=CONFIG, fast_compile=True
  )


def test_stages_two_and_three_on_eight_devices_match_one_device(tmp_path, data_dir):
  """Stages 2 and 3 (CSS: cross-type self-supervision; CPS: cluster prototypes) on 8 devices (4×2 data×fsdp) vs 1,
  in float64 so that no near-tie flips (the float32 stage-one test above explains why float32 drifts): the losses
  of every term and the trained parameters. Kept cheap (two compiles per device count, compiled fast; 64 s on the
  2-core VM): one block, two datasets, one step per stage (stage_epochs (0, 1/3) at 3 steps per epoch starts in
  stage 2 and enters stage 3 at step 1), no warmup so that both steps move the weights, and CSS keeps every
  pseudo-label of the fresh heads (min peak 0). A run that starts in stage 2 clusters its prototypes first, as
  entering stage 2 does (before, it skipped the clustering and its CPS terms ran on the plain prototypes)."""
  common = (
    '--config.batch_size=16',
    '--config.total_steps=2',
    "--config.data.order=('coco','mpii')",
    '--config.model.depth=1',
    '--config.posebh.stage_epochs=(0.0,0.34)',
    '--config.posebh.backbone_thaw_epoch=0.0',
    '--config.optim.warmup_steps=0',
    '--config.posebh.css_min_peak=0.0',
    '--config.posebh.css_max_distance=100.0',
    '--config.model.dtype=float64',
    '--config.model.param_dtype=float64',
  )
  one, eight = tmp_path / 'one', tmp_path / 'eight'
  first = _train(one, data_dir, *common, devices=1)
  assert 'phase 0: stage 2, steps 0-1' in first.stdout
  assert 'step 1: entering phase 1 (stage 3, steps 1-2' in first.stdout
  _train(eight, data_dir, *common, '--config.mesh.data=4', '--config.mesh.fsdp=2', devices=8)
  records_one = [r for r in _records(one) if 'train/loss' in r]
  records_eight = {r['step']: r for r in _records(eight) if 'train/loss' in r}
  assert [r['step'] for r in records_one] == [1, 2]
  for record in records_one:
    assert record['train/css_kept'] > 0.5 and record['train/loss_css'] > 0 and record['train/loss_cps'] > 0
    keys = sorted(k for k in record if k.startswith('train/'))
    assert {'train/loss_css', 'train/loss_cps', 'train/loss_ppd', 'train/grad_norm'} <= set(keys)
    for key in keys:
      # The prototype terms are computed in float32 inside the float64 model (measured with two blocks: up to 5.4e-7
      # apart; the rest up to 3.8e-12).
      rtol = 5e-6 if key.split('_')[-1] in ('phm', 'ppc', 'ppd', 'cps', 'css') else 1e-10
      np.testing.assert_allclose(
        records_eight[record['step']][key], record[key], rtol=rtol, err_msg=f'{key} at step {record["step"]}'
      )
  from posebh_jax import checkpoint

  state_one, state_eight = (checkpoint.read_state(str(w))[0] for w in (one, eight))
  flat_one = dict(jax.tree_util.tree_leaves_with_path(state_one['params']))
  flat_eight = dict(jax.tree_util.tree_leaves_with_path(state_eight['params']))
  assert flat_one.keys() == flat_eight.keys() and len(flat_one) > 20
  for path, value in flat_one.items():
    # Each Adam step moves a weight by about lr = 2e-4. The float32 prototype terms reach only the embedding module:
    # on the clustered prototypes, whose duplicates make near-ties of the pixel assignment that float32 rounding can
    # flip, its weights ended up to 3.1e-6 apart (1.6 % of a step; the backbone 6.4e-8, the heads 1e-11).
    atol = 1e-5 if jax.tree_util.keystr(path).startswith("['embedding']") else 1e-6
    np.testing.assert_allclose(
      np.asarray(flat_eight[path]), np.asarray(value), rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path)
    )
  # The cluster prototypes: each of the 33 keypoints' 3 prototypes became ± one of the config's 8 centroids
  # (demo.py:tiny,posebh's num_clusters), the same on 8 devices as on 1.
  clusters = np.asarray(state_one['extra']['cluster_prototypes'])
  prototypes = np.asarray(state_one['extra']['prototypes'])
  distinct = lambda x: len(np.unique(np.round(np.abs(x.reshape(-1, x.shape[-1])), 5), axis=0))
  assert distinct(prototypes) == 33 * 3 and distinct(clusters) <= 8, (distinct(prototypes), distinct(clusters))
  np.testing.assert_allclose(np.asarray(state_eight['extra']['cluster_prototypes']), clusters, rtol=0, atol=1e-6)
