"""The demo: a small ViTPose++ (MoE FFN, six heads) trained on the embedded synthetic multi-skeleton dataset.

  python -m data_pipeline.prepare synthetic --config=configs/demo.py   # once (make demo does it)
  python -m posebh_jax.main --config=configs/demo.py --workdir=workdirs/demo
  python -m posebh_jax.main --config=configs/demo.py:posebh --workdir=workdirs/demo_posebh \
      --config.init_from=workdirs/demo                                  # PoseBH stages from the baseline
  python -m posebh_jax.main --config=configs/demo.py:transfer --workdir=workdirs/demo_transfer \
      --config.init_from=workdirs/demo_posebh                           # domain transfer to SMPL-24 (3DPW)
  python -m data_pipeline.prepare synthetic3d --config=configs/demo.py:task=3d   # the 3D demo's data, once
  python -m posebh_jax.main --config=configs/demo.py:task=3d --workdir=workdirs/demo3d
  python -m data_pipeline.prepare synthetic3d --config=configs/demo.py:task=joint # (the 2D data: as for the demo)
  python -m posebh_jax.main --config=configs/demo.py:task=joint --workdir=workdirs/demo_joint
  python -m posebh_jax.main --config=configs/demo.py:teacher=coco --workdir=workdirs/demo_teacher_coco
  python -m posebh_jax.main --config=configs/demo.py:teacher=mpii --workdir=workdirs/demo_teacher_mpii
  python -m posebh_jax.main --config=configs/demo.py:distill --workdir=workdirs/demo_distill  # the two above teach
Args (comma separated): `tiny` shrinks everything for unit tests; `posebh` turns on prototypes, CSS and the
three-stage schedule (compressed to the demo's step budget); `transfer` (implies `posebh`) adds the SMPL-24
skeleton to a trained PoseBH run (docs/METHOD.md §2 domain transfer; configs/common.py add_transfer); `task=3d`
trains MeTRAbs (one shared 3D head) on the three synthetic 3D formats instead of the 2D datasets; `task=joint`
trains both halves in one model and one batch: the six 2D heads and the 3D head (the 3D formats and the human 2D
datasets supervise it). Both combine with `tiny`, not with `posebh` / `transfer`; `consistency=regularize|latent|
hybrid` (with task=3d or task=joint) fine-tunes a trained run with that consistency variant (docs/METHOD.md §3);
`teacher=coco|mpii` trains a single-dataset model (plain ViT, no MoE) on that dataset alone, and `distill` the
unified 21-keypoint student from the two (docs/METHOD.md §4; --config.distill.teachers.coco / .mpii name them,
default the workdirs above), all three with the same steps and batch size.

Sized for 2 CPU cores: 128×96 crops with patch 16 (8×6 tokens), width 192, depth 4, 32×24 heatmaps. The
generator's difficulty is low (near-frontal people, side-on animals, little clutter) and augmentation is light,
because the demo trains for minutes, not days.
"""

from configs import common


def _parse(arg: str) -> set[str]:
  flags = set(filter(None, (arg or '').split(',')))
  variants = {f'consistency={v}' for v in CONSISTENCY_VARIANTS}
  distill = {'distill', 'teacher=coco', 'teacher=mpii'}
  unknown = flags - {'tiny', 'posebh', 'transfer', 'task=3d', 'task=joint'} - variants - distill
  if unknown:
    raise ValueError(
      f'unknown demo config argument(s) {sorted(unknown)}; use configs/demo.py[:tiny][,posebh|,transfer|,task=3d|'
      ',task=joint|,distill|,teacher=coco|,teacher=mpii][,consistency=none|regularize|latent|hybrid]'
    )
  if flags & distill and (len(flags & distill) > 1 or flags - distill - {'tiny'}):
    raise ValueError('configs/demo.py: distill, teacher=coco and teacher=mpii each combine with tiny only')
  if len(flags & variants) > 1 or (flags & variants and not flags & {'task=3d', 'task=joint'}):
    raise ValueError('configs/demo.py: one consistency=... argument, with task=3d or task=joint')
  tasks = flags & {'task=3d', 'task=joint'}
  if len(tasks) > 1:
    raise ValueError('configs/demo.py: choose one of task=3d and task=joint')
  if tasks and flags & {'posebh', 'transfer'}:
    raise ValueError(f'configs/demo.py: {tasks.pop()} does not combine with posebh or transfer')
  if 'transfer' in flags:  # the transfer run restores a PoseBH run of the same size
    flags.add('posebh')
  return flags


