"""Every training head's skeleton on the same validation image, side by side.

  python -m posebh_jax.viz.formats --workdir=DIR [--out=DIR/viz/formats_step<step>.png] [--rows=coco,ap10k]
      [--min_score=0.2] [--panel_height=256] [--data_dir=...]

One row per image: the first validation example of each dataset named in --rows (default: the first human and the
first animal dataset of the run), cropped as that dataset's evaluation crops it. One panel per training head (in
config.data.order): the crop with that head's predicted keypoints (score > --min_score) and its format's links in
the registry's colours (left / right / centre), labelled with the dataset's name and K. The multi-dataset model
runs each head with its own expert, as the split model serves it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Mapping, Sequence

import cv2
import jax
import numpy as np

from data_pipeline import pipeline
from posebh_jax import checkpoint
from posebh_jax import codecs
from posebh_jax import skeletons
from posebh_jax import workdir as workdir_lib
from posebh_jax.models import pose_model
from posebh_jax.viz import common


def heatmap_to_crop(coords: np.ndarray, heatmap_size_wh, input_size_wh, codec: str) -> np.ndarray:
  """Heatmap px (…, 2) → model-input (crop) px with codec `codec` ('udp' | 'msra', see
  `HeatmapCodec.heatmap_to_input_scale`)."""
  coords = np.asarray(coords, np.float64)
  return coords * codecs.get_codec(codec).heatmap_to_input_scale(heatmap_size_wh, input_size_wh)


def draw_skeleton(panel: np.ndarray, xy: np.ndarray, shown: np.ndarray, fmt, radius: int = 3) -> None:
  """Draws `fmt`'s links between shown keypoints and the shown keypoints (in place; RGB panel)."""
  point = lambda k: (int(round(xy[k, 0])), int(round(xy[k, 1])))
  for (a, b), colour in zip(fmt.links, fmt.link_colors):
    if shown[a] and shown[b]:
      cv2.line(panel, point(a), point(b), colour, 2, cv2.LINE_AA)
  for k in np.flatnonzero(shown):
    cv2.circle(panel, point(k), radius, fmt.keypoint_colors[k], -1, cv2.LINE_AA)
    cv2.circle(panel, point(k), radius, (0, 0, 0), 1, cv2.LINE_AA)


def render(
  predict: Callable[[np.ndarray], Mapping[str, np.ndarray]],
  heads: Sequence[tuple[str, str, str]],
  rows: Sequence[tuple[str, np.ndarray]],
  heatmap_size_hw,
  panel_height: int = 256,
  min_score: float = 0.2,
) -> np.ndarray:
  """The formats picture as an RGB uint8 array of (len(rows)·panel_height, len(heads)·panel_width, 3).

  Args:
    predict: crops uint8 (n, H, W, 3) → {head name: heatmaps (n, h, w, K)} for every head.
    heads: [(head / dataset name, skeleton format, codec 'udp' | 'msra')] in panel order.
    rows: [(caption, crop uint8 (H, W, 3))], one row each; all crops of the model's input size.
    heatmap_size_hw: (h, w); panel_height: pixels per row (panel_width keeps the crop's aspect ratio);
    min_score: keypoints at or below this heatmap maximum are not drawn.
  """
  crops = np.stack([np.asarray(crop, np.uint8) for _, crop in rows])
  height, width = crops.shape[1:3]
  panel_width = int(round(panel_height * width / height))
  zoom = np.array([panel_width / width, panel_height / height])
  outputs = predict(crops)
  heat_h, heat_w = heatmap_size_hw
  canvas = np.zeros((len(rows) * panel_height, len(heads) * panel_width, 3), np.uint8)
  for c, (name, format_name, codec) in enumerate(heads):
    fmt = skeletons.get_format(format_name)
    heatmaps = np.asarray(outputs[name], np.float32).transpose(0, 3, 1, 2)
    coords, scores = codecs.get_codec(codec).decode(heatmaps)
    xy = heatmap_to_crop(coords, (heat_w, heat_h), (width, height), codec)
    for r, (caption, _) in enumerate(rows):
      panel = cv2.resize(crops[r], (panel_width, panel_height), interpolation=cv2.INTER_LINEAR)
      draw_skeleton(
        panel, (xy[r] + 0.5) * zoom - 0.5, scores[r] > min_score, fmt, radius=2 if fmt.num_keypoints > 40 else 3
      )
      common.label(panel, f'{name} head (K={fmt.num_keypoints})', (0, 0))
      if c == 0:
        common.label(panel, caption, (0, panel_height - 20), 0.4, (255, 255, 0))
      canvas[r * panel_height : (r + 1) * panel_height, c * panel_width : (c + 1) * panel_width] = panel
  return canvas


