"""The affine-combining autoencoder: column-normalised weights, rotation / translation / mirror equivariance, an
exact fit of poses made from fewer landmarks than latents, the projection loss against NumPy, and the command
`python -m posebh_jax.acae` end to end on the tiny 3D demo's untrained model."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import run_module
from configs import common, demo
from posebh_jax import inference
from posebh_jax import tasks as tasks_lib
from posebh_jax.acae import fit
from posebh_jax.acae import model as acae_model
from posebh_jax.errors import UserError
from posebh_jax.models import pose_model
from posebh_jax.tasks import consistency as consistency_lib
from posebh_jax.tasks import metrabs as metrabs_task

_CONFIG = 'configs/demo.py:tiny,task=3d'
_FORMATS = ('syn_smpl', 'syn_h36m', 'syn_markers')
# The model's functions compiled whole (layout static): eager JAX would compile each of their many small ops.
_encode, _decode, _reconstruct, _encoder_weights, _decoder_weights, _joint_errors = (
  jax.jit(f, static_argnums=1)
  for f in (
    acae_model.encode,
    acae_model.decode,
    acae_model.reconstruct,
    acae_model.encoder_weights,
    acae_model.decoder_weights,
    acae_model.joint_errors,
  )
)


def _layout(chiral: bool, num_latents: int = 48, num_centre_latents: int = 8):
  import data_pipeline.synthetic.formats3d  # noqa: F401 (registers the syn_* formats)

  _, sides, flip = acae_model.format_joints(_FORMATS)
  return acae_model.make_layout(sides, flip, num_latents, num_centre_latents, chiral)


def _params(layout, seed=0):
  """Random weights with negative entries too (unnormalised uniform [-0.3, 1)), so that nothing relies on
  convexity."""
  params = acae_model.init_params(layout, seed)
  return jax.tree.map(lambda w: 1.3 * w - 0.3, params)


def _rotation(rng):
  q, r = np.linalg.qr(rng.standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  return q * np.linalg.det(q)  # a proper rotation


@pytest.mark.parametrize('chiral', [True, False])
def test_encoder_and_decoder_columns_sum_to_one(chiral):
  layout = _layout(chiral)
  params = _params(layout)
  encoder = np.asarray(_encoder_weights(params, layout))
  decoder = np.asarray(_decoder_weights(params, layout))
  assert encoder.shape == (74, 48) and decoder.shape == (48, 74)
  np.testing.assert_allclose(encoder.sum(0), 1.0, atol=1e-5)
  np.testing.assert_allclose(decoder.sum(0), 1.0, atol=1e-5)
  assert (encoder < 0).any() and (decoder < 0).any()  # affine, not only convex combinations


def test_chiral_blocks_pair_mirror_joints_and_latents():
  layout = _layout(True)
  assert layout.num_sided_latents == 20 and layout.latent_sides.count('center') == 8
  encoder = np.asarray(_encoder_weights(_params(layout), layout))
  # Left joint i's weight on left latent k equals its mirror joint's weight on right latent k (block S), and so on.
  mirrored = encoder[layout.flip_index][:, layout.latent_flip_index]
  np.testing.assert_allclose(mirrored, encoder, atol=1e-7)


@pytest.mark.parametrize('chiral', [True, False])
def test_rotation_and_translation_equivariance(chiral):
  layout = _layout(chiral)
  params = _params(layout, seed=1)
  rng = np.random.default_rng(0)
  poses = rng.standard_normal((4, layout.num_joints, 3)).astype(np.float32)
  rotation, shift = _rotation(rng).astype(np.float32), rng.standard_normal(3).astype(np.float32)
  moved = poses @ rotation.T + shift
  np.testing.assert_allclose(
    _encode(params, layout, moved), _encode(params, layout, poses) @ rotation.T + shift, atol=1e-5
  )
  np.testing.assert_allclose(
    _reconstruct(params, layout, moved),
    _reconstruct(params, layout, poses) @ rotation.T + shift,
    atol=1e-5,
  )


def test_chiral_acae_is_mirror_equivariant_and_the_free_one_is_not():
  rng = np.random.default_rng(1)
  for chiral in (True, False):
    layout = _layout(chiral)
    params = _params(layout, seed=2)
    poses = rng.standard_normal((4, layout.num_joints, 3)).astype(np.float32)
    mirrored = acae_model.mirror(poses, layout.flip_index)
    reconstructed = _reconstruct(params, layout, mirrored)
    expected = acae_model.mirror(_reconstruct(params, layout, poses), layout.flip_index)
    if chiral:
      np.testing.assert_allclose(reconstructed, expected, atol=1e-5)
      latents = _encode(params, layout, mirrored)
      np.testing.assert_allclose(
        latents, acae_model.mirror(_encode(params, layout, poses), layout.latent_flip_index), atol=1e-5
      )
    else:
      assert np.abs(np.asarray(reconstructed) - np.asarray(expected)).max() > 1e-2


def test_layout_errors():
  with pytest.raises(ValueError, match='even difference'):
    acae_model.make_layout(('left', 'right'), [1, 0], num_latents=5, num_centre_latents=2)
  with pytest.raises(ValueError, match='swap left and right'):
    acae_model.make_layout(('left', 'right'), [0, 1])


def test_fit_reconstructs_poses_made_from_fewer_landmarks_than_latents():
  """Poses that are affine combinations of K = 6 landmarks (2 left, 2 right, 2 centre; J = 74 joints) are
  reproduced exactly by an ACAE with L = 8 >= K latents of the same sides (encode to the landmarks, decode with
  the generating weights), so 200 steps of the fit drive the error to ~0 (~0.02 mm, from ~300 mm spread)."""
  generator_layout = _layout(True, num_latents=6, num_centre_latents=2)
  # Convex generating weights keep every joint inside the landmarks' hull, in front of the camera (joints nearer
  # than MIN_DEPTH_MM would not be supervised).
  generator = acae_model.init_params(generator_layout, 3)
  rng = np.random.default_rng(2)
  landmarks = rng.normal(0.0, 300.0, (512, 6, 3)) + [0.0, 0.0, 4000.0]
  poses = np.asarray(_decode(generator, generator_layout, landmarks.astype(np.float32)))
  layout = _layout(True, num_latents=8, num_centre_latents=2)
  settings = ml_collections.ConfigDict(
    dict(batch_size=32, steps=200, lrs=(3e-2, 3e-3, 3e-4), lr_drop_fractions=(0.5, 0.75), lambda_sparsity=0.0)
  )
  settings.update(dict(log_every=200, seed=0))
  lines = []
  params = fit.fit_params(poses, layout, settings, log=lines.append)
  assert len(lines) == 1 and lines[0].startswith('acae step 200/200: loss')
  before = np.asarray(_joint_errors(acae_model.init_params(layout, 0), layout, poses))
  after = np.asarray(_joint_errors(params, layout, poses))
  assert before.mean() > 100.0
  assert after.mean() < 1.0, after.mean()


def test_projection_loss_matches_numpy():
  rng = np.random.default_rng(3)
  true = rng.normal(0.0, 400.0, (3, 10, 3)) + [0.0, 0.0, 3000.0]
  pred = true + rng.normal(0.0, 50.0, true.shape)
  true[0, 0, 2] = 50.0  # nearer than MIN_DEPTH_MM: ignored
  pred[1, 1, 2] = -20.0  # floored at MIN_DEPTH_MM
  valid = rng.random((3, 10)) > 0.2
  valid[2, 2] = False
  true[2, 2] = np.nan  # an unlabelled joint's value never reaches the loss
  keep = valid & (true[..., 2] >= acae_model.MIN_DEPTH_MM)
  with np.errstate(invalid='ignore'):
    error = np.abs(pred[..., :2] / np.maximum(pred[..., 2:], 100.0) - true[..., :2] / true[..., 2:]) * true[..., 2:]
  expected = error[keep].mean() / 1000.0
  value = jax.jit(acae_model.projection_error_m)(pred.astype(np.float32), true.astype(np.float32), valid)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  # The total adds lambda (mean|W_enc| + mean|W_dec|) of the normalised weights.
  layout = acae_model.make_layout(('center',) * 10, np.arange(10), num_latents=4, chiral=False)
  params = _params(layout)
  true[2, 2] = 0.0  # the ACAE's input must be finite: `valid` masks the target, not the encoder's input
  total, terms = jax.jit(acae_model.loss, static_argnums=(1, 4))(params, layout, true.astype(np.float32), valid, 0.6)
  weights = [
    np.asarray(_encoder_weights(params, layout)),
    np.asarray(_decoder_weights(params, layout)),
  ]
  assert abs(float(terms['sparsity']) - sum(np.abs(w).mean() for w in weights)) < 1e-6
  np.testing.assert_allclose(float(total), float(terms['proj']) + 0.6 * float(terms['sparsity']), rtol=1e-6)
  assert np.isfinite(float(total))
  # The per-joint form (what the command reports, mm) averages to the term (m) where every joint counts.
  poses = np.abs(true).astype(np.float32) + [0.0, 0.0, 500.0]
  per_joint = jax.jit(acae_model.joint_projection_errors, static_argnums=1)(params, layout, poses)
  term = jax.jit(acae_model.projection_error_m)(_reconstruct(params, layout, poses), poses)
  np.testing.assert_allclose(float(np.mean(per_joint)), 1000.0 * float(term), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope='module')
def data3d_dir(tmp_path_factory):
  """The tiny 3D demo's synthetic 3D data (24 train records per format)."""
  path = tmp_path_factory.mktemp('acae_tfds')
  result = run_module(
    ['-m', 'data_pipeline.prepare', 'synthetic3d', f'--config={_CONFIG}', f'--data_dir={path}', '--num_workers=1']
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return str(path)


@pytest.fixture(scope='module')
def untrained_run(tmp_path_factory):
  """A weights-only checkpoint of the tiny 3D demo's model with random O(1) weights (an untrained model whose
  poses vary from image to image; drawn from the parameter shapes, so no init is compiled)."""
  config = demo.get_config('tiny,task=3d')
  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(
    config.model, names, head_specs=[tasks[n].head_spec() for n in names], experts=pose_model.dataset_experts(config)
  )
  image_h, image_w = config.data.image_size
  images = {n: jnp.zeros((1, image_h, image_w, 3), jnp.uint8) for n in names}
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), images, method=pose_model.PoseModel.init_all)))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
    return (0.2 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  workdir = str(tmp_path_factory.mktemp('acae_run'))
  inference.write_weights(workdir, config, jax.tree_util.tree_map_with_path(fill, shapes), step=3)
  return workdir


def _acae_command(workdir, *args):
  return run_module(['-m', 'posebh_jax.acae', f'--workdir={workdir}', *args])


def test_fit_command_writes_the_acae_and_its_picture(untrained_run, data3d_dir):
  result = _acae_command(
    untrained_run,
    f'--data_dir={data3d_dir}',
    '--config.acae.steps=40',
    '--config.acae.log_every=20',
    '--config.acae.held_out=0.25',
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  out = result.stdout
  for name in _FORMATS:
    assert f'{name}: 24 train records and their mirror images' in out, out
  assert 'acae step 20/40' in out and 'acae step 40/40' in out, out
  error_line = next(line for line in out.splitlines() if line.startswith('acae held-out reconstruction error'))
  # 72 records, 18 held out with their mirror images.
  assert '(mm, 36 poses)' in error_line and all(f'{name} ' in error_line for name in _FORMATS), error_line
  print(error_line)

  params, info = fit.load_acae(untrained_run)
  assert info['num_joints'] == 74 and info['num_latents'] == 48 and info['chiral'] is True
  assert info['num_train_poses'] == 108 and info['num_held_out_poses'] == 36 and info['checkpoint_step'] == 3
  assert [f['name'] for f in info['formats']] == list(_FORMATS) and info['fit_datasets'] == list(_FORMATS)
  assert info['acae']['steps'] == 40 and set(info['errors_mm']) == set(info['projection_errors_mm']) == {
    *_FORMATS,
    'all',
  }
  assert len(info['joint_names']) == 74 and info['joint_names'][0].endswith('_syn_smpl')
  assert all(np.isfinite(v) and v >= 0 for v in info['errors_mm'].values())
  layout = fit.layout_from_info(info)
  encoder = np.asarray(_encoder_weights(params, layout))
  assert encoder.shape == (74, 48) and np.allclose(encoder.sum(0), 1.0, atol=1e-5)
  assert set(params) == {'encoder', 'decoder'} and set(params['encoder']) == set(acae_model.BLOCKS)
  # The normalised matrices for the consistency fine-tuning (config.consistency.acae = this workdir).
  saved_encoder, saved_decoder, names = consistency_lib.read_acae(untrained_run)
  np.testing.assert_allclose(saved_encoder, encoder, atol=1e-6)
  np.testing.assert_allclose(saved_decoder, _decoder_weights(params, layout), atol=1e-6)
  assert names == metrabs_task.head_joint_names(demo.get_config('tiny,task=3d')) == tuple(info['joint_names'])

  import cv2

  picture = cv2.imread(os.path.join(untrained_run, 'acae', 'latents.png'))
  assert picture is not None and picture.shape[0] > 400 and picture.shape[1] >= 840
  assert picture.std() > 10.0
  with open(os.path.join(untrained_run, 'config.json')) as f:
    assert json.load(f)['acae'] == json.loads(common.acae_config().to_json())  # the overrides were this run's only


def test_fit_errors_are_one_line(tmp_path, monkeypatch, untrained_run):
  result = run_module(['-m', 'posebh_jax.acae', f'--workdir={tmp_path}'])
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith('error: '), result.stderr
  assert 'config.json does not exist' in result.stderr
  from posebh_jax import workdir as workdir_lib
  from posebh_jax.acae import __main__ as command

  old = json.loads(common.base_config().to_json())
  del old['acae']
  (tmp_path / 'config.json').write_text(json.dumps(dict(old, model={}, data={})))
  # A run made before config.acae existed gets its defaults.
  assert dict(command.load_run_config(str(tmp_path)).acae) == dict(common.acae_config())
  with pytest.raises(UserError, match='no 3D head'):
    fit.validate(demo.get_config('tiny'))
  config = demo.get_config('tiny,task=3d')
  with config.unlocked():
    config.acae.fit_datasets = ('nope',)
  with pytest.raises(UserError, match='nope is not a 3D .metrabs3d. dataset of this run; it has syn_smpl'):
    fit.fit_datasets(config)
  with config.unlocked():
    config.acae.fit_datasets = ()
  workdir_lib.write_config(config, str(tmp_path / 'untrained'))
  with pytest.raises(UserError, match='no checkpoint under'):
    fit.run(command.load_run_config(str(tmp_path / 'untrained')), str(tmp_path / 'untrained'), log=lambda line: None)
  with pytest.raises(UserError, match='holds no fitted ACAE'):
    fit.load_acae(str(tmp_path))

  def few_poses(config, model, tasks, variables, datasets, log):
    return {'poses': np.zeros((12, 74, 3), np.float32), 'record': np.arange(12) // 2}

  monkeypatch.setattr(fit, 'pseudo_ground_truth', few_poses)
  with pytest.raises(UserError, match='too few poses for the ACAE: 12 from syn_smpl, syn_h36m, syn_markers give 10'):
    fit.run(command.load_run_config(untrained_run), untrained_run, log=lambda line: None)
