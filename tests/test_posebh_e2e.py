"""PoseBH end to end through `python -m posebh_jax.main`: 1 vs 8 simulated devices (losses and prototypes),
init from a baseline run, and resuming exactly at a stage boundary."""
import json
import os

import numpy as np
import pytest

from conftest import losses as _losses
from conftest import train

CONFIG = 'configs/demo.py:tiny,posebh'


@pytest.fixture(scope='module')
def baseline(tmp_path_factory, data_dir):
  """A 4-step ViTPose++ run to initialise PoseBH from."""
  workdir = tmp_path_factory.mktemp('baseline')
  train(workdir, data_dir, '--config.total_steps=4', '--config.eval_every_steps=0')
  return str(workdir)


def _train(workdir, data_dir, *overrides, devices=1):
  return train(workdir, data_dir, '--config.eval_every_steps=0', *overrides, devices=devices, config=CONFIG)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _prototypes(workdir):
  from posebh_jax import checkpoint
  state, _ = checkpoint.read_state(str(workdir))
  return np.asarray(state['extra']['prototypes'])


@pytest.mark.xfail(reason='open (issue 3): PPC/PPD on 8 devices drift from 1 device by up to ~9% within 6 steps; '
                   'near-tie argmax flips in the Sinkhorn/most-similar-class choices are suspected', strict=False)
def test_stage_one_on_eight_devices_matches_one_device(tmp_path, data_dir, baseline):
  common = ('--config.batch_size=48', '--config.total_steps=6', '--config.posebh.stage_epochs=(10.0,20.0)',
            '--config.posebh.backbone_thaw_epoch=20.0', f'--config.init_from={baseline}')
  one, eight = tmp_path / 'one', tmp_path / 'eight'
  first = _train(one, data_dir, *common, devices=1)
  assert 'init_from' in first.stdout and 'loaded backbone' in first.stdout
  _train(eight, data_dir, *common, '--config.mesh.data=4', '--config.mesh.fsdp=2', devices=8)
  records_one = [r for r in _records(one) if 'train/loss' in r]
  records_eight = {r['step']: r for r in _records(eight) if 'train/loss' in r}
  assert [r['step'] for r in records_one] == list(range(1, 7))
  for record in records_one:
    # PPC/PPD hinge on discrete choices (Sinkhorn argmax over prototypes, most-similar class): a near-tie pixel
    # can flip with the summation order of a sharded reduction and move the mean by a pixel's share (measured up
    # to 0.6% on this tiny batch); the embedding's next updates inherit that, so PHM drifts by ~1e-4 too.
    for key, rtol in (('train/loss', 1e-4), ('train/loss_phm', 1e-3), ('train/loss_ppc', 2e-2),
                      ('train/loss_ppd', 2e-2)):
      np.testing.assert_allclose(records_eight[record['step']][key], record[key], rtol=rtol,
                                 err_msg=f'{key} at step {record["step"]}')
  protos_one, protos_eight = _prototypes(one), _prototypes(eight)
  assert protos_one.shape == (214, 3, 8)
  np.testing.assert_allclose(np.linalg.norm(protos_one, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(protos_eight, protos_one, atol=1e-4)


def test_resume_at_stage_boundary_matches_uninterrupted(tmp_path, data_dir, baseline):
  common = ('--config.checkpoint_every_steps=6', f'--config.init_from={baseline}')
  full, resumed = tmp_path / 'full', tmp_path / 'resumed'
  result = _train(full, data_dir, '--config.total_steps=12', *common)
  assert 'entering phase 1' in result.stdout
  _train(resumed, data_dir, '--config.total_steps=6', *common)
  second = _train(resumed, data_dir, '--config.total_steps=12', *common)
  assert 'resumed' in second.stdout
  losses_full, losses_resumed = _losses(full), _losses(resumed)
  for step in range(7, 13):
    np.testing.assert_allclose(losses_resumed[step], losses_full[step], rtol=1e-5, err_msg=f'step {step}')
  css = [r for r in _records(full) if 'train/loss_css' in r]
  assert css and all(np.isfinite(r['train/loss_css']) for r in css)
  np.testing.assert_allclose(_prototypes(resumed), _prototypes(full), atol=1e-6)
