"""ViTPose++-B/16 multi-dataset training on the six datasets (docs/METHOD.md §1).

  python -m posebh_jax.main --config=configs/b16.py --workdir=DIR
  python -m posebh_jax.main --config=configs/b16.py:runlocal --workdir=DIR   # real B/16, synthetic data, 5 steps
  python -m posebh_jax.main --config=configs/b16.py:runlocal,data=real --workdir=DIR \
      --config.data.data_dir=TFDS_DIR                                   # 5 steps + eval on the prepared real data
  python -m posebh_jax.main --config=configs/b16.py:method=posebh --workdir=DIR \
      --config.init_from=VITPOSE_WORKDIR                                # PoseBH's three stages (docs/METHOD.md §2)
  python -m posebh_jax.main --config=configs/b16.py:method=transfer,target=smpl24 --workdir=DIR \
      --config.init_from=POSEBH_WORKDIR                                 # domain transfer to a new skeleton
Args (comma separated): variant=S/16|B/16|L/16|H/16, runlocal, data=real|synthetic (default: real, synthetic
  with runlocal),
  method=vitpose|posebh|transfer, target=smpl24|interhand (the transfer skeleton: 3DPW or InterHand2.6M).
"""

import ml_collections

from configs import common


def _parse(arg: str) -> dict:
  parsed = {'variant': 'B/16', 'runlocal': False, 'data': '', 'method': 'vitpose', 'target': 'smpl24'}
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in parsed:
      raise ValueError(f"unknown config argument '{key}'; known: {', '.join(parsed)}")
    parsed[key] = True if value == '' and isinstance(parsed[key], bool) else value
  parsed['data'] = parsed['data'] or ('synthetic' if parsed['runlocal'] else 'real')
  if parsed['data'] not in ('real', 'synthetic'):
    raise ValueError(f"unknown data '{parsed['data']}'; choose data=real or data=synthetic")
  if parsed['method'] not in METHODS:
    raise ValueError(f"unknown method '{parsed['method']}'; choose one of {', '.join(METHODS)}")
  return parsed


METHODS = ('vitpose', 'posebh', 'transfer')


def _posebh(config: ml_collections.ConfigDict) -> None:
  """PoseBH (docs/METHOD.md §2): 100 epochs from a trained ViTPose++ run (pass --config.init_from), three stages
  at epochs 0/50/90 with lrs 1e-3/1e-4/1e-5, backbone trainable from epoch 90 (the reference B and H configs),
  prototypes J×3×64, the loss weights of supplement §2.1; AdamW wd 0.1, grad clip 1, warmup 500 iterations."""
  config.posebh = common.posebh_config(True)
  config.num_epochs = 100
  config.total_steps = -1
  config.optim.weight_decay = 0.1
  config.optim.grad_clip = 1.0
  config.optim.warmup_steps = 500


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Real-data ViTPose++ config; `runlocal`: a few steps on the same model, on the synthetic data unless
  `data=real` (the real datasets prepared in config.data.data_dir, default data/tfds)."""
  args = _parse(arg)
  config = common.base_config()
  config.model = common.model_config(args['variant'])
  config.optim.layer_decay = common.VARIANTS[args['variant']][5]
  synthetic = args['data'] == 'synthetic'
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
    if synthetic:
      config.data.data_dir = 'data/tfds_runlocal'
    config.model.dtype = 'float32'
  if args['method'] in ('posebh', 'transfer'):
    _posebh(config)
    if args['method'] == 'transfer':
      common.add_transfer(config, args['target'], config.data.sources)
    if args['runlocal']:
      config.total_steps = 6
      config.optim.warmup_steps = 2
      config.checkpoint_every_steps = 6
      config.eval_every_steps = 6
      # 72 examples / batch 6 = 12 steps per epoch: stages (and the backbone thaw) start at steps 0, 2 and 4, so
      # a runlocal run passes through all three; a transfer run updates its new prototypes for 3 steps.
      config.posebh.stage_epochs = (2 / 12, 4 / 12)
      config.posebh.backbone_thaw_epoch = 4 / 12
      config.transfer.prototype_epochs = 3 / 12
      if args['method'] == 'transfer':
        config.batch_size = config.eval_batch_size = len(config.data.order)  # one example of each dataset
  return common.finalize(config)
