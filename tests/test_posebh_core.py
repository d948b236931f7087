"""PoseBH core: embedding module, prototypes (Sinkhorn, momentum update, pixel labels, clustering), prototype losses
and CSS, checked against NumPy loop references, the NumPy heatmap codecs, and hand-made cases where the reference
implementation's bugs B1–B5 (docs/METHOD.md §2) would give different answers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posebh_jax.codecs import heatmap as codec
from posebh_jax.posebh import css
from posebh_jax.posebh import losses
from posebh_jax.posebh import prototypes as P
from posebh_jax.models.embedding import KeypointEmbedding


def _unit(x, axis=-1):
  return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _udp_maps(centers, amplitudes, height, width):
  """NumPy UDP Gaussians (σ=2) at heatmap-px centres (K, 2), scaled by amplitudes (K,) → (H, W, K)."""
  maps, _ = codec.encode_udp(np.asarray(centers, np.float64), np.ones(len(centers)), (width, height), (width, height))
  return np.transpose(maps * np.asarray(amplitudes, np.float32)[:, None, None], (1, 2, 0))


# ------------------------------------------------------------------------------------------------ embedding
def test_embedding_shape_dtype_and_param_count():
  d, c, hid, f = 5, 8, 4, 6
  module = KeypointEmbedding(channels=c, num_deconv=2, hidden=hid, embed_dim=f)
  x = jax.random.normal(jax.random.key(0), (2, 2, 3, d))
  # Shapes only (no compile: convolutions are slow to compile on a loaded CPU).
  out, variables = jax.eval_shape(lambda k, x: module.init_with_output(k, x, train=True), jax.random.key(1), x)
  variables = nn.unbox(variables)
  assert out.shape == (2, 8, 12, f) and out.dtype == jnp.float32
  bn = lambda ch: 2 * ch
  expected = (
    16 * d * c
    + bn(c)
    + 16 * c * c
    + bn(c)  # two deconv 4×4 (no bias) + BN
    + 9 * c * hid
    + bn(hid)
    + 9 * hid * hid
    + bn(hid)
    + c * hid
    + bn(hid)  # residual block + shortcut
    + 9 * hid * hid
    + bn(hid)
    + hid * f
    + f
  )  # conv3×3 + BN, conv1×1 with bias
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables['params']))
  assert count == expected
  stats = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables['batch_stats']))
  assert stats == 2 * (2 * c + 4 * hid)


# ------------------------------------------------------------------------------------------------ prototypes
def test_init_prototypes_unit_norm_and_after_momentum_updates():
  protos = P.init_prototypes(jax.random.key(0), 5, 3, 8)
  assert protos.shape == (5, 3, 8) and protos.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(protos, axis=-1), 1.0, atol=1e-6)
  rng = np.random.RandomState(0)
  for _ in range(5):
    protos = P.momentum_update(
      protos,
      jnp.asarray(rng.randn(30, 8), jnp.float32),
      jnp.asarray(rng.randint(0, 5, 30)),
      jnp.asarray(rng.randint(0, 3, 30)),
      jnp.asarray(rng.rand(30), jnp.float32),
      momentum=0.5,
    )
  np.testing.assert_allclose(np.linalg.norm(protos, axis=-1), 1.0, atol=1e-6)


def _np_momentum_update(protos, emb, classes, assignment, weights, momentum):
  out = protos.astype(np.float64).copy()
  e = _unit(emb.astype(np.float64))
  for g in range(protos.shape[0]):
    for m in range(protos.shape[1]):
      w = np.where((classes == g) & (assignment == m), np.maximum(weights, 0), 0.0)
      if w.sum() <= 0:
        continue
      f = _unit((w[:, None] * e).sum(0))
      out[g, m] = _unit(momentum * protos[g, m] + (1 - momentum) * f)
  return out


def test_momentum_update_matches_numpy_loop():
  rng = np.random.RandomState(1)
  j, m, f, p = 4, 3, 8, 50
  protos = _unit(rng.randn(j, m, f)).astype(np.float32)
  emb = rng.randn(p, f).astype(np.float32)
  classes = rng.randint(0, 3, p)  # class 3 gets no pixel
  assignment = rng.randint(0, m, p)
  weights = rng.rand(p).astype(np.float32) * (rng.rand(p) > 0.3)
  weights[(classes == 0) & (assignment == 1)] = 0.0  # (0, 1) has pixels, all of zero weight
  got = np.asarray(
    P.momentum_update(
      jnp.asarray(protos),
      jnp.asarray(emb),
      jnp.asarray(classes),
      jnp.asarray(assignment),
      jnp.asarray(weights),
      momentum=0.7,
    )
  )
  want = _np_momentum_update(protos, emb, classes, assignment, weights, 0.7)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(got[3], protos[3])
  np.testing.assert_array_equal(got[0, 1], protos[0, 1])
  assert np.abs(got[1] - protos[1]).max() > 1e-2  # the update did move touched prototypes


def _np_sinkhorn(scores, classes, valid, num_classes, kappa, iterations):
  q_all = np.zeros(scores.shape, np.float64)
  num_protos = scores.shape[1]
  for g in range(num_classes):
    idx = np.nonzero(valid & (classes == g))[0]
    if not len(idx):
      continue
    n = len(idx)
    q = np.exp(scores[idx].astype(np.float64) / kappa).T  # (M, n), as ProtoSeg
    q /= q.sum()
    for _ in range(iterations):
      q /= q.sum(axis=1, keepdims=True)
      q /= num_protos
      q /= q.sum(axis=0, keepdims=True)
      q /= n
    q_all[idx] = (q * n).T
  return q_all


@pytest.mark.parametrize('kappa', [0.05, 0.5])
def test_sinkhorn_matches_per_class_numpy_loop(kappa):
  rng = np.random.RandomState(2)
  n_pix, m, num_classes = 60, 3, 5
  scores = rng.rand(n_pix, m).astype(np.float32)
  classes = rng.randint(0, 4, n_pix)  # class 4 empty
  valid = rng.rand(n_pix) > 0.25
  want = _np_sinkhorn(scores, classes, valid, num_classes, kappa, 3)
  got = np.asarray(P.sinkhorn(jnp.asarray(scores), jnp.asarray(classes), jnp.asarray(valid), num_classes, kappa))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assign = np.asarray(
    P.sinkhorn_assign(jnp.asarray(scores), jnp.asarray(classes), jnp.asarray(valid), num_classes, kappa)
  )
  np.testing.assert_array_equal(assign[valid], want[valid].argmax(1))
  assert assign.dtype == np.int32
  # The balancing matters here: the plain argmax of the scores differs for some pixel.
  assert np.any(assign[valid] != scores[valid].argmax(1))
  # Invalid pixels influence nothing: new scores and classes for them leave the valid assignments unchanged.
  scores2, classes2 = scores.copy(), classes.copy()
  scores2[~valid] = rng.rand(int((~valid).sum()), m) * 5
  classes2[~valid] = 0
  assign2 = np.asarray(
    P.sinkhorn_assign(jnp.asarray(scores2), jnp.asarray(classes2), jnp.asarray(valid), num_classes, kappa)
  )
  np.testing.assert_array_equal(assign2[valid], assign[valid])


def test_similarity_heatmaps_and_pixel_labels():
  rng = np.random.RandomState(3)
  protos = _unit(rng.randn(4, 2, 5)).astype(np.float32)
  emb = rng.randn(1, 2, 3, 5).astype(np.float32) * 3
  sim = np.asarray(P.similarity(jnp.asarray(emb), jnp.asarray(protos)))
  np.testing.assert_allclose(sim, np.abs(np.einsum('nhwf,jmf->nhwjm', _unit(emb), protos)), atol=1e-6)
  hm = np.asarray(P.prototype_heatmaps(jnp.asarray(sim)))
  np.testing.assert_allclose(hm, np.clip(sim.max(-1), 1e-4, 1 - 1e-4), atol=1e-7)
  gt = np.zeros((1, 2, 3, 3), np.float32)
  gt[0, 0, 0] = [0.2, 0.7, 0.1]  # class 1
  gt[0, 0, 1] = [0.0, 0.0, 0.4]  # class 2, zero target weight
  gt[0, 1, 2] = [0.3, 0.0, 0.0]  # class 0
  tw = np.array([[1.0, 1.0, 0.0]], np.float32)
  cls, conf, valid = P.pixel_labels(jnp.asarray(gt), jnp.asarray(tw), 10)
  assert cls.dtype == jnp.int32
  np.testing.assert_array_equal(cls, 10 + gt.argmax(-1))
  np.testing.assert_allclose(conf, gt.max(-1))
  np.testing.assert_array_equal(valid, [[[True, False, False], [False, False, True]]])


def test_assign_pixels_b2_mask_compares_global_classes():
  """Dataset 'b' has global offset 2. Both pixels have local class 0 = global class 2. Pixel (0,0) is most similar
  to global class 2 → kept; pixel (0,1) is most similar to global class 0 (= its LOCAL index read globally) →
  dropped. B2 (local class vs global argmax) would do the opposite."""
  eye = np.eye(4, dtype=np.float32)
  protos = jnp.asarray(np.repeat(eye[:, None, :], 2, axis=1))  # J=4, M=2, F=4: class j along axis j
  emb_b = np.stack([eye[2], eye[0]])[None, None]  # (1, 1, 2, 4)
  gt_b = np.array([[[[0.8, 0.1], [0.6, 0.0]]]], np.float32)  # (1, 1, 2, K=2)
  emb_a = np.zeros((1, 1, 2, 4), np.float32) + eye[1]
  gt_a = np.array([[[[0.0, 0.5], [0.0, 0.0]]]], np.float32)
  out = P.assign_pixels(
    protos,
    {'a': jnp.asarray(emb_a), 'b': jnp.asarray(emb_b)},
    {'a': jnp.asarray(gt_a), 'b': jnp.asarray(gt_b)},
    {'a': jnp.ones((1, 2)), 'b': jnp.ones((1, 2))},
    {'a': 0, 'b': 2},
  )
  b = out['b']
  np.testing.assert_array_equal(b.global_class, [[[2, 2]]])
  np.testing.assert_array_equal(b.local_class, [[[0, 0]]])
  np.testing.assert_allclose(b.weight, [[[0.8, 0.0]]])
  best = np.array([2, 0])
  buggy = np.where(np.asarray(b.local_class)[0, 0] == best, gt_b[0, 0].max(-1), 0.0)
  np.testing.assert_allclose(buggy, [0.0, 0.6])
  np.testing.assert_allclose(out['a'].weight, [[[0.5, 0.0]]])
  np.testing.assert_array_equal(out['a'].global_class[0, 0, 0], 1)


def test_assign_pixels_sinkhorn_is_joint_over_datasets_and_update():
  rng = np.random.RandomState(4)
  j, m, f = 5, 3, 6
  protos = P.init_prototypes(jax.random.key(2), j, m, f)
  emb = {'a': rng.randn(2, 3, 4, f).astype(np.float32), 'b': rng.randn(1, 3, 4, f).astype(np.float32)}
  gt = {
    'a': rng.rand(2, 3, 4, 2).astype(np.float32) * (rng.rand(2, 3, 4, 1) > 0.3),
    'b': rng.rand(1, 3, 4, 3).astype(np.float32),
  }
  tw = {'a': np.ones((2, 2), np.float32), 'b': np.array([[1, 0, 1]], np.float32)}
  offsets = {'a': 0, 'b': 2}
  out = jax.jit(lambda *a: P.assign_pixels(*a, offsets, kappa=0.3))(protos, emb, gt, tw)
  # Reference: the Sinkhorn over the concatenation of both datasets' pixels.
  sims, cls, valid = [], [], []
  for name in ('a', 'b'):
    s = np.asarray(P.similarity(emb[name], protos))
    c, _, v = P.pixel_labels(gt[name], tw[name], offsets[name])
    sims.append(np.take_along_axis(s, np.asarray(c)[..., None, None], axis=-2)[..., 0, :].reshape(-1, m))
    cls.append(np.asarray(c).reshape(-1))
    valid.append(np.asarray(v).reshape(-1))
  sims, cls, valid = map(np.concatenate, (sims, cls, valid))
  want = _np_sinkhorn(sims, cls, valid, j, 0.3, 3).argmax(1)
  got = np.concatenate([np.asarray(out[n].assignment).reshape(-1) for n in ('a', 'b')])
  np.testing.assert_array_equal(got[valid], want[valid])
  new = P.update_prototypes(protos, emb, out, momentum=0.5)
  e = np.concatenate([emb[n].reshape(-1, f) for n in ('a', 'b')])
  w = np.concatenate([np.asarray(out[n].weight).reshape(-1) for n in ('a', 'b')])
  ref = _np_momentum_update(np.asarray(protos), e, cls, got, w, 0.5)
  np.testing.assert_allclose(new, ref, atol=1e-5)


def test_cluster_prototypes_b5_assigns_each_prototype_over_clusters():
  """Two well-separated groups (6 and 3 prototypes) → two clusters; each prototype's cluster prototype is its
  group's centroid direction (sign-aligned). Unequal group sizes make a softmax over the wrong axis visible."""
  rng = np.random.RandomState(5)
  a, b = np.eye(6)[0], np.eye(6)[1]
  group = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
  x = _unit(np.where(group[:, None] == 0, a, b) + 0.1 * rng.randn(9, 6))
  sign = np.ones(9)
  sign[2] = -1.0  # c and −c are the same prototype for |cos|
  x = (x * sign[:, None]).astype(np.float32)
  for seed in (0, 1, 2):
    clustered, assignment = P.cluster_prototypes(jnp.asarray(x.reshape(3, 3, 6)), 2, 10, 0.05, jax.random.key(seed))
    assignment = np.asarray(assignment)
    assert assignment.shape == (9,) and clustered.shape == (3, 3, 6)
    assert len(set(assignment[group == 0])) == 1 and len(set(assignment[group == 1])) == 1
    assert assignment[0] != assignment[6]
    clustered = np.asarray(clustered).reshape(9, 6)
    for g in (0, 1):
      members = group == g
      centroid = _unit((x[members] * sign[members, None]).sum(0))
      np.testing.assert_allclose(clustered[members], sign[members, None] * centroid, atol=1e-5)
  centroids = jnp.asarray(np.stack([a, b]), jnp.float32)
  r = np.asarray(P.cluster_responsibilities(jnp.asarray(x), centroids, 0.5))
  assert r.shape == (9, 2)
  np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-6)
  buggy = np.asarray(jax.nn.softmax(jnp.abs(jnp.asarray(x) @ centroids.T) / 0.5, axis=0))
  assert np.abs(buggy.sum(1) - 1).max() > 0.1 and np.abs(r - buggy).max() > 0.1
  with pytest.raises(ValueError):
    P.cluster_prototypes(jnp.asarray(x.reshape(3, 3, 6)), 10, 2, 0.05, jax.random.key(0))


