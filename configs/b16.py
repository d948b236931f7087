"""ViTPose++-B/16 multi-dataset training on the six datasets (docs/METHOD.md §1).

  python -m posebh_jax.main --config=configs/b16.py --workdir=DIR
  python -m posebh_jax.main --config=configs/b16.py:runlocal --workdir=DIR   # real B/16, synthetic data, 5 steps
  python -m posebh_jax.main --config=configs/b16.py:runlocal,data=real --workdir=DIR \
      --config.data.data_dir=TFDS_DIR                                   # 5 steps + eval on the prepared real data
  python -m posebh_jax.main --config=configs/b16.py:method=posebh --workdir=DIR \
      --config.init_from=VITPOSE_WORKDIR                                # PoseBH's three stages (docs/METHOD.md §2)
  python -m posebh_jax.main --config=configs/b16.py:method=transfer,target=smpl24 --workdir=DIR \
      --config.init_from=POSEBH_WORKDIR                                 # domain transfer to a new skeleton
  python -m posebh_jax.main --config=configs/b16.py:task=3d --workdir=DIR   # MeTRAbs on 28 3D + 4 2D datasets
  python -m posebh_jax.main --config=configs/b16.py:task=joint --workdir=DIR  # the same + the six 2D heatmap heads
  python -m posebh_jax.main --config=configs/b16.py:runlocal,task=3d --workdir=DIR   # 5 steps on synthetic 3D + 2D
      (first: python -m data_pipeline.prepare synthetic|synthetic3d --config=configs/b16.py:runlocal,task=3d
       --data_dir=data/tfds_runlocal)
Args (comma separated): variant=S/16|B/16|L/16|H/16, runlocal, data=real|synthetic (default: real, synthetic
  with runlocal),
  method=vitpose|posebh|transfer, target=smpl24|interhand (the transfer skeleton: 3DPW or InterHand2.6M),
  task=2d|3d|joint (default 2d: ViTPose++ on the six 2D datasets; 3d and joint: docs/METHOD.md §3, method=vitpose),
  consistency=regularize|latent|hybrid (with task=3d|joint: the ACAE consistency fine-tuning, 40k steps, of a trained
  run: pass --config.init_from=RUN --config.consistency.acae=RUN after python -m posebh_jax.acae --workdir=RUN).

task=3d: the 28 real 3D datasets (configs/common.py add_real3d; each prepared by `python -m data_pipeline.prepare
  h36m|mpi_inf_3dhp|panoptic` or `generic3d --dataset3d=NAME`) trained by the MeTRAbs head with their per-batch
  counts (H36M 4, MuCo-3DHP 6, ..., 96 in all), plus COCO, AIC, MPII and COCO-WholeBody 8 each (32) supervising
  only the 3D head through their 2D labels (`metrabs2d`): 128 per batch. task=joint: the same 28, plus all six 2D
  datasets with their heatmap heads, the human ones also supervising the 3D head (`heatmap_metrabs`), the animals
  heatmaps only; the 32 2D examples split COCO 8, AIC 6, MPII 6, COCO-WholeBody 6, AP-10K 3, APT-36K 3 (our
  choice: COCO, the headline benchmark, keeps its task=3d share; the two animal sets, whose labels do not reach
  the 3D head, share one human set's 6). Both: 256×256 square crops (64×64 heatmaps for the 2D heads), 400k steps,
  AdamW at lr 2.121e-4 with MeTRAbs' schedule (`optim.schedule='metrabs'`); the MoE FFN has one expert per 2D
  heatmap dataset and one expert ('3d') that the 28 3D datasets share (task=3d: the 2D datasets too, which train
  only the 3D head) — 7 experts in task=joint, as ViTPose++'s six plus one;
  evaluated on H36M and MPI-INF-3DHP (joint: and the six 2D datasets). `--config.data.missing=skip` trains on the
  prepared datasets only.
  The weights are the per-batch counts and batch_size is 128, the composition of one batch shard: a run on G data
  shards (devices of the mesh's data axes, or processes) passes --config.batch_size=128·G, so that every shard
  holds the whole composition (each dataset count·G examples in the global batch, count in each shard).
"""

import ml_collections

from configs import common


