"""The training loop: mesh, state, data, jit'd step, checkpoints, evaluation, metrics.

`step(state, batch) -> (state, metrics)` is pure; the state is one pytree (a dict):
  step (int32), params, batch_stats, opt_state, extra (non-gradient state, e.g. prototypes), rng (key data).
"""
from __future__ import annotations

import json
import math
import os
import re
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
from flax import traverse_util

from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import flops as flops_lib
from posebh_jax import metrics as metrics_lib
from posebh_jax import optim
from posebh_jax import sharding as sharding_lib
from posebh_jax import skeletons
from posebh_jax import stages
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
  if config.get('eval_nms', 'oks') not in ('oks', 'soft_oks', 'none'):
    raise UserError(f"config.eval_nms is '{config.eval_nms}'; use 'oks', 'soft_oks' or 'none'")
  if config.batch_size <= 0:
    raise UserError(f'config.batch_size must be positive (got {config.batch_size})')
  for key in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'eval_batch_size'):
    if config[key] < 1:
      raise UserError(f'config.{key} must be at least 1 (got {config[key]})'
                      + ('; a run keeps its newest checkpoints, so that a crash loses at most '
                         'checkpoint_every_steps steps' if key == 'keep_checkpoints' else ''))
  if config.eval_every_steps < 0:
    raise UserError(f'config.eval_every_steps must be >= 0 (0: no evaluation during training; got '
                    f'{config.eval_every_steps})')
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise UserError(f'nothing to train: config.total_steps is {config.total_steps} and config.num_epochs '
                    f'{config.num_epochs}; set one of them > 0 (total_steps wins when > 0)')
  if not config.optim.lr > 0:
    raise UserError(f'config.optim.lr must be > 0 (got {config.optim.lr}); to keep parameters fixed use '
                    'config.optim.frozen')
  if config.posebh.enabled and not all(lr > 0 for lr in config.posebh.stage_lrs):
    raise UserError(f'config.posebh.stage_lrs must all be > 0 (got {tuple(config.posebh.stage_lrs)})')
  if config.optim.schedule not in optim.SCHEDULES:
    raise UserError(f"config.optim.schedule is '{config.optim.schedule}'; use one of {', '.join(optim.SCHEDULES)}")
  for key, allowed in (('dtype', ('float32', 'bfloat16', 'float64')), ('param_dtype', ('float32', 'float64'))):
    if config.model[key] not in allowed:
      raise UserError(f"config.model.{key} is '{config.model[key]}'; use one of {', '.join(allowed)}")
  if not isinstance(config.seed, int) or config.seed < 0:
    raise UserError(f'config.seed must be an integer >= 0 (got {config.seed!r})')
  for key in ('width', 'depth', 'num_heads', 'patch_size', 'head_channels', 'head_num_deconv'):
    if config.model[key] < 1:
      raise UserError(f'config.model.{key} must be at least 1 (got {config.model[key]})')
  if config.model.patch_padding < 0 or not config.model.mlp_ratio > 0:
    raise UserError(f'config.model.patch_padding must be >= 0 and mlp_ratio > 0 (got '
                    f'{config.model.patch_padding} and {config.model.mlp_ratio})')
  frozen_lists = [('optim', config.optim.frozen)]
  if 'transfer' in config:
    frozen_lists.append(('transfer', config.transfer.frozen))
  for section, pattern in ((section, p) for section, patterns in frozen_lists for p in patterns):
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise UserError(f'config.{section}.frozen: {pattern!r} is not a regular expression ({e}); patterns are '
                      "searched in parameter paths such as 'backbone/block_0/attn/qkv/kernel'") from None
  if config.model.width % config.model.num_heads:
    raise UserError(f'config.model.width {config.model.width} is not divisible by num_heads '
                    f'{config.model.num_heads}')
  if config.model.use_experts and not 0 < config.model.expert_dim < config.model.width:
    raise UserError(f'config.model.expert_dim must be in (0, width={config.model.width}) '
                    f'(got {config.model.expert_dim})')
  try:
    pose_model.resolve_stacking(config.model.get('stack_equal_datasets', 'auto'))
  except ValueError as e:
    raise UserError(f'config.{e}') from None
  for key in ('image_size', 'heatmap_size'):
    size = tuple(config.data[key])
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
      raise UserError(f'config.data.{key} must be (height, width) in pixels, two positive integers (got {size})')
  if config.optim.warmup_steps < 0 or config.data.num_workers < 0 or config.data.sigma <= 0:
    raise UserError('config.optim.warmup_steps and config.data.num_workers must be >= 0 and config.data.sigma > 0 '
                    f'(got {config.optim.warmup_steps}, {config.data.num_workers} and {config.data.sigma})')
  if not 0 <= config.model.drop_path < 1:
    raise UserError(f'config.model.drop_path is a stochastic-depth rate in [0, 1) (got {config.model.drop_path})')
  aug = config.data.aug
  for key in ('rotation_prob', 'flip_prob', 'half_body_prob'):
    if not 0 <= aug[key] <= 1:
      raise UserError(f'config.data.aug.{key} is a probability in [0, 1] (got {aug[key]})')
  if not 0 <= aug.scale_factor < 1 or aug.rotation < 0:
    raise UserError('config.data.aug.scale_factor must be in [0, 1) (crops scaled by 1 ± it) and rotation >= 0 '
                    f'(degrees, ±) (got {aug.scale_factor} and {aug.rotation})')
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
    self.posebh = config.posebh.enabled
    self.model = pose_model.build_model(config.model, self.names, [self.num_keypoints[n] for n in self.names],
                                        num_groups=self.groups, posebh_config=config.posebh)
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = (config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch)
    self.phases = stages.plan_phases(config, steps_per_epoch, self.total_steps)
    # Global keypoint index: datasets in config order, each a contiguous block (214 for the six datasets).
    starts = np.cumsum([0] + [self.num_keypoints[n] for n in self.names])
    self.keypoint_offsets = {n: int(o) for n, o in zip(self.names, starts)}
    self.total_keypoints = int(sum(self.num_keypoints.values()))
    image_h, image_w = config.data.image_size

    def init_variables(rng):
      dummy = {n: jnp.zeros((self.groups, image_h, image_w, 3), jnp.uint8) for n in self.names}
      return self.model.init({'params': rng, 'dropout': rng}, dummy, train=False,
                             method=pose_model.PoseModel.init_all)

    self._init_variables = init_variables
    with self.activate():
      boxed = jax.eval_shape(init_variables, jax.random.key(0))
    self.param_shardings = sharding_lib.logical_shardings(boxed['params'], mesh, self.rules)
    self.abstract_params = nn.unbox(boxed['params'])
    self._phase_setups: dict[int, Any] = {}
    self.batch_sharding = sharding_lib.batch_sharding(mesh)
    self.use_phase(0)

  def use_phase(self, index: int):
    """Makes phase `index` current: its optimizer, lr schedule, frozen mask, abstract state and shardings."""
    if index not in self._phase_setups:
      phase = self.phases[index]
      overrides = {'frozen': phase.frozen}
      if phase.lr is not None:  # a staged phase: constant lr after its own warmup
        overrides.update(lr=phase.lr, decay_epochs=(), schedule='step')
      optim_config = ml_collections.ConfigDict({**self.config.optim.to_dict(), **overrides})
      # A staged phase restarts its warmup at its first step.
      tx, schedule, frozen = optim.build_optimizer(optim_config, self.abstract_params, self.config.model.depth,
                                                   self.steps_per_epoch, self.total_steps,
                                                   schedule_start=phase.start_step if phase.lr is not None else 0)
      self.phase, self.tx, self.schedule, self.frozen = phase, tx, schedule, frozen
      with self.activate():
        abstract_state = jax.eval_shape(self._init_state, jax.random.key(0))
      replicated = sharding_lib.replicated(self.mesh)
      # Frozen parameters have MaskedNode placeholders (no state) in the optimizer state; keep them as they are.
      masked = lambda x: isinstance(x, optax.MaskedNode)
      opt_shardings = optax.tree_map_params(tx, lambda leaf, s: leaf if masked(leaf) else s,
                                            abstract_state['opt_state'], self.param_shardings,
                                            transform_non_params=lambda _: replicated, is_leaf=masked)
      shardings = {
          'step': replicated, 'params': self.param_shardings,
          'batch_stats': jax.tree.map(lambda _: replicated, abstract_state['batch_stats']),
          'opt_state': opt_shardings,
          'extra': jax.tree.map(lambda _: replicated, abstract_state['extra']),
          'rng': replicated,
      }
      self._phase_setups[index] = (phase, tx, schedule, frozen, abstract_state, shardings)
    (self.phase, self.tx, self.schedule, self.frozen, self.abstract_state,
     self.state_shardings) = self._phase_setups[index]
    return self.phase

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
        'extra': self._init_extra(jax.random.fold_in(state_rng, 1)),
        'rng': jax.random.key_data(state_rng),
    }

  def _init_extra(self, rng):
    """Non-gradient state: PoseBH's prototypes (J, M, F) and cluster prototypes (set when CPS starts)."""
    if not self.posebh:
      return {}
    from posebh_jax.posebh import prototypes as proto_lib
    cfg = self.config.posebh
    protos = proto_lib.init_prototypes(rng, self.total_keypoints, cfg.prototypes_per_keypoint, cfg.embed_dim)
    return {'prototypes': protos, 'cluster_prototypes': protos}

  def load_initial_weights(self, state, path: str):
    """`config.init_from`: copies backbone, heads (by dataset name), embedding module and prototypes (by dataset
    name) from another run's checkpoint into a fresh state; experts map by dataset name too, so a run that adds
    a dataset (domain transfer) starts from the old ones. Everything else stays freshly initialised."""
    from flax import traverse_util
    try:
      source, source_step = checkpoint_lib.read_state(path)
    except FileNotFoundError as e:
      raise UserError(f'config.init_from: {e}') from None
    directory, _ = checkpoint_lib.resolve_checkpoint(path)
    source_names = _run_dataset_order(os.path.dirname(directory)) or self.names
    loaded, fresh, mismatched = set(), set(), []
    # Domain transfer (config.transfer.init_like): a dataset new to the source run starts from an old one's
    # expert and head layers (those whose shapes match).
    like = {new: old for new, old in self.config.transfer.init_like if new not in source_names} \
        if self.config.get('transfer') is not None else {}

    def merge(target_tree, source_tree, what):
      target_flat = traverse_util.flatten_dict(sharding_lib.fetch_global(target_tree))
      source_flat = traverse_util.flatten_dict(jax.device_get(source_tree)) if source_tree else {}
      out = {}
      for key, value in target_flat.items():
        top = key[0]
        group = 'backbone' if top == 'backbone' else top
        if key not in source_flat and top.startswith('head_') and top[len('head_'):] in like:
          key_like = (f'head_{like[top[len("head_"):]]}',) + key[1:]
          if key_like in source_flat and np.shape(source_flat[key_like]) == np.shape(value):
            source_flat[key] = source_flat[key_like]
        expert_axis = (_dataset_axis(np.shape(value), np.shape(source_flat[key]), len(self.names),
                                     len(source_names))
                       if key in source_flat and key[-1] in ('expert_kernel', 'expert_bias') else None)
        if key in source_flat and np.shape(source_flat[key]) == np.shape(value):
          out[key] = np.asarray(source_flat[key], value.dtype)
          loaded.add(group)
        elif expert_axis is not None:
          out[key] = _map_dataset_axis(np.array(value), np.asarray(source_flat[key]), expert_axis,
                                       tuple(like.get(n, n) for n in self.names), source_names)
          loaded.add(group)
        elif key in source_flat:
          mismatched.append(f'{what}/{"/".join(key)} is {tuple(np.shape(source_flat[key]))} there and '
                            f'{tuple(np.shape(value))} here')
          out[key] = value
        else:
          out[key] = value
          if what == 'params':
            fresh.add(group)
      return traverse_util.unflatten_dict(out)

    params = merge(state['params'], source.get('params'), 'params')
    batch_stats = merge(state['batch_stats'], source.get('batch_stats'), 'batch_stats')
    if mismatched:
      raise UserError(f'config.init_from: {path} holds another architecture than this config builds '
                      f'({mismatched[0]}' + (f'; {len(mismatched) - 1} more differ' if len(mismatched) > 1 else '')
                      + '); init_from copies weights of the same shapes: set the model keys as in that run')
    extra = sharding_lib.fetch_global(state['extra'])
    source_extra = source.get('extra') or {}
    if 'prototypes' in extra and 'prototypes' in source_extra:
      source_counts = _run_keypoint_counts(os.path.dirname(directory), source_names, self.num_keypoints)
      source_offsets = dict(zip(source_names, np.cumsum([0] + [source_counts[n] for n in source_names])))
      protos = np.array(extra['prototypes'])
      copied = []
      for name in self.names:
        if name in source_offsets:
          a, b = self.keypoint_offsets[name], source_offsets[name]
          k = self.num_keypoints[name]
          if b + k <= source_extra['prototypes'].shape[0]:
            protos[a:a + k] = np.asarray(source_extra['prototypes'])[b:b + k]
            copied.append(name)
      extra = dict(extra, prototypes=protos, cluster_prototypes=protos.copy())
      loaded.add(f'prototypes of {",".join(copied)}')
    new_state = dict(state, params=params, batch_stats=batch_stats, extra=extra)
    _print(f'init_from {path} (step {source_step}): loaded {", ".join(sorted(loaded)) or "nothing"}; '
           f'fresh: {", ".join(sorted(fresh - loaded)) or "nothing"}'
           + (f'; partly fresh: {", ".join(sorted(fresh & loaded))}' if fresh & loaded else ''))
    with self.activate():
      placed = jax.device_put(new_state, self.state_shardings)
      # Adam moments start at zero either way; re-initialising keeps them consistent with the loaded params.
      return jax.jit(lambda st: dict(st, opt_state=self.tx.init(st['params'])),
                     out_shardings=self.state_shardings)(placed)

  def enter_phase(self, state, index: int):
    """Moves a state into phase `index`: a fresh optimizer state for the phase's trainable groups, and, when the
    cluster-prototype terms start, the cluster prototypes computed from the current prototypes."""
    previous = self.phase
    self.use_phase(index)
    tx, phase = self.tx, self.phase
    cfg = self.config.posebh

    def move(state):
      extra = dict(state['extra'])
      if phase.cps and not previous.cps:
        from posebh_jax.posebh import prototypes as proto_lib
        rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), 7919)
        extra['cluster_prototypes'] = proto_lib.cluster_prototypes(
            extra['prototypes'], cfg.num_clusters, cfg.cluster_iterations, cfg.cluster_temperature, rng)[0]
      return dict(state, opt_state=tx.init(state['params']), extra=extra)

    with self.activate():
      return jax.jit(move, out_shardings=self.state_shardings, donate_argnums=(0,))(state)

  def init_state(self, seed: int):
    """The initial state, created directly in its shardings."""
    init = jax.jit(self._init_state, out_shardings=self.state_shardings)
    # The initialisation runs once, so how fast its code runs hardly matters, but how long XLA takes to compile
    # it does: on the CPU, LLVM's level-1 optimisation compiles it 2-4x faster than the default (demo config
    # 10.6 -> 5.1 s, demo:tiny 15.3 -> 3.9 s) and gives bitwise the same state (tests/test_train_e2e.py).
    options = {'xla_backend_optimization_level': 1} if jax.default_backend() == 'cpu' else None
    rng = jax.random.key(seed)
    with self.activate():
      return init.lower(rng).compile(compiler_options=options)(rng)

  # ---------------------------------------------------------------- train step
  def train_step(self, state, batch):
    """One optimisation step on a global batch `{name: {image, heatmaps, target_weights}}`."""
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    images = {name: batch[name]['image'] for name in self.names if name in batch}

    phase = self.phase
    variables = lambda params: {'params': params, 'batch_stats': state['batch_stats']}

    def loss_fn(params):
      # Frozen groups get no gradient at all, so XLA prunes their backward pass.
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, self.frozen)
      if not phase.posebh:
        outputs, updates = self.model.apply(variables(params), images, train=True, rngs={'dropout': step_rng},
                                            mutable=['batch_stats'])
        total, per_dataset = multi_dataset_heatmap_loss(outputs, batch)
        return total, (per_dataset, {}, updates['batch_stats'], state['extra'])
      from posebh_jax.posebh.objective import posebh_objective
      from posebh_jax.posebh.transfer import transfer_objective  # domain transfer: new datasets' prototypes only
      objective = transfer_objective if phase.prototype_datasets else posebh_objective
      outputs, updates = self.model.apply(variables(params), images, train=True, cross=phase.css,
                                          frozen_embedding=phase.embedding_frozen,
                                          rngs={'dropout': step_rng}, mutable=['batch_stats'],
                                          method=pose_model.PoseModel.posebh_outputs)
      head_total, per_dataset = multi_dataset_heatmap_loss(outputs['heatmaps'], batch)
      extra_total, terms, extra = objective(outputs, batch, state['extra'], phase, self.config.posebh,
                                            self.keypoint_offsets, self.num_keypoints)
      return head_total + extra_total, (per_dataset, terms, updates['batch_stats'], extra)

    (loss, (per_dataset, terms, batch_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'])
    # Flax keeps running statistics in float32; a float64 model computes them in float64.
    batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), batch_stats, state['batch_stats'])
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads),
               'train/lr': self.schedule(state['step'])}
    metrics.update({f'train/loss_{name}': value for name, value in per_dataset.items()})
    metrics.update({f'train/loss_{name}' if name != 'css_kept' else 'train/css_kept': value
                    for name, value in terms.items()})
    new_state = dict(state, step=state['step'] + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                     extra=extra)
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
      if not flip:
        return self.model.apply(variables, {name: images}, train=False)[name]
      # One pass over images and their mirror images (half the program to compile of two passes).
      both = self.model.apply(variables, {name: jnp.concatenate([images, images[:, :, ::-1]])}, train=False)[name]
      heatmaps, flipped = both[:images.shape[0]], both[images.shape[0]:]
      flipped = flipped[:, :, ::-1][..., flip_index]
      if shift:  # the non-UDP flip is off by one pixel; the reference pipelines shift it back
        flipped = jnp.concatenate([flipped[:, :, :1], flipped[:, :, :-1]], axis=2)
      return 0.5 * (heatmaps + flipped)

    jitted = jax.jit(predict)

    def run(variables, images):
      with self.activate():
        return jitted(variables, images)

    return run