# ------------------------------------------------------------------------------------------------ losses
def test_ppc_b1_dataset_columns_and_loss_values():
  """Datasets with K = 2, 3, 2, 3 (offsets 0, 2, 5, 7), M=3. Dataset 3's pixel (k=1, m*=2) targets global column
  (7+1)·3+2 = 26, inside dataset 3's own columns 21…30; B1's offset start_k (7 instead of 21) lands in dataset 1."""
  m, offset, k_d = 3, 7, 3
  cols = losses.dataset_prototype_columns(offset, k_d, m)
  assert (cols.start, cols.stop) == (21, 30)
  for k in range(k_d):
    for mm in range(m):
      column = cols.start + k * m + mm
      assert column == (offset + k) * m + mm and cols.start <= column < cols.stop
  rng = np.random.RandomState(6)
  sim_all = rng.rand(1, 1, 2, 10, m).astype(np.float32) * 0.5
  sim_all[0, 0, 0, offset + 1, 2] = 1.0
  flat = sim_all.reshape(1, 1, 2, 30)
  sim_d = losses.dataset_similarity(jnp.asarray(sim_all), offset, k_d)
  np.testing.assert_array_equal(np.asarray(sim_d).reshape(1, 1, 2, -1), flat[..., cols])
  local = jnp.asarray([[[1, 0]]])
  assign = jnp.asarray([[[2, 1]]])
  weight = jnp.asarray([[[0.9, 0.0]]])  # the second pixel is ignored
  got = float(losses.ppc_loss(sim_d, local, assign, weight))
  logits = flat[0, 0, 0, cols]
  want = np.log(np.exp(logits).sum()) - flat[0, 0, 0, 26]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  buggy_logits = flat[0, 0, 0, offset : offset + k_d * m]
  buggy = np.log(np.exp(buggy_logits).sum()) - buggy_logits[1 * m + 2]
  assert abs(buggy - got) > 0.05
  # PPD: (1 − s_{k,m*})² over positive-weight pixels; weighted mean; 0 without pixels.
  np.testing.assert_allclose(float(losses.ppd_loss(sim_d, local, assign, weight)), 0.0, atol=1e-12)
  sim_d2 = jnp.asarray(sim_all[..., 5:8, :])
  w2 = jnp.asarray([[[0.5, 1.5]]])
  s = np.array([sim_all[0, 0, 0, 6, 2], sim_all[0, 0, 1, 5, 1]])
  np.testing.assert_allclose(float(losses.ppd_loss(sim_d2, local, assign, w2)), np.mean((1 - s) ** 2), rtol=1e-5)
  np.testing.assert_allclose(
    float(losses.ppd_loss(sim_d2, local, assign, w2, weighted=True)),
    (0.5 * (1 - s[0]) ** 2 + 1.5 * (1 - s[1]) ** 2) / 2.0,
    rtol=1e-5,
  )
  zero = jnp.zeros((1, 1, 2))
  assert float(losses.ppc_loss(sim_d, local, assign, zero)) == 0.0
  assert float(losses.ppd_loss(sim_d, local, assign, zero)) == 0.0
  gt = rng.rand(1, 2, 2, 3).astype(np.float32)
  ph = rng.rand(1, 2, 2, 3).astype(np.float32)
  tw = np.array([[1.0, 0.0, 1.0]], np.float32)
  np.testing.assert_allclose(
    float(losses.phm_loss(ph, gt, tw)), np.mean(((ph - gt) * tw[:, None, None]) ** 2), rtol=1e-6
  )


