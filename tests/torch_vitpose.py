"""A PyTorch ViTPose / ViTPose++ / PoseBH (proto head) with the official mmpose 0.x parameter names, written for the
converter's tests, and helpers to make tiny configs and checkpoints.

`TopDown(...).state_dict()` yields exactly the names of an official checkpoint (`backbone.blocks.0.mlp.experts.1.weight`,
`keypoint_head.deconv_layers.4.running_var`, `proto_head.neck.downsample.0.weight`, ...); the forward pass is the
official one in eval mode: fused qkv with scale head_dim**-0.5 and softmax, exact GELU, LayerNorm eps 1e-6, patch
embedding with 2 pixels of padding, position embeddings whose class-token slot is added to every patch, the MoE FFN
(fc2 to D − P, the dataset's expert to P, concatenated), heads of ConvTranspose2d(4, 2, 1) + BN + ReLU twice and a 1x1
conv, and PoseBH's proto head (deconvolutions, a SiLU residual block, conv3x3 → BN → SiLU → conv1x1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


class PatchEmbed(nn.Module):
  """Conv p×p, stride p, zero padding `padding`; (N, 3, H, W) → tokens (N, h·w, D) and the grid (h, w)."""

  def __init__(self, width: int, patch: int, padding: int):
    super().__init__()
    self.proj = nn.Conv2d(3, width, patch, stride=patch, padding=padding)

  def forward(self, x):
    x = self.proj(x)
    return x.flatten(2).transpose(1, 2), x.shape[2:]


class Attention(nn.Module):
  """Fused-qkv multi-head self-attention; (N, T, D) → (N, T, D)."""

  def __init__(self, width: int, heads: int):
    super().__init__()
    self.heads = heads
    self.scale = (width // heads) ** -0.5
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    n, t, d = x.shape
    q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
  """fc1 → GELU → fc2 (D − P) concatenated with the dataset's expert (P); plain fc2 (D) without experts.
  Input (N, T, D) and the per-example dataset index (N,)."""

  def __init__(self, width: int, hidden: int, num_experts: int, part: int):
    super().__init__()
    self.fc1 = nn.Linear(width, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, width - part if num_experts else width)
    if num_experts:
      self.experts = nn.ModuleList(nn.Linear(hidden, part) for _ in range(num_experts))

  def forward(self, x, dataset):
    x = self.act(self.fc1(x))
    if not hasattr(self, 'experts'):
      return self.fc2(x)
    expert = sum(e(x) * (dataset == i).view(-1, 1, 1) for i, e in enumerate(self.experts))
    return torch.cat([self.fc2(x), expert], dim=-1)


class Block(nn.Module):
  """Pre-norm transformer block."""

  def __init__(self, width, heads, mlp_ratio, num_experts, part):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = Attention(width, heads)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = Mlp(width, int(width * mlp_ratio), num_experts, part)

  def forward(self, x, dataset):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x), dataset)


class ViT(nn.Module):
  """ViTPose's backbone: (N, 3, H, W) normalised images and dataset indices (N,) → features (N, D, h, w)."""

  def __init__(self, image_size, width=32, depth=2, heads=2, patch=8, mlp_ratio=4.0, num_experts=0, part=0, padding=2):
    super().__init__()
    self.patch_embed = PatchEmbed(width, patch, padding)
    tokens = (image_size[0] // patch) * (image_size[1] // patch)
    self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, width) * 0.1)
    self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, num_experts, part) for _ in range(depth))
    self.last_norm = nn.LayerNorm(width, eps=1e-6)

  def forward(self, x, dataset):
    x, (h, w) = self.patch_embed(x)
    x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
    for block in self.blocks:
      x = block(x, dataset)
    return self.last_norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)


def deconv_layers(in_channels: int, channels: int, num: int = 2) -> nn.Sequential:
  """[ConvTranspose2d(4, stride 2, padding 1, no bias), BatchNorm2d, ReLU] × num."""
  layers = []
  for _ in range(num):
    layers += [
      nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, output_padding=0, bias=False),
      nn.BatchNorm2d(channels),
      nn.ReLU(),
    ]
    in_channels = channels
  return nn.Sequential(*layers)


class HeatmapHead(nn.Module):
  """TopdownHeatmapSimpleHead: deconvolutions then a 1x1 conv to K heatmaps; (N, D, h, w) → (N, K, 4h, 4w)."""

  def __init__(self, in_channels, channels, keypoints):
    super().__init__()
    self.deconv_layers = deconv_layers(in_channels, channels)
    self.final_layer = nn.Conv2d(channels, keypoints, 1)

  def forward(self, x):
    return self.final_layer(self.deconv_layers(x))


class ResBlock(nn.Module):
  """PoseBH's residual block: conv3x3 → BN → SiLU → conv3x3 → BN, plus a (1x1 conv → BN) shortcut, then SiLU."""

  def __init__(self, in_channels, channels):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1)
    self.bn1 = nn.BatchNorm2d(channels)
    self.act = nn.SiLU()
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
    self.bn2 = nn.BatchNorm2d(channels)
    self.downsample = None
    if in_channels != channels:
      self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

  def forward(self, x):
    out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
    return self.act(out + (x if self.downsample is None else self.downsample(x)))


class Prototypes(nn.Module):
  """Holds PoseBH's prototypes (J, M, F) as `prototypes`."""

  def __init__(self, rows, per_keypoint, features):
    super().__init__()
    self.prototypes = nn.Parameter(F.normalize(torch.randn(rows, per_keypoint, features), dim=-1), requires_grad=False)


