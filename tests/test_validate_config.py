"""Config values that cannot work end in one UserError line naming the key (checked before anything is built)."""

import pytest

from configs import b16, demo
from posebh_jax import train
from posebh_jax.errors import UserError


@pytest.mark.parametrize(
  'key, value, expected',
  [
    ('log_every_steps', 0, 'config.log_every_steps must be at least 1'),
    ('checkpoint_every_steps', 0, 'config.checkpoint_every_steps must be at least 1'),
    ('keep_checkpoints', 0, 'config.keep_checkpoints must be at least 1'),
    ('eval_batch_size', -4, 'config.eval_batch_size must be at least 1'),
    ('eval_every_steps', -1, 'config.eval_every_steps must be >= 0'),
    ('batch_size', 0, 'config.batch_size must be positive'),
    ('optim.schedule', 'linear', "config.optim.schedule is 'linear'"),
    ('optim.lr', -1e-3, 'config.optim.lr must be > 0'),
    ('model.dtype', 'float16', "config.model.dtype is 'float16'"),
    ('model.param_dtype', 'bfloat16', "config.model.param_dtype is 'bfloat16'"),
    ('seed', -1, 'config.seed must be an integer >= 0'),  # numpy's generators reject it mid-run otherwise
    ('model.depth', 0, 'config.model.depth must be at least 1'),  # would train a ViT without blocks
    ('model.patch_size', 0, 'config.model.patch_size must be at least 1'),  # was a ZeroDivisionError traceback
    ('optim.frozen', ('head_(coco',), "config.optim.frozen: 'head_(coco' is not a regular expression"),
    ('data.image_size', (128,), 'config.data.image_size must be .height, width. in pixels'),  # was an unpack traceback
    ('optim.warmup_steps', -5, 'config.optim.warmup_steps must be >= 0'),
    ('data.num_workers', -1, 'config.data.num_workers must be >= 0'),
    ('data.datasets.coco.task', 'heatmaps', "unknown task 'heatmaps'"),
    ('data.datasets.coco.codec', 'dark', "config.data.datasets.coco.codec: unknown heatmap codec 'dark'"),
    ('model.drop_path', 1.5, 'config.model.drop_path is a stochastic-depth rate in .0, 1.'),
    ('data.aug.flip_prob', 2.0, 'config.data.aug.flip_prob is a probability'),
    ('data.aug.scale_factor', -0.5, 'config.data.aug.scale_factor must be in .0, 1.'),
    ('transfer.frozen', ('[',), "config.transfer.frozen: '\\[' is not a regular expression"),
  ],
)
def test_bad_value_is_a_user_error(key, value, expected):
  config = demo.get_config('tiny')
  with config.unlocked():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  with pytest.raises(UserError, match=expected.replace('(', r'\(')):
    train.validate_config(config)


def test_no_steps_and_no_epochs_is_a_user_error():
  config = demo.get_config('tiny')
  config.total_steps, config.num_epochs = 0, 0
  with pytest.raises(UserError, match='nothing to train'):
    train.validate_config(config)


@pytest.mark.parametrize(
  'module, arg',
  [
    (demo, ''),
    (demo, 'tiny'),
    (demo, 'posebh'),
    (demo, 'transfer'),
    (b16, ''),
    (b16, 'runlocal'),
    (b16, 'method=posebh'),
  ],
)
def test_shipped_configs_are_valid(module, arg):
  train.validate_config(module.get_config(arg))