def _parse(arg: str) -> dict:
  parsed = {
    'variant': 'B/16',
    'runlocal': False,
    'data': '',
    'method': 'vitpose',
    'target': 'smpl24',
    'task': '2d',
    'consistency': 'none',
  }
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
  if parsed['task'] not in TASKS:
    raise ValueError(f"unknown task '{parsed['task']}'; choose task=2d, task=3d or task=joint")
  if parsed['consistency'] not in ('none', 'regularize', 'latent', 'hybrid'):
    raise ValueError(f"unknown consistency '{parsed['consistency']}'; choose regularize, latent or hybrid")
  if parsed['consistency'] != 'none' and parsed['task'] == '2d':
    raise ValueError('consistency=... fine-tunes a 3D run: combine it with task=3d or task=joint')
  if parsed['task'] != '2d' and parsed['method'] != 'vitpose':
    raise ValueError(f"task={parsed['task']} does not combine with method={parsed['method']}; drop one of them")
  return parsed


METHODS = ('vitpose', 'posebh', 'transfer')
TASKS = ('2d', '3d', 'joint')
# The 2D datasets' examples per batch beside the 96 3D ones (docs/METHOD.md §3.1: 4 × 8 2D examples) and the task
# each trains: task=3d, the human datasets supervising the 3D head only; task=joint, all six with their heatmap
# heads, the human ones also supervising the 3D head (the split of the 32: the module docstring).
TASK_2D_DATASETS = {
  '3d': {
    'coco': ('metrabs2d', 8),
    'aic': ('metrabs2d', 8),
    'mpii': ('metrabs2d', 8),
    'coco_wholebody': ('metrabs2d', 8),
  },
  'joint': {
    'coco': ('heatmap_metrabs', 8),
    'aic': ('heatmap_metrabs', 6),
    'mpii': ('heatmap_metrabs', 6),
    'ap10k': ('heatmap', 3),
    'apt36k': ('heatmap', 3),
    'coco_wholebody': ('heatmap_metrabs', 6),
  },
}


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
  if args['task'] != '2d':
    _task3d(config, args['task'], synthetic)
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
    if args['task'] != '2d':
      config.batch_size = len(config.data.order)  # weights 1: one example of each dataset
      config.metrabs.abs_loss_start_step = 2
      config.bn_inference_last_steps = 1  # the last step passes through the BatchNorm-inference phase
      config.data.synthetic3d.num_train_per_format = 12
      config.data.synthetic3d.num_val = 12
  if args['consistency'] != 'none':
    # docs/METHOD.md §3: 40k steps from the trained separate-head run (--config.init_from, --config.consistency.acae).
    common.consistency_finetune(config, args['consistency'], steps=config.total_steps if args['runlocal'] else 40_000)
    config.metrabs.abs_loss_start_step = 0
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


def _task3d(config: ml_collections.ConfigDict, task: str, synthetic: bool) -> None:
  """task=3d | joint (the module docstring): the 3D datasets (the real 28, or on synthetic data the three
  synthetic 3D formats), then the 2D datasets of TASK_2D_DATASETS[task]; MeTRAbs' input size and optimisation."""
  tasks_2d = TASK_2D_DATASETS[task]
  names_2d = tuple(name for name in common.TRAIN_DATASETS if name in tasks_2d)
  config.data = common.data_config(config.data.sources, names_2d)
  config.data.order = ()
  config.eval_datasets = ()
  if synthetic:  # equal weights: runlocal's few-example batches hold one of each dataset
    common.add_synthetic3d(config)
    config.eval_datasets = tuple(config.data.order)
  else:
    common.add_real3d(config)  # weights = per-batch counts; eval_datasets = the 3D benchmarks
  for name in names_2d:
    kind, count = tasks_2d[name]
    config.data.datasets[name].task = kind
    config.data.datasets[name].weight = 1.0 if synthetic else float(count)
    if kind == 'metrabs2d':  # only the 3D head learns from it: it shares the 3D datasets' expert
      config.data.datasets[name].expert = common.EXPERT_3D
  config.data.order = tuple(config.data.order) + names_2d
  if task == 'joint':
    config.eval_datasets = names_2d + tuple(config.eval_datasets)
  config.data.image_size = (256, 256)  # MeTRAbs' square crops
  config.data.heatmap_size = (64, 64)  # the 2D heads' output: 16×16 tokens, two ×2 deconvolutions
  config.batch_size = 128  # one batch shard's composition; see the module docstring for several shards
  config.total_steps = 400_000
  config.optim.name = 'adamw'
  config.optim.lr = 2.121e-4
  config.optim.schedule = 'metrabs'
  config.bn_inference_last_steps = 1000  # docs/METHOD.md §3: BatchNorm in inference mode for the last 1000 updates
  config.viz_formats = False  # the all-formats picture draws 2D heatmap heads only