def _read_run_config(workdir: str) -> dict | None:
  """The config.json a previous run wrote into `workdir` (None when there is none or it cannot be read)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _run_dataset_order(workdir: str) -> tuple[str, ...] | None:
  """data.order of the run in `workdir`, from its config.json (None when absent)."""
  try:
    return tuple(_read_run_config(workdir)['data']['order'])
  except (TypeError, KeyError):  # no readable config.json (None), or one without data.order
    return None


def _run_keypoint_counts(workdir: str, names, known: dict[str, int]) -> dict[str, int]:
  """{dataset: keypoint count} of the run in `workdir` for `names`, from the formats in its config.json (a dataset
  this run does not train still occupies its rows of the source's prototypes); `known` fills in when absent."""
  formats = {}
  try:
    formats = {n: d.get('format', n) for n, d in _read_run_config(workdir)['data']['datasets'].items()}
  except (TypeError, KeyError, AttributeError):  # no readable config.json (None), or not in this shape
    pass
  counts = {}
  for name in names:
    if name in formats:
      counts[name] = skeletons.get_format(formats[name]).num_keypoints
    else:
      counts[name] = known[name] if name in known else skeletons.get_format(name).num_keypoints
  return counts


def _dataset_axis(target_shape, source_shape, num_target: int, num_source: int) -> int | None:
  """The axis of an expert parameter along which the target has `num_target` and the source `num_source`
  datasets while every other axis agrees; None when there is none (another architecture)."""
  if len(target_shape) != len(source_shape):
    return None
  for axis in range(len(target_shape)):
    others_agree = all(t == u for i, (t, u) in enumerate(zip(target_shape, source_shape)) if i != axis)
    if target_shape[axis] == num_target and source_shape[axis] == num_source and others_agree:
      return axis
  return None


def _map_dataset_axis(target: np.ndarray, source: np.ndarray, axis: int, target_names, source_names) -> np.ndarray:
  """Copies per-dataset slices (experts) from `source` into `target` by dataset name along their dataset `axis`
  (`_dataset_axis`); returns `target`."""
  for i, name in enumerate(target_names):
    if name in source_names:
      index = [slice(None)] * target.ndim
      src = list(index)
      index[axis], src[axis] = i, list(source_names).index(name)
      target[tuple(index)] = source[tuple(src)]
  return target


def global_batch_structure(counts: dict[str, int], config, num_keypoints: dict[str, int]):
  """ShapeDtypeStructs of the global batch, used to compile the step before data arrives."""
  image_h, image_w = config.data.image_size
  heat_h, heat_w = config.data.heatmap_size
  return {name: {'image': jax.ShapeDtypeStruct((n, image_h, image_w, 3), jnp.uint8),
                 'heatmaps': jax.ShapeDtypeStruct((n, heat_h, heat_w, num_keypoints[name]), jnp.float32),
                 'target_weights': jax.ShapeDtypeStruct((n, num_keypoints[name]), jnp.float32)}
          for name, n in counts.items()}


def _config_changes(before: dict | None, config) -> list[str]:
  """'key: old -> new' for every leaf that differs between a run's config.json and `config` (model keys first)."""
  if before is None:
    return []
  after = json.loads(config.to_json_best_effort())
  flat_before, flat_after = traverse_util.flatten_dict(before, sep='.'), traverse_util.flatten_dict(after, sep='.')
  changed = [f'{key}: {flat_before.get(key)!r} -> {flat_after.get(key)!r}'
             for key in sorted(set(flat_before) | set(flat_after)) if flat_before.get(key) != flat_after.get(key)]
  return sorted(changed, key=lambda line: not line.startswith('model.'))


def check_restorable(checkpointer, step: int, task: 'Task', workdir: str, run_config: dict | None):
  """Raises UserError (one line) when the checkpoint at `step` holds parameters of another shape than `task`'s
  model: resuming in a workdir with a changed model config, naming what differs."""
  differences = checkpointer.model_differences(step, task.abstract_state)
  if not differences:
    return
  more = f'; {len(differences) - 1} more differ' if len(differences) > 1 else ''
  changes = _config_changes(run_config, task.config)
  since = f'; the config changed since that run: {", ".join(changes[:4])}' if changes else ''
  raise UserError(f'{workdir}/checkpoints/{step} holds another model than this config builds ({differences[0]}{more})'
                  f'{since}; use a new --workdir, or the config that run used')


def write_config(config, workdir: str):
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at a step boundary (`should_stop(step)`).

  One process: at the next step boundary. Several processes (`jax.distributed`): a signal on any one of them goes
  to JAX's preemption sync service, which picks the same step for all (one past the largest step any has reached),
  so that they save together (the save is a collective) and none starts a step that the others will not run. A
  stop decided by each process alone hangs the job whenever the signal reaches the processes on either side of a
  step boundary, or reaches only some of them."""

  def __init__(self):
    self.requested = False
    self._previous = {}
    # jax.distributed.initialize starts the sync service unless this flag turns it off.
    self._synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service

  def __enter__(self):
    # With the sync service, SIGTERM stays with the notifier it installed; SIGINT is forwarded to it as SIGTERM.
    for sig in (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # second signal: give up at once
      raise KeyboardInterrupt
    logging.warning('signal %d: saving a checkpoint and stopping at a step boundary', signum)
    self.requested = True
    if self._synced:
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step` (1-based count of finished steps). Every process calls it after
    every step (the sync service needs each process's step)."""
    if self._synced:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _eval_summary(metrics: dict[str, float]) -> str:
  """The AP and PCKh entries of `{'eval/<dataset>/<metric>': value}`, as the progress output prints them."""
  return ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items()) if k.endswith('/AP') or k.endswith('/PCKh'))


