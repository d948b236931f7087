"""The consistency variants of the shared 3D head (`config.consistency`): (a) output regularisation, (b) latent
prediction through the frozen decoder, (c) both heads with the latent one distilled; each against a NumPy reference
of its terms, its heads, its inference path and its one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from posebh_jax import tasks as tasks_lib
from posebh_jax.errors import UserError
from posebh_jax.losses import consistency as consistency_losses
from posebh_jax.models.metrabs_head import MetrabsHeadSpec
from posebh_jax.models.multi_head import MultiHeadSpec
from posebh_jax.tasks import consistency as consistency_lib
from posebh_jax.tasks import metrabs as metrabs_task

_CONFIG = 'tiny,task=3d'


def write_acae(path, joint_names, num_latents=8, seed=0, identity=False) -> str:
  """A column-normalised random (or identity) ACAE over `joint_names` as `python -m posebh_jax.acae` saves it."""
  rng = np.random.default_rng(seed)
  count = len(joint_names)
  if identity:
    encoder = decoder = np.eye(count, dtype=np.float32)
  else:
    encoder = rng.random((count, num_latents)).astype(np.float32)
    decoder = rng.random((num_latents, count)).astype(np.float32)
    encoder /= encoder.sum(0, keepdims=True)
    decoder /= decoder.sum(0, keepdims=True)
  consistency_lib.write_acae(str(path), encoder, decoder, joint_names)
  return str(path)


def _config(tmp_path, variant, **acae):
  config = demo.get_config(_CONFIG).copy_and_resolve_references()
  names = metrabs_task.head_joint_names(config)
  with config.unlocked():
    config.consistency.variant = variant
    config.consistency.acae = write_acae(tmp_path / 'acae', names, **acae)
  return config


def _head_output(rng, n, joints, width):
  return {
    'coords2d': jnp.asarray(rng.uniform(0, width, (n, joints, 2)), jnp.float32),
    'coords3d_rel': jnp.asarray(rng.normal(0, 300, (n, joints, 3)), jnp.float32),
  }


def _batch(task, rng, n):
  j = task.num_keypoints
  intrinsics = np.tile(np.array([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]], np.float32), (n, 1, 1))
  joints = np.concatenate([rng.normal(0, 300, (n, j, 2)), rng.uniform(3000, 5000, (n, j, 1))], -1)
  return {'intrinsics': intrinsics, 'joints3d': joints.astype(np.float32), 'valid': np.ones((n, j), bool)}


def _separate_loss(config, task, output, batch):
  """The 'none' variant's loss of the same full-head output (the reference the variants add to)."""
  plain_config = config.copy_and_resolve_references()
  with plain_config.unlocked():
    plain_config.consistency.variant = 'none'
  plain = tasks_lib.build_tasks(plain_config)[task.name]
  return plain.loss(output, batch, jnp.asarray(100))


def test_regularize_adds_the_reconstruction_term_on_every_joint(tmp_path):
  config = _config(tmp_path, 'regularize')
  task = tasks_lib.build_tasks(config)['syn_h36m']
  assert task.head_spec() == metrabs_task.metrabs_head_spec(config)
  rng = np.random.default_rng(1)
  output = _head_output(rng, 4, 74, 64)
  batch = _batch(task, rng, 4)
  total, terms = task.loss(output, batch, jnp.asarray(100))
  encoder, decoder = task.consistency.encoder, task.consistency.decoder
  pose = np.asarray(output['coords3d_rel'], np.float64)
  reference = np.mean(np.abs(pose - np.einsum('lj,nlc->njc', decoder, np.einsum('jl,njc->nlc', encoder, pose))))
  assert float(terms['consistency']) == pytest.approx(reference / 1000.0, rel=1e-5)
  base_total, base_terms = _separate_loss(config, task, output, batch)
  assert float(total) == pytest.approx(float(base_total) + config.consistency.weight * reference / 1000.0, rel=1e-5)
  assert {k: float(v) for k, v in base_terms.items()} == pytest.approx({k: float(terms[k]) for k in base_terms})


def test_regularization_is_zero_for_an_identity_autoencoder(tmp_path):
  config = _config(tmp_path, 'regularize', identity=True)
  task = tasks_lib.build_tasks(config)['syn_smpl']
  output = _head_output(np.random.default_rng(2), 3, 74, 64)
  _, terms = task.loss(output, _batch(task, np.random.default_rng(3), 3))
  assert float(terms['consistency']) == pytest.approx(0.0, abs=1e-9)


def test_latent_head_predicts_latents_and_decodes_them(tmp_path):
  config = _config(tmp_path, 'latent', num_latents=8)
  tasks = tasks_lib.build_tasks(config)
  task = tasks['syn_markers']
  spec = task.head_spec()
  assert isinstance(spec, MetrabsHeadSpec) and spec.num_keypoints == 8 and spec.head_name == 'metrabs_latent'
  assert all(t.head_spec() == spec for t in tasks.values())  # one shared latent head
  latents = _head_output(np.random.default_rng(4), 2, 8, 64)
  decoded = {k: np.einsum('lj,nlc->njc', task.consistency.decoder, np.asarray(v)) for k, v in latents.items()}
  own = task.own_joints(latents)
  for key in ('coords2d', 'coords3d_rel'):
    np.testing.assert_allclose(own[key], decoded[key][:, task.joints], rtol=1e-5, atol=1e-3)
  predicted = task.predict(lambda v, x: latents, None, None, flip=False)
  np.testing.assert_allclose(predicted['coords3d_rel'], decoded['coords3d_rel'][:, task.joints], rtol=1e-5, atol=1e-3)


