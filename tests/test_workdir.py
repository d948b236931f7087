"""Reading a saved run's config.json (`workdir.load_run_config`), the one reader behind inference, teachers, the
pictures and the ACAE fit: where it looks, what it returns, and its one-line errors."""

import json

import pytest

from configs import demo
from posebh_jax import checkpoint
from posebh_jax import workdir as workdir_lib
from posebh_jax.errors import UserError
from posebh_jax.tasks import teachers as teachers_lib


def test_reads_the_config_from_the_run_its_checkpoints_and_a_step_as_the_config_file_wrote_it(tmp_path):
  config = demo.get_config('tiny')
  workdir_lib.write_config(config, str(tmp_path))
  step_dir = tmp_path / 'checkpoints' / '7'
  step_dir.mkdir(parents=True)
  for path in (tmp_path, tmp_path / 'checkpoints', step_dir):
    assert workdir_lib.find_run_directory(str(path)) == str(tmp_path)
    loaded = workdir_lib.load_run_config(str(path))
    # JSON lists come back as the tuples the config file wrote: equal to the config it was written from.
    assert loaded.data.order == tuple(config.data.order) and loaded.data.image_size == tuple(config.data.image_size)
    assert json.loads(loaded.to_json()) == json.loads(config.to_json_best_effort())


def test_errors_are_one_line(tmp_path):
  with pytest.raises(UserError, match=r'no config.json here or above it; pass a workdir') as info:
    workdir_lib.load_run_config(str(tmp_path / 'missing'))
  assert '\n' not in str(info.value)
  with pytest.raises(UserError, match=r'no config.json here or above it; pass the --workdir of a training run'):
    workdir_lib.load_run_config(str(tmp_path), hint='pass the --workdir of a training run')
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(UserError, match=r'config.json cannot be read as JSON'):
    workdir_lib.load_run_config(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'model': {}}))
  with pytest.raises(UserError, match=r'config.json is not a run config \(no model or data section\)'):
    workdir_lib.load_run_config(str(tmp_path))
  # A teacher names the setting that points there.
  student = demo.get_config('tiny,distill')
  with pytest.raises(UserError, match=r'^config.distill.teachers.coco: .*config.json is not a run config'):
    teachers_lib.load_teacher('coco', str(tmp_path), student, groups=1)


def test_weights_are_read_from_the_path_or_else_its_run_directory(tmp_path):
  """`checkpoint.checkpoint_source` (Predictor.load and teachers): a path that names checkpoints itself is used as it
  is; another path inside a run (here its eval/) falls back to the run directory; a run without checkpoints raises
  FileNotFoundError about the run directory."""
  (tmp_path / 'checkpoints' / '7' / 'state').mkdir(parents=True)
  (tmp_path / 'eval').mkdir()
  step_dir = str(tmp_path / 'checkpoints' / '7')
  assert checkpoint.checkpoint_source(step_dir, str(tmp_path)) == step_dir
  assert checkpoint.checkpoint_source(str(tmp_path / 'eval'), str(tmp_path)) == str(tmp_path)
  empty = tmp_path / 'empty'
  (empty / 'eval').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=f'no checkpoint under {empty}'):
    checkpoint.checkpoint_source(str(empty / 'eval'), str(empty))