def _print(message: str):
  if jax.process_index() == 0:
    print(message, flush=True)


class TrainingDiverged(UserError):
  """A step gave a non-finite loss or gradient norm; nothing from that step on was saved."""


def _check_finite(step: int, values: dict, checkpointer, workdir: str):
  """Raises TrainingDiverged when step `step`'s train/loss or train/grad_norm (host values) is not finite."""
  loss, grad_norm = float(values['train/loss']), float(values['train/grad_norm'])
  if math.isfinite(loss) and math.isfinite(grad_norm):
    return
  checkpointer.wait()  # an asynchronous save of an earlier step may still be in flight
  last_checkpoint = checkpointer.latest_step()
  resume = (f'the last checkpoint is step {last_checkpoint} in {workdir}/checkpoints (nothing later was saved)'
            if last_checkpoint is not None else 'no checkpoint was saved')
  raise TrainingDiverged(
      f'training diverged at step {step}: train/loss {loss}, train/grad_norm {grad_norm} at lr '
      f'{float(values["train/lr"]):.3g}; {resume}; lower --config.optim.lr or lengthen --config.optim.warmup_steps '
      'and re-run the same command')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates on schedule; returns last metrics."""
  from data_pipeline import pipeline  # the data layer is imported lazily so that the library stays light
  from posebh_jax import evaluate as eval_lib

  run_start = time.perf_counter()
  validate_config(config)
  workdir = os.path.abspath(workdir)
  run_config = _read_run_config(workdir)  # the previous run's, replaced once this run has started
  mesh = sharding_lib.make_mesh(config.mesh)
  groups = sharding_lib.num_batch_groups(mesh)
  counts = pipeline.composition(config.data, config.batch_size, groups)
  steps_per_epoch = pipeline.steps_per_epoch(config.data, config.batch_size)
  task = Task(config, mesh, steps_per_epoch, counts)
  total_steps = task.total_steps
  _print(f'mesh {dict(mesh.shape)} | batch {config.batch_size} = {counts} | {steps_per_epoch} steps/epoch | '
         f'{total_steps} steps')
  note = pipeline.mixture_note(config.data, config.batch_size, groups, counts)
  if note:
    _print(note)
  hint = metrics_lib.cpu_allocator_hint(jax.default_backend())
  if hint:
    _print(hint)

  train_iter = pipeline.make_train_iterator(config.data, config.batch_size, groups, jax.process_index(),
                                            jax.process_count(), seed=config.seed)
  # Closed explicitly, also on failure: left to the garbage collector, grain's worker processes are killed only
  # after their join timeout (see data_pipeline.pipeline._WORKER_JOIN_TIMEOUT_S).
  try:
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
    latest = checkpointer.latest_step()
    if latest is not None:
      task.use_phase(stages.phase_of_state(task.phases, latest).index)
      check_restorable(checkpointer, latest, task, workdir, run_config)
      abstract = checkpoint_lib.abstract_with_shardings(task.abstract_state, task.state_shardings)
      state = checkpointer.restore(latest, abstract, train_iter)
      _print(f'resumed from {workdir}/checkpoints at step {latest}')
    else:
      state = task.init_state(config.seed)
      if config.init_from:
        state = task.load_initial_weights(state, config.init_from)
    write_config(config, workdir)
    start_step = int(jax.device_get(state['step']))
    if len(task.phases) > 1:
      for phase in task.phases:
        _print(f'  phase {phase.index}: {phase.describe()}')

    batch_struct = global_batch_structure(counts, config, task.num_keypoints)

    def compile_phase():
      compile_start = time.perf_counter()
      compiled = task.compile_train_step(batch_struct)
      memory = compiled.memory_analysis()
      _print(f'compiled train step in {time.perf_counter() - compile_start:.1f}s'
             + (f' | temp {memory.temp_size_in_bytes / 2**30:.2f} GiB, args '
                f'{memory.argument_size_in_bytes / 2**30:.2f} GiB per device' if memory is not None else ''))
      return compiled

    if start_step < total_steps and stages.phase_at(task.phases, start_step).index != task.phase.index:
      state = task.enter_phase(state, stages.phase_at(task.phases, start_step).index)
    # A finished run re-run (`make demo` twice) has nothing to compile.
    step_fn = compile_phase() if start_step < total_steps else None
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
        pending_step, values = pending[0], jax.device_get(pending[1])
        pending = None
        window.append(values)
        _check_finite(pending_step, values, checkpointer, workdir)

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
      flush_pending()  # never save a state whose step produced a non-finite loss or gradient
      pause = time.perf_counter()
      checkpointer.save(step, state, train_iter)
      chrono.pause(time.perf_counter() - pause)

    def run_eval(step):
      nonlocal last_eval
      flush_pending()
      pause = time.perf_counter()
      last_eval = evaluator.run(state, step)
      writer.write(step, last_eval)
      _print(f'eval at step {step}: {_eval_summary(last_eval)}')
      chrono.pause(time.perf_counter() - pause)

    def train_loop() -> int:
      """Runs the steps from `start_step`; returns the step reached (total_steps, or where a stop request or
      a failure left it)."""
      nonlocal state, step_fn, pending
      with _StopRequest() as stop:
        step = start_step
        while step < total_steps:
          if step >= task.phase.end_step:
            pause = time.perf_counter()
            state = task.enter_phase(state, stages.phase_at(task.phases, step).index)
            _print(f'step {step}: entering phase {task.phase.index} ({task.phase.describe()})')
            step_fn = compile_phase()
            chrono.pause(time.perf_counter() - pause)
          wait_start = time.perf_counter()
          local = next(train_iter)
          batch = sharding_lib.global_batch(local, mesh)
          chrono.data_wait(time.perf_counter() - wait_start)
          state, step_metrics = step_fn(state, batch)
          flush_pending()
          pending = (step + 1, step_metrics)
          step += 1
          chrono.tick()
          stopping = stop.should_stop(step)
          if step % config.log_every_steps == 0 or step == total_steps:
            log(step)
          if step % config.checkpoint_every_steps == 0 or step == total_steps or stopping:
            save(step)
          if config.eval_every_steps > 0 and (step % config.eval_every_steps == 0 or step == total_steps):
            run_eval(step)
          if stopping:
            log(step)
            _print(f'stopped at step {step}; re-run the same command to resume')
            break
      flush_pending()
      return step

    try:
      step = train_loop()
    finally:
      # Waits for an in-flight asynchronous checkpoint also when the run fails, so that it is not lost.
      checkpointer.close()
      writer.close()
    if start_step >= total_steps:
      # Already trained: repeat its last evaluation from metrics.jsonl instead of printing nothing new.
      evals = [r for r in metrics_lib.read_metrics(workdir) if any(k.startswith('eval/') for k in r)]
      last_eval = {k: v for k, v in evals[-1].items() if k.startswith('eval/')} if evals else {}
      if evals:
        _print(f"already trained to step {start_step}; its evaluation at step {evals[-1]['step']}: "
               f'{_eval_summary(last_eval)}')
    if step >= total_steps:
      minutes, seconds = divmod(int(round(time.perf_counter() - run_start)), 60)
      _print(f'done: step {step}/{total_steps} in {minutes}m{seconds:02d}s | metrics {workdir}/metrics.jsonl | '
             f'results {workdir}/eval | pictures {workdir}/viz')
    return last_eval
  finally:
    train_iter.close()


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
  check_restorable(checkpointer, latest, task, workdir, _read_run_config(workdir))
  abstract = checkpoint_lib.abstract_with_shardings(task.abstract_state, task.state_shardings)
  state = checkpointer.restore_state_only(latest, abstract)
  results = eval_lib.Evaluator(config, task, workdir).run(state, latest)
  metrics_lib.MetricWriter(workdir).write(latest, results)
  _print(eval_lib.format_table(results))
  checkpointer.close()
  return results
