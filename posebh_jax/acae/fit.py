"""Fitting the ACAE on a trained run's own predictions (docs/METHOD.md §3): the command

  python -m posebh_jax.acae --workdir=<a 3D or joint run> [--data_dir=DIR] [--config.acae.<key>=VALUE ...]

1. Pseudo-ground truth. The run's latest checkpoint (params + batch_stats, restored onto one device as
   `inference.Predictor` does, with the model rebuilt from the run's config.json) runs the shared MeTRAbs head
   (`head_metrabs`) on the TRAIN records of `config.acae.fit_datasets` (empty: the run's 'h36m' and 'bml_movi'
   datasets where it has them, else all its `metrabs3d` datasets), at most `max_records_per_dataset` of each
   (evenly spaced), through `Pose3DEvalTransform` crops (the padded box, no augmentation). Every example gives all
   J head joints (every format of `tasks.metrabs.head_formats`) as an absolute pose in the crop camera
   (`losses.metrabs.absolute_from_head` with the crop's intrinsics), mm. Datasets that share their MoE expert
   (the 3D datasets' '3d') share one compiled prediction: with the shared head, the expert is all that differs.
   Flip augmentation (`flip`): the mirrored crop goes through the model too and its prediction is kept as it is,
   as a second sample: the pose of the mirrored person in the mirrored crop's camera (the crop's principal point
   is its centre, so the mirrored crop is an exact view of the mirrored scene with the same intrinsics). This
   makes the pseudo-ground truth left/right symmetric as a set (which the unconstrained ACAE needs and the chiral
   one has by construction) and keeps the model's second guess of every pose as data, rather than averaging the
   two into one flip-test pose.
2. Split. `held_out` of the records (both samples of a record together) are held out, the rest fit the ACAE.
3. Fit. Adam (optax) on batches of `batch_size` poses drawn at random, for `steps` steps; the learning rate is
   `lrs[0]` (3e-2) until the first of `lr_drop_fractions` (0.5) of the steps, `lrs[1]` (3e-3) until the second
   (0.75), then `lrs[2]` (3e-4): with the default 20000 steps, drops at steps 10000 and 15000 (the loss of the
   demo's 8100 poses flattens within the first half; 20000 steps of the 555-joint ACAE take seconds). The loss is `model.loss` (metric projection error + `lambda_sparsity` × the
   weights' mean absolute values). A progress line every `log_every` steps.
4. Result. The held-out reconstruction error per format (mean per-joint 3D distance |X̂ − X| in mm; the ACAE is
   translation-equivariant, so no root alignment) and the loss's projection error (mm at the true depth), printed and written with the weights to `<workdir>/acae/`:
   `params/` (orbax), `acae.json` (`INFO_KEYS`) and `weights.npz` (the normalised matrices that the consistency
   fine-tuning reads through `config.consistency.acae`); `load_acae(workdir)` reads the first two back. `acae/latents.png`
   (`viz.latents`) shows the learned latents among the joints of up to three formats on one held-out pose.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from data_pipeline import pipeline
from data_pipeline import transforms3d
from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import tasks as tasks_lib
from posebh_jax.acae import model as acae_model
from posebh_jax.errors import UserError
from posebh_jax.losses import metrabs as metrabs_losses
from posebh_jax.models import pose_model
from posebh_jax.skeletons import get_format3d
from posebh_jax.tasks import consistency as consistency_lib
from posebh_jax.tasks import metrabs as metrabs_task
from posebh_jax.viz import latents as latents_viz

ACAE_DIR = 'acae'
INFO_FILE = 'acae.json'
PARAMS_DIR = 'params'
PICTURE_FILE = 'latents.png'
# The clean datasets METHOD.md fits the ACAE on, where the run has them.
DEFAULT_FIT_DATASETS = ('h36m', 'bml_movi')
# What `acae.json` holds (see `run`).
INFO_KEYS = (
  'acae',
  'errors_mm',
  'projection_errors_mm',
  'formats',
  'joint_names',
  'sides',
  'flip_index',
  'num_joints',
  'num_latents',
  'num_centre_latents',
  'chiral',
  'fit_datasets',
  'num_train_poses',
  'num_held_out_poses',
  'checkpoint_step',
)


# ------------------------------------------------------------------------------------------------ the run


def validate(config) -> None:
  """One-line UserErrors for a run without a 3D head and for bad `config.acae` values."""
  if not metrabs_task.head_formats(config):
    raise UserError(
      'this run has no 3D head (no dataset with task metrabs3d in config.data); fit the ACAE on a 3D or joint run '
      '(configs/demo.py:task=3d or task=joint)'
    )
  acae = config.acae
  try:
    acae_model.make_layout(('center',), [0], acae.num_latents, acae.num_centre_latents, acae.chiral)
  except ValueError as e:
    raise UserError(f'config.acae: {e}') from None
  if acae.batch_size < 1 or acae.steps < 1 or acae.log_every < 1:
    raise UserError(
      f'config.acae.batch_size, steps and log_every must be >= 1 (got {acae.batch_size}, {acae.steps} and '
      f'{acae.log_every})'
    )
  drops = tuple(acae.lr_drop_fractions)
  if len(tuple(acae.lrs)) != len(drops) + 1 or any(lr <= 0 for lr in acae.lrs):
    raise UserError(
      f'config.acae.lrs needs one positive rate more than lr_drop_fractions (got {tuple(acae.lrs)} and {drops})'
    )
  if list(drops) != sorted(drops) or any(not 0 < f < 1 for f in drops):
    raise UserError(f'config.acae.lr_drop_fractions must increase within (0, 1) (got {drops})')
  if not 0 < acae.held_out < 1 or acae.lambda_sparsity < 0 or acae.max_records_per_dataset < 0:
    raise UserError(
      'config.acae.held_out must be in (0, 1), lambda_sparsity and max_records_per_dataset >= 0 (got '
      f'{acae.held_out}, {acae.lambda_sparsity} and {acae.max_records_per_dataset})'
    )


def fit_datasets(config) -> tuple[str, ...]:
  """The datasets whose train records give the pseudo-ground truth: `config.acae.fit_datasets`, or (empty) the
  run's `metrabs3d` datasets among `DEFAULT_FIT_DATASETS`, else all of them. Raises UserError for a name that is
  not a 3D dataset of the run."""
  datasets = config.data.datasets
  own = tuple(n for n in config.data.order if datasets[n].task == metrabs_task.MetrabsTask.kind)
  wanted = tuple(config.acae.fit_datasets)
  if not wanted:
    return tuple(n for n in own if n in DEFAULT_FIT_DATASETS) or own
  unknown = [n for n in wanted if n not in own]
  if unknown:
    raise UserError(
      f'config.acae.fit_datasets: {", ".join(unknown)} is not a 3D (metrabs3d) dataset of this run; it has '
      f'{", ".join(own)}'
    )
  return tuple(dict.fromkeys(wanted))


def restore_model(config, workdir: str):
  """(model, {dataset: its Task}, {'params', 'batch_stats'} on the first local device, checkpoint step) of the
  run's latest checkpoint, the model built from `config` as `inference.Predictor` builds it. Raises UserError
  without a checkpoint."""
  try:
    checkpoint_lib.resolve_checkpoint(workdir)
  except FileNotFoundError as e:
    raise UserError(f'{e}; train the run first') from None
  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(
    config.model,
    names,
    num_groups=1,
    posebh_config=config.posebh,
    head_specs=[tasks[n].head_spec() for n in names],
    experts=pose_model.dataset_experts(config),
  ).clone(stack_equal_datasets=False)
  state, step = checkpoint_lib.read_state(workdir, items=checkpoint_lib.MODEL_ITEMS)
  variables = jax.device_put(
    {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}}, jax.local_devices()[0]
  )
  return model, tasks, variables, int(step)


# ------------------------------------------------------------------------------------------------ pseudo-GT


def record_indices(count: int, limit: int) -> np.ndarray:
  """int64 indices of the records used: all `count`, or `limit` (> 0) evenly spaced ones when there are more."""
  if 0 < limit < count:
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))
  return np.arange(count, dtype=np.int64)


def head_predict_function(model, task, flip: bool):
  """jit'd (variables, images uint8 (n, H, W, 3), intrinsics (n, 3, 3)) → float32 absolute poses (n, J, 3) mm of all
  the shared head's joints in the crop camera, as `task` (a `MetrabsTask`) predicts them (its consistency variant's
  inference path); with `flip` (2n, J, 3): then the mirrored crops' poses follow."""
  crop_size_hw = task.image_size_hw

  def predict(variables, images, intrinsics):
    if flip:
      images = jnp.concatenate([images, images[:, :, ::-1]])
      intrinsics = jnp.concatenate([intrinsics, intrinsics])
    output = model.apply(variables, {task.name: images}, train=False)[task.name]
    joints = task.consistency.inference_joints(task.consistency.split(output))
    coords2d = joints['coords2d'].astype(jnp.float32)
    relative = joints['coords3d_rel'].astype(jnp.float32)
    return metrabs_losses.absolute_from_head(coords2d, relative, intrinsics.astype(jnp.float32), crop_size_hw)

  return jax.jit(predict)


