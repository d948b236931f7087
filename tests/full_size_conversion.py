"""The converter at full size (not part of `make test`, a few minutes on 2 CPU cores): official-layout ViTPose++-B,
ViTPose-B and PoseBH-B checkpoints written by tests/torch_vitpose.py (random weights and BatchNorm statistics, 256x192,
the official six datasets), converted by `python -m posebh_jax.convert` with configs/b16.py, compared with PyTorch's
eval-mode heatmaps on every head.

  PYTHONPATH=.:tests python tests/full_size_conversion.py [--out=DIR]

Prints one line per model: conversion seconds, the largest heatmap difference per dataset, and a JSON summary.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch_vitpose as tv

from posebh_jax.inference import Predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')
KEYPOINTS = (17, 14, 16, 17, 17, 133)
B16 = dict(image_size=(256, 192), width=768, depth=12, heads=12, patch=16, part=192, head_channels=256)
POSEBH = dict(deconv_channels=256, hidden=64, features=64, per_keypoint=3, clusters=96)


def _convert(checkpoint: str, out: str, *overrides: str) -> float:
  start = time.perf_counter()
  result = subprocess.run(
    [sys.executable, '-m', 'posebh_jax.convert', f'--from={checkpoint}', f'--to={out}', *overrides],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=REPO),
    capture_output=True,
    text=True,
  )
  print(result.stdout.strip())
  if result.returncode:
    raise SystemExit(result.stderr[-2000:])
  return time.perf_counter() - start


def _check(name: str, model, datasets, out: str, seconds: float) -> dict:
  predictor = Predictor.load(out)
  images = tv.random_images(2, B16['image_size'], seed=1)
  differences = {}
  for index, dataset in enumerate(datasets):
    ours = predictor.heatmaps(images, dataset)
    theirs = tv.torch_heatmaps(model, images, index)
    differences[dataset] = float(np.max(np.abs(ours - theirs)))
  print(
    f'{name}: converted in {seconds:.1f} s; max |heatmap difference| '
    + ', '.join(f'{d} {v:.1e}' for d, v in differences.items())
  )
  return {'model': name, 'convert_s': round(seconds, 1), 'max_difference': differences}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=None, help='directory for the checkpoints (default: a temporary one)')
  args = parser.parse_args()
  root = args.out or tempfile.mkdtemp(prefix='full_size_conversion_')
  os.makedirs(root, exist_ok=True)
  summary = []
  float32 = '--config.model.dtype=float32'

  vitpp = tv.make_model(KEYPOINTS, seed=0, **B16)
  path = tv.save_checkpoint(vitpp, os.path.join(root, 'vitpp_b.pth'))
  seconds = _convert(path, os.path.join(root, 'vitpp_b'), '--config=configs/b16.py', float32)
  summary.append(_check('ViTPose++-B', vitpp, DATASETS, os.path.join(root, 'vitpp_b'), seconds))
  del vitpp

  single = tv.make_model(KEYPOINTS[:1], seed=1, experts=False, **B16)
  path = tv.save_checkpoint(single, os.path.join(root, 'vitpose_b.pth'))
  seconds = _convert(
    path,
    os.path.join(root, 'vitpose_b'),
    '--config=configs/b16.py',
    float32,
    '--config.model.use_experts=False',
    '--config.data.order=coco',
  )
  summary.append(_check('ViTPose-B (COCO)', single, DATASETS[:1], os.path.join(root, 'vitpose_b'), seconds))
  del single

  posebh = tv.make_model(KEYPOINTS, seed=2, proto=POSEBH, **B16)
  path = tv.save_checkpoint(posebh, os.path.join(root, 'posebh_b.pth'))
  seconds = _convert(path, os.path.join(root, 'posebh_b'), '--config=configs/b16.py:method=posebh', float32)
  summary.append(_check('PoseBH-B', posebh, DATASETS, os.path.join(root, 'posebh_b'), seconds))
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
