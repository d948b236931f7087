"""The PyTorch side of `python -m benchmarks.train_step --reference=torch`: a ViTPose++ train step built with
`transformers`' VitPose from the same config as the project's step, on the same batch.

The model: transformers' `VitPoseForPoseEstimation` backbone (`VitPoseBackbone` with a ViTPose++ config:
config.model's width, depth, heads, MLP ratio, patch size and padding; `num_experts` = the config's distinct MoE
experts (six for the six 2D datasets), `part_features` = config.model.expert_dim; LayerNorm epsilon 1e-6) and one
heatmap head per dataset, as ViTPose++ trains: transformers' `VitPoseClassicDecoder` (two 4×4 stride-2
deconvolutions of 256 channels, BatchNorm, ReLU, a 1×1 conv to the dataset's keypoints) where the config's head
is that one (head_channels 256, head_num_deconv 2, as configs/b16.py), else the same layers at the config's
head_channels / head_num_deconv (the demo's 64 channels). transformers hard-codes a patch padding of 2; the
projection's padding is set to config.model.patch_padding (0 in the demo).

The step, in the order the project's `Trainer.train_step` runs it: the batch's uint8 images of every dataset
(concatenated in config.data.order, the per-dataset counts of `pipeline.composition`) normalised with ImageNet's
mean and std, one backbone pass with each example's `dataset_index`, each dataset's head on its own examples'
features, the loss = Σ over datasets of the target-weighted joints MSE (posebh_jax/losses/heatmap.py `joints_mse`:
mean over examples, pixels and keypoints of ((Ĥ − H)·w)²), backward, gradient clipping at config.optim.grad_clip,
and AdamW (config.optim's betas, eps and weight decay on matrices only, layer-wise lr decay config.optim.layer_decay:
the project's parameter groups; a constant lr). BatchNorm in training mode. `torch.autocast` in bfloat16 where
config.model.dtype is bfloat16.

Experts: transformers' VitPose++ MLP runs every expert on every token and masks (`experts='dense'`, as transformers
computes it: about 1.4× the backbone FLOPs of routing at B/16); `experts='routed'` runs each expert's Linear on its
dataset's examples only (the batch is grouped by dataset), the multiply-adds of the project's step. Not modelled:
drop path (transformers' VitPose has none; configs/b16.py trains with 0.3, so the project's step also draws its
masks).
"""

from __future__ import annotations

import copy
import time
from typing import Mapping

import numpy as np

from posebh_jax.models import pose_model

MEAN = np.asarray([0.485, 0.456, 0.406], np.float32) * 255
STD = np.asarray([0.229, 0.224, 0.225], np.float32) * 255
EXPERT_MODES = ('dense', 'routed')
# transformers' VitPoseClassicDecoder: fixed width and depth.
CLASSIC_DECODER_CHANNELS, CLASSIC_DECODER_DECONVS = 256, 2
MISSING = (
  '--reference=torch needs torch and transformers ({error}); install them with the Makefile\'s reference step: '
  '`make .venv/.reference` (pip install -r requirements-reference.txt)'
)


def require_torch():
  """Imports torch and transformers' VitPose; raises SystemExit with a one-line message naming the Makefile step
  that installs them where either does not import. Returns the torch module."""
  try:
    import torch
    import transformers  # noqa: F401  (imported for the check)
    from transformers import VitPoseForPoseEstimation  # noqa: F401
  except (ImportError, ValueError) as error:  # ValueError: a wheel built against another numpy ABI
    raise SystemExit(MISSING.format(error=str(error).splitlines()[0] if str(error) else type(error).__name__))
  return torch