# ------------------------------------------------------------------------------------------------ CSS
def test_decode_dark_udp_matches_numpy_codec():
  rng = np.random.RandomState(7)
  h, w, k = 20, 16, 4
  maps = []
  for _ in range(2):
    centers = np.stack([rng.uniform(3, w - 4, k), rng.uniform(3, h - 4, k)], 1)
    centers[1] = [0.6, h - 1.3]  # near the border
    hm = _udp_maps(centers, rng.uniform(0.3, 1.0, k), h, w)
    hm[..., 2] += 0.01 * rng.rand(h, w)
    hm[..., 3] = 0.0  # no maximum
    maps.append(hm)
  maps = np.stack(maps).astype(np.float32)
  coords, peaks = css.decode_dark_udp(jnp.asarray(maps))
  want_coords, want_peaks = codec.decode(np.transpose(maps, (0, 3, 1, 2)), 'udp')
  np.testing.assert_allclose(coords, want_coords, atol=1e-4)
  np.testing.assert_allclose(peaks, want_peaks, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(coords)[:, 3], -1.0)


def test_udp_gaussian_matches_numpy_encoder():
  rng = np.random.RandomState(8)
  h, w = 12, 10
  coords = np.stack([rng.uniform(-3, w + 2, (2, 5)), rng.uniform(-3, h + 2, (2, 5))], -1)
  coords[0, 0] = [w + 9.0, 4.0]  # window does not touch the heatmap
  got = np.asarray(css.udp_gaussian(jnp.asarray(coords, jnp.float32), h, w, 2.0))
  assert got.shape == (2, h, w, 5)
  for i in range(2):
    want, _ = codec.encode_udp(coords[i], np.ones(5), (w, h), (w, h), 2.0)
    np.testing.assert_allclose(got[i], np.transpose(want, (1, 2, 0)), atol=2e-6)


