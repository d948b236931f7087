"""Shared pieces of the experiment configs: every hyperparameter lives in the config, none in code."""

from __future__ import annotations

import ml_collections

TRAIN_DATASETS = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')
# UDP encoding/affine for COCO and MPII, MSRA for the others, as the reference configs do (docs/METHOD.md §1).
CODECS = {'coco': 'udp', 'aic': 'msra', 'mpii': 'udp', 'ap10k': 'msra', 'apt36k': 'msra', 'coco_wholebody': 'msra'}
# Real-data tfds builders (prepared by `python -m data_pipeline.prepare <name> --manual_dir=...`): (tfds name,
# train split, eval split). COCO and COCO-WholeBody are evaluated on detector boxes (docs/METHOD.md §1): their
# `validation_det` split exists when prepared with `--det_json=<person detections>`; the others use GT boxes.
REAL_SOURCES = {
  'coco': ('coco_keypoints', 'train', 'validation_det'),
  'aic': ('aic', 'train', 'validation'),
  'mpii': ('mpii', 'train', 'validation'),
  'ap10k': ('ap10k', 'train', 'validation'),
  'apt36k': ('apt36k', 'train', 'validation'),
  'coco_wholebody': ('coco_wholebody', 'train', 'validation_det'),
}
VARIANTS = {
  # variant: width, depth, heads, drop_path, expert_dim (P), layer_decay   (docs/METHOD.md §1)
  'S/16': (384, 12, 12, 0.1, 192, 0.8),
  'B/16': (768, 12, 12, 0.3, 192, 0.75),
  'L/16': (1024, 24, 16, 0.5, 256, 0.8),
  'H/16': (1280, 32, 16, 0.55, 320, 0.8),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """config.model for a ViTPose++ variant ('S/16', 'B/16', 'L/16', 'H/16')."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant '{variant}'; choose one of {', '.join(VARIANTS)}")
  width, depth, heads, drop_path, expert_dim, _ = VARIANTS[variant]
  return ml_collections.ConfigDict(
    dict(
      variant=variant,
      width=width,
      depth=depth,
      num_heads=heads,
      mlp_ratio=4.0,
      patch_size=16,
      patch_padding=2,
      drop_path=drop_path,
      expert_dim=expert_dim,
      use_experts=True,
      head_channels=256,
      head_num_deconv=2,
      head_deconv_init_std=0.001,
      remat=depth > 12,
      scan=depth > 12,
      dtype='bfloat16',
      param_dtype='float32',
      # With equal per-dataset counts, run the experts as one batched matmul and the heads as one stacked
      # computation (same results; a GPU runs ~1/6 of the kernels) 'always', or one dataset after another
      # 'never'; 'auto': stacked on accelerators, not on the CPU (where it is slower; docs/MEASUREMENTS.md).
      stack_equal_datasets='auto',
    )
  )


def data_config(sources: str = 'synthetic', datasets=TRAIN_DATASETS) -> ml_collections.ConfigDict:
  """config.data: per-dataset sources, mixture weights, codecs, input geometry and augmentation."""
  entries = {}
  for name in datasets:
    if sources == 'synthetic':
      tfds_name, train_split, eval_split = 'posebh_synthetic', f'train_{name}', 'validation'
    else:
      tfds_name, train_split, eval_split = REAL_SOURCES[name]
    # `task` picks what the dataset trains and evaluates (posebh_jax/tasks): 'heatmap' = 2D top-down heatmaps.
    # `keypoints_from`: 'annotation' (the stored keypoints) or 'joints3d' (derived from the synthetic 3D joints).
    entries[name] = dict(
      task='heatmap',
      tfds_name=tfds_name,
      train_split=train_split,
      eval_split=eval_split,
      format=name,
      weight=1.0,
      codec=CODECS[name],
      half_body=name != 'mpii',
      keypoints_from='annotation',
      expert='',  # the MoE expert: '' = its own; datasets with equal names share one
    )
  return ml_collections.ConfigDict(
    dict(
      sources=sources,
      data_dir='data/tfds',
      order=tuple(datasets),
      datasets=entries,
      image_size=(256, 192),
      heatmap_size=(64, 48),
      sigma=2.0,
      bbox_padding=1.25,
      aug=dict(
        scale_factor=0.5, rotation=40.0, rotation_prob=0.6, flip_prob=0.5, half_body_prob=0.3, half_body_min_keypoints=8
      ),
      # Training decodes JPEGs with libjpeg's fast IDCT and upsampling (pixels within a gray level or two of the
      # exact decode, and faster; docs/MEASUREMENTS.md); evaluation always decodes exactly.
      fast_jpeg_decode=True,
      num_workers=2,
      prefetch_buffer_size=2,
      synthetic=dict(num_train_per_format=2000, num_val=300, image_size=(256, 256), difficulty=0.5, seed=0),
      # The 3D datasets' augmentation (data_pipeline/transforms3d.py, docs/METHOD.md §3.6): crop scale 1 ± scale_factor,
      # roll ± rotation degrees, flips, 1 to occlusion_max synthetic occluders, colour factors 1 ± x.
      aug3d=dict(
        scale_factor=0.25,
        rotation=20.0,
        flip_prob=0.5,
        occlusion_prob=0.5,
        occlusion_max=3,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
      ),
      # `python -m data_pipeline.prepare synthetic3d --config=...`: the synthetic 3D datasets' sizes.
      synthetic3d=dict(num_train_per_format=1000, num_val=200, image_size=(256, 256), difficulty=0.5, seed=0),
      # A dataset of `order` whose train split is not prepared in `data_dir`: 'error' stops the run (one line
      # naming the prepare command); 'skip' drops it from the run (printed), the others keep their weights' ratios.
      missing='error',
    )
  )


# The synthetic 3D datasets (tfds `posebh_synthetic3d`, data_pipeline/builders/synthetic3d.py): one per format.
SYNTHETIC_3D_FORMATS = ('syn_smpl', 'syn_h36m', 'syn_markers')


# The MoE expert that every 3D dataset shares by default (`config.data.datasets.<name>.expert`).
EXPERT_3D = '3d'


def dataset3d_entry(
  fmt: str, tfds_name: str, train_split: str, eval_split: str, protocol: str = '', weight: float = 1.0
) -> ml_collections.ConfigDict:
  """A `config.data.datasets` entry of a 3D dataset trained by the MeTRAbs task (`task='metrabs3d'`): its 3D
  skeleton format (registry3d), splits, mixture weight and evaluation `protocol` (`evaluation.get_evaluator3d`:
  'h36m', '3dhp', '3dpw', or '' = the format's name: every joint of its ground truth)."""
  return ml_collections.ConfigDict(
    dict(
      task='metrabs3d',
      tfds_name=tfds_name,
      train_split=train_split,
      eval_split=eval_split,
      format=fmt,
      weight=weight,
      keypoints_from='annotation',
      protocol=protocol,
      expert=EXPERT_3D,
    )
  )


def add_synthetic3d(config: ml_collections.ConfigDict, formats=SYNTHETIC_3D_FORMATS) -> ml_collections.ConfigDict:
  """Adds the synthetic 3D datasets of `formats` (named after their formats) to `config.data` and its order."""
  for fmt in formats:
    config.data.datasets[fmt] = dataset3d_entry(fmt, 'posebh_synthetic3d', f'train_{fmt}', f'validation_{fmt}')
  config.data.order = tuple(config.data.order) + tuple(formats)
  return config


def metrabs_config() -> ml_collections.ConfigDict:
  """config.metrabs: the MeTRAbs head and objective shared by every `metrabs3d` dataset (docs/METHOD.md §3.2-3.3).

  The head is one module (`head_metrabs`) over the joints of the config's 3D datasets' formats (each format once,
  in `data.order`), and each dataset supervises its own format's joints."""
  return ml_collections.ConfigDict(
    dict(
      depth_bins=8,  # D_z of the volumetric heatmaps
      box_mm=2200.0,  # the metric box the crop's longer side spans (and the depth range)
      virtual_batch=16,  # ghost BatchNorm's virtual batch (each dataset's count must be a multiple, or smaller)
      bn_momentum=0.9,
      init_std=0.001,  # the 1x1 convolution's initial weights
      abs_loss_weight=0.1,
      abs_loss_start_step=5000,  # L_abs counts from this train step on
      loss_2d_weight=0.2,  # the 2D examples' term (for 2D datasets that supervise the 3D head)
      proj_min_depth_mm=300.0,  # L_proj ignores ground-truth joints closer than this
      # 2D datasets' assumed camera (tasks 'metrabs2d' / 'heatmap_metrabs'): field of view of the longer side, degrees.
      fov_2d_deg=55.0,
    )
  )


def consistency_config(variant: str = 'none') -> ml_collections.ConfigDict:
  """config.consistency: how the shared 3D head's formats are made to agree (docs/METHOD.md §3; posebh_jax/tasks/
  consistency.py): 'none' (separate joints), 'regularize' (a: + weight · mean|P − dec(enc(P))| / 1000, × weight_2d on
  2D examples), 'latent' (b: the head predicts the ACAE's latents, decoded by its frozen decoder), 'hybrid' (c: both
  heads, the latent one distilled from the full one with distill_weight, inference through it). `acae`: the run
  whose `python -m posebh_jax.acae` fit holds the ACAE (its workdir, acae directory or weights.npz)."""
  return ml_collections.ConfigDict(dict(variant=variant, acae='', weight=1.0, weight_2d=0.2, distill_weight=1.0))


def consistency_finetune(config: ml_collections.ConfigDict, variant: str, steps: int = 40_000) -> None:
  """Turns a 3D or joint config into docs/METHOD.md §3's consistency fine-tuning with `variant` ('regularize',
  'latent', 'hybrid'): `steps` updates (40k) from a trained separate-head run (pass --config.init_from and
  --config.consistency.acae, usually the same workdir), the backbone at a tenth of the heads' lr (our choice of
  "lower"), warmup 500 and MeTRAbs's schedule over the fine-tuning."""
  config.consistency.variant = variant
  config.total_steps = steps
  config.optim.backbone_lr_scale = 0.1
  config.optim.warmup_steps = min(int(config.optim.warmup_steps), 500)


def distill_config() -> ml_collections.ConfigDict:
  """config.distill: multi-teacher distillation into one unified-skeleton student (docs/METHOD.md §4; datasets with
  task 'distill', posebh_jax/tasks/distill.py).

  `teachers`: {skeleton format: a run of this project or a converted checkpoint (workdir, checkpoints/ or
  checkpoints/<step>)}; each teacher's head for that format (the first of its datasets with it) runs frozen, in
  inference mode, on every image of the batch inside the train step. `gt_weight` w1 and `teacher_weights`
  {format: w} weigh L = w1 L_gt + Σ_t w_t s_t L_KD^t; s_t = 1 − epoch / decay_epochs (clipped at 0) for the
  teachers in `decaying_teachers`, else 1; `decay_epochs` <= 0: the run's length. `temperature`: of the spatial
  softmax of teacher and student heatmaps (< 1 sharpens; heatmaps lie in [0, 1], so 1 would leave the distributions
  nearly flat). `teacher_dtype`: the teachers' compute dtype ('' : the student's `model.dtype`)."""
  return ml_collections.ConfigDict(
    dict(
      teachers=dict(coco='', mpii=''),
      gt_weight=0.3,
      teacher_weights=dict(coco=0.35, mpii=0.35),  # METHOD.md's other setting: coco 0.25, mpii 0.45
      decaying_teachers=('mpii',),
      decay_epochs=-1.0,
      temperature=0.1,
      scale_by_temperature_squared=False,
      teacher_dtype='',
    )
  )


# The distillation student's datasets (docs/METHOD.md §4): COCO and MPII train it; Halpe evaluates it over the 20
# Halpe keypoints its 21 map to (weight 0: evaluated only).
DISTILL_DATASETS = ('coco', 'mpii', 'halpe')


def add_distill(config: ml_collections.ConfigDict, sources: str, teachers: dict) -> ml_collections.ConfigDict:
  """Turns `config` into the unified-skeleton student: datasets COCO and MPII (task 'distill', equal parts of the
  batch) and Halpe (evaluated only), one shared 21-keypoint head, a plain ViT (no MoE: one model for every image),
  the teachers {format: run} of `teachers`. `sources`: 'real' or 'synthetic'."""
  data = data_config(sources, ('coco', 'mpii'))
  if sources == 'synthetic':
    halpe = ('posebh_synthetic', 'validation', 'validation')
  else:
    halpe = ('halpe', 'validation', 'validation')
  data.datasets.halpe = dict(data.datasets.coco.to_dict(), tfds_name=halpe[0], train_split=halpe[1])
  data.datasets.halpe.update(dict(eval_split=halpe[2], format='halpe', weight=0.0))
  for name in DISTILL_DATASETS:
    data.datasets[name].task = 'distill'
  data.order = DISTILL_DATASETS
  for key in ('image_size', 'heatmap_size', 'bbox_padding', 'num_workers', 'fast_jpeg_decode', 'data_dir'):
    data[key] = config.data[key]
  data.aug = config.data.aug
  data.synthetic = config.data.synthetic
  config.data = data
  config.model.use_experts = False
  config.distill.teachers = dict(teachers)
  config.viz_formats = False  # the all-heads picture draws one head per dataset; the student has one
  return config


def base_config() -> ml_collections.ConfigDict:
  """Everything but model and data: optimisation, schedule, mesh, logging, checkpoints, evaluation."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 768  # global; ViTPose++ uses 128 per GPU on 8 GPUs with 6 datasets mixed
  config.optim = dict(
    name='adamw',
    lr=1e-3,
    weight_decay=0.1,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip=1.0,
    layer_decay=0.75,
    warmup_steps=500,
    warmup_ratio=0.001,
    decay_epochs=(170, 200),
    decay_factor=0.1,
    schedule='step',  # 'step' (decay_factor at decay_epochs, as ViTPose++) or 'cosine' (to final_lr_ratio × lr)
    final_lr_ratio=0.0,
    frozen=(),  # regexes over parameter paths ('backbone/.*') that receive no updates and no optimizer state
    backbone_lr_scale=1.0,  # the backbone's lr relative to the heads' (fine-tuning: < 1)
  )
  config.num_epochs = 210
  config.total_steps = -1  # > 0 overrides num_epochs
  config.mesh = dict(data=-1, fsdp=1, model=1)  # -1: filled with the remaining devices
  # Parameter axes and activation axes (activation_*) are named apart, so that each is sharded by its own rule.
  config.logical_axis_rules = (
    ('activation_batch', ('data', 'fsdp')),
    ('activation_seq', None),
    ('activation_embed', None),
    ('activation_mlp', 'model'),
    ('embed', 'fsdp'),
    ('mlp', 'model'),
    ('qkv', 'model'),
    ('channels', None),
    ('expert', None),
    ('seq', None),
    ('layers', None),
  )
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.eval_every_steps = 5000
  config.eval_batch_size = 64
  config.eval_flip = True
  # NMS of the top-down evaluation after rescoring (box score x mean keypoint score > 0.2), per image:
  # 'oks' (OKS-NMS 0.9, docs/METHOD.md §1), 'soft_oks' or 'none'; OKS-AP datasets only (PCKh / PCK use none).
  config.eval_nms = 'oks'
  config.eval_datasets = ()  # empty: every dataset in data.order
  config.viz_examples = 4
  # Each eval also writes DIR/viz/formats_step<step>.png: every head's skeleton on the same validation images
  # (posebh_jax/viz/formats.py; single-process runs).
  config.viz_formats = True
  config.profile = False
  config.device_peak_tflops = -1.0  # < 0: look the device up in a table; 0: unknown
  config.init_from = ''  # workdir or checkpoint dir of a baseline run: loads its backbone and heads
  # The last N updates run every head's BatchNorm in inference mode (MeTRAbs: 1000; 0: off).
  config.bn_inference_last_steps = 0
  config.posebh = posebh_config(False)
  config.transfer = transfer_config(False)
  config.metrabs = metrabs_config()
  config.consistency = consistency_config()
  config.acae = acae_config()
  config.distill = distill_config()
  return config


def posebh_config(enabled: bool = False) -> ml_collections.ConfigDict:
  """config.posebh: keypoint prototypes, cross-type self-supervision and the staged schedule (docs/METHOD.md §2).

  Stages are given in epochs of this run: stage 1 [0, stage_epochs[0]) trains the embedding module and updates
  the prototypes by momentum; stage 2 [stage_epochs[0], stage_epochs[1]) also trains the heads, freezes the
  prototypes and adds CSS and the cluster-prototype (CPS) terms; stage 3 continues with every loss. The backbone
  trains from `backbone_thaw_epoch` on (the reference B and H configs: 90; the supplement's prose: 50).
  """
  return ml_collections.ConfigDict(
    dict(
      enabled=enabled,
      embed_dim=64,  # F
      embed_channels=256,  # upsampling layers of the embedding module
      embed_hidden=64,  # residual block width
      prototypes_per_keypoint=3,  # M
      kappa=0.05,  # Sinkhorn temperature
      sinkhorn_iterations=3,
      momentum=0.999,  # λ
      num_clusters=64,  # cluster prototypes for CPS
      cluster_iterations=20,
      cluster_temperature=0.05,
      weights=dict(phm=3.33e-6, ppc=1.25e-7, ppd=1.25e-8, cps=0.01, css=0.001),
      css_min_peak=0.25,
      css_max_distance=2.1,  # heatmap pixels between the head's and the prototype heatmap's argmax
      stage_epochs=(50.0, 90.0),
      stage_lrs=(1e-3, 1e-4, 1e-5),
      backbone_thaw_epoch=90.0,
    )
  )


# Domain transfer (docs/METHOD.md §2): a new skeleton on top of a trained PoseBH model. Per target: its epochs, lr and
# how long its new prototypes are momentum-updated (the rest of the run they are frozen).
TRANSFER_TARGETS = {
  'smpl24': dict(epochs=30, lr=1e-4, prototype_epochs=15),  # 3DPW (2D projections of the SMPL joints)
  'interhand': dict(epochs=60, lr=5e-4, prototype_epochs=30),  # InterHand2.6M hands
}
# The real transfer datasets (data_pipeline/builders: `prepare 3dpw`, `prepare interhand`).
TRANSFER_REAL_SOURCES = {
  'smpl24': ('pw3d', 'train', 'validation'),
  'interhand': ('interhand26m', 'train', 'validation'),
}


def transfer_config(enabled: bool = False) -> ml_collections.ConfigDict:
  """config.transfer: domain transfer of a trained PoseBH run (`config.init_from`) to new skeleton formats.

  The datasets in `new_datasets` are appended to `data.order`: their prototypes are appended to the old ones
  (J grows by their K) and they get new heads and experts. The embedding module stays frozen (its BatchNorm in
  inference mode) and the old prototypes are never updated: the prototype terms (PHM, PPC, PPD) and the momentum
  update run only on the new datasets' samples against their own prototypes, for `prototype_epochs`; after that
  the new prototypes are frozen too. Everything else trains with `config.optim`, except `frozen` (regexes).
  """
  return ml_collections.ConfigDict(
    dict(
      enabled=enabled,
      new_datasets=(),
      prototype_epochs=15.0,
      frozen=(),  # extra parameter-path regexes kept frozen besides '^embedding/' (e.g. '^head_coco/')
      # (new dataset, old dataset) pairs: the new dataset's expert and the head layers whose shapes match start as
      # copies of the old dataset's (the head's last 1x1 conv has another K and stays fresh).
      init_like=(),
    )
  )


def add_transfer(
  config: ml_collections.ConfigDict, target: str, sources: str = 'real', rehearsal_weight: float = 0.1
) -> ml_collections.ConfigDict:
  """Turns `config` (a PoseBH config) into a domain-transfer config for skeleton `target` ('smpl24' | 'interhand').

  Sets docs/METHOD.md §2's epochs, lr and prototype epochs for the target, appends the target dataset to data.order
  (mixture weight 1; the old datasets stay in the batch with `rehearsal_weight` each, the smallest share the
  static batch composition allows), evaluates the target only, and initialises its expert and head from COCO's
  (human targets) through `transfer.init_like`. On synthetic data only 'smpl24' exists: its 2D keypoints are
  derived at pipeline time from the 3D joints every synthetic example stores (`keypoints_from='joints3d'`).
  The lr steps down ×0.1 at 170/210 and 200/210 of the run, ViTPose++'s schedule scaled (our choice).
  """
  if target not in TRANSFER_TARGETS:
    raise ValueError(f"unknown transfer target '{target}'; choose one of {', '.join(TRANSFER_TARGETS)}")
  if target in config.data.order:
    raise ValueError(f"'{target}' is already in config.data.order {tuple(config.data.order)}")
  settings = TRANSFER_TARGETS[target]
  if config.data.sources == 'synthetic':
    if target != 'smpl24':
      raise ValueError(
        f"the synthetic data has no '{target}' examples (only smpl24 can be derived from its 3D joints); use data=real"
      )
    # The new skeleton on the COCO-annotated train images (disjoint from validation); keypoints from 3D joints.
    tfds_name, train_split, eval_split = 'posebh_synthetic', 'train_coco', 'validation'
    keypoints_from = 'joints3d'
  else:
    (tfds_name, train_split, eval_split), keypoints_from = TRANSFER_REAL_SOURCES[target], 'annotation'
  for name in config.data.order:
    config.data.datasets[name].weight = rehearsal_weight
  config.data.datasets[target] = ml_collections.ConfigDict(
    dict(
      task='heatmap',
      tfds_name=tfds_name,
      train_split=train_split,
      eval_split=eval_split,
      format=target,
      weight=1.0,
      codec='msra',
      half_body=target != 'interhand',
      keypoints_from=keypoints_from,
    )
  )
  config.data.order = tuple(config.data.order) + (target,)
  config.posebh.enabled = True
  config.transfer.update(
    dict(
      enabled=True,
      new_datasets=(target,),
      prototype_epochs=float(settings['prototype_epochs']),
      init_like=((target, 'coco'),) if 'coco' in config.data.order else (),
    )
  )
  config.num_epochs = settings['epochs']
  config.total_steps = -1
  config.optim.lr = settings['lr']
  config.optim.schedule = 'step'
  config.optim.decay_epochs = tuple(round(settings['epochs'] * e / 210) for e in (170, 200))
  config.eval_datasets = (target,)
  return config


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so that a misspelt `--config.key` override fails instead of being ignored."""
  config.lock()
  return config


# --- the real 3D datasets (docs/METHOD.md §3) -------------------------------------------------------------------

# 3D datasets with their own builders: (tfds name, train split, eval split, evaluation protocol). The other 3D
# datasets are prepared by `python -m data_pipeline.prepare generic3d --dataset3d=NAME` as 'generic3d/NAME'.
REAL3D_OWN_BUILDERS = {
  'h36m': ('h36m', 'train', 'test', 'h36m'),  # test: S9, S11
  'mpi_inf_3dhp': ('mpi_inf_3dhp', 'train', 'test', '3dhp'),  # test: TS1-TS6
  'panoptic': ('panoptic', 'train', 'validation', ''),
}
# The 3D datasets evaluated by default: the benchmarks among the training datasets. (3DPW, the third benchmark
# with a builder, `prepare pw3d_3d`, is not one of the 28 training datasets, and config.eval_datasets must name
# datasets of data.order.)
REAL3D_BENCHMARKS = ('h36m', 'mpi_inf_3dhp')


def real3d_source(name: str) -> tuple[str, str, str, str]:
  """(tfds name, train split, eval split, evaluation protocol) of 3D dataset `name` (registry3d.DATASETS_3D)."""
  if name in REAL3D_OWN_BUILDERS:
    return REAL3D_OWN_BUILDERS[name]
  return f'generic3d/{name}', 'train', 'validation', ''


def add_real3d(config: ml_collections.ConfigDict, names=None) -> ml_collections.ConfigDict:
  """Adds the real 3D datasets `names` (default: all 28 of registry3d.DATASETS_3D, 96 examples per batch) to
  `config.data` and its order, each trained by `metrabs3d` with its per-batch count as mixture weight, and adds
  the benchmarks among them to `config.eval_datasets` (an empty eval_datasets, which means every dataset, first
  becomes the datasets already in the order). Returns `config`.

  AGORA and BEHAVE label two formats (smpl + smplx, smpl + coco), but a record holds one format: the generic
  builder prepares each format as its own tfds config ('generic3d/agora' = smpl, 'generic3d/agora_smplx'). Each
  dataset trains on its first format's records only (its whole per-batch count); its second format's joints are
  still in the shared head (RICH labels smplx, HUMBI / Panoptic / AIST++ coco).
  """
  from posebh_jax.skeletons import registry3d  # lazy: the skeleton registry is not needed by the 2D configs

  names = tuple(registry3d.DATASETS_3D) if names is None else tuple(names)
  if not tuple(config.eval_datasets):
    config.eval_datasets = tuple(config.data.order)
  for name in names:
    dataset = registry3d.get_dataset3d(name)
    tfds_name, train_split, eval_split, protocol = real3d_source(name)
    config.data.datasets[name] = dataset3d_entry(
      dataset.format, tfds_name, train_split, eval_split, protocol, weight=float(dataset.per_batch)
    )
  config.data.order = tuple(config.data.order) + names
  config.eval_datasets = tuple(config.eval_datasets) + tuple(n for n in names if n in REAL3D_BENCHMARKS)
  return config


def acae_config() -> ml_collections.ConfigDict:
  """config.acae: the affine-combining autoencoder that `python -m posebh_jax.acae --workdir=<3D run>` fits on the
  run's own 3D predictions (docs/METHOD.md §3; the keys and their meaning: posebh_jax/acae/defaults.py, which the
  command also uses for a run made before this section existed)."""
  from posebh_jax.acae import defaults  # plain data: no JAX import

  return ml_collections.ConfigDict(dict(defaults.ACAE))
