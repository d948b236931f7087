"""Weights-only checkpoints (what the converter and the exporter write): a trained run's variables written by
`inference.write_weights` evaluate with `--mode=eval` to the same metrics as the run itself, start another run
through `config.init_from`, and load in `Predictor` to the same heatmaps."""

import json

import numpy as np
import pytest

from conftest import records, run_module, train
from posebh_jax import checkpoint, inference
from posebh_jax.errors import UserError


def _eval(workdir, data_dir):
  result = run_module(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={workdir}',
      '--mode=eval',
      f'--config.data.data_dir={data_dir}',
    ]
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return {k: v for k, v in records(workdir)[-1].items() if k.startswith('eval/')}


def test_weights_only_checkpoint_evaluates_initialises_and_predicts_like_the_run(tmp_path, data_dir):
  run, weights = tmp_path / 'run', tmp_path / 'weights'
  train(run, data_dir, '--config.total_steps=2', '--config.eval_every_steps=2')
  # The run's own evaluation at its end (step 2).
  (run_eval,) = [{k: v for k, v in r.items() if k.startswith('eval/')} for r in records(run) if 'eval/coco/AP' in r]
  state, step = checkpoint.read_state(str(run))
  assert 'opt_state' in state and step == 2
  config = inference.load_run_config(str(run))
  inference.write_weights(str(weights), config, state, step=step)

  # Only the model's variables (and the step) are written: no optimizer moments.
  saved, saved_step = checkpoint.read_state(str(weights))
  assert set(saved) == {'step', 'params', 'batch_stats', 'extra'} and saved_step == step

  # --mode=eval on the weights-only checkpoint gives exactly the run's own evaluation.
  assert _eval(weights, data_dir) == run_eval != {}

  # It is a valid init_from source (every group of the model loaded, nothing fresh).
  again = train(
    tmp_path / 'again',
    data_dir,
    '--config.total_steps=1',
    '--config.eval_every_steps=0',
    f'--config.init_from={weights}',
  )
  line = next(line for line in again.stdout.splitlines() if line.startswith('init_from'))
  assert 'fresh: nothing' in line and 'backbone' in line, line

  # Predictor: the same heatmaps from the run, its checkpoints/<step> directory and the weights-only copy.
  images = np.random.default_rng(0).integers(0, 256, (3,) + tuple(config.data.image_size) + (3,), dtype=np.uint8)
  from_run = inference.Predictor.load(str(run)).heatmaps(images, 'mpii')
  from_step = inference.Predictor.load(str(run / 'checkpoints' / str(step))).heatmaps(images, 'mpii')
  from_weights = inference.Predictor.load(str(weights)).heatmaps(images, 'mpii')
  assert from_run.shape == (3, *config.data.heatmap_size, 16) and from_run.dtype == np.float32
  np.testing.assert_array_equal(from_run, from_weights)
  np.testing.assert_array_equal(from_run, from_step)


def test_predictor_errors_are_one_line(tmp_path):
  with pytest.raises(UserError, match='no config.json'):
    inference.Predictor.load(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'not': 'a run'}))
  with pytest.raises(UserError, match=r'config.json is not a run config \(no model or data section\)'):
    inference.Predictor.load(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'model': {}, 'data': {}}))
  with pytest.raises(UserError, match='no checkpoint'):
    inference.Predictor.load(str(tmp_path))