def test_css_b3_distance_compares_argmax_xy():
  """Channel 0: head argmax (x=5, y=9), prototype (x=9, y=5): 5.7 px apart → dropped. Channel 1: (6, 10) and
  (7, 10): 1 px → kept. B3, modelled as comparing one map's x with the other's y, keeps channel 0 and drops 1."""
  h = w = 16
  head = _udp_maps([[5, 9], [6, 10]], [0.9, 0.9], h, w)[None]
  proto = np.clip(_udp_maps([[9, 5], [7, 10]], [0.6, 0.6], h, w), 1e-4, 1 - 1e-4)[None]
  _, weight = jax.jit(css.css_targets)(jnp.asarray(head), jnp.asarray(proto))
  np.testing.assert_allclose(weight, [[0.0, 0.6]], atol=1e-6)
  a_head, s_head = codec.decode_argmax(np.transpose(head, (0, 3, 1, 2)))
  a_proto, s_proto = codec.decode_argmax(np.transpose(proto, (0, 3, 1, 2)))
  keep_bug = np.linalg.norm(a_head - a_proto[..., ::-1], axis=-1) <= 2.1
  buggy = np.where(keep_bug & (s_head > 0.25) & (s_proto > 0.25), np.minimum(s_head, s_proto), 0.0)
  np.testing.assert_allclose(buggy, [[0.6, 0.0]], atol=1e-6)


