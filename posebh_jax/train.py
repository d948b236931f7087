"""The training loop: mesh, state, data, jit'd step, checkpoints, evaluation, metrics.

`step(state, batch) -> (state, metrics)` is pure; the state is one pytree (a dict):
  step (int32), params, batch_stats, opt_state, extra (non-gradient state, e.g. prototypes), rng (key data).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import flops as flops_lib
from posebh_jax import metrics as metrics_lib
from posebh_jax import optim
from posebh_jax import sharding as sharding_lib
from posebh_jax import skeletons
from posebh_jax.errors import UserError
from posebh_jax.losses import multi_dataset_heatmap_loss
from posebh_jax.models import pose_model


def validate_config(config: ml_collections.ConfigDict):
  """Checks what the code cannot check later with a useful message; raises UserError (one line)."""
  order = tuple(config.data.order)
  if not order:
    raise UserError('config.data.order is empty; list the datasets to train on, e.g. coco,aic,mpii')
  for name in order:
    if name not in config.data.datasets:
      known = ', '.join(sorted(config.data.datasets.keys()))
      raise UserError(f"unknown dataset '{name}' in config.data.order; known datasets in config.data.datasets: "
                      f'{known}')
    entry = config.data.datasets[name]
    try:
      skeletons.get_format(entry.format)
    except ValueError as e:
      raise UserError(f'config.data.datasets.{name}.format: {e}') from None
    if entry.codec not in ('udp', 'msra'):
      raise UserError(f"config.data.datasets.{name}.codec is '{entry.codec}'; use 'udp' or 'msra'")
    if entry.weight <= 0:
      raise UserError(f'config.data.datasets.{name}.weight must be > 0 (got {entry.weight})')
  for name in config.eval_datasets:
    if name not in order:
      raise UserError(f"config.eval_datasets names '{name}', which is not in config.data.order {list(order)}")
  if config.batch_size <= 0:
    raise UserError(f'config.batch_size must be positive (got {config.batch_size})')
  if config.model.width % config.model.num_heads:
    raise UserError(f'config.model.width {config.model.width} is not divisible by num_heads '
                    f'{config.model.num_heads}')
  if config.model.use_experts and not 0 < config.model.expert_dim < config.model.width:
    raise UserError(f'config.model.expert_dim must be in (0, width={config.model.width}) '
                    f'(got {config.model.expert_dim})')
  image_h, image_w = config.data.image_size
  heat_h, heat_w = config.data.heatmap_size
  stride = 2 ** config.model.head_num_deconv
  grid = [(s + 2 * config.model.patch_padding - config.model.patch_size) // config.model.patch_size + 1
          for s in (image_h, image_w)]
  if (grid[0] * stride, grid[1] * stride) != (heat_h, heat_w):
    raise UserError(f'config.data.heatmap_size {tuple(config.data.heatmap_size)} does not match the model output '
                    f'{(grid[0] * stride, grid[1] * stride)} for image_size {tuple(config.data.image_size)}')


class Task:
  """Everything built from the config that the step functions close over (model, optimizer, shardings)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, steps_per_epoch: int,
               counts: dict[str, int]):
    self.config = config
    self.mesh = mesh
    self.rules = tuple((k, v) for k, v in config.logical_axis_rules)
    self.names = tuple(config.data.order)
    self.formats = {n: skeletons.get_format(config.data.datasets[n].format) for n in self.names}
    self.num_keypoints = {n: f.num_keypoints for n, f in self.formats.items()}
    self.groups = sharding_lib.num_batch_groups(mesh)
    self.counts = counts
    self.model = pose_model.build_model(config.model, self.names, [self.num_keypoints[n] for n in self.names],
                                        num_groups=self.groups)
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = (config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch)
    image_h, image_w = config.data.image_size

    def init_variables(rng):
      dummy = {n: jnp.zeros((self.groups, image_h, image_w, 3), jnp.uint8) for n in self.names}
      return self.model.init({'params': rng, 'dropout': rng}, dummy, train=False)

    self._init_variables = init_variables
    with self.activate():
      boxed = jax.eval_shape(init_variables, jax.random.key(0))
    self.param_shardings = sharding_lib.logical_shardings(boxed['params'], mesh, self.rules)
    abstract_params = nn.unbox(boxed['params'])
    self.tx, self.schedule, self.frozen = optim.build_optimizer(config.optim, abstract_params, config.model.depth,
                                                                steps_per_epoch)
    with self.activate():
      self.abstract_state = jax.eval_shape(self._init_state, jax.random.key(0))
    replicated = sharding_lib.replicated(mesh)
    opt_shardings = optax.tree_map_params(self.tx, lambda _, s: s, self.abstract_state['opt_state'],
                                          self.param_shardings, transform_non_params=lambda _: replicated)
    self.state_shardings = {
        'step': replicated, 'params': self.param_shardings,
        'batch_stats': jax.tree.map(lambda _: replicated, self.abstract_state['batch_stats']),
        'opt_state': opt_shardings,
        'extra': jax.tree.map(lambda _: replicated, self.abstract_state['extra']),
        'rng': replicated,
    }
    self.batch_sharding = sharding_lib.batch_sharding(mesh)

  def activate(self):
    """Context that makes the mesh and logical axis rules current (tracing needs both)."""
    mesh, rules = self.mesh, self.rules

    class _Ctx:
      def __enter__(self_inner):
        self_inner._mesh = jax.set_mesh(mesh)
        self_inner._mesh.__enter__()
        self_inner._rules = nn.logical_axis_rules(rules)
        self_inner._rules.__enter__()

      def __exit__(self_inner, *exc):
        self_inner._rules.__exit__(*exc)
        self_inner._mesh.__exit__(*exc)

    return _Ctx()

  def _init_state(self, rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = nn.unbox(self._init_variables(params_rng))
    params = variables['params']
    return {
        'step': jnp.zeros((), jnp.int32),
        'params': params,
        'batch_stats': variables.get('batch_stats', {}),
        'opt_state': self.tx.init(params),
        'extra': {},
        'rng': jax.random.key_data(state_rng),
    }

  def init_state(self, seed: int):
    """The initial state, created directly in its shardings."""
    init = jax.jit(self._init_state, out_shardings=self.state_shardings)
    with self.activate():
      return init(jax.random.key(seed))

  # ---------------------------------------------------------------- train step
  def train_step(self, state, batch):
    """One optimisation step on a global batch `{name: {image, heatmaps, target_weights}}`."""
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    images = {name: batch[name]['image'] for name in self.names if name in batch}

    def loss_fn(params):
      # Frozen groups get no gradient at all, so XLA prunes their backward pass.
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, self.frozen)
      outputs, updates = self.model.apply({'params': params, 'batch_stats': state['batch_stats']}, images,
                                          train=True, rngs={'dropout': step_rng}, mutable=['batch_stats'])
      total, per_dataset = multi_dataset_heatmap_loss(outputs, batch)
      return total, (per_dataset, updates['batch_stats'])

    (loss, (per_dataset, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'train/loss': loss, 'train/grad_norm': optax.global_norm(grads),
               'train/lr': self.schedule(state['step'])}
    metrics.update({f'train/loss_{name}': value for name, value in per_dataset.items()})
    new_state = dict(state, step=state['step'] + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  def batch_shardings(self, batch_structure):
    return jax.tree.map(lambda _: self.batch_sharding, batch_structure)

  def compile_train_step(self, example_batch):
    """jit with explicit shardings and donated state, lowered and compiled once before the loop."""
    step = jax.jit(self.train_step,
                   in_shardings=(self.state_shardings, self.batch_shardings(example_batch)),
                   out_shardings=(self.state_shardings, sharding_lib.replicated(self.mesh)),
                   donate_argnums=(0,))
    abstract_state = checkpoint_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.batch_sharding),
                                  example_batch)
    with self.activate():
      compiled = step.lower(abstract_state, abstract_batch).compile()
    return compiled

  # ---------------------------------------------------------------- prediction
  def predict_fn(self, name: str, flip: bool):
    """jit'd `(variables, images (n,H,W,3) uint8) -> heatmaps (n, h, w, K)` for one dataset, with flip test."""
    flip_index = np.asarray(self.formats[name].flip_index)
    shift = self.config.data.datasets[name].codec != 'udp'

    def predict(variables, images):
      heatmaps = self.model.apply(variables, {name: images}, train=False)[name]
      if flip:
        flipped = self.model.apply(variables, {name: images[:, :, ::-1]}, train=False)[name]
        flipped = flipped[:, :, ::-1][..., flip_index]
        if shift:  # the non-UDP flip is off by one pixel; the reference pipelines shift it back
          flipped = jnp.concatenate([flipped[:, :, :1], flipped[:, :, :-1]], axis=2)
        heatmaps = 0.5 * (heatmaps + flipped)
      return heatmaps

    jitted = jax.jit(predict)

    def run(variables, images):
      with self.activate():
        return jitted(variables, images)

    return run


