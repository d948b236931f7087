"""The keypoint prototypes of a PoseBH run in 2D, coloured by dataset (like the PoseBH supplement's Figure 5).

  python -m posebh_jax.viz.prototypes --workdir=DIR [--out=DIR/viz/prototypes_<method>.png] [--method=pca|tsne]

Restores the prototypes (J, M, F) of the latest checkpoint in DIR, projects all J·M of them to 2D and draws one dot
per prototype in its dataset's colour, with a legend (dataset, K × M). PCA is the plain linear projection of the
(unit-norm) prototypes onto their first two principal axes. t-SNE (NumPy, exact gradient) uses the distance the
model uses: prototypes c and −c give the same similarity |cos|, so the squared distance is
min(‖a − b‖², ‖a + b‖²) = 2 − 2|cos(a, b)|.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

from posebh_jax import checkpoint
from posebh_jax import skeletons
from posebh_jax import workdir as workdir_lib
from posebh_jax.viz import common

METHODS = ('pca', 'tsne')


# ------------------------------------------------------------------------------------------------ projections
def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projection of `points` (N, F) onto their first two principal axes: (N, 2) coordinates of the centred points
  and the explained variance ratio of the two axes (2,). Each axis is signed so that its largest-magnitude
  coordinate is positive (deterministic output)."""
  x = np.asarray(points, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f'pca_2d needs (N >= 2, F) points, got shape {x.shape}')
  centred = x - x.mean(axis=0)
  _, singular, vt = np.linalg.svd(centred, full_matrices=False)
  axes = np.zeros((2, x.shape[1]))
  axes[: min(2, len(vt))] = vt[:2]
  projected = centred @ axes.T
  for a in range(2):
    if projected[np.argmax(np.abs(projected[:, a])), a] < 0:
      projected[:, a] *= -1.0
  variance = np.square(singular)
  ratio = np.zeros(2)
  ratio[: min(2, len(variance))] = variance[:2] / max(variance.sum(), 1e-300)
  return projected, ratio