def test_css_b4_target_weights_coordinates():
  """t = (s_H·y_H + s_h·y_h)/(s_H + s_h) with DARK-UDP coordinates; B4 multiplied the confidences instead."""
  h, w = 20, 18
  # Channel 1: the head's peak is too low; channel 2: the prototype heatmap's peak is too low.
  head = _udp_maps([[8.3, 10.6], [4.0, 4.0], [12.0, 5.0]], [0.9, 0.2, 0.9], h, w)[None]
  proto = np.clip(_udp_maps([[9.1, 10.2], [4.0, 4.0], [12.0, 5.0]], [0.5, 0.8, 0.2], h, w), 1e-4, 1 - 1e-4)[None]
  target, weight = jax.jit(css.css_targets)(jnp.asarray(head), jnp.asarray(proto))
  y_head, s_head = codec.decode(np.transpose(head, (0, 3, 1, 2)), 'udp')
  y_proto, s_proto = codec.decode(np.transpose(proto, (0, 3, 1, 2)), 'udp')
  t = (s_head[0, 0] * y_head[0, 0] + s_proto[0, 0] * y_proto[0, 0]) / (s_head[0, 0] + s_proto[0, 0])
  np.testing.assert_allclose(weight, [[min(s_head[0, 0], s_proto[0, 0]), 0.0, 0.0]], atol=1e-6)
  want = _udp_maps([t], [1.0], h, w)[..., 0]
  np.testing.assert_allclose(target[0, ..., 0], want, atol=1e-4)
  np.testing.assert_array_equal(target[0, ..., 1:], 0.0)
  t_bug = (s_head[0, 0] * s_proto[0, 0] + s_proto[0, 0] * y_proto[0, 0]) / (s_head[0, 0] + s_proto[0, 0])
  assert np.abs(t_bug - t).max() > 1.0
  assert np.abs(_udp_maps([t_bug], [1.0], h, w)[..., 0] - np.asarray(target[0, ..., 0])).max() > 0.3
  # CSS heatmap loss and pixel labels of T·ω.
  alpha = 0.1
  loss = float(css.css_loss(jnp.asarray(head), jnp.asarray(proto), target, weight, alpha))
  om = np.asarray(weight)[:, None, None, :]
  tt = np.asarray(target)
  np.testing.assert_allclose(
    loss, np.mean(((head - tt) * om) ** 2) + alpha * np.mean(((proto - tt) * om) ** 2), rtol=1e-5
  )
  local, conf, valid = css.css_pixel_labels(target, weight)
  np.testing.assert_array_equal(local, 0)
  np.testing.assert_allclose(conf, tt[..., 0] * float(weight[0, 0]), atol=1e-7)
  np.testing.assert_array_equal(valid, tt[..., 0] > 0)