def pseudo_ground_truth(
  config, model, tasks, variables, datasets: Sequence[str], log: Callable[[str], None] = print
) -> dict[str, np.ndarray]:
  """The head's poses on the train records of `datasets` (module docstring, step 1).

  Returns {'poses': float32 (N, J, 3) mm crop camera frame, 'record': int64 (N,) a record number unique over the
  datasets (a record's plain and mirrored samples share it), 'mirrored': bool (N,), 'dataset': int32 (N,) position
  in `datasets`}.
  """
  acae = config.acae
  batch_size = int(config.eval_batch_size)
  image_size_hw = tuple(int(s) for s in config.data.image_size)
  poses, records, mirrored, dataset_ids = [], [], [], []
  first_record = 0
  # With the shared head, a dataset's name selects only its MoE expert: datasets that share the expert share one
  # compiled prediction (the first of them runs it).
  experts = dict(zip(config.data.order, pose_model.dataset_experts(config)))
  runners = {}
  for position, name in enumerate(datasets):
    entry = config.data.datasets[name]
    start = time.perf_counter()
    source = pipeline.open_source(entry.tfds_name, entry.train_split, config.data.data_dir)
    source = pipeline.select_fields(source, metrabs_task.EVAL_FIELDS)
    indices = record_indices(len(source), int(acae.max_records_per_dataset))
    transform = transforms3d.Pose3DEvalTransform(entry.format, image_size_hw, config.data.bbox_padding)
    if experts[name] not in runners:
      runners[experts[name]] = head_predict_function(model, tasks[name], bool(acae.flip))
    predict = runners[experts[name]]
    number = first_record
    for batch in pipeline.padded_batches(source, indices, batch_size, transform):
      out = np.asarray(predict(variables, batch['image'], batch['intrinsics']), np.float32)
      keep = np.flatnonzero(np.asarray(batch['example_valid']))
      ids = number + np.arange(len(keep))
      number += len(keep)
      copies = ((out[:batch_size], False), (out[batch_size:], True)) if acae.flip else ((out, False),)
      for copy, is_mirror in copies:
        poses.append(copy[keep])
        records.append(ids)
        mirrored.append(np.full(len(keep), is_mirror))
        dataset_ids.append(np.full(len(keep), position, np.int32))
    log(
      f'acae: {name}: {number - first_record} train records{" and their mirror images" if acae.flip else ""} '
      f'through the 3D head in {time.perf_counter() - start:.1f} s'
    )
    first_record = number
  joints = sum(get_format3d(f).num_joints for f in metrabs_task.head_formats(config))
  if not poses:
    return {
      'poses': np.zeros((0, joints, 3), np.float32),
      'record': np.zeros(0, np.int64),
      'mirrored': np.zeros(0, bool),
      'dataset': np.zeros(0, np.int32),
    }
  return {
    'poses': np.concatenate(poses),
    'record': np.concatenate(records).astype(np.int64),
    'mirrored': np.concatenate(mirrored),
    'dataset': np.concatenate(dataset_ids),
  }