def test_hybrid_distills_the_latent_head_from_the_full_one_and_infers_through_it(tmp_path):
  config = _config(tmp_path, 'hybrid', num_latents=8)
  task = tasks_lib.build_tasks(config)['syn_h36m']
  spec = task.head_spec()
  assert isinstance(spec, MultiHeadSpec) and [k for k, _ in spec.parts] == ['metrabs', 'metrabs_latent']
  rng = np.random.default_rng(5)
  output = {'metrabs': _head_output(rng, 4, 74, 64), 'metrabs_latent': _head_output(rng, 4, 8, 64)}
  batch = _batch(task, rng, 4)
  total, terms = task.loss(output, batch, jnp.asarray(100))
  decoder = task.consistency.decoder
  student = {
    k: np.einsum('lj,nlc->njc', decoder, np.asarray(v, np.float64)) for k, v in output['metrabs_latent'].items()
  }
  full = {k: np.asarray(v, np.float64) for k, v in output['metrabs'].items()}
  reference = (
    np.mean(np.abs(student['coords3d_rel'] - full['coords3d_rel'])) / 1000
    + np.mean(np.abs(student['coords2d'] - full['coords2d'])) * (config.metrabs.box_mm / 64) / 1000
  )
  assert float(terms['distill']) == pytest.approx(reference, rel=1e-5)
  base_total, _ = _separate_loss(config, task, output['metrabs'], batch)  # the full head trains as usual
  assert float(total) == pytest.approx(float(base_total) + config.consistency.distill_weight * reference, rel=1e-5)
  # The teacher gets no gradient from the distillation.
  decoded = consistency_losses.decode_head_output(output['metrabs_latent'], decoder)
  grads = jax.grad(lambda t: consistency_losses.distillation(decoded, t, (64, 64), 2200.0))(output['metrabs'])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  predicted = task.predict(lambda v, x: output, None, None, flip=False)
  np.testing.assert_allclose(predicted['coords2d'], student['coords2d'][:, task.joints], rtol=1e-5, atol=1e-3)


def test_joint_tasks_carry_the_variant_on_their_2d_examples(tmp_path):
  config = demo.get_config('tiny,task=joint').copy_and_resolve_references()
  with config.unlocked():
    config.consistency.variant = 'regularize'
    config.consistency.acae = write_acae(tmp_path / 'acae', metrabs_task.head_joint_names(config))
  task = tasks_lib.build_tasks(config)['coco']
  rng = np.random.default_rng(6)
  image_h, image_w = config.data.image_size
  heat_h, heat_w = config.data.heatmap_size
  output = {'heatmaps': jnp.zeros((2, heat_h, heat_w, 17)), 'metrabs': _head_output(rng, 2, 74, image_w)}
  batch = {
    'heatmaps': np.zeros((2, heat_h, heat_w, 17), np.float32),
    'target_weights': np.ones((2, 17), np.float32),
    'intrinsics': np.tile(np.array([[50.0, 0, 24], [0, 50.0, 32], [0, 0, 1]], np.float32), (2, 1, 1)),
    'keypoints2d': rng.uniform(0, image_w, (2, 17, 2)).astype(np.float32),
    'keypoints2d_valid': np.ones((2, 17), bool),
  }
  total, terms = task.loss(output, batch)
  expected = terms['heatmap'] + 0.2 * terms['2d'] + config.consistency.weight * 0.2 * terms['consistency']
  assert float(total) == pytest.approx(float(expected), rel=1e-5)
  assert float(terms['consistency']) > 0


@pytest.mark.parametrize(
  'variant, acae, message',
  [
    ('sometimes', None, "config.consistency.variant is 'sometimes'"),
    ('regularize', '', 'needs a fitted ACAE'),
    ('latent', 'missing', 'no fitted ACAE at'),
    ('hybrid', 'wrong_joints', 'the ACAE was fitted on 3 joints'),
  ],
)
def test_one_line_errors(tmp_path, variant, acae, message):
  config = demo.get_config(_CONFIG).copy_and_resolve_references()
  with config.unlocked():
    config.consistency.variant = variant
    if acae == 'missing':
      config.consistency.acae = str(tmp_path / 'nowhere')
    elif acae == 'wrong_joints':
      config.consistency.acae = write_acae(tmp_path / 'acae', ['a', 'b', 'c'], num_latents=2)
    elif acae is not None:
      config.consistency.acae = acae
  with pytest.raises(UserError, match=message) as error:
    tasks_lib.build_tasks(config)
  assert '\n' not in str(error.value)
