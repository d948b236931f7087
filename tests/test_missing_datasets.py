"""config.data.missing: datasets whose train split is not prepared stop the run ('error', one line) or are dropped
from it ('skip', one printed line each), and the composition line every run prints."""

import re

import ml_collections
import pytest

from configs import b16, common, demo
from data_pipeline import pipeline
from data_pipeline.errors import DataConfigError, DatasetNotFoundError
from posebh_jax import train

PREPARED = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')  # in the `data_dir` fixture


def _config(data_dir: str, missing: str = 'error', eval_datasets=()) -> ml_collections.ConfigDict:
  """demo:tiny on `data_dir` plus two datasets that are not prepared there: 'aspset' (tfds 'generic3d/aspset')
  and 'coco_extra' (a split the prepared synthetic dataset lacks)."""
  config = demo.get_config('tiny')
  with config.unlocked():
    config.data.data_dir = data_dir
    config.data.missing = missing
    config.data.datasets.aspset = common.dataset3d_entry('aspset', *common.real3d_source('aspset')[:3], weight=2.0)
    config.data.datasets.coco_extra = dict(config.data.datasets.coco.to_dict(), train_split='train_extra')
    config.data.order = ('coco', 'aspset', 'aic', 'mpii', 'coco_extra', 'ap10k', 'apt36k', 'coco_wholebody')
    config.data.datasets.coco.weight = 3.0
    config.eval_datasets = eval_datasets
  return config


def test_skip_drops_exactly_the_missing_datasets(data_dir, capsys):
  config = _config(data_dir, 'skip', eval_datasets=('coco', 'aspset'))
  resolved = train.drop_missing_datasets(config)
  assert tuple(resolved.data.order) == PREPARED
  assert set(resolved.data.datasets) == set(PREPARED)
  assert tuple(resolved.eval_datasets) == ('coco',)
  assert {n: resolved.data.datasets[n].weight for n in PREPARED} == {
    n: config.data.datasets[n].weight for n in PREPARED
  }
  assert 'aspset' in config.data.order  # the input config is not changed
  with pytest.raises(AttributeError):  # and the copy is locked as the config was
    resolved.not_a_key = 1
  assert capsys.readouterr().out.splitlines() == [
    f"skipped dataset 'aspset' (config.data.missing=skip): train split 'train' of tfds dataset 'generic3d/aspset' "
    f'is not prepared in {data_dir}',
    f"skipped dataset 'coco_extra' (config.data.missing=skip): train split 'train_extra' of tfds dataset "
    f"'posebh_synthetic' is not in {data_dir} (it has: train_aic, train_ap10k, train_apt36k, train_coco, "
    'train_coco_wholebody, train_mpii, validation)',
  ]
  train.validate_config(resolved)


def test_error_names_dataset_split_data_dir_and_prepare_command(data_dir):
  with pytest.raises(DatasetNotFoundError) as error:
    pipeline.drop_missing_datasets(_config(data_dir))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(
    f"dataset 'aspset': train split 'train' of tfds dataset 'generic3d/aspset' is not prepared in {data_dir}; run: "
    f'python -m data_pipeline.prepare generic3d --dataset3d=aspset --manual_dir=<raw aspset directory> '
    f'--data_dir={data_dir}; also not prepared: coco_extra'
  )
  assert message.endswith('(or pass --config.data.missing=skip to train without the datasets that are not prepared)')


def test_nothing_missing_keeps_the_config(data_dir, capsys):
  config = demo.get_config('tiny')
  with config.unlocked():
    config.data.data_dir = data_dir
  assert pipeline.drop_missing_datasets(config) == (config, {})
  assert train.drop_missing_datasets(config) is config and capsys.readouterr().out == ''


def test_skip_of_everything_and_bad_values_are_one_line_errors(data_dir, tmp_path):
  empty = str(tmp_path)
  with pytest.raises(DataConfigError, match=r"^no dataset of config\.data\.order is prepared in .*fix config\.data"):
    pipeline.drop_missing_datasets(_config(empty, 'skip'))
  with pytest.raises(DataConfigError, match=r'dropped every dataset of config\.eval_datasets \(aspset, coco_extra'):
    pipeline.drop_missing_datasets(_config(data_dir, 'skip', eval_datasets=('aspset', 'coco_extra')))
  with pytest.raises(DataConfigError, match=r"config\.data\.missing is 'sometimes'; use 'error'"):
    pipeline.drop_missing_datasets(_config(data_dir, 'sometimes'))
  config = b16.get_config('task=3d')
  with config.unlocked():
    config.data.data_dir, config.data.missing = empty, 'skip'
  with pytest.raises(DataConfigError, match='dropped all 32'):
    pipeline.drop_missing_datasets(config)


@pytest.mark.parametrize('groups', [1, 8])
def test_composition_line_sums_to_the_batch(data_dir, groups):
  resolved, dropped = pipeline.drop_missing_datasets(_config(data_dir, 'skip'))
  assert list(dropped) == ['aspset', 'coco_extra']
  batch = 16 * groups
  line = pipeline.describe_composition(pipeline.composition(resolved.data, batch, groups), groups)
  assert line.startswith(f'composition of the batch of {batch} (')
  counts = {name: int(count) for name, count in re.findall(r'(\w+) (\d+) \(\d+\.\d%\)', line)}
  assert list(counts) == list(PREPARED) and sum(counts.values()) == batch
  assert counts['coco'] == 3 * counts['aic']  # the weights' ratio 3:1 kept after dropping


def test_prepare_commands():
  assert (
    pipeline.prepare_command('h36m', 'D')
    == 'python -m data_pipeline.prepare h36m --manual_dir=<raw h36m directory> --data_dir=D'
  )
  assert (
    pipeline.prepare_command('posebh_synthetic3d', 'D') == 'python -m data_pipeline.prepare synthetic3d --data_dir=D'
  )
  assert pipeline.prepare_command('nope', 'D').startswith("no builder is registered for 'nope'")
