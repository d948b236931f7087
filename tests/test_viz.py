"""Pictures: the 2D prototype projection (PCA against an eigen-decomposition reference, t-SNE on separable
clusters), the prototype picture and the per-head formats picture, on arrays and on a tiny trained PoseBH run."""

import os

import cv2
import numpy as np
import pytest

from posebh_jax import skeletons
from posebh_jax.viz import common
from posebh_jax.viz import formats as formats_viz
from posebh_jax.viz import prototypes as proto_viz


def _match_up_to_sign(actual, expected, **tol):
  for a in range(expected.shape[1]):
    sign = np.sign(np.dot(actual[:, a], expected[:, a])) or 1.0
    np.testing.assert_allclose(sign * actual[:, a], expected[:, a], **tol)


def test_pca_of_known_planar_points():
  """Points t·u + s·v (+ an offset) with var(t) > var(s): the PCA coordinates are the centred t and s."""
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
  u, v = basis[:, 0], basis[:, 1]
  t, s = rng.normal(0, 3.0, 40), rng.normal(0, 1.0, 40)
  t, s = t - t.mean(), s - s.mean()
  s -= t * np.dot(s, t) / np.dot(t, t)  # uncorrelated in the sample: u and v are exactly the principal axes
  points = t[:, None] * u + s[:, None] * v + rng.normal(size=6)
  projected, ratio = proto_viz.pca_2d(points)
  _match_up_to_sign(projected, np.stack([t - t.mean(), s - s.mean()], axis=1), atol=1e-9)
  np.testing.assert_allclose(ratio, [t.var() / (t.var() + s.var()), s.var() / (t.var() + s.var())], rtol=1e-9)


def test_pca_matches_covariance_eigenvectors():
  rng = np.random.default_rng(1)
  protos = rng.normal(size=(7, 3, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
  protos /= np.linalg.norm(protos, axis=-1, keepdims=True)
  x = protos.reshape(-1, 5)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))
  order = np.argsort(eigenvalues)[::-1]
  reference = (x - x.mean(0)) @ eigenvectors[:, order[:2]]
  projected, ratio = proto_viz.pca_2d(x)
  _match_up_to_sign(projected, reference, atol=1e-10)
  np.testing.assert_allclose(ratio, eigenvalues[order[:2]] / eigenvalues.sum(), rtol=1e-9)
  # Deterministic sign: each axis's largest-magnitude coordinate is positive.
  assert all(projected[np.argmax(np.abs(projected[:, a])), a] > 0 for a in range(2))