class ProtoHead(nn.Module):
  """KptProtoHead (neck_type 'res', head_kernel 3, SiLU): (N, D, h, w) → embedding map (N, F, 4h, 4w), not
  normalised."""

  def __init__(self, in_channels, deconv_channels, hidden, features, total_keypoints, per_keypoint, clusters=0):
    super().__init__()
    self.deconv_layers = deconv_layers(in_channels, deconv_channels)
    self.neck = ResBlock(deconv_channels, hidden)
    self.head = nn.Sequential(
      nn.Conv2d(hidden, hidden, 3, 1, 1), nn.BatchNorm2d(hidden), nn.SiLU(), nn.Conv2d(hidden, features, 1)
    )
    self.kpt_prototype = Prototypes(total_keypoints, per_keypoint, features)
    if clusters:
      self.cluster_prototype = Prototypes(clusters, per_keypoint, features)

  def forward(self, x):
    return self.head(self.neck(self.deconv_layers(x)))


class TopDown(nn.Module):
  """ViTPose / ViTPose++ / PoseBH: `keypoint_head` for dataset 0, `associate_keypoint_heads[i]` for dataset i+1, and
  with `proto` (a dict of ProtoHead sizes: deconv_channels, hidden, features, per_keypoint, clusters) a `proto_head`.

  `forward(images (N, 3, H, W) normalised, dataset index)` → heatmaps (N, K_d, h, w) of that dataset's head."""

  def __init__(
    self,
    keypoints,
    image_size=(64, 48),
    width=32,
    depth=2,
    heads=2,
    patch=8,
    mlp_ratio=4.0,
    experts=True,
    part=8,
    head_channels=16,
    proto=None,
  ):
    super().__init__()
    num_experts = len(keypoints) if experts else 0
    self.backbone = ViT(image_size, width, depth, heads, patch, mlp_ratio, num_experts, part if experts else 0)
    self.keypoint_head = HeatmapHead(width, head_channels, keypoints[0])
    self.associate_keypoint_heads = nn.ModuleList(HeatmapHead(width, head_channels, k) for k in keypoints[1:])
    if proto:
      self.proto_head = ProtoHead(width, total_keypoints=sum(keypoints), **proto)

  def heads(self):
    return [self.keypoint_head, *self.associate_keypoint_heads]

  def features(self, images, dataset: int):
    return self.backbone(images, torch.full((images.shape[0],), dataset))

  def forward(self, images, dataset: int):
    return self.heads()[dataset](self.features(images, dataset))


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
  """Gives every BatchNorm random running statistics and affine parameters (so that a conversion that swaps or
  drops them shows), and puts `model` in eval mode. Returns `model`."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
        module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
        module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
        module.bias.copy_(torch.randn(n, generator=generator) * 0.3)
        module.num_batches_tracked.fill_(123)
  return model.eval()


def make_model(keypoints, seed: int = 0, **kwargs) -> TopDown:
  """A TopDown with seeded random weights and random BatchNorm statistics, in eval mode."""
  torch.manual_seed(seed)
  return randomize_batch_norms(TopDown(keypoints, **kwargs), seed)


def state_dict_arrays(model: nn.Module) -> dict:
  """{official name: float32 NumPy array} as `posebh_jax.convert.read_source` gives them (counters int64)."""
  return {
    name: value.detach().numpy().astype(np.float32 if value.is_floating_point() else value.numpy().dtype)
    for name, value in model.state_dict().items()
  }


def save_checkpoint(model: nn.Module, path) -> str:
  """Writes `model` as an official mmpose checkpoint: {'state_dict': ..., 'meta': {...}}. Returns the path."""
  torch.save({'state_dict': model.state_dict(), 'meta': {'mmpose_version': '0.24.0', 'epoch': 210}}, str(path))
  return str(path)


def random_images(count: int, image_size=(64, 48), seed: int = 0) -> np.ndarray:
  """uint8 (count, H, W, 3) random RGB images."""
  return np.random.default_rng(seed).integers(0, 256, (count, *image_size, 3), dtype=np.uint8)


def to_torch_input(images: np.ndarray) -> torch.Tensor:
  """uint8 (N, H, W, 3) → float32 (N, 3, H, W) normalised with ImageNet mean/std, as the model does inside."""
  x = (images.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_heatmaps(model: TopDown, images: np.ndarray, dataset: int) -> np.ndarray:
  """Eval-mode heatmaps of head `dataset` as float32 (N, h, w, K) (channels last, like ours)."""
  with torch.no_grad():
    return model.eval()(to_torch_input(images), dataset).numpy().transpose(0, 2, 3, 1)


def torch_embeddings(model: TopDown, images: np.ndarray, dataset: int) -> np.ndarray:
  """Eval-mode proto-head embedding map (before any normalisation) as float32 (N, h, w, F)."""
  with torch.no_grad():
    return model.eval().proto_head(model.features(to_torch_input(images), dataset)).numpy().transpose(0, 2, 3, 1)


def tiny_config(order=('coco', 'aic'), use_experts: bool = True, posebh: bool = False, **model):
  """`configs/demo.py:tiny` (with `,posebh`) as official ViTPose models are built: patch padding 2, datasets `order`,
  float32; `model` overrides keys of config.model. Matches `make_model`'s defaults (width 32, depth 2, 2 heads,
  patch 8, expert_dim 8, head_channels 16, 64x48 input)."""
  from configs import demo  # pylint: disable=g-import-not-at-top

  config = demo.get_config('tiny,posebh' if posebh else 'tiny')
  config.model.patch_padding = 2
  config.model.use_experts = use_experts
  config.model.update(model)
  config.data.order = tuple(order)
  return config
