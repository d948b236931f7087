"""The demo: a small ViTPose++ (MoE FFN, six heads) trained on the embedded synthetic multi-skeleton dataset.

  python -m data_pipeline.prepare synthetic        # once (make demo does it)
  python -m posebh_jax.main --config=configs/demo.py --workdir=workdirs/demo
Args: 'tiny' gives a model and data small enough for tests.
"""
from configs import common


def get_config(arg: str = ''):
  """Demo config; `tiny` shrinks everything for unit tests."""
  config = common.base_config()
  config.model = common.model_config('S/16')
  config.model.update(dict(variant='demo', width=128, depth=4, num_heads=4, patch_size=8, patch_padding=0,
                           drop_path=0.0, expert_dim=32, head_channels=64, dtype='float32', remat=False, scan=False))
  config.optim.layer_decay = 0.9
  config.optim.lr = 2e-3
  config.optim.weight_decay = 0.05
  config.optim.warmup_steps = 100
  config.data = common.data_config('synthetic')
  config.data.image_size = (128, 96)
  config.data.heatmap_size = (64, 48)
  config.data.num_workers = 2
  config.data.synthetic.num_train_per_format = 1500
  config.data.synthetic.num_val = 150
  config.data.synthetic.image_size = (192, 192)
  config.batch_size = 48
  config.total_steps = 1500
  config.optim.decay_epochs = ()
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.eval_every_steps = 750
  config.eval_batch_size = 50
  if arg == 'tiny':
    config.model.update(dict(width=32, depth=2, num_heads=2, expert_dim=8, head_channels=16))
    config.data.image_size = (64, 48)
    config.data.heatmap_size = (32, 24)
    config.data.num_workers = 0
    config.data.synthetic.num_train_per_format = 24
    config.data.synthetic.num_val = 12
    config.data.synthetic.image_size = (96, 96)
    config.batch_size = 24
    config.total_steps = 20
    config.log_every_steps = 1
    config.checkpoint_every_steps = 10
    config.eval_every_steps = 20
    config.eval_batch_size = 8
    config.optim.warmup_steps = 5
    config.viz_examples = 2
  elif arg:
    raise ValueError(f"unknown demo config argument '{arg}'; use configs/demo.py or configs/demo.py:tiny")
  return common.finalize(config)