def test_sign_invariant_distances():
  a = np.array([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
  d = proto_viz.sign_invariant_sq_distances(a)
  np.testing.assert_allclose(d[0, 1], 0.0, atol=1e-12)  # c and -c give the same |cos| similarity
  np.testing.assert_allclose(d[0, 2], 2.0)
  np.testing.assert_allclose(d[0, 3], 2.0 - np.sqrt(2.0))
  np.testing.assert_allclose(d, d.T)


def test_tsne_keeps_clusters_apart():
  """Three tight clusters on the sphere (members randomly sign-flipped, which |cos| ignores) stay separate."""
  rng = np.random.default_rng(2)
  centres = np.linalg.qr(rng.normal(size=(8, 8)))[0][:3]
  labels = np.repeat(np.arange(3), 15)
  points = centres[labels] + 0.05 * rng.normal(size=(45, 8))
  points *= rng.choice([-1.0, 1.0], size=(45, 1))
  y = proto_viz.tsne_2d(points, perplexity=10, iterations=400)
  assert y.shape == (45, 2) and np.all(np.isfinite(y))
  d = np.linalg.norm(y[:, None] - y[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  assert np.all(labels[np.argmin(d, axis=1)] == labels)
  spread = max(np.linalg.norm(y[labels == c] - y[labels == c].mean(0), axis=1).max() for c in range(3))
  gaps = [np.linalg.norm(y[labels == a].mean(0) - y[labels == b].mean(0)) for a, b in ((0, 1), (0, 2), (1, 2))]
  assert min(gaps) > 2 * spread


def test_prototype_picture_size_and_legend():
  rng = np.random.default_rng(3)
  groups = [('coco', 4), ('mpii', 3), ('ap10k', 2)]
  projected = rng.normal(size=(9 * 2, 2))
  image = proto_viz.render(projected, groups, per_keypoint=2, title='test', size=(800, 500), legend_width=200)
  assert image.shape == (500, 800, 3) and image.dtype == np.uint8
  plot, legend = image[:, :600], image[:, 600:]
  for i in range(3):
    colour = np.array(common.colour(i), np.uint8)
    assert np.any(np.all(legend == colour, axis=-1)), f'legend lacks dataset {i}'
    assert np.any(np.all(plot == colour, axis=-1)), f'plot lacks dataset {i}'
  with pytest.raises(ValueError, match='groups'):
    proto_viz.render(projected[:5], groups, 2, 'test')


def _gaussian(h, w, x, y, sigma=1.0):
  yy, xx = np.mgrid[:h, :w]
  return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def test_formats_picture_places_each_heads_keypoint():
  """Fake heads with one confident keypoint each: the panel shows it where the head's codec maps the heatmap
  peak (UDP: ×(W−1)/(w−1), MSRA: ×W/w), scaled to the panel, in the keypoint's colour."""
  crop_h, crop_w, heat_h, heat_w, panel_h = 64, 48, 32, 24, 128
  heads = [('coco', 'coco', 'udp'), ('mpii', 'mpii', 'msra')]
  peaks = {'coco': (0, 7, 11), 'mpii': (9, 15, 20)}  # keypoint index, heatmap x, heatmap y

  def predict(crops):
    out = {}
    for name, fmt in (('coco', 'coco'), ('mpii', 'mpii')):
      k, x, y = peaks[name]
      heatmaps = np.zeros((len(crops), heat_h, heat_w, skeletons.get_format(fmt).num_keypoints), np.float32)
      heatmaps[..., k] = 0.9 * _gaussian(heat_h, heat_w, x, y)
      out[name] = heatmaps
    return out

  rows = [('a', np.full((crop_h, crop_w, 3), 90, np.uint8)), ('b', np.full((crop_h, crop_w, 3), 160, np.uint8))]
  image = formats_viz.render(predict, heads, rows, (heat_h, heat_w), panel_height=panel_h, min_score=0.2)
  panel_w = panel_h * crop_w // crop_h
  assert image.shape == (2 * panel_h, 2 * panel_w, 3)
  zoom = panel_h / crop_h
  for column, (name, fmt, codec) in enumerate(heads):
    k, x, y = peaks[name]
    factor = ((crop_w - 1) / (heat_w - 1), (crop_h - 1) / (heat_h - 1)) if codec == 'udp' else (2.0, 2.0)
    px = int(round((x * factor[0] + 0.5) * zoom - 0.5)) + column * panel_w
    py = int(round((y * factor[1] + 0.5) * zoom - 0.5))
    for row in range(2):
      assert tuple(image[row * panel_h + py, px]) == skeletons.get_format(fmt).keypoint_colors[k], (name, row)
  # Nothing else is drawn: the keypoint colours appear only around the peaks.
  background = image[panel_h + 40 : panel_h + 60, 5:20]
  assert np.all(background == 160)


def test_picture_commands_on_a_posebh_run(posebh_workdir, tmp_path):
  out = tmp_path / 'protos.png'
  assert proto_viz.main([f'--workdir={posebh_workdir}', f'--out={out}']) == 0
  image = cv2.imread(str(out))
  assert image.shape == (720, 1000, 3)
  rgb = image[..., ::-1]
  for i in range(6):  # the six training datasets, in the plot and in the legend
    colour = np.array(common.colour(i), np.uint8)
    assert np.any(np.all(rgb[:, :760] == colour, axis=-1)) and np.any(np.all(rgb[:, 760:] == colour, axis=-1))

  assert formats_viz.main([f'--workdir={posebh_workdir}']) == 0
  path = os.path.join(posebh_workdir, 'viz', 'formats_step2.png')
  image = cv2.imread(path)
  # Rows: the first human (coco) and animal (ap10k) validation images; one 256 x 192 panel per head (64x48 crops).
  assert image.shape == (2 * 256, 6 * 192, 3)


def test_picture_commands_report_user_errors(tmp_path, capsys):
  assert proto_viz.main([f'--workdir={tmp_path}']) == 2
  assert formats_viz.main([f'--workdir={tmp_path}']) == 2
  lines = [l for l in capsys.readouterr().err.strip().splitlines() if l]
  assert len(lines) == 2 and all(l.startswith('error:') and 'config.json' in l for l in lines)
