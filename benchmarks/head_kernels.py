"""Forward + backward time of the model's convolution-shaped layers against flax's own convolutions, same run.

  python -m benchmarks.head_kernels [--repeats=N] [--shapes=demo,b16]

The heatmap head's 4×4 stride-2 deconvolutions are computed as per-phase window matmuls (`heatmap_head.Deconv4x4Stride2`)
and the patch embedding as reshape + matmul (`vit.PatchEmbed`); the references are `nn.ConvTranspose` (kernel 4,
stride 2, SAME: the same output size and multiply-adds) and `nn.Conv` (kernel = stride = 16). Prints the median
milliseconds of one jit'd gradient evaluation (w.r.t. parameters and input; parameters only for the patch
embedding, as in training) and the ratio reference / ours (> 1: ours is faster), interleaving the two so that
both see the same machine load.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.models import heatmap_head, vit

# name: (examples, feature grid h, w, backbone width, head channels, image H, W)
SHAPES = {
  'demo': [(18, 8, 6, 192, 64, 128, 96), (6, 8, 6, 192, 64, 128, 96)],
  'b16': [(8, 16, 12, 768, 256, 256, 192)],
}


class _ReferenceUpsampler(nn.Module):
  """The deconvolution stack with flax's nn.ConvTranspose (timing reference)."""

  channels: int

  @nn.compact
  def __call__(self, x):
    for index in range(2):
      x = nn.ConvTranspose(
        self.channels, (4, 4), strides=(2, 2), padding='SAME', use_bias=False, name=f'deconv_{index}'
      )(x)
      x = nn.relu(nn.BatchNorm(use_running_average=False, name=f'bn_{index}')(x))
    return x


class _OurUpsampler(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    return heatmap_head.Upsampler(self.channels, 2, name='upsample')(x, train=True)


def _gradient_fn(module, x, wrt_input: bool = True):
  variables = module.init(jax.random.key(0), x)
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params, x):
    out = module.apply({'params': params, **rest}, x, mutable=list(rest))
    out = out[0] if isinstance(out, tuple) else out
    return jnp.mean(jnp.square(out))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1) if wrt_input else 0))
  return lambda: jax.block_until_ready(grad(params, x))


def _time_pair(ours, reference, repeats: int) -> tuple[float, float]:
  ours(), reference()  # compile
  ours(), reference()
  ours_times, reference_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    ours()
    ours_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    reference()
    reference_times.append(time.perf_counter() - start)
  return float(np.median(ours_times)) * 1e3, float(np.median(reference_times)) * 1e3


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--shapes', default='demo,b16', help=f'comma-separated: {", ".join(SHAPES)}')
  args = parser.parse_args(argv)
  print(f'device: {jax.devices()[0].device_kind} | forward + backward, median of {args.repeats}')
  for shape_name in args.shapes.split(','):
    if shape_name not in SHAPES:
      raise SystemExit(f'unknown --shapes entry {shape_name!r}; choose from {sorted(SHAPES)}')
    for n, h, w, width, channels, height, image_w in SHAPES[shape_name]:
      features = jax.random.normal(jax.random.key(1), (n, h, w, width))
      ours, reference = _time_pair(
        _gradient_fn(_OurUpsampler(channels), features),
        _gradient_fn(_ReferenceUpsampler(channels), features),
        args.repeats,
      )
      print(
        f'{shape_name}: deconvolution stack ({n}, {h}, {w}, {width}) -> {channels} ch: ours {ours:.1f} ms, '
        f'nn.ConvTranspose {reference:.1f} ms, ratio {reference / ours:.2f}'
      )
      images = jax.random.uniform(jax.random.key(2), (n, height, image_w, 3)) * 255
      ours, reference = _time_pair(
        _gradient_fn(vit.PatchEmbed(width, 16, 2), images, wrt_input=False),  # images need no gradient
        _gradient_fn(nn.Conv(width, (16, 16), strides=(16, 16), padding=[(2, 2), (2, 2)]), images, wrt_input=False),
        args.repeats,
      )
      print(
        f'{shape_name}: patch embedding ({n}, {height}, {image_w}, 3) -> {width}: ours {ours:.1f} ms, '
        f'nn.Conv {reference:.1f} ms, ratio {reference / ours:.2f}'
      )


if __name__ == '__main__':
  main()
