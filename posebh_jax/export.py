"""One dataset's plain model out of a multi-dataset run: a weights-only checkpoint and a serialised JAX function.

  python -m posebh_jax.export --workdir=<run, checkpoint or converted dir> --dataset=<name> --out=<dir>
      [--flip] [--platforms=cpu,cuda] [--overwrite]

The dataset's expert columns are assembled into fc2 and only its head is kept (`pose_model.split_dataset_variables`:
a plain ViT with one head, the same heatmaps as the multi-dataset model gives for that dataset). Writes into <out>:
  config.json, checkpoints/<step>/   the plain model as a weights-only checkpoint of a one-dataset config
                                     (`model.use_experts=False`, `data.order=(name,)`): `inference.Predictor.load`,
                                     `--mode=eval` and `config.init_from` read it;
  model.jax_export                   `jax.export` of uint8 images (batch, H, W, 3) RGB at the input size, any batch
                                     → float32 heatmaps (batch, h, w, K), the weights inside, lowered for
                                     --platforms; with --flip the flip test is part of it;
  model.json                         what decoding the heatmaps needs: input and heatmap sizes, codec, keypoint names,
                                     flip index, box padding, dtype;
  load_exported.py, README.txt       a loader that needs only jax and numpy, and what the files are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from posebh_jax import inference
from posebh_jax.errors import UserError

EXPORT_FILE = 'model.jax_export'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')

LOADER = '''"""Runs the exported model with jax alone: python load_exported.py [batch]"""

import json
import os
import sys

import jax
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, 'model.jax_export'), 'rb') as f:
  exported = jax.export.deserialize(bytearray(f.read()))
meta = json.load(open(os.path.join(here, 'model.json')))
height, width = meta['image_size']
images = np.zeros((int(sys.argv[1]) if len(sys.argv) > 1 else 2, height, width, 3), np.uint8)  # RGB crops
heatmaps = exported.call(images)  # float32 (batch, h, w, K)
print(meta['dataset'], heatmaps.shape, heatmaps.dtype)
'''

README = '''{dataset} ({format}, {k} keypoints) exported from {source} (step {step}) by python -m posebh_jax.export.

config.json, checkpoints/   weights-only checkpoint of the plain one-dataset model:
                            posebh_jax.inference.Predictor.load('{out}') reads it (predict(), heatmaps()).
model.jax_export            jax.export serialisation, weights inside, platforms {platforms}:
                            uint8 (batch, {h}, {w}, 3) RGB crops -> float32 (batch, {hh}, {hw}, {k}) heatmaps{flip}.
model.json                  sizes, codec ({codec}), keypoint names and flip index for decoding.
load_exported.py            loads and runs model.jax_export with only jax and numpy:

    import jax, numpy as np
    with open('model.jax_export', 'rb') as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    heatmaps = exported.call(np.zeros((2, {h}, {w}, 3), np.uint8))   # (2, {hh}, {hw}, {k}) float32

Crops: the person box padded x{padding} and widened to {w}:{h}, warped with the {warp} affine; decode the heatmap
maxima and map them back with the same box geometry (or use Predictor.predict, which does all of it).
'''


def export(
  workdir: str, dataset: str, out: str, flip: bool = False, platforms=('cpu', 'cuda'), overwrite: bool = False
) -> dict:
  """Writes `dataset`'s plain model from the run in `workdir` to `out` (see the module doc; an earlier export there
  is replaced only with `overwrite`). Returns {'checkpoints': directory, 'export': path, 'bytes': size of the
  serialised function, 'platforms': lowered platforms}."""
  out = os.path.abspath(out)
  if os.path.isfile(out):
    raise UserError(f'--out={out} is a file; pass a directory')
  previous = os.path.join(out, 'checkpoints')
  if os.path.isdir(previous) and os.listdir(previous) and not overwrite:
    raise UserError(f'--out={out} already holds a checkpoint; pass --overwrite to replace it')
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise UserError(f"--platforms: unknown {', '.join(unknown) or '(none given)'}; use some of {', '.join(PLATFORMS)}")
  try:
    import flatbuffers  # noqa: F401  (jax.export's serialisation needs it)
  except ImportError:
    raise UserError(
      'serialising a jax.export function needs the flatbuffers package: pip install flatbuffers'
    ) from None
  predictor = inference.Predictor.load(workdir)
  if inference.run_directory(workdir) == out:
    raise UserError(f'--out={out} is the run being exported; pass another directory')
  single = predictor.single_dataset(dataset)
  task = single.tasks[dataset]
  if not hasattr(task, 'codec'):
    raise UserError(f"dataset '{dataset}' is a {task.kind} task; export serves heatmap heads")
  if os.path.isdir(previous):
    shutil.rmtree(previous)
  directory = inference.write_weights(out, single.config, single.variables, step=predictor.step)
  exported = single.export_function(dataset, flip=flip, platforms=platforms)
  path = os.path.join(out, EXPORT_FILE)
  serialised = exported.serialize()
  with open(path, 'wb') as f:
    f.write(serialised)
  config = single.config
  (image_h, image_w), (heat_h, heat_w) = config.data.image_size, config.data.heatmap_size
  fmt = task.format
  meta = {
    'dataset': dataset,
    'format': fmt.name,
    'num_keypoints': fmt.num_keypoints,
    'keypoint_names': list(fmt.keypoint_names),
    'flip_index': [int(i) for i in fmt.flip_index],
    'image_size': [int(image_h), int(image_w)],
    'heatmap_size': [int(heat_h), int(heat_w)],
    'codec': task.codec.name,
    'use_udp': bool(task.codec.use_udp),
    'bbox_padding': float(config.data.bbox_padding),
    'flip_test_included': bool(flip),
    'dtype': config.model.dtype,
    'platforms': list(exported.platforms),
    'source': inference.run_directory(workdir),
    'step': int(predictor.step),
  }
  with open(os.path.join(out, 'model.json'), 'w') as f:
    json.dump(meta, f, indent=2)
  with open(os.path.join(out, 'load_exported.py'), 'w') as f:
    f.write(LOADER)
  with open(os.path.join(out, 'README.txt'), 'w') as f:
    f.write(
      README.format(
        dataset=dataset,
        format=fmt.name,
        k=fmt.num_keypoints,
        source=meta['source'],
        step=meta['step'],
        out=os.path.abspath(out),
        platforms=', '.join(meta['platforms']),
        h=image_h,
        w=image_w,
        hh=heat_h,
        hw=heat_w,
        flip=' (flip test included)' if flip else '',
        codec=task.codec.name,
        padding=meta['bbox_padding'],
        warp='UDP' if task.codec.use_udp else 'classic top-down',
      )
    )
  return {'checkpoints': directory, 'export': path, 'bytes': len(serialised), 'platforms': meta['platforms']}


def main(argv=None) -> int:
  """The command; returns the exit status (2 with a one-line `error: ...` for a user error)."""
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.export', description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a run, checkpoints/<step>, or a converted dir')
  parser.add_argument('--dataset', required=True, help="the dataset (a name of the run's data.order) to export")
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--flip', action='store_true', help='bake the flip test into the exported function')
  parser.add_argument('--platforms', default='cpu,cuda', help=f"lowering platforms, of {', '.join(PLATFORMS)}")
  parser.add_argument('--overwrite', action='store_true', help='replace an earlier export in --out')
  args = parser.parse_args(argv)
  try:
    platforms = tuple(p.strip() for p in args.platforms.split(',') if p.strip())
    summary = export(args.workdir, args.dataset, args.out, args.flip, platforms, args.overwrite)
  except UserError as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  print(
    f"exported {args.dataset}: checkpoint {summary['checkpoints']}, function {summary['export']} "
    f"({summary['bytes'] / 2**20:.1f} MiB, {', '.join(summary['platforms'])})"
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