def _module_classes():
  """The torch modules (defined on first use, so that importing this file needs no torch)."""
  torch = require_torch()
  from torch import nn
  from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
  from transformers.models.vitpose.modeling_vitpose import VitPoseClassicDecoder

  class DeconvHead(nn.Sequential):
    """The ViTPose heatmap head at other widths than transformers' 256: [ConvTranspose2d(4, stride 2, padding 1,
    no bias), BatchNorm2d, ReLU] × `deconvs`, then a 1×1 conv to `keypoints`; (N, D, h, w) → (N, K, 2^d·h, 2^d·w)."""

    def __init__(self, in_channels: int, channels: int, deconvs: int, keypoints: int):
      layers = []
      for _ in range(deconvs):
        layers += [
          nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False),
          nn.BatchNorm2d(channels),
          nn.ReLU(),
        ]
        in_channels = channels
      super().__init__(*layers, nn.Conv2d(in_channels, keypoints, 1))

  class RoutedExperts(nn.Module):
    """transformers' VitPose++ experts (the same Linear modules), each run on its datasets' rows only: `slices`
    [(start, stop, expert)] of the dataset-grouped batch. Same output as transformers' masked sum."""

    def __init__(self, experts, slices):
      super().__init__()
      self.experts = experts
      self.slices = tuple(slices)

    def forward(self, hidden, indices):
      del indices  # the rows' experts are known from the batch's grouping
      return torch.cat([self.experts[e](hidden[start:stop]) for start, stop, e in self.slices], dim=0)

  class ViTPosePlus(nn.Module):
    """transformers' VitPose++ backbone and one heatmap head per dataset; `forward(pixels (N, 3, H, W) normalised,
    dataset_index (N,))` → [heatmaps (n_d, K_d, h, w) per dataset], the batch grouped by dataset in `counts`' order."""

    def __init__(self, config, counts: Mapping[str, int], keypoints: Mapping[str, int], experts: str = 'dense'):
      super().__init__()
      model = config.model
      names = tuple(counts)
      expert_of = dict(zip(config.data.order, pose_model.expert_indices(pose_model.dataset_experts(config))))
      num_experts = len(set(expert_of.values())) if model.use_experts else 1
      image_size = tuple(int(s) for s in config.data.image_size)
      if float(model.mlp_ratio) != int(model.mlp_ratio):
        raise SystemExit(f'--reference=torch: transformers\' VitPose takes an integer mlp_ratio, not {model.mlp_ratio}')
      backbone = VitPoseBackboneConfig(
        image_size=list(image_size),
        patch_size=[int(model.patch_size)] * 2,
        hidden_size=int(model.width),
        num_hidden_layers=int(model.depth),
        num_attention_heads=int(model.num_heads),
        mlp_ratio=int(model.mlp_ratio),
        num_experts=num_experts,
        part_features=int(model.expert_dim),
        layer_norm_eps=1e-6,  # ViTPose's and the project's (transformers' default is 1e-12)
        out_indices=[int(model.depth)],
      )
      classic = (int(model.head_channels), int(model.head_num_deconv)) == (
        CLASSIC_DECODER_CHANNELS,
        CLASSIC_DECODER_DECONVS,
      )
      # A config per head, each on its own copy of the backbone's: a VitPoseConfig built on a backbone config that
      # a model already uses resets its attention implementation (to None: transformers' eager fallback).
      hf_config = lambda k: VitPoseConfig(
        backbone_config=copy.deepcopy(backbone), use_simple_decoder=False, num_labels=k
      )
      first = VitPoseForPoseEstimation(hf_config(keypoints[names[0]]))
      self.backbone = first.backbone
      projection = self.backbone.embeddings.patch_embeddings.projection
      projection.padding = (int(model.patch_padding),) * 2
      patch, pad = int(model.patch_size), int(model.patch_padding)
      self.grid = tuple((s + 2 * pad - patch) // patch + 1 for s in image_size)
      if self.grid != tuple(s // patch for s in image_size):
        raise SystemExit(
          f'--reference=torch: config.model.patch_padding {pad} changes the token grid of {image_size} to '
          f'{self.grid}, which transformers\' position embeddings (image_size // patch_size) cannot hold'
        )
      heads = []
      for name in names:
        if classic and name == names[0]:
          heads.append(first.head)
        elif classic:
          heads.append(VitPoseClassicDecoder(hf_config(keypoints[name])))
        else:
          heads.append(
            DeconvHead(int(model.width), int(model.head_channels), int(model.head_num_deconv), keypoints[name])
          )
      self.heads = nn.ModuleList(heads)
      self.attention = self.backbone.config._attn_implementation  # transformers' choice ('sdpa' here)
      self.counts = tuple(int(counts[n]) for n in names)
      self.index = np.repeat([expert_of[n] for n in names], self.counts)
      if experts not in EXPERT_MODES:
        raise ValueError(f"experts must be one of {', '.join(EXPERT_MODES)}, got {experts!r}")
      if experts == 'routed' and num_experts > 1:
        slices, start = [], 0
        for name, count in zip(names, self.counts):
          slices.append((start, start + count, expert_of[name]))
          start += count
        for layer in self.backbone.encoder.layer:
          layer.mlp.experts = RoutedExperts(layer.mlp.experts, slices)

    def forward(self, pixels, dataset_index):
      tokens = self.backbone(pixels, dataset_index=dataset_index).feature_maps[-1]
      features = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)
      return [head(part) for head, part in zip(self.heads, features.split(self.counts))]

  return ViTPosePlus


def joints_mse(pred, target, weights):
  """The target-weighted joints MSE of posebh_jax/losses/heatmap.py in torch's layout: pred, target (n, K, h, w),
  weights (n, K) → mean over n, K, h, w of ((pred − target)·w)², a float32 scalar tensor."""
  w = weights.float()[:, :, None, None]
  return ((pred.float() - target.float()) * w).square().mean()


def layer_id(name: str, depth: int) -> int:
  """The project's layer id of a parameter of `ViTPosePlus` (posebh_jax/optim.py `layer_ids`): patch and position
  embeddings 0, encoder layer i → i + 1, everything else (the final LayerNorm, the heads) depth + 1."""
  if name.startswith('backbone.embeddings.'):
    return 0
  if name.startswith('backbone.encoder.layer.'):
    return int(name.split('.')[3]) + 1
  return depth + 1


def parameter_groups(model, optim_config, depth: int) -> list[dict]:
  """AdamW parameter groups of the project's optimizer (posebh_jax/optim.py `build_optimizer`): lr × layer_decay^
  (depth + 1 − layer id), weight decay on matrices and kernels only (not biases, norms, position embeddings)."""
  groups = {}
  for name, param in model.named_parameters():
    decay = param.ndim >= 2 and 'position_embeddings' not in name
    key = (layer_id(name, depth), decay)
    groups.setdefault(key, []).append(param)
  return [
    {
      'params': params,
      'lr': float(optim_config.lr) * float(optim_config.layer_decay) ** (depth + 1 - layer),
      'weight_decay': float(optim_config.weight_decay) if decay else 0.0,
    }
    for (layer, decay), params in sorted(groups.items())
  ]


def parameter_count(model) -> int:
  """Trainable parameters of a torch module (BatchNorm running statistics are buffers, not counted)."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TorchTrainStep:
  """The PyTorch ViTPose++ train step of `config` on a fixed `batch` (the project's host batch layout
  {dataset: {'image' uint8 (n, H, W, 3), 'heatmaps' (n, h, w, K), 'target_weights' (n, K)}}, in
  config.data.order), on `device`; `compile`: the forward and loss through `torch.compile` (backward by
  AOTAutograd); `experts`: 'dense' (transformers' MoE) or 'routed' (module docstring). Runs `warmup` steps."""

  def __init__(
    self,
    config,
    batch: Mapping[str, Mapping[str, np.ndarray]],
    device: str = 'cpu',
    compile: bool = False,
    experts: str = 'dense',
    warmup: int = 1,
    seed: int = 0,
  ):
    torch = require_torch()
    self.torch = torch
    self.device = torch.device(device)
    names = [n for n in config.data.order if n in batch]
    counts = {n: len(batch[n]['image']) for n in names}
    keypoints = {n: int(batch[n]['target_weights'].shape[-1]) for n in names}
    torch.manual_seed(seed)
    self.model = _module_classes()(config, counts, keypoints, experts=experts).to(self.device).train()
    self.images = torch.from_numpy(np.concatenate([batch[n]['image'] for n in names])).to(self.device)
    self.targets = [
      torch.from_numpy(np.ascontiguousarray(np.asarray(batch[n]['heatmaps'], np.float32).transpose(0, 3, 1, 2)))
      .to(self.device)
      .float()
      for n in names
    ]
    self.weights = [torch.from_numpy(np.asarray(batch[n]['target_weights'], np.float32)).to(self.device) for n in names]
    self.dataset_index = torch.from_numpy(self.model.index.astype(np.int64)).to(self.device)
    self.mean = torch.from_numpy(MEAN).to(self.device)
    self.std = torch.from_numpy(STD).to(self.device)
    self.autocast = config.model.dtype == 'bfloat16'
    optim = config.optim
    self.grad_clip = float(optim.grad_clip)
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.optimizer = torch.optim.AdamW(
      parameter_groups(self.model, optim, int(config.model.depth)),
      betas=(float(optim.b1), float(optim.b2)),
      eps=float(optim.eps),
      foreach=True,
    )
    self.compiled = compile
    self.loss_fn = torch.compile(self.forward_loss) if compile else self.forward_loss
    self.loss = None
    self.run(warmup)

  def forward_loss(self, images, dataset_index):
    """(Σ_d joints_mse of dataset d's head on its examples, [per-dataset losses]) of uint8 (N, H, W, 3) images."""
    torch = self.torch
    with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
      pixels = ((images.float() - self.mean) / self.std).permute(0, 3, 1, 2)
      heatmaps = self.model(pixels, dataset_index)
    losses = [joints_mse(h, t, w) for h, t, w in zip(heatmaps, self.targets, self.weights)]
    return sum(losses), losses

  def step(self):
    """One optimisation step; returns the (detached) loss tensor, not waited for."""
    self.optimizer.zero_grad(set_to_none=True)
    loss, _ = self.loss_fn(self.images, self.dataset_index)
    loss.backward()
    if self.grad_clip > 0:
      self.torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
    self.optimizer.step()
    return loss.detach()

  def run(self, steps: int) -> float:
    """Seconds per step over `steps` steps back to back, with one wait at the end (as the project's
    `StepRunner.run`)."""
    start = time.perf_counter()
    for _ in range(steps):
      self.loss = self.step()
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()
    return (time.perf_counter() - start) / max(steps, 1)