def default_rows(config) -> tuple[str, ...]:
  """The first human and the first animal dataset of the run (or its first dataset)."""
  picked = {}
  for name in config.data.order:
    picked.setdefault(skeletons.get_format(config.data.datasets[name].format).category, name)
  rows = tuple(picked[c] for c in ('human', 'animal') if c in picked)
  return rows or tuple(config.data.order[:1])


def first_eval_crop(config, name: str) -> tuple[np.ndarray, int]:
  """(crop uint8 (H, W, 3), image id) of the first validation example of dataset `name`."""
  batch = next(pipeline.make_eval_iterator(config.data, name, 1))
  return np.asarray(batch['image'][0]), int(batch['image_id'][0])


def model_predict(config, variables) -> Callable[[np.ndarray], dict]:
  """crops (n, H, W, 3) → every head's heatmaps, one jit'd forward of the multi-dataset model (no flip test)."""
  names = tuple(config.data.order)
  sizes = [skeletons.get_format(config.data.datasets[n].format).num_keypoints for n in names]
  model = pose_model.build_model(config.model, names, sizes, num_groups=1, experts=pose_model.dataset_experts(config))
  params = {k: v for k, v in variables['params'].items() if k != 'embedding'}
  stats = {k: v for k, v in variables.get('batch_stats', {}).items() if k != 'embedding'}
  forward = jax.jit(lambda v, crops: model.apply(v, {n: crops for n in names}, train=False))
  return lambda crops: jax.device_get(forward({'params': params, 'batch_stats': stats}, crops))


def draw_state(
  config, state, out: str, rows: Sequence[str] = (), min_score: float = 0.2, panel_height: int = 256
) -> str:
  """Draws the picture for a train state (params, batch_stats) of a run with `config` and writes it to `out`;
  returns the path. Raises ValueError for rows the run does not train."""
  rows = tuple(rows) or default_rows(config)
  unknown = [r for r in rows if r not in config.data.order]
  if unknown:
    raise ValueError(f'--rows names {unknown}, which the run does not train; use some of {tuple(config.data.order)}')
  crops = []
  for name in rows:
    crop, image_id = first_eval_crop(config, name)
    crops.append((f'{name} validation image {image_id}', crop))
  heads = [(n, config.data.datasets[n].format, config.data.datasets[n].codec) for n in config.data.order]
  image = render(model_predict(config, state), heads, crops, config.data.heatmap_size, panel_height, min_score)
  return common.write_png(out, image)


def draw_workdir(
  workdir: str,
  out: str | None = None,
  rows: Sequence[str] = (),
  min_score: float = 0.2,
  panel_height: int = 256,
  data_dir: str | None = None,
) -> str:
  """Restores the latest checkpoint of `workdir`, draws the picture and writes it (default
  DIR/viz/formats_step<step>.png); returns its path."""
  config = workdir_lib.load_run_config(workdir, hint='pass the --workdir of a training run')
  if data_dir:
    config.data.data_dir = data_dir
  state, step = checkpoint.read_state(workdir)
  out = out or os.path.join(workdir, 'viz', f'formats_step{step}.png')
  return draw_state(config, state, out, rows, min_score, panel_height)


def main(argv=None) -> int:
  """Command-line entry point; returns the exit status (0 ok, 2 user error)."""
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.viz.formats', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='workdir of a training run (config.json, checkpoints/)')
  parser.add_argument('--out', default=None, help='output PNG (default: DIR/viz/formats_step<step>.png)')
  parser.add_argument('--rows', default='', help='comma-separated datasets whose first validation image is a row')
  parser.add_argument('--min_score', type=float, default=0.2, help='draw keypoints scoring above this')
  parser.add_argument('--panel_height', type=int, default=256, help='pixels per row')
  parser.add_argument('--data_dir', default=None, help='tfds data directory (default: the run\'s)')
  args = parser.parse_args(argv)
  try:
    path = draw_workdir(
      args.workdir,
      args.out,
      tuple(filter(None, args.rows.split(','))),
      args.min_score,
      args.panel_height,
      args.data_dir,
    )
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
