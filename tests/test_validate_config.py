"""Config values that cannot work end in one UserError line naming the key (checked before anything is built)."""
import pytest

from configs import b16, demo
from posebh_jax import train
from posebh_jax.errors import UserError


@pytest.mark.parametrize('key, value, expected', [
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
])
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


@pytest.mark.parametrize('module, arg', [(demo, ''), (demo, 'tiny'), (demo, 'posebh'), (demo, 'transfer'),
                                         (b16, ''), (b16, 'runlocal'), (b16, 'method=posebh')])
def test_shipped_configs_are_valid(module, arg):
  train.validate_config(module.get_config(arg))
