"""Train-step throughput of the ViTPose++ variants at 256×192, the cost of the expert/head routing, and of the 3D
and joint (2D + 3D) steps.

  python -m benchmarks.train_step [--variants=S/16,B/16] [--batch_per_device=N] [--steps=N] [--dtype=bfloat16]
      [--no-posebh] [--no-tasks3d] [--no-consistency] [--reference=torch [--no-torch_compile] [--torch_experts=dense,routed]
      [--torch_threads=N]]

For each variant it times the multi-dataset step (six datasets, MoE FFN, six heads: "the 2D step") and, in the
same run, the same ViT with a plain FFN and one head over the same batch (the reference), and prints img/s, step
time, TFLOP/s per device, MFU (when the device peak is known) and the routing ratio. With `--tasks3d` (default on)
it also times, interleaved with those (same global batch, same model config), and prints relative to the 2D step:
  - the 3D step: MeTRAbs on the three synthetic 3D datasets (task 'metrabs3d', one shared head `head_metrabs`),
    equal thirds of the batch, square crops (256×256; demo: 128×128, configs/demo.py task=3d);
  - the joint step: the six 2D datasets (the human ones, configs/demo.py HUMAN_2D, with task 'heatmap_metrabs':
    their heatmap head and the shared 3D head's 2D term; the animals 'heatmap') and the three synthetic 3D datasets
    in one batch, 3D datasets weighted 2 and 2D ones 1 as configs/demo.py task=joint (256×256 crops and 64×64
    heatmaps as configs/b16.py task=joint; demo: its 128×96 and 32×24). It needs a batch of at least 9 examples
    per device (one per dataset); a smaller one skips it.
The per-dataset counts are `pipeline.composition`'s; the 3D head's ghost-BatchNorm virtual batch is
config.metrabs.virtual_batch (16), or, where that does not divide the examples the shared head sees per batch, the
largest divisor of both (printed; e.g. 8 for the joint step at batch 48: 40 examples). Random batches follow each
task's batch fields (`_random_batch`), with plausible values so that the losses are finite. The model is the 2D
step's (same variant, MoE FFN); the 3D datasets share one expert ('3d', configs/common.py EXPERT_3D): one expert in
the 3D step, seven in the joint step, as configs/b16.py task=3d|joint. With `--consistency` (default on, with
`--tasks3d`) the joint step is also timed with each ACAE consistency variant (config.consistency: (a) the
reconstruction term, (b) the latent head and the frozen decoder, (c) both heads with the distillation; a random
ACAE with L = 48) and printed relative to the separate-head joint step. With `--posebh` (default on) it also times
PoseBH's stage-1 step (embedding module, prototypes, PHM/PPC/PPD, backbone frozen) and stage-2 step (CSS on: every
head also runs on the other datasets' examples; CPS on) relative to the baseline step.
With `--distill` (default on) it also times the distillation step of docs/METHOD.md §4 (benchmarks/distill_step.py:
the unified 21-keypoint student, a plain ViT of the variant, with two frozen teachers of the same variant and input
size inside its step, half the batch COCO and half MPII) and prints it relative to the same student without teachers.
With `--reference=torch` it also times, in the same rounds on the same device and on the same batch values, a
PyTorch ViTPose++ train step of the same config (transformers' VitPose++ backbone, one head per dataset, the
target-weighted joints MSE, gradient clipping and AdamW with the project's parameter groups;
benchmarks/torch_reference.py), eager and, unless `--no-torch_compile`, through torch.compile (a compile that
fails is reported in one line and skipped), with transformers' dense experts and/or routed ones
(`--torch_experts`), and prints each one's ratio torch step time / the multi-dataset step's (>= 1: this project's
step is as fast or faster). bfloat16 (`--dtype`) runs torch under autocast; one device only.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import math
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from benchmarks import distill_step, trace_attribution, trace_summary
from configs import common
from data_pipeline import pipeline
from posebh_jax import flops as flops_lib
from posebh_jax import metrics as metrics_lib
from posebh_jax import sharding as sharding_lib
from posebh_jax import trainer as trainer_lib
from posebh_jax.tasks import consistency as consistency_lib
from posebh_jax.tasks import metrabs as metrabs_task


def _config(variant: str, dtype: str, batch: int, datasets, remat: bool):
  if variant == 'demo':  # the demo model (configs/demo.py) at its own 128x96 input, for CPU comparisons
    from configs import demo

    base = demo.get_config('')
    config = common.base_config()
    config.model = base.model
    config.data = common.data_config('synthetic', datasets)
    config.data.image_size, config.data.heatmap_size = base.data.image_size, base.data.heatmap_size
    config.batch_size = batch
    config.optim.warmup_steps = 10
    return config
  config = common.base_config()
  config.model = common.model_config(variant)
  config.model.dtype = dtype
  config.model.remat = remat
  config.data = common.data_config('synthetic', datasets)
  config.batch_size = batch
  config.optim.warmup_steps = 10
  return config


# Tasks whose datasets train the shared MeTRAbs head (posebh_jax/tasks/metrabs.py, metrabs2d.py).
SHARED_3D_HEAD_TASKS = ('metrabs3d', 'metrabs2d', 'heatmap_metrabs')
TASKS3D = ('3d', 'joint')


def _task_config(variant: str, dtype: str, batch: int, remat: bool, task: str):
  """The 3D ('3d') or joint ('joint') step's config (module docstring) on `_config`'s model and optimiser."""
  from configs import demo

  if task not in TASKS3D:
    raise ValueError(f"unknown task '{task}'; choose one of {', '.join(TASKS3D)}")
  config = _config(variant, dtype, batch, () if task == '3d' else common.TRAIN_DATASETS, remat)
  if task == 'joint':
    for name in demo.HUMAN_2D:
      config.data.datasets[name].task = 'heatmap_metrabs'
  common.add_synthetic3d(config)
  if task == 'joint':
    for name in common.SYNTHETIC_3D_FORMATS:
      config.data.datasets[name].weight = 2.0
  if variant == 'demo':  # the demo's sizes: task=3d 128x128 / 32x32, task=joint the 2D demo's 128x96 / 32x24
    if task == '3d':
      config.data.image_size, config.data.heatmap_size = (128, 128), (32, 32)
  else:  # MeTRAbs' square crops (configs/b16.py task=3d|joint)
    config.data.image_size, config.data.heatmap_size = (256, 256), (64, 64)
  return config


CONSISTENCY_VARIANTS = ('regularize', 'latent', 'hybrid')
CONSISTENCY_LABELS = {
  'regularize': '(a) + ACAE reconstruction term',
  'latent': '(b) latent head + frozen decoder',
  'hybrid': '(c) both heads, latent distilled',
}


def shared_head_examples(config, counts) -> int:
  """Examples per global batch that the shared MeTRAbs head runs on (its datasets' counts)."""
  return sum(c for n, c in counts.items() if config.data.datasets[n].task in SHARED_3D_HEAD_TASKS)


def task_step_setup(config, batch: int, groups: int):
  """(counts, shared-head examples) of `config`'s batch (`pipeline.composition`), with config.metrabs.virtual_batch
  lowered to the largest divisor of itself and the shared head's examples where it does not divide them (the
  trainer's ghost-BatchNorm check). Raises pipeline.DataConfigError when the batch cannot hold every dataset."""
  counts = pipeline.composition(config.data, batch, groups)
  total = shared_head_examples(config, counts)
  virtual = int(config.metrabs.virtual_batch)
  if total > virtual and total % virtual:
    config.metrabs.virtual_batch = math.gcd(total, virtual)
  return counts, total


def _random_field(rng, key: str, shape, dtype, image_hw, fields) -> np.ndarray:
  """Plausible random values of batch field `key` (global `shape`, the example count first) for an (H, W) crop;
  `fields`: the example's fields made so far (2D joints are the projections of the 3D ones when both exist)."""
  n = shape[0]
  height, width = image_hw
  if key == 'image':
    return rng.randint(0, 256, shape).astype(np.uint8)
  if key == 'heatmaps':
    return rng.rand(*shape).astype(dtype)
  if key == 'target_weights':
    return np.ones(shape, dtype)
  if key == 'intrinsics':  # focal ≈ the crop's longer side, principal point at the crop's centre
    focal = max(height, width) * rng.uniform(0.9, 1.1, n)
    out = np.zeros(shape, dtype)
    out[:, 0, 0] = out[:, 1, 1] = focal
    out[:, 0, 2], out[:, 1, 2], out[:, 2, 2] = (width - 1) / 2, (height - 1) / 2, 1.0
    return out
  if key == 'joints3d':  # camera frame, mm: a root 3500-4500 mm ahead, joints within ±500 of it
    root = np.stack([rng.uniform(-300, 300, n), rng.uniform(-300, 300, n), rng.uniform(3500, 4500, n)], -1)
    return (root[:, None] + rng.uniform(-500, 500, shape)).astype(dtype)
  if key in ('valid', 'keypoints2d_valid'):
    return rng.rand(*shape) < 0.9
  if key in ('joints2d', 'keypoints2d'):
    if key == 'joints2d' and 'joints3d' in fields and 'intrinsics' in fields:
      projected = np.einsum('nij,nkj->nki', fields['intrinsics'], fields['joints3d'])
      return (projected[..., :2] / projected[..., 2:]).astype(dtype)
    return (rng.uniform(0.1, 0.9, shape) * np.asarray([width, height])).astype(dtype)
  if key == 'box_size':
    return rng.uniform(2000, 2400, shape).astype(dtype)
  # A field this benchmark does not know: by dtype.
  if np.dtype(dtype) == np.bool_:
    return rng.rand(*shape) < 0.9
  if np.issubdtype(dtype, np.floating):
    return rng.rand(*shape).astype(dtype)
  return np.zeros(shape, dtype)


def _random_batch(struct, seed=0):
  """A random global batch of `struct` ({dataset: {field: ShapeDtypeStruct}}, `Trainer.batch_structure`): plausible
  values per field name (`_random_field`), so that every task's loss is finite."""
  rng = np.random.RandomState(seed)
  out = {}
  for name, fields in struct.items():
    image_hw = fields['image'].shape[1:3]
    out[name] = {}
    for key, s in fields.items():
      out[name][key] = _random_field(rng, key, s.shape, s.dtype, image_hw, out[name])
  return out


TRACE_STEPS = 3


class StepRunner:
  """One compiled train step (state initialised, `warmup` steps run) on a fixed random batch, in stage `phase`."""

  def __init__(self, config, counts, warmup: int = 2, phase: int = 0):
    mesh = sharding_lib.make_mesh(config.mesh)
    task = trainer_lib.Trainer(config, mesh, steps_per_epoch=1000, counts=counts)
    struct = task.batch_structure(counts)
    self.flops_per_batch = task.flops_per_batch()
    self.state = task.init_state(0)
    if phase:
      self.state = task.enter_phase(self.state, phase)
    self.step = task.compile_train_step(struct)
    self.struct = struct
    self.batch = sharding_lib.global_batch(_random_batch(struct), mesh)
    self.run(warmup)

  def run(self, steps: int) -> float:
    """Seconds per step over `steps` steps dispatched back to back with one wait at the end: the rate a training
    loop sees, which dispatches ahead (waiting after every step would add the host's dispatch latency to each, a
    sizeable share of a small variant's GPU step, as the first version of this benchmark did; docs/MEASUREMENTS.md)."""
    start = time.perf_counter()
    for _ in range(steps):
      self.state, self.metrics = self.step(self.state, self.batch)
    jax.block_until_ready(self.metrics['train/loss'])
    return (time.perf_counter() - start) / max(steps, 1)

  def profile(self, path: str) -> None:
    """Runs TRACE_STEPS steps under jax.profiler and copies the perfetto trace it writes to `path`."""
    log_dir = tempfile.mkdtemp(prefix='posebh_trace_')
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      self.run(TRACE_STEPS)
    written = glob.glob(os.path.join(log_dir, '**', '*.trace.json.gz'), recursive=True)
    if written:
      shutil.copy(written[0], path)
      # The optimised HLO beside the trace maps its kernels to model scopes (benchmarks.trace_attribution).
      with gzip.open(trace_attribution.hlo_path_beside(path), 'wt') as f:
        f.write(self.step.as_text())
      print(trace_summary.summarise(path, TRACE_STEPS), flush=True)
    shutil.rmtree(log_dir, ignore_errors=True)


def interleaved_times(runners, steps: int, rounds: int = 3, labels=()) -> list[float]:
  """Median seconds per step of each runner over `rounds` rounds that take the runners in turn (each after one
  untimed step), so that a drift of the machine's speed (a shared VM's, a GPU's clocks) affects all of them alike.
  With `labels` (one per runner) it also prints every round's milliseconds: a median of two rounds is their mean,
  so an outlier shows."""
  times = [[] for _ in runners]
  for _ in range(rounds):
    for index, runner in enumerate(runners):
      # One untimed step first: on the 2-core VM the first steps after PyTorch's ran up to 1.7x slower (B/16: the
      # multi-dataset step's round before any torch step 2.9 s, the rounds after them 4.8 and 5.0 s; with this
      # step 2.4 s in every round; docs/MEASUREMENTS.md), which charged one runner for another's aftermath.
      runner.run(1)
      times[index].append(runner.run(steps))
  if labels:
    print(
      '  rounds (ms): '
      + ' | '.join(f"{label} {' '.join(f'{t * 1e3:.1f}' for t in runs)}" for label, runs in zip(labels, times)),
      flush=True,
    )
  return [float(np.median(t)) for t in times]


def _reference_setup(args) -> dict:
  """`--reference=torch`: checks that torch and transformers import (one-line SystemExit naming the Makefile step
  otherwise), picks torch's device (CUDA where JAX runs on a GPU) and returns what the torch runners need."""
  from benchmarks import torch_reference

  torch = torch_reference.require_torch()
  experts = tuple(filter(None, args.torch_experts.split(',')))
  unknown = set(experts) - set(torch_reference.EXPERT_MODES)
  if unknown or not experts:
    raise SystemExit(
      f'--torch_experts={args.torch_experts}: use a comma-separated subset of {",".join(torch_reference.EXPERT_MODES)}'
    )
  backend = jax.default_backend()
  if jax.device_count() > 1:
    raise SystemExit(
      f'--reference=torch times one device against one device; JAX sees {jax.device_count()} here: run it with one '
      '(CUDA_VISIBLE_DEVICES=0, or without XLA_FLAGS=--xla_force_host_platform_device_count)'
    )
  if backend == 'gpu' and not torch.cuda.is_available():
    raise SystemExit(
      f'--reference=torch: JAX runs on the GPU but this torch ({torch.__version__}) has no CUDA; install a CUDA build '
      'of torch (requirements-reference.txt names the CPU one) or run on the CPU (JAX_PLATFORMS=cpu)'
    )
  if backend not in ('cpu', 'gpu'):
    raise SystemExit(f'--reference=torch: torch has no {backend} backend here; run it on a CPU or a GPU')
  device = 'cuda' if backend == 'gpu' else 'cpu'
  if args.torch_threads > 0:
    torch.set_num_threads(args.torch_threads)
  where = torch.cuda.get_device_name() if device == 'cuda' else f'cpu, {torch.get_num_threads()} threads'
  return dict(
    module=torch_reference,
    device=device,
    experts=experts,
    compile=args.torch_compile,
    header=f'reference: torch {torch.__version__} on {where} (XLA: {os.cpu_count()} cores), transformers VitPose++, '
    f"experts {'/'.join(experts)}, eager{' and torch.compile' if args.torch_compile else ''}; "
    'model.dtype bfloat16 runs under torch.autocast(bfloat16)',
  )


def _torch_runners(reference: dict, config, struct) -> dict:
  """{'torch_<experts>[_compiled]': TorchTrainStep} on the host batch the project's multi-dataset step times
  (`_random_batch(struct)`: the same values). A torch.compile that fails is reported in one line and left out (for
  the rest of the run); the eager step is always built."""
  torch_reference = reference['module']
  batch = _random_batch(struct)
  out = {}

  def build(name, **kwargs):
    start = time.perf_counter()
    out[name] = torch_reference.TorchTrainStep(config, batch, reference['device'], warmup=2, **kwargs)
    print(
      f'  {name}: attention {out[name].model.attention}, built and 2 steps run in {time.perf_counter() - start:.0f} s',
      flush=True,
    )

  for experts in reference['experts']:
    build(f'torch_{experts}', experts=experts)
    if reference['compile']:
      try:
        build(f'torch_{experts}_compiled', experts=experts, compile=True)
      except Exception as error:  # noqa: BLE001  (any failure of the compiler: report it and time eager only)
        first = (str(error).strip().splitlines() or [''])[0][:200]
        print(f'torch.compile failed ({type(error).__name__}: {first}); timing the eager step only', flush=True)
        reference['compile'] = False
  return out


TORCH_LABELS = {'dense': "experts dense, as transformers computes them", 'routed': 'experts routed per dataset'}


def _print_reference(variant: str, batch: int, multi: float, times: dict) -> None:
  """One line per torch runner in `times`: its step time, img/s and the ratio torch / the project's multi-dataset
  step (> 1: the project's step is faster)."""
  for name, seconds in times.items():
    if not name.startswith('torch_'):
      continue
    experts = name.split('_')[1]
    mode = 'torch.compile' if name.endswith('_compiled') else 'eager'
    print(
      f'{variant}: PyTorch ViTPose++ step ({TORCH_LABELS[experts]}, {mode}) {seconds * 1e3:.1f} ms, '
      f'{batch / seconds:.1f} img/s | ratio torch / posebh_jax step time {seconds / multi:.3f} (>= 1: posebh_jax '
      'as fast or faster)',
      flush=True,
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--variants', default='S/16,B/16', help="comma-separated: S/16, B/16, L/16, H/16, demo (the demo model at 128x96)"
  )
  parser.add_argument(
    '--batch_per_device', type=int, default=0, help='0: 96 on an accelerator (16 per dataset), 6 on CPU'
  )
  parser.add_argument('--steps', type=int, default=0, help='timed steps; 0: 20 on an accelerator, 2 on CPU')
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--remat', action='store_true')
  parser.add_argument(
    '--trace_dir',
    default='',
    help='also profile each timed step and write '
    '<trace_dir>/<variant>_<multi|plain|unstacked|no_experts|3d|joint>.trace.json.gz (and .hlo.txt.gz, its optimised HLO, '
    'for benchmarks.trace_attribution), printing its top kernels',
  )
  parser.add_argument('--rounds', type=int, default=3, help='timing rounds (runners taken in turn); the median')
  parser.add_argument(
    '--compare_unstacked',
    action='store_true',
    help='also time the multi-dataset step with '
    'model.stack_equal_datasets=never (experts and heads one dataset after another; the first then runs '
    'with =always)',
  )
  parser.add_argument(
    '--compare_no_experts',
    action='store_true',
    help='also time the six-head step with a '
    'plain FFN (model.use_experts=False): the experts\' share of the routing cost',
  )
  parser.add_argument(
    '--posebh',
    default=True,
    action=argparse.BooleanOptionalAction,
    help='also time the PoseBH stage-1 and stage-2 steps',
  )
  parser.add_argument(
    '--distill',
    action=argparse.BooleanOptionalAction,
    default=True,
    help='also the distillation step (student + two frozen teachers) relative to the student alone',
  )
  parser.add_argument(
    '--consistency',
    action=argparse.BooleanOptionalAction,
    default=True,
    help='with --tasks3d: also the joint step with each ACAE consistency variant (a, b, c), relative to it',
  )
  parser.add_argument(
    '--tasks3d',
    default=True,
    action=argparse.BooleanOptionalAction,
    help='also time the 3D (MeTRAbs) and the joint (2D + 3D) steps, relative to the 2D step',
  )
  parser.add_argument(
    '--reference',
    default='',
    choices=('', 'torch'),
    help="'torch': also time a PyTorch ViTPose++ train step of the same architecture and batch (transformers' "
    'VitPose, benchmarks/torch_reference.py) in the same rounds, and print its ratio to the multi-dataset step',
  )
  parser.add_argument(
    '--torch_compile',
    default=True,
    action=argparse.BooleanOptionalAction,
    help='with --reference=torch: also time the torch.compile\'d step (eager is always timed)',
  )
  parser.add_argument(
    '--torch_threads',
    type=int,
    default=0,
    help="with --reference=torch on a CPU: torch's intra-op threads (0: torch's default, one per core)",
  )
  parser.add_argument(
    '--torch_experts',
    default='dense,routed',
    help="with --reference=torch: comma-separated 'dense' (transformers' MoE: every expert on every token, masked) "
    "and/or 'routed' (each expert on its dataset's examples: the project's multiply-adds)",
  )
  args = parser.parse_args()
  reference = _reference_setup(args) if args.reference else None
  on_cpu = jax.devices()[0].platform == 'cpu'
  per_device = args.batch_per_device or (6 if on_cpu else 96)
  steps = args.steps or (2 if on_cpu else 20)
  batch = per_device * jax.device_count()
  names = common.TRAIN_DATASETS
  groups = jax.device_count()
  if batch % (len(names) * groups):
    raise SystemExit(f'batch {batch} must be a multiple of {len(names) * groups} (6 datasets × devices)')
  counts = {n: batch // len(names) for n in names}
  peak = flops_lib.device_peak_tflops()
  device = jax.devices()[0].device_kind
  print(
    f'device: {device} ×{jax.device_count()} | batch {batch} ({per_device}/device) | 256x192 (demo: 128x96) | {args.dtype}'
    f' | peak {peak or "unknown"} TFLOP/s'
  )
  if reference:
    print(reference['header'], flush=True)
    hint = metrics_lib.cpu_allocator_hint(jax.default_backend())
    if hint:  # the project's CPU figures are measured with it (README, Performance)
      print(hint, flush=True)
  for variant in args.variants.split(','):
    config = _config(variant, args.dtype, batch, names, args.remat)
    plain = _config(variant, args.dtype, batch, ('coco',), args.remat)
    plain.model.use_experts = False
    if args.compare_unstacked:
      config.model.stack_equal_datasets = 'always'
    runners = {'multi': StepRunner(config, counts), 'plain': StepRunner(plain, {'coco': batch})}
    if args.compare_unstacked:
      unstacked = _config(variant, args.dtype, batch, names, args.remat)
      unstacked.model.stack_equal_datasets = 'never'
      runners['unstacked'] = StepRunner(unstacked, counts)
    if args.compare_no_experts:
      no_experts = _config(variant, args.dtype, batch, names, args.remat)
      no_experts.model.use_experts = False
      runners['no_experts'] = StepRunner(no_experts, counts)
    task_setups = {}
    if args.tasks3d:
      for task in TASKS3D:
        task_config = _task_config(variant, args.dtype, batch, args.remat, task)
        try:
          task_counts, shared = task_step_setup(task_config, batch, groups)
        except pipeline.DataConfigError:
          need = len(task_config.data.order)
          print(
            f'{variant}: {task} step skipped: its {need} datasets need at least {need} examples per device '
            f'(--batch_per_device={need} or more; here {per_device})',
            flush=True,
          )
          continue
        task_setups[task] = (task_config, task_counts, shared)
        runners[task] = StepRunner(task_config, task_counts)
    if args.tasks3d and args.consistency and 'joint' in task_setups:
      # The consistency variants' joint steps (a random ACAE with L = 48: the step's cost does not depend on it).
      joint_config, joint_counts, _ = task_setups['joint']
      acae_dir = tempfile.mkdtemp(prefix='acae_')
      names = metrabs_task.head_joint_names(joint_config)
      rng = np.random.default_rng(0)
      encoder, decoder = rng.random((len(names), 48)), rng.random((48, len(names)))
      consistency_lib.write_acae(acae_dir, encoder / encoder.sum(0), decoder / decoder.sum(0), names)
      for choice in CONSISTENCY_VARIANTS:
        variant_config = joint_config.copy_and_resolve_references()
        variant_config.consistency.variant = choice
        variant_config.consistency.acae = acae_dir
        runners[f'joint_{choice}'] = StepRunner(variant_config, joint_counts)
    if args.distill:
      student_config, plain_student, _ = distill_step.distill_configs(config)
      student_counts = pipeline.composition(student_config.data, batch, groups)
      runners['distill'] = StepRunner(student_config, student_counts)
      runners['student_plain'] = StepRunner(plain_student, student_counts)
    if reference:
      runners.update(_torch_runners(reference, config, runners['multi'].struct))
    times = dict(zip(runners, interleaved_times(list(runners.values()), steps, args.rounds, labels=list(runners))))
    multi, plain_time = times['multi'], times['plain']
    if args.trace_dir:
      os.makedirs(args.trace_dir, exist_ok=True)
      for kind, runner in runners.items():
        runner.profile(os.path.join(args.trace_dir, f"{variant.replace('/', '')}_{kind}.trace.json.gz"))
    flops = runners['multi'].flops_per_batch
    task_flops = {task: runners[task].flops_per_batch for task in task_setups}
    distill_flops = (
      (runners['distill'].flops_per_batch, runners['student_plain'].flops_per_batch) if args.distill else None
    )
    del runners
    tflops = flops / multi / 1e12 / jax.device_count()
    mfu = f'{100 * tflops / peak:.1f}%' if peak else 'n/a'
    print(
      f'{variant}: multi-dataset step {multi * 1e3:.1f} ms, {batch / multi:.1f} img/s, '
      f'{tflops:.2f} TFLOP/s/device, MFU {mfu} | plain ViT step {plain_time * 1e3:.1f} ms, '
      f'{batch / plain_time:.1f} img/s | routing ratio {multi / plain_time:.3f}'
    )
    if reference:
      _print_reference(variant, batch, multi, times)
    if args.compare_unstacked:
      unstacked_time = times['unstacked']
      print(
        f'{variant}: one dataset after another (model.stack_equal_datasets=never) {unstacked_time * 1e3:.1f} ms, '
        f'routing ratio {unstacked_time / plain_time:.3f}'
      )
    if args.compare_no_experts:
      heads_only = times['no_experts']
      print(
        f'{variant}: six heads, plain FFN {heads_only * 1e3:.1f} ms, ratio to plain ViT {heads_only / plain_time:.3f}, '
        f'multi-dataset / six heads {multi / heads_only:.3f} (the experts)'
      )
    for task, (task_config, task_counts, shared) in task_setups.items():
      seconds = times[task]
      task_tflops = task_flops[task] / seconds / 1e12 / jax.device_count()
      task_mfu = f'{100 * task_tflops / peak:.1f}%' if peak else 'n/a'
      height, width = task_config.data.image_size
      what = (
        '3D step (MeTRAbs, 3 synthetic 3D datasets' if task == '3d' else 'joint step (6 2D + 3 synthetic 3D datasets'
      )
      composition = ', '.join(f'{n} {c}' for n, c in task_counts.items())
      print(
        f'{variant}: {what}, {height}x{width}; the 3D head sees {shared} of {batch}, virtual batch '
        f'{task_config.metrabs.virtual_batch}) {seconds * 1e3:.1f} ms, {batch / seconds:.1f} img/s, '
        f'{task_tflops:.2f} TFLOP/s/device, MFU {task_mfu} | ratio to the 2D step {seconds / multi:.3f}'
        f' | counts: {composition}'
      )
    for choice in CONSISTENCY_VARIANTS:
      if f'joint_{choice}' in times:
        seconds = times[f'joint_{choice}']
        print(
          f'{variant}: joint step with consistency {choice} ({CONSISTENCY_LABELS[choice]}) {seconds * 1e3:.1f} ms, '
          f'{batch / seconds:.1f} img/s | ratio to the separate-head joint step {seconds / times["joint"]:.3f}'
        )
    if distill_flops:
      seconds, plain_seconds = times['distill'], times['student_plain']
      print(
        f'{variant}: distillation step (unified21 student + COCO and MPII teachers of the same size, frozen, in the '
        f'step) {seconds * 1e3:.1f} ms, {batch / seconds:.1f} img/s | the student without teachers '
        f'{plain_seconds * 1e3:.1f} ms | ratio {seconds / plain_seconds:.3f} (analytic FLOPs ratio '
        f'{distill_flops[0] / distill_flops[1]:.3f}: the teachers run forward only)'
      )
    if args.posebh:
      posebh = _config(variant, args.dtype, batch, names, args.remat)
      posebh.posebh = common.posebh_config(enabled=True)
      for phase, label in ((0, 'stage 1 (prototypes, PHM/PPC/PPD)'), (1, 'stage 2 (+CSS, CPS)')):
        seconds = interleaved_times([StepRunner(posebh, counts, phase=phase)], steps, args.rounds)[0]
        print(
          f'{variant}: PoseBH {label} step {seconds * 1e3:.1f} ms, {batch / seconds:.1f} img/s | '
          f'ratio to the baseline step {seconds / multi:.3f}'
        )


if __name__ == '__main__':
  main()
