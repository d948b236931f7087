"""Inference throughput: this project's ViTPose++ forward against `transformers`' VitPose++ on the same device.

  python -m benchmarks.inference [--variant=B/16] [--batch=8] [--repeats=3] [--rounds=2] [--dtype=float32|bfloat16]
      [--plain] [--tiny]

Both are the ViTPose++ architecture of `--variant` at 256x192 (configs/common.py's sizes: B/16 = hidden 768, 12
layers, 12 heads, MLP 3072, six experts of 192 channels, the classic two-deconvolution head) with the same
weights: transformers' random initialisation, converted into the project's model by `posebh_jax.convert`'s code
path (the largest heatmap difference between the two is printed; `--random_weights`: independent random weights
instead, without the conversion), eval mode, one batch of `--batch` uint8 images of one dataset (COCO, 17 keypoints):
  posebh_jax     `inference.Predictor`'s jit'd forward (the multi-dataset model serving its COCO head: the shared
                 fc2 columns and COCO's expert columns, COCO's head), images normalised on device;
  transformers   `VitPoseForPoseEstimation` (num_experts 6, part_features 192, classic decoder) under
                 `torch.inference_mode`, with `dataset_index` 0 and the same uint8 → normalised float conversion;
                 bfloat16 through `torch.autocast`.
With `--plain` it also times the plain single-dataset models: the exported one (`Predictor.single_dataset`: the
expert merged into fc2) and transformers' ViTPose (num_experts 1: a plain MLP; its ViTPose++ MLP computes all six
experts for every token and masks, about 1.4x the FLOPs of the routed forward at B/16).
Each side is warmed up (the JAX one compiled) and then timed `--repeats` times per round in interleaved rounds (so
that a drift of the machine's speed affects both alike); the median batch time gives img/s. Prints one line per
model and a final JSON line {device, batch, img_s per model, ratio = posebh_jax / transformers}; the goal is a ratio
>= 1. `--tiny` shrinks both models (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from posebh_jax import inference

MEAN = np.asarray([0.485, 0.456, 0.406], np.float32) * 255
STD = np.asarray([0.229, 0.224, 0.225], np.float32) * 255


def _config(variant: str, dtype: str, tiny: bool):
  """A six-dataset ViTPose++ config of `variant` at 256x192 (`--tiny`: a two-layer width-64 model at 64x48)."""
  config = common.base_config()
  config.model = common.model_config(variant)
  config.model.update(dict(dtype=dtype, remat=False, scan=False, drop_path=0.0))
  config.data = common.data_config('synthetic')
  if tiny:
    # head_channels 256: transformers' classic decoder has no other width.
    config.model.update(dict(width=64, depth=2, num_heads=2, expert_dim=16, head_channels=256))
    config.data.image_size, config.data.heatmap_size = (64, 48), (16, 12)
  return config


def _random_variables(predictor_model, config, seed: int = 0):
  """Random N(0, 0.02) parameters (BatchNorm variances 1) of the model's shapes, without compiling its init."""
  import flax.linen as nn

  from posebh_jax.models import pose_model

  image_h, image_w = config.data.image_size
  dummy = {n: jnp.zeros((1, image_h, image_w, 3), jnp.uint8) for n in predictor_model.dataset_names}
  shapes = jax.eval_shape(
    lambda: nn.unbox(predictor_model.init(jax.random.key(seed), dummy, method=pose_model.PoseModel.init_all))
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return np.ones(leaf.shape, leaf.dtype)
    return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


class JaxRunner:
  """`Predictor.predict_function(dataset, flip=False)` on one fixed device batch."""

  def __init__(self, predictor, dataset: str, images: np.ndarray):
    self.function = predictor.predict_function(dataset, False)
    self.variables = predictor.variables
    self.images = jax.device_put(images)

  def run(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.function(self.variables, self.images))
    return time.perf_counter() - start


class TorchRunner:
  """transformers' VitPoseForPoseEstimation (ViTPose++: experts, classic decoder), random weights, eval mode."""

  def __init__(self, config, images: np.ndarray, dtype: str, device: str, experts: bool = True):
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    model_config = config.model
    image_size = list(config.data.image_size)
    backbone = VitPoseBackboneConfig(
      hidden_size=model_config.width,
      num_hidden_layers=model_config.depth,
      num_attention_heads=model_config.num_heads,
      mlp_ratio=int(model_config.mlp_ratio),
      num_experts=len(config.data.order) if experts else 1,
      part_features=model_config.expert_dim,
      image_size=image_size,
      patch_size=[model_config.patch_size, model_config.patch_size],
      out_indices=[model_config.depth],
      layer_norm_eps=1e-6,  # ViTPose's (transformers' default is 1e-12)
    )
    hf_config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=False, num_labels=17)
    torch.manual_seed(0)
    self.torch = torch
    self.device = torch.device(device)
    self.model = VitPoseForPoseEstimation(hf_config).eval().to(self.device)
    self.images = torch.from_numpy(images).to(self.device)
    self.mean = torch.from_numpy(MEAN).to(self.device)
    self.std = torch.from_numpy(STD).to(self.device)
    self.dataset_index = torch.zeros(len(images), dtype=torch.long, device=self.device)
    self.autocast = dtype == 'bfloat16'
    self.channels = hf_config.backbone_config.hidden_size

  def forward(self):
    torch = self.torch
    with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
      pixels = ((self.images.float() - self.mean) / self.std).permute(0, 3, 1, 2)
      return self.model(pixel_values=pixels, dataset_index=self.dataset_index).heatmaps

  def run(self) -> float:
    start = time.perf_counter()
    self.forward()
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(runners: dict, repeats: int, rounds: int) -> dict[str, float]:
  """Median seconds per batch of each runner over `rounds` rounds of `repeats` runs, taking the runners in turn."""
  times = {name: [] for name in runners}
  for _ in range(rounds):
    for name, runner in runners.items():
      times[name].extend(runner.run() for _ in range(repeats))
  return {name: float(np.median(t)) for name, t in times.items()}