def sign_invariant_sq_distances(points: np.ndarray) -> np.ndarray:
  """(N, N) squared distances 2 − 2|cos| between the rows of `points` (normalised here): the squared Euclidean
  distance between a and the nearer of ±b."""
  x = np.asarray(points, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  d = 2.0 - 2.0 * np.abs(x @ x.T)
  np.fill_diagonal(d, 0.0)
  return np.maximum(d, 0.0)


def _conditional_probabilities(
  sq_distances: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 100
) -> np.ndarray:
  """Rows p_{j|i} ∝ exp(−β_i d_ij) with β_i found by bisection so that each row's entropy is log(perplexity)."""
  n = len(sq_distances)
  target = np.log(perplexity)
  p = np.zeros((n, n))
  for i in range(n):
    d = np.delete(sq_distances[i], i)
    d = d - d.min()
    beta, low, high = 1.0, 0.0, np.inf
    for _ in range(steps):
      w = np.exp(-beta * d)
      total = w.sum()
      row = w / total
      entropy = beta * np.sum(row * d) + np.log(total)
      if abs(entropy - target) < tol:
        break
      if entropy > target:  # too flat: sharpen
        low = beta
        beta = beta * 2.0 if high == np.inf else 0.5 * (beta + high)
      else:
        high = beta
        beta = 0.5 * (beta + low)
    p[i, np.arange(n) != i] = row
  return p


def tsne_2d(
  points: np.ndarray,
  perplexity: float = 30.0,
  iterations: int = 750,
  seed: int = 0,
  sq_distances: np.ndarray | None = None,
) -> np.ndarray:
  """Exact t-SNE (van der Maaten & Hinton 2008) of `points` (N, F) to (N, 2).

  Affinities from `sq_distances` (default: `sign_invariant_sq_distances`); perplexity clipped to (N − 1)/3;
  early exaggeration 12 for the first 250 iterations, momentum 0.5 then 0.8, learning rate max(N/48, 50), per-
  coordinate gains; initialised with seeded N(0, 1e-4²) coordinates.
  """
  x = np.asarray(points, np.float64)
  n = len(x)
  if n < 4:
    raise ValueError(f't-SNE needs at least 4 points, got {n}')
  d = sign_invariant_sq_distances(x) if sq_distances is None else np.asarray(sq_distances, np.float64)
  p = _conditional_probabilities(d, min(perplexity, (n - 1) / 3.0))
  p = np.maximum((p + p.T) / (2.0 * n), 1e-12)
  # A random start (the original t-SNE's): a PCA start would place c and −c, one prototype for |cos|, apart.
  y = 1e-4 * np.random.default_rng(seed).standard_normal((n, 2))
  update, gains = np.zeros_like(y), np.ones_like(y)
  lr = max(n / 48.0, 50.0)
  for it in range(iterations):
    exaggeration, momentum = (12.0, 0.5) if it < 250 else (1.0, 0.8)
    diff = y[:, None, :] - y[None, :, :]
    num = 1.0 / (1.0 + np.sum(np.square(diff), axis=-1))
    np.fill_diagonal(num, 0.0)
    q = np.maximum(num / num.sum(), 1e-12)
    grad = 4.0 * np.einsum('ij,ijk->ik', (exaggeration * p - q) * num, diff)
    same_sign = np.sign(grad) == np.sign(update)
    gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
    update = momentum * update - lr * gains * grad
    y = y + update
    y = y - y.mean(axis=0)
  return y


def project(points: np.ndarray, method: str = 'pca', seed: int = 0) -> tuple[np.ndarray, str]:
  """(N, 2) projection by `method` ('pca' | 'tsne') and a short description for the title."""
  if method == 'pca':
    projected, ratio = pca_2d(points)
    return projected, f'PCA ({100 * ratio[0]:.0f}% + {100 * ratio[1]:.0f}% of the variance)'
  if method == 'tsne':
    return tsne_2d(points, seed=seed), 't-SNE on 2 - 2|cos|'
  raise ValueError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------------ drawing
def render(
  projected: np.ndarray,
  groups: list[tuple[str, int]],
  per_keypoint: int,
  title: str,
  size: tuple[int, int] = (1000, 720),
  legend_width: int = 240,
  radius: int = 4,
) -> np.ndarray:
  """Scatter plot of `projected` (J·M, 2), rows grouped by dataset: `groups` [(name, K)] in order, each K·M rows.

  Returns an RGB uint8 image of `size` (width, height): the plot on the left (aspect-preserving), the legend in the
  rightmost `legend_width` pixels (dataset i in `common.colour(i)`, with K × M), the title on top.
  """
  width, height = size
  total = sum(k for _, k in groups) * per_keypoint
  if len(projected) != total:
    raise ValueError(f'{len(projected)} projected points but the groups {groups} hold {total} prototypes')
  canvas = np.full((height, width, 3), 255, np.uint8)
  top, margin = 36, 24
  plot_w, plot_h = width - legend_width - 2 * margin, height - top - margin
  cv2.rectangle(canvas, (margin - 1, top - 1), (margin + plot_w, top + plot_h), (200, 200, 200), 1)
  low, high = projected.min(axis=0), projected.max(axis=0)
  span = float(max(np.max(high - low), 1e-12))
  scale = min((plot_w - 2 * radius - 2) / span, (plot_h - 2 * radius - 2) / span)
  centre = 0.5 * (low + high)
  xy = (projected - centre) * scale
  xy[:, 1] *= -1.0  # y up
  xy += np.array([margin + plot_w / 2.0, top + plot_h / 2.0])
  labels = np.repeat(np.arange(len(groups)), [k * per_keypoint for _, k in groups])
  # Draw in a fixed shuffled order so that no dataset systematically hides another.
  for index in np.random.default_rng(0).permutation(total):
    point = (int(round(xy[index, 0])), int(round(xy[index, 1])))
    cv2.circle(canvas, point, radius, common.colour(int(labels[index])), -1, cv2.LINE_AA)
  common.label(canvas, title, (margin, 8), 0.5, (0, 0, 0), (255, 255, 255))
  x0 = width - legend_width + 8
  for i, (name, k) in enumerate(groups):
    y = top + 10 + 26 * i
    cv2.circle(canvas, (x0 + 8, y + 8), 7, common.colour(i), -1, cv2.LINE_AA)
    cv2.putText(
      canvas, f'{name}  ({k} x {per_keypoint})', (x0 + 22, y + 13), common.FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA
    )
  return canvas


def dataset_groups(config, num_keypoints_total: int) -> list[tuple[str, int]]:
  """[(dataset, K)] in the run's global keypoint order (config.data.order); one 'prototypes' group when the
  config does not account for all J rows."""
  groups = [(name, skeletons.get_format(config.data.datasets[name].format).num_keypoints) for name in config.data.order]
  if sum(k for _, k in groups) != num_keypoints_total:
    return [('prototypes', num_keypoints_total)]
  return groups


def draw_workdir(workdir: str, out: str | None = None, method: str = 'pca', seed: int = 0) -> str:
  """Restores the latest prototypes of `workdir` and writes the picture; returns its path. Raises
  FileNotFoundError (no checkpoint / config) and ValueError (no prototypes, bad method)."""
  if method not in METHODS:
    raise ValueError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
  config = workdir_lib.load_run_config(workdir, hint='pass the --workdir of a training run')
  state, step = checkpoint.read_state(workdir)
  prototypes = (state.get('extra') or {}).get('prototypes')
  if prototypes is None:
    raise ValueError(f'the checkpoint of {workdir} has no prototypes (not a PoseBH run: config.posebh.enabled)')
  prototypes = np.asarray(prototypes, np.float64)
  num_keypoints, per_keypoint, dim = prototypes.shape
  projected, how = project(prototypes.reshape(-1, dim), method, seed)
  title = f'{num_keypoints} x {per_keypoint} prototypes (F={dim}) at step {step}: {how}'
  image = render(projected, dataset_groups(config, num_keypoints), per_keypoint, title)
  out = out or os.path.join(workdir, 'viz', f'prototypes_{method}.png')
  return common.write_png(out, image)


def main(argv=None) -> int:
  """Command-line entry point; returns the exit status (0 ok, 2 user error)."""
  parser = argparse.ArgumentParser(prog='python -m posebh_jax.viz.prototypes', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='workdir of a PoseBH run (config.json, checkpoints/)')
  parser.add_argument('--out', default=None, help='output PNG (default: DIR/viz/prototypes_<method>.png)')
  parser.add_argument('--method', default='pca', choices=METHODS, help='2D projection')
  parser.add_argument('--seed', type=int, default=0, help='t-SNE seed')
  args = parser.parse_args(argv)
  try:
    path = draw_workdir(args.workdir, args.out, args.method, args.seed)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
