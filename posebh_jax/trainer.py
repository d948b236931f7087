"""The trainer: everything built from the config that the jit'd step functions close over.

`Trainer` holds the model (one head per dataset, as each dataset's task asks), the per-phase optimizers and frozen
masks, the state and batch shardings, and the step functions: `init_state`, `train_step` (compiled once per phase
by `compile_train_step`), `enter_phase` and `predict_fn`. It knows no task specifics: batch fields, losses and test-
time predictions come from `posebh_jax.tasks`; PoseBH's prototype objective is an add-on term on top.

`step(state, batch) -> (state, metrics)` is pure; the state is one pytree (a dict):
  step (int32), params, batch_stats, opt_state, extra (non-gradient state, e.g. prototypes), rng (key data).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax.errors import UserError
from posebh_jax import flops as flops_lib
from posebh_jax import optim
from posebh_jax import sharding as sharding_lib
from posebh_jax import stages
from posebh_jax import tasks as tasks_lib
from posebh_jax.models import pose_model
from posebh_jax.posebh import prototypes as proto_lib
from posebh_jax.posebh.objective import posebh_objective
from posebh_jax.posebh.transfer import transfer_objective
from posebh_jax.tasks import teachers as teachers_lib


class Trainer:
  """Model, optimizer phases, shardings and the step functions of one run."""

  def __init__(
    self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, steps_per_epoch: int, counts: Mapping[str, int]
  ):
    """Args: the run's `config`, the device `mesh`, `steps_per_epoch`, and the global per-dataset example counts
    of a train batch (`pipeline.composition`)."""
    self.config = config
    self.mesh = mesh
    self.rules = tuple((k, v) for k, v in config.logical_axis_rules)
    self.names = tuple(config.data.order)
    self.tasks = tasks_lib.build_tasks(config)
    self.formats = {n: task.format for n, task in self.tasks.items()}
    self.num_keypoints = {n: task.num_keypoints for n, task in self.tasks.items()}
    self.groups = sharding_lib.num_batch_groups(mesh)
    self.counts = dict(counts)
    self.posebh = config.posebh.enabled
    not_heatmap = [n for n, task in self.tasks.items() if task.kind != tasks_lib.HeatmapTask.kind]
    if self.posebh and not_heatmap:
      raise UserError(
        f"config.posebh.enabled: PoseBH's prototypes train on 'heatmap' datasets only, and {', '.join(not_heatmap)} "
        "have other tasks; turn PoseBH off for 3D or joint runs"
      )
    self.head_specs = {n: task.head_spec() for n, task in self.tasks.items()}
    pose_model.check_head_batches(self.head_specs, self.counts)
    self.model = pose_model.build_model(
      config.model,
      self.names,
      num_groups=self.groups,
      posebh_config=config.posebh,
      head_specs=[self.head_specs[n] for n in self.names],
      experts=pose_model.dataset_experts(config),
    )
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch
    self.phases = stages.plan_phases(config, steps_per_epoch, self.total_steps)
    for task in self.tasks.values():
      task.set_run_length(steps_per_epoch, self.total_steps)
    self._teachers = None  # loaded when the train step is first compiled (evaluation never needs them)
    # Global keypoint index: datasets in config order, each a contiguous block (214 for the six datasets).
    self.keypoint_offsets, offset = {}, 0
    for name in self.names:
      self.keypoint_offsets[name] = offset
      offset += self.num_keypoints[name]
    self.total_keypoints = offset
    with self.activate():
      boxed = jax.eval_shape(self._init_variables, jax.random.key(0))
    self.param_shardings = sharding_lib.logical_shardings(boxed['params'], mesh, self.rules)
    self.abstract_params = nn.unbox(boxed['params'])
    self._phase_setups: dict[int, Any] = {}
    self.batch_sharding = sharding_lib.batch_sharding(mesh)
    self.use_phase(0)

  # ---------------------------------------------------------------------------------------------- structure
  def batch_structure(self, counts: Mapping[str, int] | None = None) -> dict:
    """ShapeDtypeStructs of the global train batch {name: {'image', **the task's batch fields}} (used to compile
    the step before data arrives); `counts` defaults to the trainer's."""
    image_h, image_w = self.config.data.image_size
    out = {}
    for name, count in (self.counts if counts is None else counts).items():
      fields = {'image': ((image_h, image_w, 3), jnp.uint8), **self.tasks[name].batch_fields()}
      out[name] = {key: jax.ShapeDtypeStruct((count,) + tuple(shape), dtype) for key, (shape, dtype) in fields.items()}
    return out

  def train_transforms(self) -> dict:
    """{dataset: its task's grain train transform}, for `pipeline.make_train_iterator`."""
    return {name: task.train_transform() for name, task in self.tasks.items()}

  def flops_per_batch(self) -> float:
    """Analytic training FLOPs of one global batch (backbone and each dataset's head)."""
    grid = flops_lib.token_grid(self.config.model, self.config.data.image_size)
    head_flops = {n: spec.forward_flops(self.config.model.width, grid) for n, spec in self.head_specs.items()}
    total = flops_lib.train_flops_per_batch(self.config.model, self.config.data.image_size, self.counts, head_flops)
    return total + (self.teachers.forward_flops() if self.teachers is not None else 0.0)

  @property
  def teachers(self) -> teachers_lib.Teachers | None:
    """The frozen distillation teachers (`tasks.teachers.Teachers`, loaded on first use), or None when no dataset
    distills."""
    if self._teachers is None and teachers_lib.needs_teachers(self.tasks):
      self._teachers = teachers_lib.Teachers(self.config, self.mesh, self.rules, self.counts, self.groups, self.tasks)
    return self._teachers

  @contextlib.contextmanager
  def activate(self):
    """Context that makes the mesh and logical axis rules current (tracing needs both)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  # ------------------------------------------------------------------------------------------ state, phases
  def _init_variables(self, rng):
    image_h, image_w = self.config.data.image_size
    dummy = {n: jnp.zeros((self.groups, image_h, image_w, 3), jnp.uint8) for n in self.names}
    return self.model.init({'params': rng, 'dropout': rng}, dummy, train=False, method=pose_model.PoseModel.init_all)

  def use_phase(self, index: int):
    """Makes phase `index` current: its optimizer, lr schedule, frozen mask, abstract state and shardings."""
    if index not in self._phase_setups:
      phase = self.phases[index]
      overrides = {'frozen': phase.frozen}
      if phase.lr is not None:  # a staged phase: constant lr after its own warmup
        overrides.update(lr=phase.lr, decay_epochs=(), schedule='step')
      optim_config = ml_collections.ConfigDict({**self.config.optim.to_dict(), **overrides})
      # A staged phase restarts its warmup at its first step.
      tx, schedule, frozen = optim.build_optimizer(
        optim_config,
        self.abstract_params,
        self.config.model.depth,
        self.steps_per_epoch,
        self.total_steps,
        schedule_start=phase.start_step if phase.lr is not None else 0,
      )
      self.phase, self.tx, self.schedule, self.frozen = phase, tx, schedule, frozen
      with self.activate():
        abstract_state = jax.eval_shape(self._init_state, jax.random.key(0))
      replicated = sharding_lib.replicated(self.mesh)
      # Frozen parameters have MaskedNode placeholders (no state) in the optimizer state; keep them as they are.
      masked = lambda x: isinstance(x, optax.MaskedNode)
      opt_shardings = optax.tree_map_params(
        tx,
        lambda leaf, s: leaf if masked(leaf) else s,
        abstract_state['opt_state'],
        self.param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=masked,
      )
      shardings = {
        'step': replicated,
        'params': self.param_shardings,
        'batch_stats': jax.tree.map(lambda _: replicated, abstract_state['batch_stats']),
        'opt_state': opt_shardings,
        'extra': jax.tree.map(lambda _: replicated, abstract_state['extra']),
        'rng': replicated,
      }
      self._phase_setups[index] = (phase, tx, schedule, frozen, abstract_state, shardings)
    (self.phase, self.tx, self.schedule, self.frozen, self.abstract_state, self.state_shardings) = self._phase_setups[
      index
    ]
    return self.phase

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
    cfg = self.config.posebh
    protos = proto_lib.init_prototypes(rng, self.total_keypoints, cfg.prototypes_per_keypoint, cfg.embed_dim)
    return {'prototypes': protos, 'cluster_prototypes': protos}

  def init_state(self, seed: int):
    """The initial state, created directly in its shardings."""
    init = jax.jit(self._init_state, out_shardings=self.state_shardings)
    # The initialisation runs once, so how fast its code runs hardly matters, but how long XLA takes to compile
    # it does: LLVM's level-1 optimisation compiles it several times faster on the CPU and gives bitwise the same
    # state (tests/test_train_e2e.py; docs/MEASUREMENTS.md).
    options = {'xla_backend_optimization_level': 1} if jax.default_backend() == 'cpu' else None
    rng = jax.random.key(seed)
    with self.activate():
      return init.lower(rng).compile(compiler_options=options)(rng)

  def enter_phase(self, state, index: int, fresh: bool = False):
    """Moves a state into phase `index`: a fresh optimizer state for the phase's trainable groups, and, when the
    cluster-prototype terms start, the cluster prototypes computed from the current prototypes. `fresh`: the state
    has been in no phase yet (a new run), so a first phase that already has those terms (a run that starts in
    stage 2) starts them."""
    previous_cps = False if fresh else self.phase.cps
    previous = self.phase
    self.use_phase(index)
    tx, phase = self.tx, self.phase
    cfg = self.config.posebh

    def move(state):
      extra = dict(state['extra'])
      if phase.cps and not previous_cps:
        rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), 7919)
        extra['cluster_prototypes'] = proto_lib.cluster_prototypes(
          extra['prototypes'], cfg.num_clusters, cfg.cluster_iterations, cfg.cluster_temperature, rng
        )[0]
      # A phase that only changes how BatchNorm runs keeps the optimizer's moments (the same optimizer).
      same = not fresh and (previous.lr, previous.frozen) == (phase.lr, phase.frozen) and phase.lr is None
      return dict(state, opt_state=state['opt_state'] if same else tx.init(state['params']), extra=extra)

    with self.activate():
      return jax.jit(move, out_shardings=self.state_shardings, donate_argnums=(0,))(state)

  # ------------------------------------------------------------------------------------------------ train step
  def task_losses(self, outputs: Mapping[str, Any], batch: Mapping[str, Mapping[str, jax.Array]], step=None):
    """Each present dataset's task loss on its own slice at train `step` (the state's). Returns (total scalar,
    {dataset: loss}, {'<dataset>/<term>': value} of the tasks' named parts)."""
    per_dataset, terms = {}, {}
    for name, output in outputs.items():
      per_dataset[name], parts = self.tasks[name].loss(output, batch[name], step=step)
      terms.update({f'{name}/{term}': value for term, value in parts.items()})
    return sum(per_dataset.values()), per_dataset, terms

  def train_step(self, state, batch, teacher_variables=None):
    """One optimisation step on a global batch `{name: {'image', **its task's batch fields}}`; distillation runs
    pass the frozen teachers' `teacher_variables` (`Teachers.variables`), whose heatmaps join the batch first."""
    if teacher_variables is not None:
      batch = self.teachers.add_outputs(teacher_variables, batch)
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    images = {name: batch[name]['image'] for name in self.names if name in batch}
    phase = self.phase
    variables = lambda params: {'params': params, 'batch_stats': state['batch_stats']}

    def loss_fn(params):
      # Frozen groups get no gradient at all, so XLA prunes their backward pass.
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, self.frozen)
      if not phase.posebh:
        outputs, updates = self.model.apply(
          variables(params),
          images,
          train=True,
          bn_inference=phase.bn_inference,
          rngs={'dropout': step_rng},
          mutable=['batch_stats'],
        )
        total, per_dataset, terms = self.task_losses(outputs, batch, state['step'])
        return total, (per_dataset, terms, updates['batch_stats'], state['extra'])
      # PoseBH: the heads' task losses plus the prototype objective (domain transfer: new datasets' prototypes only).
      objective = transfer_objective if phase.prototype_datasets else posebh_objective
      outputs, updates = self.model.apply(
        variables(params),
        images,
        train=True,
        cross=phase.css,
        frozen_embedding=phase.embedding_frozen,
        rngs={'dropout': step_rng},
        mutable=['batch_stats'],
        method=pose_model.PoseModel.posebh_outputs,
      )
      head_total, per_dataset, terms = self.task_losses(outputs['heatmaps'], batch, state['step'])
      extra_total, posebh_terms, extra = objective(
        outputs, batch, state['extra'], phase, self.config.posebh, self.keypoint_offsets, self.num_keypoints
      )
      return head_total + extra_total, (per_dataset, {**terms, **posebh_terms}, updates['batch_stats'], extra)

    (loss, (per_dataset, terms, batch_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    # Flax keeps running statistics in float32; a float64 model computes them in float64.
    batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), batch_stats, state['batch_stats'])
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads), 'train/lr': self.schedule(state['step'])}
    metrics.update({f'train/loss_{name}': value for name, value in per_dataset.items()})
    metrics.update(
      {f'train/loss_{name}' if name != 'css_kept' else 'train/css_kept': value for name, value in terms.items()}
    )
    new_state = dict(
      state, step=state['step'] + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, extra=extra
    )
    return new_state, metrics

  def compile_train_step(self, example_batch):
    """jit with explicit shardings and donated state, lowered and compiled once before the loop. Returns
    `step(state, batch) -> (state, metrics)` (the compiled executable; with teachers, bound to their variables,
    which are passed to every call and never donated)."""
    batch_shardings = jax.tree.map(lambda _: self.batch_sharding, example_batch)
    teachers = self.teachers
    in_shardings = (self.state_shardings, batch_shardings)
    abstract_state = checkpoint_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)
    abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.batch_sharding), example_batch
    )
    arguments = (abstract_state, abstract_batch)
    if teachers is not None:
      in_shardings += (teachers.shardings,)
      arguments += (teachers.abstract(),)
    step = jax.jit(
      self.train_step,
      in_shardings=in_shardings,
      out_shardings=(self.state_shardings, sharding_lib.replicated(self.mesh)),
      donate_argnums=(0,),
    )
    with self.activate():
      compiled = step.lower(*arguments).compile()
    return compiled if teachers is None else BoundStep(compiled, teachers.variables)

  # ------------------------------------------------------------------------------------------------ prediction
  def predict_fn(self, name: str, flip: bool):
    """jit'd `(variables, images (n, H, W, 3) uint8) -> the task's test-time output` for dataset `name` (heatmap
    tasks: heatmaps (n, h, w, K), with flip test when `flip`)."""
    task = self.tasks[name]
    apply = lambda variables, images: self.model.apply(variables, {name: images}, train=False)[name]
    jitted = jax.jit(lambda variables, images: task.predict(apply, variables, images, flip))

    def run(variables, images):
      with self.activate():
        return jitted(variables, images)

    return run


class BoundStep:
  """A compiled train step with its trailing arguments bound (the teachers' variables): `step(state, batch)`; the
  compiled executable's other attributes (`memory_analysis`, `cost_analysis`, `as_text`) pass through."""

  def __init__(self, compiled, *bound):
    self.compiled, self.bound = compiled, bound

  def __call__(self, state, batch):
    return self.compiled(state, batch, *self.bound)

  def __getattr__(self, name: str):
    return getattr(self.compiled, name)