def _predictor(config) -> inference.Predictor:
  """A Predictor of `config`'s six-dataset model with random variables."""
  from posebh_jax import tasks as tasks_lib
  from posebh_jax.models import pose_model

  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(
    config.model, names, num_groups=1, head_specs=[tasks[n].head_spec() for n in names]
  ).clone(stack_equal_datasets=False)
  return inference.Predictor(config, _random_variables(model, config))


def _converted_predictor(config, hf_model) -> inference.Predictor:
  """The transformers model's weights through `python -m posebh_jax.convert`'s code path (save_pretrained, then
  `convert.convert` into `config`'s model), loaded as a Predictor: both sides then compute the same heatmaps."""
  import tempfile

  from posebh_jax import convert

  with tempfile.TemporaryDirectory() as tmp:
    hf_model.save_pretrained(os.path.join(tmp, 'hf'))
    convert.convert(config, os.path.join(tmp, 'hf'), os.path.join(tmp, 'converted'))
    return inference.Predictor.load(os.path.join(tmp, 'converted'))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--variant', default='B/16', help='S/16, B/16, L/16 or H/16 (configs/common.py)')
  parser.add_argument('--batch', type=int, default=8, help='images per forward')
  parser.add_argument('--repeats', type=int, default=3, help='timed forwards per model per round')
  parser.add_argument('--rounds', type=int, default=2, help='interleaved rounds; the median over all timed runs')
  parser.add_argument('--warmup', type=int, default=1, help='untimed forwards per model after compiling')
  parser.add_argument(
    '--dtype', default='float32', choices=('float32', 'bfloat16'), help='compute dtype (torch: autocast)'
  )
  parser.add_argument('--plain', action='store_true', help='also time both single-dataset models (no experts)')
  parser.add_argument('--tiny', action='store_true', help='a two-layer width-64 model at 64x48 (tests)')
  parser.add_argument(
    '--random_weights',
    action='store_true',
    help='random weights on both sides instead of the transformers model converted into the project model',
  )
  args = parser.parse_args(argv)
  import torch

  config = _config(args.variant, args.dtype, args.tiny)
  image_h, image_w = config.data.image_size
  images = np.random.default_rng(0).integers(0, 256, (args.batch, image_h, image_w, 3), dtype=np.uint8)
  backend = jax.default_backend()
  torch_device = 'cuda' if backend == 'gpu' and torch.cuda.is_available() else 'cpu'
  reference = TorchRunner(config, images, args.dtype, torch_device)
  if args.random_weights:
    predictor = _predictor(config)
  else:
    predictor = _converted_predictor(config, reference.model)
  runners = {'posebh_jax': JaxRunner(predictor, 'coco', images)}
  if args.plain:
    runners['posebh_jax_plain'] = JaxRunner(predictor.single_dataset('coco'), 'coco', images)
  runners['transformers'] = reference
  if args.plain:
    runners['transformers_plain'] = TorchRunner(config, images, args.dtype, torch_device, experts=False)
  difference = None
  if not args.random_weights:
    ours = np.asarray(runners['posebh_jax'].function(predictor.variables, runners['posebh_jax'].images), np.float32)
    theirs = reference.forward().float().cpu().numpy().transpose(0, 2, 3, 1)
    difference = float(np.max(np.abs(ours - theirs)))
    print(
      f'same weights (transformers model converted by posebh_jax.convert): max |heatmap difference| {difference:.2e}'
    )
  for runner in runners.values():
    for _ in range(max(args.warmup, 0) + 1):  # the first JAX call compiles
      runner.run()
  medians = interleaved_medians(runners, args.repeats, args.rounds)
  cpu = os.cpu_count()
  device = jax.devices()[0].device_kind if backend != 'cpu' else f'CPU ({cpu} cores)'
  print(
    f"device: jax {device}, torch {torch_device} ({torch.get_num_threads()} threads) | {'tiny' if args.tiny else args.variant} "
    f'{image_h}x{image_w} | batch {args.batch} | {args.dtype}'
  )
  for name, seconds in medians.items():
    print(f'{name}: {seconds * 1e3:.1f} ms per batch, {args.batch / seconds:.2f} img/s')
  ratio = medians['transformers'] / medians['posebh_jax']
  print(f'ratio posebh_jax / transformers img/s: {ratio:.3f} (goal >= 1)')
  summary = {
    'benchmark': 'inference',
    'device': device,
    'torch_device': torch_device,
    'torch_threads': torch.get_num_threads(),
    'variant': 'tiny' if args.tiny else args.variant,
    'image_size': [image_h, image_w],
    'batch': args.batch,
    'dtype': args.dtype,
    'timed_runs': args.repeats * args.rounds,
    **{f'{name}_img_s': round(args.batch / seconds, 3) for name, seconds in medians.items()},
    'ratio': round(ratio, 4),
    'max_heatmap_difference': difference,
  }
  print(json.dumps(summary), flush=True)
  return summary


if __name__ == '__main__':
  main()