def get_config(arg: str = ''):
  """Demo config; args `tiny` (unit tests) and `posebh` (PoseBH stages)."""
  flags = _parse(arg)
  config = common.base_config()
  config.model = common.model_config('S/16')
  config.model.update(
    dict(
      variant='demo',
      width=192,
      depth=4,
      num_heads=4,
      patch_size=16,
      patch_padding=0,
      drop_path=0.0,
      expert_dim=48,
      head_channels=64,
      dtype='float32',
      remat=False,
      scan=False,
    )
  )
  config.optim.layer_decay = 0.9
  config.optim.lr = 2e-3
  config.optim.weight_decay = 0.05
  config.optim.warmup_steps = 100
  config.optim.schedule = 'cosine'
  config.optim.final_lr_ratio = 0.02
  config.data = common.data_config('synthetic')
  config.data.image_size = (128, 96)
  config.data.heatmap_size = (32, 24)
  # In-process loading (grain's prefetch threads) keeps up with the step on 2 cores and costs less CPU than a worker
  # process, which also pays for the transfer through shared memory (docs/MEASUREMENTS.md).
  config.data.num_workers = 0
  # The demo's 192x192 JPEGs cost little to decode; exact decoding keeps its measured numbers reproducible.
  config.data.fast_jpeg_decode = False
  config.data.aug.update(dict(scale_factor=0.1, rotation=0.0, rotation_prob=0.0, half_body_prob=0.0))
  # COCO is the demo's headline number: it gets 3 parts of the batch (18 of 48 examples), the others 1 each.
  config.data.datasets.coco.weight = 3.0
  # A tighter crop than the 1.25 of the real configs: at 128x96 the face and wrists need every pixel.
  config.data.bbox_padding = 1.15
  config.data.synthetic.num_train_per_format = 1500
  config.data.synthetic.num_val = 150
  config.data.synthetic.image_size = (192, 192)
  config.data.synthetic.difficulty = 0.0
  config.batch_size = 48
  config.total_steps = 950
  config.log_every_steps = 50
  config.checkpoint_every_steps = 250
  config.eval_every_steps = 950  # once, at the end: the demo has a 10-minute budget
  config.eval_batch_size = 50
  if 'posebh' in flags:
    config.posebh.enabled = True
    config.posebh.embed_channels = 64
    config.posebh.embed_hidden = 32
    config.posebh.embed_dim = 32
    config.posebh.num_clusters = 48
    config.total_steps = 300
    config.num_epochs = 100  # the stage epochs below are read against this run's length
    config.posebh.stage_epochs = (0.5, 1.2)
    config.posebh.backbone_thaw_epoch = 1.2
    config.posebh.stage_lrs = (1e-3, 2e-4, 5e-5)
    config.optim.warmup_steps = 20
    config.eval_every_steps = 300
  if 'tiny' in flags:
    config.model.update(dict(width=32, depth=2, num_heads=2, expert_dim=8, head_channels=16, patch_size=8))
    config.data.datasets.coco.weight = 1.0  # equal per-dataset counts keep the tests' batches simple
    config.data.bbox_padding = 1.25
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
    # Tests stop and resume runs at different total_steps; a cosine schedule would depend on that length.
    config.optim.schedule = 'step'
    config.viz_examples = 2
    config.viz_formats = False  # one more compile per eval; tests that want it turn it on
    if 'posebh' in flags:
      config.posebh.update(dict(embed_channels=16, embed_hidden=8, embed_dim=8, num_clusters=8))
      config.posebh.stage_epochs = (1.0, 2.0)  # 6 steps per epoch: stages start at steps 0, 6, 12
      config.posebh.backbone_thaw_epoch = 2.0
  if 'transfer' in flags:
    _transfer(config, tiny='tiny' in flags)
  if 'task=3d' in flags:
    _task3d(config, tiny='tiny' in flags)
  if 'task=joint' in flags:
    _task_joint(config, tiny='tiny' in flags)
  for flag in flags:
    if flag.startswith('consistency='):
      _consistency(config, flag.partition('=')[2], tiny='tiny' in flags)
    if flag.startswith('teacher='):
      _teacher(config, flag.partition('=')[2], tiny='tiny' in flags)
  if 'distill' in flags:
    _distill(config, tiny='tiny' in flags)
  return common.finalize(config)