# ------------------------------------------------------------------------------------------------ jit
def test_main_functions_jit():
  rng = np.random.RandomState(9)
  j, m, f, h, w = 5, 2, 4, 6, 5
  protos = P.init_prototypes(jax.random.key(0), j, m, f)
  emb = {'a': jnp.asarray(rng.randn(2, h, w, f), jnp.float32), 'b': jnp.asarray(rng.randn(2, h, w, f), jnp.float32)}
  gt = {'a': jnp.asarray(rng.rand(2, h, w, 2), jnp.float32), 'b': jnp.asarray(rng.rand(2, h, w, 3), jnp.float32)}
  tw = {'a': jnp.ones((2, 2)), 'b': jnp.ones((2, 3))}
  offsets = {'a': 0, 'b': 2}

  def step(protos, emb, gt, tw):
    sims = {n: P.similarity(emb[n], protos) for n in emb}
    out = P.assign_pixels(protos, emb, gt, tw, offsets, similarities=sims)
    new = P.update_prototypes(protos, emb, out, 0.9)
    sim_b = losses.dataset_similarity(sims['b'], 2, 3)
    heat_b = P.prototype_heatmaps(sim_b)
    a = out['b']
    total = (
      losses.phm_loss(heat_b, gt['b'], tw['b'])
      + losses.ppc_loss(sim_b, a.local_class, a.assignment, a.weight)
      + losses.ppd_loss(sim_b, a.local_class, a.assignment, a.weight)
    )
    target, weight = css.css_targets(gt['b'], heat_b)
    total = total + css.css_loss(gt['b'], heat_b, target, weight, 0.5)
    labels = css.css_pixel_labels(target, weight)
    clustered, _ = P.cluster_prototypes(new, 3, 4, 0.1, jax.random.key(1))
    return new, total, labels, clustered, css.decode_dark_udp(gt['a'])

  def loss_and_outputs(emb):
    outputs = step(protos, emb, gt, tw)
    return outputs[1], outputs

  # One compile: the whole step and its gradient with respect to the embeddings.
  (_, (new, total, labels, clustered, decoded)), grads = jax.jit(jax.value_and_grad(loss_and_outputs, has_aux=True))(
    emb
  )
  np.testing.assert_allclose(np.linalg.norm(new, axis=-1), 1.0, atol=1e-5)
  assert np.abs(np.asarray(new) - np.asarray(protos)).max() > 1e-3
  np.testing.assert_allclose(np.linalg.norm(clustered, axis=-1), 1.0, atol=1e-5)
  assert np.isfinite(float(total)) and float(total) > 0
  assert labels[0].shape == (2, h, w) and decoded[0].shape == (2, 2, 2)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  assert np.any(np.asarray(grads['b']) != 0)  # the losses above use dataset b only
  jitted_init = jax.jit(P.init_prototypes, static_argnums=(1, 2, 3))(jax.random.key(0), j, m, f)
  np.testing.assert_allclose(jitted_init, protos, atol=1e-6)
