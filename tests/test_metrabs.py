"""The MeTRAbs head and losses: soft-argmax and the coordinate mappings, ghost BatchNorm, the absolute pose from
the head's outputs, each loss against a NumPy reference (masks, depth weighting, the prefix matrix), the traced
L_abs switch, finite gradients, and the head under jit in bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posebh_jax.losses import metrabs as losses
from posebh_jax.models import metrabs_head
from posebh_jax.models.metrabs_head import GhostBatchNorm, MetrabsHeadSpec

CROP_HW = (256, 192)
BOX = 2200.0


def _softmax(x, axis):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def _soft_argmax_numpy(logits):
  """logits (n, h, w, [d,] J) → (n, J, 2 or 3) expectations of the cell centres (k + 0.5) / size, float64."""
  logits = np.asarray(logits, np.float64)
  n, j = logits.shape[0], logits.shape[-1]
  grid = logits.shape[1:-1]
  probs = _softmax(logits.reshape(n, -1, j), 1).reshape(logits.shape)
  out = np.zeros((n, j, len(grid)))
  for index in np.ndindex(*grid):
    centre = (np.asarray(index) + 0.5) / np.asarray(grid)  # (row, col[, depth])
    coord = np.array([centre[1], centre[0]] + list(centre[2:]))  # (u, v[, d])
    out += probs[(slice(None),) + index][..., None] * coord
  return out


# --- soft-argmax and the mappings ---------------------------------------------------------------------------------


def test_soft_argmax_matches_numpy():
  rng = np.random.default_rng(0)
  logits2d = rng.normal(0, 3, (2, 5, 4, 3)).astype(np.float32)
  logits3d = rng.normal(0, 3, (2, 5, 4, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(metrabs_head.soft_argmax_2d(logits2d), _soft_argmax_numpy(logits2d), atol=1e-6)
  np.testing.assert_allclose(metrabs_head.soft_argmax_3d(logits3d), _soft_argmax_numpy(logits3d), atol=1e-6)


def test_peaked_heatmap_gives_its_cell_centre_and_uniform_the_centre():
  h, w, depth = 16, 12, 8  # stride 16 on a 256 × 192 crop
  logits2d = np.full((1, h, w, 2), -1e4, np.float32)
  logits2d[0, 3, 7, 0] = 0.0
  logits2d[..., 1] = 0.0  # joint 1 uniform
  px = metrabs_head.normalized_to_crop_px(metrabs_head.soft_argmax_2d(logits2d), CROP_HW)
  np.testing.assert_allclose(px[0, 0], [(7 + 0.5) * 16 - 0.5, (3 + 0.5) * 16 - 0.5], atol=1e-3)
  np.testing.assert_allclose(px[0, 1], [(192 - 1) / 2, (256 - 1) / 2], atol=1e-3)

  logits3d = np.full((1, h, w, depth, 2), -1e4, np.float32)
  logits3d[0, 3, 7, 6, 0] = 0.0
  logits3d[..., 1] = 0.0
  mm = metrabs_head.normalized_to_metric(metrabs_head.soft_argmax_3d(logits3d), CROP_HW, BOX)
  per_px = BOX / 256
  expected = [((7 + 0.5) / w - 0.5) * 192 * per_px, ((3 + 0.5) / h - 0.5) * 256 * per_px, ((6 + 0.5) / 8 - 0.5) * BOX]
  np.testing.assert_allclose(mm[0, 0], expected, atol=1e-2)
  np.testing.assert_allclose(mm[0, 1], [0.0, 0.0, 0.0], atol=1e-2)
  # The box: the crop's longer side spans BOX mm, depth bins span BOX mm.
  corners = metrabs_head.normalized_to_metric(jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), CROP_HW, BOX)
  np.testing.assert_allclose(corners[1] - corners[0], [192 * per_px, BOX, BOX], rtol=1e-6)


def _head_variables(spec, features, seed=0):
  head = spec.build(jnp.float32, jnp.float32, 'head')
  variables = head.init(jax.random.PRNGKey(seed), features, False)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda x: x, nn.unbox(variables['params']))
  kernel = params['final']['kernel']
  params['final']['kernel'] = jnp.asarray(rng.normal(0, 0.3, kernel.shape), jnp.float32)
  params['final']['bias'] = jnp.asarray(rng.normal(0, 0.3, kernel.shape[-1]), jnp.float32)
  params['ghost_bn']['scale'] = jnp.asarray(rng.uniform(0.5, 1.5, features.shape[-1]), jnp.float32)
  params['ghost_bn']['bias'] = jnp.asarray(rng.normal(0, 0.1, features.shape[-1]), jnp.float32)
  stats = {
    'ghost_bn': {
      'mean': jnp.asarray(rng.normal(0, 0.5, features.shape[-1]), jnp.float32),
      'var': jnp.asarray(rng.uniform(0.5, 2.0, features.shape[-1]), jnp.float32),
    }
  }
  return head, {'params': params, 'batch_stats': stats}


def test_head_matches_numpy_reference_in_eval():
  rng = np.random.default_rng(1)
  j, depth, h, w, d = 3, 8, 4, 3, 6
  features = rng.normal(0, 1, (2, h, w, d)).astype(np.float32)
  spec = MetrabsHeadSpec(j, (64, 48), virtual_batch=2, return_heatmaps=True)
  head, variables = _head_variables(spec, features)
  out = head.apply(variables, features, False)

  p, s = variables['params'], variables['batch_stats']['ghost_bn']
  x = (features - np.asarray(s['mean'])) / np.sqrt(np.asarray(s['var']) + 1e-5)
  x = x * np.asarray(p['ghost_bn']['scale']) + np.asarray(p['ghost_bn']['bias'])
  logits = x @ np.asarray(p['final']['kernel'])[0, 0] + np.asarray(p['final']['bias'])
  uv = _soft_argmax_numpy(logits[..., :j])
  uvd = _soft_argmax_numpy(logits[..., j:].reshape(2, h, w, depth, j))
  np.testing.assert_allclose(out['coords2d'], uv * [48, 64] - 0.5, atol=1e-3)
  extent = [48 * BOX / 64, 64 * BOX / 64, BOX]
  np.testing.assert_allclose(out['coords3d_rel'], (uvd - 0.5) * extent, atol=5e-2)
  assert out['heatmap2d'].shape == (2, h, w, j) and out['heatmap3d'].shape == (2, h, w, depth, j)
  np.testing.assert_allclose(np.sum(out['heatmap3d'], (1, 2, 3)), 1.0, atol=1e-5)


# --- ghost BatchNorm ----------------------------------------------------------------------------------------------


def _ghost_bn_numpy(x, virtual_batch, eps=1e-5):
  """Each group of `virtual_batch` consecutive examples normalised on its own (mean, biased var) over (v, h, w)."""
  x = np.asarray(x, np.float64)
  out, means, variances = np.empty_like(x), [], []
  for start in range(0, len(x), virtual_batch):
    group = x[start : start + virtual_batch]
    mean, var = group.mean((0, 1, 2)), group.var((0, 1, 2))
    out[start : start + virtual_batch] = (group - mean) / np.sqrt(var + eps)
    means.append(mean)
    variances.append(var)
  return out, np.mean(means, 0), np.mean(variances, 0)


def test_ghost_bn_with_one_virtual_batch_is_batch_norm():
  x = np.random.default_rng(2).normal(1.0, 2.0, (4, 3, 5, 6)).astype(np.float32)
  ghost = GhostBatchNorm(virtual_batch=4)
  plain = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  gv = ghost.init(jax.random.PRNGKey(0), x, True)
  pv = plain.init(jax.random.PRNGKey(0), x)
  gy, gs = ghost.apply(gv, x, True, mutable=['batch_stats'])
  py, ps = plain.apply(pv, x, mutable=['batch_stats'])
  np.testing.assert_allclose(gy, py, atol=1e-4)
  for stat in ('mean', 'var'):
    np.testing.assert_allclose(gs['batch_stats'][stat], ps['batch_stats'][stat], atol=1e-5)
  # A larger virtual batch than the batch uses the whole batch.
  y = GhostBatchNorm(virtual_batch=16).apply(gv, x, True, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(y, py, atol=1e-4)


def test_ghost_bn_normalises_each_virtual_batch_and_evaluates_with_running_statistics():
  rng = np.random.default_rng(3)
  # Virtual batches with very different statistics.
  x = np.concatenate([rng.normal(5.0 * g, 1.0 + g, (2, 3, 4, 5)) for g in range(3)]).astype(np.float32)
  ghost = GhostBatchNorm(virtual_batch=2)
  variables = ghost.init(jax.random.PRNGKey(0), x, True)
  y, updated = ghost.apply(variables, x, True, mutable=['batch_stats'])
  expected, mean, var = _ghost_bn_numpy(x, 2)
  np.testing.assert_allclose(y, expected, atol=1e-4)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.1 * mean, atol=1e-5)
  np.testing.assert_allclose(updated['batch_stats']['var'], 0.9 + 0.1 * var, rtol=1e-5)
  # Eval: the running statistics, whatever the batch.
  stats = {'mean': jnp.asarray(rng.normal(0, 1, 5), jnp.float32), 'var': jnp.asarray(rng.uniform(1, 2, 5), jnp.float32)}
  y_eval = ghost.apply({'params': variables['params'], 'batch_stats': stats}, x, False)
  np.testing.assert_allclose(y_eval, (x - stats['mean']) / np.sqrt(np.asarray(stats['var']) + 1e-5), atol=1e-4)
  with pytest.raises(ValueError, match='virtual batch'):
    GhostBatchNorm(virtual_batch=4).apply(variables, x, True, mutable=['batch_stats'])


# --- absolute pose ------------------------------------------------------------------------------------------------


def _intrinsics(n, f=400.0):
  k = np.array([[f, 0.0, (CROP_HW[1] - 1) / 2], [0.0, f, (CROP_HW[0] - 1) / 2], [0.0, 0.0, 1.0]])
  return np.repeat(k[None], n, 0)


def _pose(rng, n, j, translation):
  """n random people (n, j, 3) mm around `translation` (camera frame)."""
  return rng.normal(0.0, 1.0, (n, j, 3)) * (200.0, 450.0, 150.0) + np.asarray(translation)


def _project_numpy(points, k):
  p = np.einsum('njc,nrc->njr', points, k)
  return p[..., :2] / p[..., 2:3]


@pytest.mark.parametrize('back_project', [True, False])
def test_absolute_pose_recovers_known_translation(back_project):
  rng = np.random.default_rng(4)
  k = _intrinsics(3)
  gt = _pose(rng, 3, 17, (150.0, -80.0, 4500.0))
  gt[0, 5] += (3000.0, 0.0, 0.0)  # a joint out of view (weight 1e-4) is recovered too
  coords2d = _project_numpy(gt, k)
  assert not np.all(losses.in_view(coords2d, CROP_HW))
  relative = gt - gt[:, :1] + 123.0  # any common offset
  pred = losses.absolute_from_head(
    jnp.asarray(coords2d, jnp.float32), jnp.asarray(relative, jnp.float32), k, CROP_HW, back_project=back_project
  )
  assert pred.dtype == jnp.float32
  np.testing.assert_allclose(pred, gt, atol=0.5)


def test_back_projection_puts_in_view_joints_on_their_2d_ray():
  rng = np.random.default_rng(5)
  k = _intrinsics(2)
  coords2d = rng.uniform(-20, 200, (2, 9, 2))
  relative = _pose(rng, 2, 9, (0.0, 0.0, 0.0))
  pred = losses.absolute_from_head(coords2d, relative, k, CROP_HW)
  inside = np.asarray(losses.in_view(coords2d, CROP_HW))
  assert inside.any() and (~inside).any()
  np.testing.assert_allclose(_project_numpy(np.asarray(pred, np.float64), k)[inside], coords2d[inside], atol=1e-3)


# --- losses against NumPy references -------------------------------------------------------------------------------


def _meanrel_numpy(pred, gt, valid):
  total, count = 0.0, 0
  for p, g, v in zip(pred, gt, valid):
    if v.any():
      p_c = p[v] - p[v].mean(0)
      g_c = g[v] - g[v].mean(0)
      total += np.abs(p_c - g_c).sum()
      count += 3 * v.sum()
  return total / max(count, 1) / 1000


def _in_view_numpy(px):
  return (px[..., 0] >= 0) & (px[..., 0] <= CROP_HW[1] - 1) & (px[..., 1] >= 0) & (px[..., 1] <= CROP_HW[0] - 1)


def _proj_numpy(pred, gt, valid, k):
  gt_px = _project_numpy(np.where(valid[..., None], gt, 1.0), k)
  pred_px = np.einsum('njc,nrc->njr', pred, k)
  pred_px = pred_px[..., :2] / np.maximum(pred[..., 2:3], 100.0)
  mask = valid & (gt[..., 2] > 300) & _in_view_numpy(gt_px)
  return np.abs(pred_px - gt_px)[mask].mean() * BOX / max(CROP_HW) / 1000


def _abs_numpy(pred, gt, valid):
  d = np.abs(pred - gt)[valid]
  z = gt[valid][:, 2]
  return np.mean((d[:, 0] + d[:, 1] + np.minimum(1, 1e4 / z) * d[:, 2]) / 3) / 1000


def _loss_data(seed=6, n=3, j=11):
  rng = np.random.default_rng(seed)
  k = _intrinsics(n)
  gt = _pose(rng, n, j, (0.0, 200.0, 6000.0))
  gt[1, 2, 2] = 250.0  # too close for L_proj
  gt[2, 3] = (4000.0, 0.0, 5000.0)  # projects out of view
  gt[0, 4, 2] = 20000.0  # far: L_abs down-weights its depth error
  pred = gt + rng.normal(0, 80, gt.shape)
  valid = rng.uniform(size=(n, j)) > 0.3
  valid[:, :5] = True
  return pred, gt, valid, k


def test_losses_match_numpy_and_ignore_unlabelled_joints():
  pred, gt, valid, k = _loss_data()
  values = {
    'meanrel': (losses.loss_meanrel(pred, gt, valid), _meanrel_numpy(pred, gt, valid)),
    'proj': (losses.loss_proj(pred, gt, valid, k, CROP_HW), _proj_numpy(pred, gt, valid, k)),
    'abs': (losses.loss_abs(pred, gt, valid), _abs_numpy(pred, gt, valid)),
  }
  for name, (value, expected) in values.items():
    assert value.dtype == jnp.float32, name
    np.testing.assert_allclose(value, expected, rtol=1e-4, err_msg=name)
  # Unlabelled joints: any ground truth (even NaN) and any prediction there change nothing.
  gt_changed = np.where(valid[..., None], gt, np.nan)
  pred_changed = np.where(valid[..., None], pred, pred + 5000.0)
  np.testing.assert_allclose(losses.loss_meanrel(pred_changed, gt_changed, valid), values['meanrel'][0], rtol=1e-6)
  np.testing.assert_allclose(
    losses.loss_proj(pred_changed, gt_changed, valid, k, CROP_HW), values['proj'][0], rtol=1e-6
  )
  np.testing.assert_allclose(losses.loss_abs(pred_changed, gt_changed, valid), values['abs'][0], rtol=1e-6)
  # No labels at all: 0.
  assert float(losses.loss_abs(pred, gt, np.zeros_like(valid))) == 0.0


def test_abs_loss_depth_weighting():
  gt = np.array([[[0.0, 0.0, 5000.0], [0.0, 0.0, 20000.0]]])
  pred = gt + (0.0, 0.0, 300.0)
  near = losses.loss_abs(pred, gt, np.array([[True, False]]))
  far = losses.loss_abs(pred, gt, np.array([[False, True]]))
  np.testing.assert_allclose(near, 300.0 / 3 / 1000, rtol=1e-6)
  np.testing.assert_allclose(far, 0.5 * 300.0 / 3 / 1000, rtol=1e-6)  # min(1, 1e4 / 2e4) = 0.5
  xy = losses.loss_abs(gt + (30.0, -60.0, 0.0), gt, np.array([[True, True]]))
  np.testing.assert_allclose(xy, (30.0 + 60.0) / 3 / 1000, rtol=1e-6)


def test_2d_loss_through_the_prefix_matrix():
  rng = np.random.default_rng(7)
  n, j = 2, 5
  k = _intrinsics(n)
  pred = _pose(rng, n, j, (0.0, 0.0, 5000.0))
  # Keypoint 0 → mean of joints 1 and 2; keypoint 1 → joint 4; keypoint 2 → nothing (ignored).
  matrix = np.zeros((3, j), np.float32)
  matrix[0, [1, 2]] = 0.5
  matrix[1, 4] = 1.0
  gt2d = rng.uniform(20, 170, (n, 3, 2))
  valid2d = np.array([[True, True, True], [True, False, True]])
  value = losses.loss_2d(pred, gt2d, valid2d, k, matrix, CROP_HW)
  means = np.stack([(pred[:, 1] + pred[:, 2]) / 2, pred[:, 4]], 1)
  errors = np.abs(_project_numpy(means, k) - gt2d[:, :2])  # (n, 2, 2)
  expected = np.concatenate([errors[0].ravel(), errors[1, 0]]).mean() * BOX / max(CROP_HW) / 1000
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  # The projection of the joints' mean, not the mean of their projections: moving the two joints in depth by
  # opposite amounts keeps their mean (and the loss) but moves the mean of their projections.
  moved = pred.copy()
  moved[:, 1] += (0.0, 0.0, 1500.0)
  moved[:, 2] -= (0.0, 0.0, 1500.0)
  np.testing.assert_allclose(losses.loss_2d(moved, gt2d, valid2d, k, matrix, CROP_HW), value, rtol=1e-5)
  mean_of_projections = (_project_numpy(moved[:, 1:2], k) + _project_numpy(moved[:, 2:3], k)) / 2
  assert np.abs(mean_of_projections[:, 0] - _project_numpy(means[:, :1], k)[:, 0]).max() > 1.0


def _batch_and_outputs(seed=8, n=4, j=11):
  pred, gt, valid, k = _loss_data(seed, n, j)
  outputs = {
    'coords2d': jnp.asarray(_project_numpy(pred, k), jnp.float32),
    'coords3d_rel': jnp.asarray(pred - pred.mean(1, keepdims=True), jnp.float32),
  }
  batch = {'intrinsics': k.astype(np.float32), 'joints3d': gt.astype(np.float32), 'joints3d_valid': valid}
  return outputs, batch


def test_abs_term_switches_on_at_its_start_step_without_recompiling():
  outputs, batch = _batch_and_outputs()
  config = losses.MetrabsLossConfig(CROP_HW)
  compiled = jax.jit(lambda o, b, s: losses.metrabs_loss(o, b, s, config)).lower(outputs, batch, 0).compile()
  before, terms = compiled(outputs, batch, 4999)
  after, terms_after = compiled(outputs, batch, 5000)
  assert float(terms['abs']) > 0
  np.testing.assert_allclose(before, terms['meanrel'] + terms['proj'], rtol=1e-6)
  np.testing.assert_allclose(after, before + 0.1 * terms['abs'], rtol=1e-6)
  assert set(terms) == {'meanrel', 'proj', 'abs', '2d'} and float(terms['2d']) == 0.0


def test_metrabs_loss_terms_and_finite_gradients():
  outputs, batch = _batch_and_outputs()
  batch['joints3d'] = np.where(batch['joints3d_valid'][..., None], batch['joints3d'], np.nan)  # unlabelled: NaN
  matrix = np.zeros((2, 11), np.float32)
  matrix[0, [0, 1]] = 0.5
  matrix[1, 3] = 1.0
  batch2d = {
    'intrinsics': batch['intrinsics'],
    'keypoints2d': np.asarray(outputs['coords2d'][:, [0, 3]]) + 3.0,
    'keypoints2d_valid': np.ones((4, 2), bool),
  }
  config = losses.MetrabsLossConfig(CROP_HW)

  def total(o, b, step):
    return losses.metrabs_loss(o, b, step, config, prefix_matrix=matrix)[0]

  for b in (batch, batch2d):
    value, grads = jax.jit(jax.value_and_grad(total))(outputs, b, jnp.int32(6000))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads))
  _, terms = losses.metrabs_loss(outputs, batch2d, 0, config, prefix_matrix=matrix)
  assert float(terms['meanrel']) == 0.0 and float(terms['2d']) > 0


# --- the head under jit in bfloat16 ---------------------------------------------------------------------------------


def test_head_under_jit_in_bfloat16_returns_float32_and_trains():
  spec = MetrabsHeadSpec(num_keypoints=7, image_size_hw=CROP_HW, virtual_batch=2)
  assert spec.stack_key is None and spec.forward_flops(32, (16, 12)) > 0
  head = spec.build(jnp.bfloat16, jnp.float32, 'head')
  features = jnp.asarray(np.random.default_rng(9).normal(0, 1, (4, 16, 12, 32)), jnp.float32)
  variables = head.init(jax.random.PRNGKey(0), features, False)
  assert variables['params']['final']['kernel'].value.shape == (1, 1, 32, 7 * 9)

  k = _intrinsics(4).astype(np.float32)
  gt = _pose(np.random.default_rng(10), 4, 7, (0.0, 0.0, 5000.0)).astype(np.float32)
  batch = {'intrinsics': k, 'joints3d': gt, 'joints3d_valid': np.ones((4, 7), bool)}
  config = losses.MetrabsLossConfig(CROP_HW)

  @jax.jit
  def step(params, stats, features):
    def loss_fn(p):
      out, updated = head.apply({'params': p, 'batch_stats': stats}, features, True, mutable=['batch_stats'])
      return losses.metrabs_loss(out, batch, jnp.int32(10000), config)[0], (out, updated)

    (value, (out, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return value, out, updated, grads

  value, out, updated, grads = step(variables['params'], variables['batch_stats'], features)
  assert out['coords2d'].dtype == jnp.float32 and out['coords2d'].shape == (4, 7, 2)
  assert out['coords3d_rel'].dtype == jnp.float32 and out['coords3d_rel'].shape == (4, 7, 3)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(nn.unbox(g))) for g in jax.tree.leaves(grads))
  assert not np.allclose(updated['batch_stats']['ghost_bn']['mean'], 0.0)
  eval_out = jax.jit(lambda v, x: head.apply(v, x, False))(variables, features)
  assert eval_out['coords2d'].dtype == jnp.float32