# The distillation demo's teachers, where `configs/demo.py:teacher=...` puts them in the commands above.
DEMO_TEACHERS = {'coco': 'workdirs/demo_teacher_coco', 'mpii': 'workdirs/demo_teacher_mpii'}


def _distill_budget(config, tiny: bool):
  """The step budget that the teachers and the student share (docs/METHOD.md §4 demo: equal budgets)."""
  if tiny:
    config.batch_size = 16
    return
  config.batch_size = 32
  config.total_steps = 600
  config.optim.warmup_steps = 50
  config.checkpoint_every_steps = 300
  config.eval_every_steps = 600


def _teacher(config, name: str, tiny: bool):
  """A single-dataset model (plain ViT, no MoE) on dataset `name` alone: a distillation teacher, and the
  single-dataset baseline of the comparison."""
  config.data.order = (name,)
  config.data.datasets = {name: config.data.datasets[name].to_dict()}
  config.model.use_experts = False
  _distill_budget(config, tiny)


def _distill(config, tiny: bool):
  """The unified 21-keypoint student (common.add_distill) on the synthetic COCO and MPII sets, Halpe evaluated."""
  common.add_distill(config, 'synthetic', DEMO_TEACHERS)
  _distill_budget(config, tiny)


# 'none': the separate-head run continued under the same fine-tuning schedule (the equal-budget control).
CONSISTENCY_VARIANTS = ('none', 'regularize', 'latent', 'hybrid')


def _consistency(config, variant: str, tiny: bool):
  """Consistency fine-tuning (docs/METHOD.md §3) of a trained demo 3D / joint run with `variant`, in the demo's
  budget: 200 steps (tiny: the test's), the backbone at a tenth of the heads' lr; pass --config.init_from and
  --config.consistency.acae (the trained run, after `python -m posebh_jax.acae --workdir=<it>`)."""
  common.consistency_finetune(config, variant, steps=config.total_steps if tiny else 200)
  config.optim.warmup_steps = 5 if tiny else 20
  config.metrabs.abs_loss_start_step = 0  # the trained run is past it
  if not tiny:
    config.checkpoint_every_steps = 200
    config.eval_every_steps = 200


def _add_synthetic3d(config, tiny: bool):
  """The three synthetic 3D datasets with the demo's 3D augmentation and generator sizes (`tiny`: the tests'),
  one setting for task=3d and task=joint, so that both read one preparation of `posebh_synthetic3d`."""
  common.add_synthetic3d(config)
  config.data.aug3d.update(dict(scale_factor=0.1, rotation=10.0, occlusion_prob=0.2, occlusion_max=1))
  if tiny:
    config.data.synthetic3d.update(dict(num_train_per_format=24, num_val=12, image_size=(96, 96), difficulty=0.0))
  else:
    config.data.synthetic3d.update(dict(num_train_per_format=1500, num_val=150, image_size=(192, 192), difficulty=0.0))


