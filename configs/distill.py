"""The unified 21-keypoint student distilled from a COCO and an MPII teacher (docs/METHOD.md §4), on the real data.

  python -m posebh_jax.main --config=configs/distill.py --workdir=DIR \
      --config.distill.teachers.coco=COCO_RUN --config.distill.teachers.mpii=MPII_RUN
  python -m posebh_jax.main --config=configs/distill.py:variant=S/16,weights=0.3/0.25/0.45 --workdir=DIR ...

A teacher is any run of this project (e.g. `configs/b16.py`, whose COCO and MPII heads and experts are used) or the
converter's output of official weights (`python -m posebh_jax.convert`: ViTPose COCO and MPII checkpoints). Defaults
`workdirs/teacher_coco` and `workdirs/teacher_mpii`. Halpe (prepared by `python -m data_pipeline.prepare halpe`)
is evaluated over the 20 of its keypoints the unified skeleton covers; `--config.data.missing=skip` leaves it out
when it is not prepared.

Args (comma separated): variant=S/16|B/16|L/16|H/16 (the student; default B/16), weights=W_GT/W_COCO/W_MPII
(default 0.3/0.35/0.35; the paper's other setting 0.3/0.25/0.45), data=real|synthetic, runlocal (5 steps on the
synthetic data, for a smoke test: pass the teachers too).

The student is a plain ViT (no MoE: one model for every image) with one 21-keypoint heatmap head, trained on COCO
and MPII mixed 1:1 at 256×192 with ViTPose's recipe (AdamW lr 5e-4 batch 512, 210 epochs, steps at 170 and 200);
the MPII teacher's term decays over the whole run (1 − epoch / 210), the spatial softmax temperature is 0.1 (heatmap
values lie in [0, 1]: 1 would leave both distributions nearly flat).
"""

import ml_collections

from configs import common

TEACHERS = {'coco': 'workdirs/teacher_coco', 'mpii': 'workdirs/teacher_mpii'}


def _parse(arg: str) -> dict:
  parsed = {'variant': 'B/16', 'weights': '0.3/0.35/0.35', 'data': '', 'runlocal': False}
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in parsed:
      raise ValueError(f"unknown config argument '{key}'; known: {', '.join(parsed)}")
    parsed[key] = True if key == 'runlocal' else value
  if parsed['variant'] not in common.VARIANTS:
    raise ValueError(f"unknown variant '{parsed['variant']}'; choose one of {', '.join(common.VARIANTS)}")
  try:
    weights = tuple(float(w) for w in parsed['weights'].split('/'))
  except ValueError:
    weights = ()
  if len(weights) != 3 or min(weights) < 0:
    raise ValueError(f"weights={parsed['weights']}: give three non-negative numbers W_GT/W_COCO/W_MPII")
  parsed['weights'] = weights
  parsed['data'] = parsed['data'] or ('synthetic' if parsed['runlocal'] else 'real')
  if parsed['data'] not in ('real', 'synthetic'):
    raise ValueError(f"unknown data '{parsed['data']}'; choose data=real or data=synthetic")
  return parsed


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The distillation student's config (see the module docstring for the arguments)."""
  args = _parse(arg)
  config = common.base_config()
  config.model = common.model_config(args['variant'])
  config.optim.layer_decay = common.VARIANTS[args['variant']][5]
  config.optim.lr = 5e-4
  config.batch_size = 512
  config.data = common.data_config(args['data'])
  common.add_distill(config, args['data'], TEACHERS)
  config.distill.gt_weight = args['weights'][0]
  config.distill.teacher_weights.coco, config.distill.teacher_weights.mpii = args['weights'][1:]
  if args['runlocal']:
    config.batch_size = 4
    config.total_steps = 5
    config.log_every_steps = 1
    config.checkpoint_every_steps = 5
    config.eval_every_steps = 5
    config.eval_batch_size = 4
    config.optim.warmup_steps = 2
    config.data.num_workers = 0
    config.data.synthetic.num_train_per_format = 12
    config.data.synthetic.num_val = 12
    config.data.data_dir = 'data/tfds_runlocal'
    config.model.dtype = 'float32'
  return common.finalize(config)