def global_batch_structure(counts: dict[str, int], config, num_keypoints: dict[str, int]):
  """ShapeDtypeStructs of the global batch, used to compile the step before data arrives."""
  image_h, image_w = config.data.image_size
  heat_h, heat_w = config.data.heatmap_size
  return {name: {'image': jax.ShapeDtypeStruct((n, image_h, image_w, 3), jnp.uint8),
                 'heatmaps': jax.ShapeDtypeStruct((n, heat_h, heat_w, num_keypoints[name]), jnp.float32),
                 'target_weights': jax.ShapeDtypeStruct((n, num_keypoints[name]), jnp.float32)}
          for name, n in counts.items()}


def write_config(config, workdir: str):
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # second signal: give up at once
      raise KeyboardInterrupt
    logging.warning('signal %d: saving a checkpoint and stopping after this step', signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _print(message: str):
  if jax.process_index() == 0:
    print(message, flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates on schedule; returns last metrics."""
  from data_pipeline import pipeline  # the data layer is imported lazily so that the library stays light
  from posebh_jax import evaluate as eval_lib

  validate_config(config)
  workdir = os.path.abspath(workdir)
  write_config(config, workdir)
  mesh = sharding_lib.make_mesh(config.mesh)
  groups = sharding_lib.num_batch_groups(mesh)
  counts = pipeline.composition(config.data, config.batch_size, groups)
  sizes = pipeline.dataset_sizes(config.data)
  steps_per_epoch = max(1, math.ceil(sum(sizes.values()) / config.batch_size))
  task = Task(config, mesh, steps_per_epoch, counts)
  total_steps = task.total_steps
  _print(f'mesh {dict(mesh.shape)} | batch {config.batch_size} = {counts} | {steps_per_epoch} steps/epoch | '
         f'{total_steps} steps')

  train_iter = pipeline.make_train_iterator(config.data, config.batch_size, groups, jax.process_index(),
                                            jax.process_count(), seed=config.seed)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:
    abstract = checkpoint_lib.abstract_with_shardings(task.abstract_state, task.state_shardings)
    state = checkpointer.restore(latest, abstract, train_iter)
    _print(f'resumed from {workdir}/checkpoints at step {latest}')
  else:
    state = task.init_state(config.seed)
  start_step = int(jax.device_get(state['step']))

  batch_struct = global_batch_structure(counts, config, task.num_keypoints)
  compile_start = time.perf_counter()
  step_fn = task.compile_train_step(batch_struct)
  memory = step_fn.memory_analysis()
  _print(f'compiled train step in {time.perf_counter() - compile_start:.1f}s'
         + (f' | temp {memory.temp_size_in_bytes / 2**30:.2f} GiB, args {memory.argument_size_in_bytes / 2**30:.2f}'
            f' GiB per device' if memory is not None else ''))
  flops_per_step = flops_lib.train_flops_per_batch(config.model, config.data.image_size, counts, task.num_keypoints)
  chrono = metrics_lib.Chrono(total_steps, config.batch_size, flops_per_step,
                              flops_lib.device_peak_tflops(config.device_peak_tflops))
  writer = metrics_lib.MetricWriter(workdir)
  evaluator = eval_lib.Evaluator(config, task, workdir)

  pending = None  # (step, device metrics) read back one step late so that dispatch never blocks
  window: list[dict] = []
  last_eval: dict = {}

  def flush_pending():
    nonlocal pending
    if pending is not None:
      window.append(jax.device_get(pending[1]))
      pending = None

  def log(step):
    flush_pending()
    if not window:
      return
    scalars = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    window.clear()
    scalars.update(chrono.summary(step))
    writer.write(step, scalars)
    _print(metrics_lib.format_progress(step, total_steps, scalars))

  def save(step):
    pause = time.perf_counter()
    checkpointer.save(step, state, train_iter)
    chrono.pause(time.perf_counter() - pause)

  def run_eval(step):
    nonlocal last_eval
    pause = time.perf_counter()
    last_eval = evaluator.run(state, step)
    writer.write(step, last_eval)
    _print(f'eval at step {step}: ' + ', '.join(f'{k}={v:.4f}' for k, v in sorted(last_eval.items())
                                                 if k.endswith('/AP') or k.endswith('/PCKh')))
    chrono.pause(time.perf_counter() - pause)

  with _StopRequest() as stop:
    step = start_step
    while step < total_steps:
      wait_start = time.perf_counter()
      local = next(train_iter)
      batch = sharding_lib.global_batch(local, mesh)
      chrono.data_wait(time.perf_counter() - wait_start)
      state, step_metrics = step_fn(state, batch)
      flush_pending()
      pending = (step + 1, step_metrics)
      step += 1
      chrono.tick()
      if step % config.log_every_steps == 0 or step == total_steps:
        log(step)
      if step % config.checkpoint_every_steps == 0 or step == total_steps or stop.requested:
        save(step)
      if config.eval_every_steps > 0 and (step % config.eval_every_steps == 0 or step == total_steps):
        run_eval(step)
      if stop.requested:
        log(step)
        _print(f'stopped at step {step}; re-run the same command to resume')
        break
  flush_pending()
  checkpointer.close()
  writer.close()
  return last_eval


def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=eval`: evaluates the latest checkpoint in `workdir` and logs `eval/<dataset>/<metric>`."""
  from posebh_jax import evaluate as eval_lib

  validate_config(config)
  workdir = os.path.abspath(workdir)
  mesh = sharding_lib.make_mesh(config.mesh)
  from data_pipeline import pipeline
  counts = pipeline.composition(config.data, config.batch_size, sharding_lib.num_batch_groups(mesh))
  task = Task(config, mesh, steps_per_epoch=1, counts=counts)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is None:
    raise UserError(f'no checkpoint in {workdir}/checkpoints; train first or pass the right --workdir')
  abstract = checkpoint_lib.abstract_with_shardings(task.abstract_state, task.state_shardings)
  state = checkpointer.restore_state_only(latest, abstract)
  results = eval_lib.Evaluator(config, task, workdir).run(state, latest)
  metrics_lib.MetricWriter(workdir).write(latest, results)
  _print(eval_lib.format_table(results))
  checkpointer.close()
  return results