def _task3d(config, tiny: bool):
  """MeTRAbs on the three synthetic 3D formats (tfds `posebh_synthetic3d`) with the demo's model: square crops,
  one shared head over the 24 + 17 + 33 joints, each format an equal part of the batch; L_abs from a third of the
  run on. Sized for 2 CPU cores: a few minutes."""
  data = config.data
  data.datasets = {}
  data.order = ()
  _add_synthetic3d(config, tiny)
  config.viz_formats = False  # the all-formats picture draws 2D heatmap heads
  if tiny:
    data.image_size = (64, 64)  # patch 8: an 8x8 grid
    data.heatmap_size = (32, 32)
    config.batch_size = 24  # 8 per format: a multiple of 8 devices
    config.metrabs.virtual_batch = 8
    config.metrabs.abs_loss_start_step = 10
  else:
    data.image_size = (128, 128)  # patch 16: an 8x8 grid
    data.heatmap_size = (32, 32)
    config.batch_size = 48  # 16 per format, one ghost-BatchNorm virtual batch each
    config.metrabs.virtual_batch = 16
    config.total_steps = 600
    config.metrabs.abs_loss_start_step = 200
    config.optim.warmup_steps = 50
    config.checkpoint_every_steps = 200
    config.eval_every_steps = 600


# The synthetic 2D datasets of people: in the joint demo they also supervise the 3D head (docs/METHOD.md §3.1).
HUMAN_2D = ('coco', 'aic', 'mpii', 'coco_wholebody')


def _task_joint(config, tiny: bool):
  """The mission's shape on the synthetic data: the six 2D datasets with their heatmap heads (the four human ones
  also supervising the 3D head through its 2D term: task 'heatmap_metrabs') and the three synthetic 3D formats
  through the shared MeTRAbs head, one backbone with one expert per dataset, one batch. The 2D demo's 128x96 crops
  for every dataset (the 3D crops too: the 2200 mm box spans their height); 8 examples of each 2D dataset and 16 of
  each 3D one per batch (96), so the 3D head sees 80 examples (5 ghost-BatchNorm virtual batches of 16)."""
  data = config.data
  for name in HUMAN_2D:
    data.datasets[name].task = 'heatmap_metrabs'
  _add_synthetic3d(config, tiny)
  for name in common.SYNTHETIC_3D_FORMATS:
    data.datasets[name].weight = 2.0
  data.datasets.coco.weight = 1.0
  config.viz_formats = False  # the all-formats picture draws 2D heatmap heads only
  if tiny:
    for name in common.SYNTHETIC_3D_FORMATS:
      data.datasets[name].weight = 1.0
    config.batch_size = 72  # 8 of each of the 9 datasets: a multiple of 8 devices
    config.metrabs.virtual_batch = 8
    config.metrabs.abs_loss_start_step = 2
  else:
    config.batch_size = 96
    config.metrabs.virtual_batch = 16
    config.total_steps = 500
    config.metrabs.abs_loss_start_step = 150
    config.optim.warmup_steps = 50
    config.checkpoint_every_steps = 250
    config.eval_every_steps = 500


def _transfer(config, tiny: bool):
  """Domain transfer to SMPL-24 on the synthetic data (keypoints derived from the stored 3D joints), with the
  demo's step budget: a quarter of the steps of docs/METHOD.md's 3DPW run shape (prototypes for the first half)."""
  common.add_transfer(config, 'smpl24', 'synthetic')
  # 1500 train examples per format + 1500 SMPL-24 ones, batch 48: ~219 steps per epoch.
  config.total_steps = 300
  config.transfer.prototype_epochs = 0.7  # new prototypes momentum-updated for the first ~150 steps
  config.optim.decay_epochs = ()
  config.optim.lr = 5e-4
  config.optim.warmup_steps = 20
  config.eval_every_steps = 300
  if tiny:
    config.total_steps = -1
    # 24 train examples per format plus 24 SMPL-24 ones, batch 24: 7 steps per epoch.
    config.num_epochs = 1
    config.transfer.prototype_epochs = 2 / 7  # new prototypes momentum-updated in steps 0-1, frozen after
    config.optim.warmup_steps = 1
    config.eval_every_steps = 4
