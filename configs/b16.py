"""ViTPose++-B/16 multi-dataset training on the six datasets (METHOD.md §1).

  python -m posebh_jax.main --config=configs/b16.py --workdir=DIR
  python -m posebh_jax.main --config=configs/b16.py:runlocal --workdir=DIR   # real B/16, synthetic data, 5 steps
Args (comma separated): variant=S/16|B/16|L/16|H/16, runlocal, data=real|synthetic.
"""
import ml_collections

from configs import common


def _parse(arg: str) -> dict:
  parsed = {'variant': 'B/16', 'runlocal': False, 'data': 'real'}
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in parsed:
      raise ValueError(f"unknown config argument '{key}'; known: {', '.join(parsed)}")
    parsed[key] = True if value == '' and isinstance(parsed[key], bool) else value
  return parsed


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Real-data ViTPose++ config; `runlocal` swaps in the synthetic data and a few steps on the same model."""
  args = _parse(arg)
  config = common.base_config()
  config.model = common.model_config(args['variant'])
  config.optim.layer_decay = common.VARIANTS[args['variant']][5]
  synthetic = args['runlocal'] or args['data'] == 'synthetic'
  config.data = common.data_config('synthetic' if synthetic else 'real')
  if args['runlocal']:
    config.batch_size = 6
    config.total_steps = 5
    config.log_every_steps = 1
    config.checkpoint_every_steps = 5
    config.eval_every_steps = 5
    config.eval_batch_size = 6
    config.optim.warmup_steps = 2
    config.data.num_workers = 0
    config.data.synthetic.num_train_per_format = 12
    config.data.synthetic.num_val = 12
    config.data.data_dir = 'data/tfds_runlocal'
    config.model.dtype = 'float32'
  return common.finalize(config)