def split_held_out(records: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(fit indices, held-out indices) into samples with record numbers `records` (N,): a random `fraction` of the
  distinct records (at least one) is held out with all its samples."""
  distinct = np.unique(records)
  count = max(1, int(round(fraction * len(distinct)))) if len(distinct) else 0
  held = np.random.default_rng(seed).permutation(distinct)[:count]
  is_held = np.isin(records, held)
  return np.flatnonzero(~is_held), np.flatnonzero(is_held)


# ------------------------------------------------------------------------------------------------ fitting


def lr_schedule(acae) -> optax.Schedule:
  """`acae.lrs[i]` from step round(lr_drop_fractions[i - 1] × steps) on (the first from step 0)."""
  boundaries = [int(round(f * acae.steps)) for f in acae.lr_drop_fractions]
  return optax.join_schedules([optax.constant_schedule(float(lr)) for lr in acae.lrs], boundaries)


def fit_params(poses_mm, layout: acae_model.AcaeLayout, acae, log: Callable[[str], None] = print) -> dict:
  """Fits ACAE weights to poses (N, J, 3) mm camera frame (module docstring, step 3): `acae` holds batch_size,
  steps, lrs, lr_drop_fractions, lambda_sparsity, log_every and seed. Returns the params (`model.init_params`'s
  layout of arrays)."""
  poses = jnp.asarray(poses_mm, jnp.float32)
  key_batches = jax.random.key(int(acae.seed))
  schedule = lr_schedule(acae)
  optimizer = optax.adam(schedule)
  params = jax.tree.map(jnp.asarray, acae_model.init_params(layout, int(acae.seed)))
  opt_state = jax.jit(optimizer.init)(params)  # compiled whole: eagerly, each of its small ops would compile
  lambda_sparsity, batch_size = float(acae.lambda_sparsity), int(acae.batch_size)

  def objective(params, batch):
    return acae_model.loss(params, layout, batch, None, lambda_sparsity)

  def step(carry, key):
    params, opt_state = carry
    batch = poses[jax.random.randint(key, (batch_size,), 0, poses.shape[0])]
    (total, terms), grads = jax.value_and_grad(objective, has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (total, terms['proj'], terms['sparsity'])

  @functools.partial(jax.jit, static_argnums=3)
  def run_steps(params, opt_state, key, count):
    (params, opt_state), metrics = jax.lax.scan(step, (params, opt_state), jax.random.split(key, count))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  done, start = 0, time.perf_counter()
  while done < acae.steps:
    count = min(int(acae.log_every), int(acae.steps) - done)
    params, opt_state, (total, projection, sparsity) = run_steps(
      params, opt_state, jax.random.fold_in(key_batches, done), count
    )
    done += count
    log(
      f'acae step {done}/{acae.steps}: loss {float(total):.5f} = projection {1000 * float(projection):.2f} mm + '
      f'{lambda_sparsity:g} x sparsity {float(sparsity):.5f}; lr {float(schedule(done - 1)):.0e} '
      f'({time.perf_counter() - start:.1f} s)'
    )
  return params


def format_slices(format_names: Sequence[str]) -> dict[str, tuple[int, int]]:
  """{format: (start, stop)} of each format's joints among the concatenated joints of `format_names`."""
  out, start = {}, 0
  for name in format_names:
    out[name] = (start, start + get_format3d(name).num_joints)
    start += get_format3d(name).num_joints
  return out


def format_errors(params, layout, poses_mm, slices: Mapping[str, tuple[int, int]]) -> tuple[dict, dict]:
  """({format: mean per-joint 3D reconstruction error |X̂ − X| (mm)}, {format: mean per-joint metric projection
  error (mm), the loss's term}) over `poses_mm` (N, J, 3) and the format's joints; 'all': over every joint."""
  out = []
  for function in (acae_model.joint_errors, acae_model.joint_projection_errors):
    errors = np.asarray(jax.jit(function, static_argnums=1)(params, layout, poses_mm), np.float64)
    by_format = {name: float(errors[:, start:stop].mean()) for name, (start, stop) in slices.items()}
    out.append(dict(by_format, all=float(errors.mean())))
  return out[0], out[1]


# ------------------------------------------------------------------------------------------------ files


def layout_from_info(info: Mapping[str, Any]) -> acae_model.AcaeLayout:
  """The `model.AcaeLayout` of a saved ACAE's info (`load_acae`)."""
  return acae_model.make_layout(
    info['sides'], info['flip_index'], info['num_latents'], info['num_centre_latents'], info['chiral']
  )


def save_acae(workdir: str, params, info: Mapping[str, Any]) -> str:
  """Writes `<workdir>/acae/params` (orbax: the unnormalised weights W′, replacing an earlier fit),
  `<workdir>/acae/acae.json` (`info`) and `<workdir>/acae/weights.npz` (the normalised W_enc, W_dec and the joint
  names: what `config.consistency.acae` reads, `tasks.consistency.write_acae`). Returns the acae directory."""
  directory = os.path.join(os.path.abspath(workdir), ACAE_DIR)
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, PARAMS_DIR)
  if os.path.exists(target):
    shutil.rmtree(target)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, jax.tree.map(np.asarray, params))
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(os.path.join(directory, INFO_FILE), 'w') as f:
    json.dump(dict(info), f, indent=1)
  layout = layout_from_info(info)
  consistency_lib.write_acae(
    directory,
    acae_model.encoder_weights(params, layout),
    acae_model.decoder_weights(params, layout),
    info['joint_names'],
  )
  return directory


