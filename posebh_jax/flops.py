"""Analytic model FLOPs and device peaks for TFLOP/s and MFU."""

from __future__ import annotations

from typing import Mapping

import jax

# Dense bf16 peak TFLOP/s per device (vendor datasheets).
PEAK_TFLOPS_BF16 = {
  'H200': 989.0,
  'H100': 989.0,
  'A100': 312.0,
  'L4': 121.0,
  'A10': 125.0,
  'V100': 125.0,
  'TPU v6 lite': 918.0,
  'TPU v5p': 459.0,
  'TPU v5 lite': 197.0,
  'TPU v5': 459.0,
  'TPU v4': 275.0,
  'TPU v3': 123.0,
}


def vit_forward_flops(width: int, depth: int, mlp_ratio: float, tokens: int, patch_size: int) -> float:
  """Forward FLOPs (2 per multiply-add) of the ViT backbone for one image."""
  embed = tokens * patch_size * patch_size * 3 * width
  per_block = tokens * (4 * width * width + 2 * mlp_ratio * width * width) + 2 * tokens * tokens * width
  return 2.0 * (embed + depth * per_block)


def head_forward_flops(width: int, channels: int, num_deconv: int, grid_hw, num_keypoints: int) -> float:
  """Forward FLOPs of one heatmap head (transposed convs 4×4 s2 + 1×1 conv) for one image."""
  h, w = grid_hw
  macs, c_in = 0.0, width
  for _ in range(num_deconv):
    macs += h * w * 16 * c_in * channels  # every input pixel feeds 4×4 outputs
    h, w, c_in = 2 * h, 2 * w, channels
  macs += h * w * c_in * num_keypoints
  return 2.0 * macs


def token_grid(model_config, image_size_hw) -> tuple[int, int]:
  """The backbone's (h, w) token grid for `image_size_hw` (H, W) px with `model_config`'s patch size and padding."""
  pad = 2 * model_config.patch_padding
  return tuple((s + pad - model_config.patch_size) // model_config.patch_size + 1 for s in image_size_hw)


def train_flops_per_batch(
  model_config, image_size_hw, counts: Mapping[str, int], head_flops: Mapping[str, float]
) -> float:
  """Training FLOPs (forward + backward ≈ 3× forward) of one global batch with the given per-dataset counts;
  `head_flops` holds each dataset's head forward FLOPs per example (the head spec's `forward_flops`)."""
  grid = token_grid(model_config, image_size_hw)
  backbone = vit_forward_flops(
    model_config.width, model_config.depth, model_config.mlp_ratio, grid[0] * grid[1], model_config.patch_size
  )
  total = 0.0
  for name, count in counts.items():
    total += count * (backbone + head_flops[name])
  return 3.0 * total


def device_peak_tflops(configured: float = -1.0) -> float:
  """Peak bf16 TFLOP/s of one local device: the configured value if ≥ 0, else looked up; 0 when unknown."""
  if configured >= 0:
    return configured
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_TFLOPS_BF16.items():
    if name.lower() in kind.lower():
      return peak
  return 0.0