def load_acae(workdir: str) -> tuple[dict, dict]:
  """(params, info) of the ACAE fitted for the run in `workdir` (`python -m posebh_jax.acae`): params as
  `model.init_params` lays them out (float32 arrays), info the `acae.json` dict (`INFO_KEYS`; `layout_from_info`
  gives the layout). Raises UserError when the run has none."""
  directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), ACAE_DIR)
  info_path = os.path.join(directory, INFO_FILE)
  if not os.path.isfile(info_path) or not os.path.isdir(os.path.join(directory, PARAMS_DIR)):
    raise UserError(f'{directory} holds no fitted ACAE; run python -m posebh_jax.acae --workdir={workdir}')
  with open(info_path) as f:
    info = json.load(f)
  checkpointer = ocp.StandardCheckpointer()
  try:
    params = checkpointer.restore(os.path.join(directory, PARAMS_DIR))
  finally:
    checkpointer.close()
  return jax.tree.map(np.asarray, params), info


# ------------------------------------------------------------------------------------------------ the command


def run(config, workdir: str, log: Callable[[str], None] = print) -> dict:
  """The command (module docstring): pseudo-ground truth, fit, held-out errors, `<workdir>/acae/` and its picture.
  Returns the info written to acae.json."""
  validate(config)
  datasets = fit_datasets(config)
  acae = config.acae
  formats = metrabs_task.head_formats(config)
  joint_names, sides, flip_index = acae_model.format_joints(formats)  # joint_names == head_joint_names(config)
  layout = acae_model.make_layout(sides, flip_index, acae.num_latents, acae.num_centre_latents, acae.chiral)
  model, tasks, variables, step = restore_model(config, workdir)
  log(f'acae: step {step} of {workdir}; pseudo-ground truth of {len(joint_names)} joints ({", ".join(formats)})')
  truth = pseudo_ground_truth(config, model, tasks, variables, datasets, log)
  fit, held = split_held_out(truth['record'], float(acae.held_out), int(acae.seed))
  if len(fit) < acae.batch_size or not len(held):
    raise UserError(
      f'too few poses for the ACAE: {len(truth["poses"])} from {", ".join(datasets)} give {len(fit)} to fit '
      f'(config.acae.batch_size={acae.batch_size} at least) and {len(held)} held out; fit on more datasets '
      '(config.acae.fit_datasets) or raise config.acae.max_records_per_dataset'
    )
  log(
    f'acae: fitting L={layout.num_latents} latents ({"chiral" if layout.chiral else "not chiral"}) on '
    f'{len(fit)} poses, {len(held)} held out'
  )
  params = fit_params(truth['poses'][fit], layout, acae, log)
  slices = format_slices(formats)
  errors, projection_errors = format_errors(params, layout, truth['poses'][held], slices)
  log(
    f'acae held-out reconstruction error (mm, {len(held)} poses): '
    + ', '.join(f'{name} {value:.1f}' for name, value in errors.items())
  )
  log(
    'acae held-out projection error (mm at the true depth, the loss\'s term): '
    + ', '.join(f'{name} {value:.1f}' for name, value in projection_errors.items())
  )
  info = {
    'acae': config.acae.to_dict(),
    'errors_mm': errors,
    'projection_errors_mm': projection_errors,
    'formats': [{'name': name, 'start': start, 'stop': stop} for name, (start, stop) in slices.items()],
    'joint_names': list(joint_names),
    'sides': list(sides),
    'flip_index': [int(i) for i in flip_index],
    'num_joints': layout.num_joints,
    'num_latents': layout.num_latents,
    'num_centre_latents': layout.num_centre_latents,
    'chiral': layout.chiral,
    'fit_datasets': list(datasets),
    'num_train_poses': int(len(fit)),
    'num_held_out_poses': int(len(held)),
    'checkpoint_step': step,
  }
  directory = save_acae(workdir, params, info)
  picture = draw(os.path.join(directory, PICTURE_FILE), params, layout, truth['poses'][held[0]], formats, errors)
  log(
    f'acae: wrote {directory}/: {PARAMS_DIR}/, {INFO_FILE}, {consistency_lib.ACAE_FILE} and {os.path.basename(picture)}'
  )
  return info


def draw(path: str, params, layout, pose_mm, formats: Sequence[str], errors: Mapping[str, float]) -> str:
  """Writes `viz.latents`' picture of the latents of `pose_mm` (J, 3) among the joints of the first three of
  `formats` (the head's, in joint order). Returns the path."""
  slices = format_slices(formats)
  groups = []
  for name in formats[: latents_viz.MAX_FORMATS]:
    start, stop = slices[name]
    groups.append(latents_viz.JointGroup(name, np.arange(start, stop), get_format3d(name).links))
  latents = np.asarray(acae_model.encode(params, layout, pose_mm), np.float64)
  weights = np.asarray(acae_model.encoder_weights(params, layout), np.float64)
  title = f'ACAE: {layout.num_latents} latents; held-out error ' + ', '.join(
    f'{name} {errors[name]:.0f}' for name in formats[: latents_viz.MAX_FORMATS]
  )
  return latents_viz.write_latents_png(
    path, np.asarray(pose_mm, np.float64), latents, weights, groups, layout.latent_sides, title + ' mm'
  )
