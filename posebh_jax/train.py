"""The training loop: config checks, mesh, trainer, data, the jit'd step, checkpoints, evaluation, metrics.

`train_and_evaluate` trains (resuming from the latest checkpoint in the workdir), evaluating on schedule;
`evaluate_only` evaluates the latest checkpoint (`--mode=eval`). The step functions live in `posebh_jax.trainer`,
what differs per kind of dataset in `posebh_jax.tasks`, `config.init_from` in `posebh_jax.init_from`, and the
preemption handling in `posebh_jax.preemption`.
"""

from __future__ import annotations

import math
import os
import time

import jax
import ml_collections
import numpy as np

from data_pipeline import pipeline
from data_pipeline import validation as data_validation
from posebh_jax import checkpoint as checkpoint_lib
from posebh_jax import evaluate as eval_lib
from posebh_jax import evaluator as evaluator_lib
from posebh_jax import flops as flops_lib
from posebh_jax import init_from as init_from_lib
from posebh_jax import metrics as metrics_lib
from posebh_jax import optim
from posebh_jax import sharding as sharding_lib
from posebh_jax import stages
from posebh_jax import tasks as tasks_lib
from posebh_jax import workdir as workdir_lib
from posebh_jax.errors import UserError
from posebh_jax.models import pose_model
from posebh_jax.preemption import StopRequest
from posebh_jax.trainer import Trainer


def validate_config(config: ml_collections.ConfigDict):
  """Checks what the code cannot check later with a useful message; raises UserError (one line). Each section is
  checked by the module that owns it; the run-level keys here."""
  data_validation.validate_config(config.data)
  pose_model.validate_config(config.model)
  for name in config.data.order:
    tasks_lib.get_task_class(config.data.datasets[name].task).validate(config, name)
  evaluator_lib.validate_config(config)
  if config.batch_size <= 0:
    raise UserError(f'config.batch_size must be positive (got {config.batch_size})')
  for key in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    if config[key] < 1:
      raise UserError(
        f'config.{key} must be at least 1 (got {config[key]})'
        + (
          '; a run keeps its newest checkpoints, so that a crash loses at most checkpoint_every_steps steps'
          if key == 'keep_checkpoints'
          else ''
        )
      )
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise UserError(
      f'nothing to train: config.total_steps is {config.total_steps} and config.num_epochs '
      f'{config.num_epochs}; set one of them > 0 (total_steps wins when > 0)'
    )
  if not isinstance(config.seed, int) or config.seed < 0:
    raise UserError(f'config.seed must be an integer >= 0 (got {config.seed!r})')
  optim.validate_config(config.optim)
  if config.posebh.enabled and not all(lr > 0 for lr in config.posebh.stage_lrs):
    raise UserError(f'config.posebh.stage_lrs must all be > 0 (got {tuple(config.posebh.stage_lrs)})')
  optim.check_frozen_patterns('transfer', config.transfer.frozen)


def check_restorable(checkpointer, step: int, trainer: Trainer, workdir: str, run_config: dict | None):
  """Raises UserError (one line) when the checkpoint at `step` holds parameters of another shape than `trainer`'s
  model: resuming in a workdir with a changed model config, naming what differs."""
  differences = checkpointer.model_differences(step, trainer.abstract_state)
  if not differences:
    return
  more = f'; {len(differences) - 1} more differ' if len(differences) > 1 else ''
  changes = workdir_lib.config_changes(run_config, trainer.config)
  since = f'; the config changed since that run: {", ".join(changes[:4])}' if changes else ''
  raise UserError(
    f'{workdir}/checkpoints/{step} holds another model than this config builds ({differences[0]}{more})'
    f'{since}; use a new --workdir, or the config that run used'
  )


class TrainingDiverged(UserError):
  """A step gave a non-finite loss or gradient norm; nothing from that step on was saved."""


def _check_finite(step: int, values: dict, checkpointer, workdir: str):
  """Raises TrainingDiverged when step `step`'s train/loss or train/grad_norm (host values) is not finite."""
  loss, grad_norm = float(values['train/loss']), float(values['train/grad_norm'])
  if math.isfinite(loss) and math.isfinite(grad_norm):
    return
  checkpointer.wait()  # an asynchronous save of an earlier step may still be in flight
  last_checkpoint = checkpointer.latest_step()
  resume = (
    f'the last checkpoint is step {last_checkpoint} in {workdir}/checkpoints (nothing later was saved)'
    if last_checkpoint is not None
    else 'no checkpoint was saved'
  )
  raise TrainingDiverged(
    f'training diverged at step {step}: train/loss {loss}, train/grad_norm {grad_norm} at lr '
    f'{float(values["train/lr"]):.3g}; {resume}; lower --config.optim.lr or lengthen --config.optim.warmup_steps '
    'and re-run the same command'
  )


def _print(message: str):
  if jax.process_index() == 0:
    print(message, flush=True)


def drop_missing_datasets(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` without the datasets that `config.data.missing` drops (`pipeline.drop_missing_datasets`), printing
  one line per dropped dataset; raises its one-line errors."""
  config, dropped = pipeline.drop_missing_datasets(config)
  for line in pipeline.missing_lines(dropped):
    _print(line)
  return config


def build(config: ml_collections.ConfigDict, steps_per_epoch: int | None = None):
  """(mesh, counts, steps per epoch, Trainer) of a validated config."""
  mesh = sharding_lib.make_mesh(config.mesh)
  counts = pipeline.composition(config.data, config.batch_size, sharding_lib.num_batch_groups(mesh))
  if steps_per_epoch is None:
    steps_per_epoch = pipeline.steps_per_epoch(config.data, config.batch_size)
  return mesh, counts, steps_per_epoch, Trainer(config, mesh, steps_per_epoch, counts)


class _TrainLoop:
  """The steps of one run from its first unfinished step: data, step, metrics read back one step late (so that
  dispatch never blocks), checkpoints, evaluations and stop requests on schedule."""

  def __init__(
    self,
    config,
    trainer: Trainer,
    workdir: str,
    train_iter,
    checkpointer,
    state,
    total_steps: int,
    goodput: metrics_lib.Goodput | None = None,
  ):
    self.config, self.trainer, self.workdir, self.train_iter = config, trainer, workdir, train_iter
    self.goodput = goodput or metrics_lib.Goodput()
    self.checkpointer, self.state, self.total_steps = checkpointer, state, total_steps
    self.chrono = metrics_lib.Chrono(
      total_steps, config.batch_size, trainer.flops_per_batch(), flops_lib.device_peak_tflops(config.device_peak_tflops)
    )
    self.writer = metrics_lib.MetricWriter(workdir)
    self.evaluator = evaluator_lib.Evaluator(config, trainer, workdir)
    self.batch_struct = trainer.batch_structure()
    self.step_fn = None
    self.pending = None  # (step, device metrics) of the last step, read back after the next one is dispatched
    self.window: list[dict] = []
    self.last_eval: dict = {}

  def compile_phase(self):
    """Compiles the current phase's train step, printing its compile time and memory per device."""
    compile_start = time.perf_counter()
    with self.goodput.measure('compile'):
      compiled = self.trainer.compile_train_step(self.batch_struct)
    memory = compiled.memory_analysis()
    _print(
      f'compiled train step in {time.perf_counter() - compile_start:.1f}s'
      + (
        f' | temp {memory.temp_size_in_bytes / 2**30:.2f} GiB, args '
        f'{memory.argument_size_in_bytes / 2**30:.2f} GiB per device'
        if memory is not None
        else ''
      )
    )
    self.step_fn = compiled

  def flush_pending(self):
    """Reads back the pending step's metrics; raises TrainingDiverged when they are not finite."""
    if self.pending is not None:
      pending_step, values = self.pending[0], jax.device_get(self.pending[1])
      self.pending = None
      self.window.append(values)
      _check_finite(pending_step, values, self.checkpointer, self.workdir)

  def log(self, step: int):
    """Writes the mean of the metrics since the last log, with throughput, and prints the progress line."""
    self.flush_pending()
    if not self.window:
      return
    scalars = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
    self.window.clear()
    scalars.update(self.chrono.summary(step))
    scalars.update(self.goodput.shares())
    self.writer.write(step, scalars)
    _print(metrics_lib.format_progress(step, self.total_steps, scalars))

  def save(self, step: int):
    """Checkpoints the state and the data iterator at `step`."""
    self.flush_pending()  # never save a state whose step produced a non-finite loss or gradient
    pause = time.perf_counter()
    with self.goodput.measure('checkpoint'):
      self.checkpointer.save(step, self.state, self.train_iter)
    self.chrono.pause(time.perf_counter() - pause)

  def run_eval(self, step: int):
    """Evaluates every eval dataset, writes and prints the results."""
    self.flush_pending()
    pause = time.perf_counter()
    with self.goodput.measure('eval'):
      self.last_eval = self.evaluator.run(self.state, step)
    self.writer.write(step, self.last_eval)
    _print(f'eval at step {step}: {self.evaluator.summary(self.last_eval)}')
    self.chrono.pause(time.perf_counter() - pause)

  def run(self, start_step: int) -> int:
    """Runs the steps from `start_step`; returns the step reached (total_steps, or where a stop request or a
    failure left it)."""
    config, trainer = self.config, self.trainer
    with StopRequest() as stop:
      step = start_step
      self.goodput.loop_started()
      while step < self.total_steps:
        if step >= trainer.phase.end_step:
          pause = time.perf_counter()
          self.state = trainer.enter_phase(self.state, stages.phase_at(trainer.phases, step).index)
          _print(f'step {step}: entering phase {trainer.phase.index} ({trainer.phase.describe()})')
          self.compile_phase()
          self.chrono.pause(time.perf_counter() - pause)
        wait_start = time.perf_counter()
        with self.goodput.measure('data_wait'):
          local = next(self.train_iter)
          batch = sharding_lib.global_batch(local, trainer.mesh)
        self.chrono.data_wait(time.perf_counter() - wait_start)
        self.state, step_metrics = self.step_fn(self.state, batch)
        self.flush_pending()
        self.pending = (step + 1, step_metrics)
        step += 1
        self.chrono.tick()
        stopping = stop.should_stop(step)
        if step % config.log_every_steps == 0 or step == self.total_steps:
          self.log(step)
        if step % config.checkpoint_every_steps == 0 or step == self.total_steps or stopping:
          self.save(step)
        if config.eval_every_steps > 0 and (step % config.eval_every_steps == 0 or step == self.total_steps):
          self.run_eval(step)
        if stopping:
          self.log(step)
          _print(f'stopped at step {step}; re-run the same command to resume')
          break
    self.flush_pending()
    if step > start_step:  # the whole run's shares, the final evaluation included (a finished run re-run: none)
      self.writer.write(step, self.goodput.shares())
    return step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates on schedule; returns last metrics."""
  run_start = time.perf_counter()
  goodput = metrics_lib.Goodput(start=run_start)
  config = drop_missing_datasets(config)
  validate_config(config)
  workdir = os.path.abspath(workdir)
  run_config = workdir_lib.read_run_config(workdir)  # the previous run's, replaced once this run has started
  mesh, counts, steps_per_epoch, trainer = build(config)
  groups = trainer.groups
  total_steps = trainer.total_steps
  _print(f'mesh {dict(mesh.shape)} | batch {config.batch_size} | {steps_per_epoch} steps/epoch | {total_steps} steps')
  _print(pipeline.describe_composition(counts, groups))
  if trainer.teachers is not None:
    _print(trainer.teachers.describe())
  note = pipeline.mixture_note(config.data, config.batch_size, groups, counts)
  if note:
    _print(note)
  hint = metrics_lib.cpu_allocator_hint(jax.default_backend())
  if hint:
    _print(hint)

  train_iter = pipeline.make_train_iterator(
    config.data,
    config.batch_size,
    groups,
    jax.process_index(),
    jax.process_count(),
    seed=config.seed,
    transforms=trainer.train_transforms(),
  )
  # Closed explicitly, also on failure: left to the garbage collector, grain's worker processes are killed only
  # after their join timeout (see data_pipeline.pipeline._WORKER_JOIN_TIMEOUT_S).
  try:
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
    latest = checkpointer.latest_step()
    if latest is not None:
      trainer.use_phase(stages.phase_of_state(trainer.phases, latest).index)
      check_restorable(checkpointer, latest, trainer, workdir, run_config)
      abstract = checkpoint_lib.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
      state = checkpointer.restore(latest, abstract, train_iter)
      _print(f'resumed from {workdir}/checkpoints at step {latest}')
    else:
      state = trainer.init_state(config.seed)
      if config.init_from:
        state = init_from_lib.load_initial_weights(trainer, state, config.init_from)
      if trainer.phase.cps:  # a run that starts in stage 2 clusters its (loaded) prototypes, as entering it does
        state = trainer.enter_phase(state, trainer.phase.index, fresh=True)
    workdir_lib.write_config(config, workdir)
    start_step = int(jax.device_get(state['step']))
    if len(trainer.phases) > 1:
      for phase in trainer.phases:
        _print(f'  phase {phase.index}: {phase.describe()}')
    if start_step < total_steps and stages.phase_at(trainer.phases, start_step).index != trainer.phase.index:
      state = trainer.enter_phase(state, stages.phase_at(trainer.phases, start_step).index)
    loop = _TrainLoop(config, trainer, workdir, train_iter, checkpointer, state, total_steps, goodput)
    if start_step < total_steps:  # a finished run re-run (`make demo` twice) has nothing to compile
      loop.compile_phase()
    try:
      step = loop.run(start_step)
    finally:
      # Waits for an in-flight asynchronous checkpoint also when the run fails, so that it is not lost.
      checkpointer.close()
      loop.writer.close()
    last_eval = loop.last_eval
    if start_step >= total_steps:
      # Already trained: repeat its last evaluation from metrics.jsonl instead of printing nothing new.
      evals = [r for r in metrics_lib.read_metrics(workdir) if any(k.startswith('eval/') for k in r)]
      last_eval = {k: v for k, v in evals[-1].items() if k.startswith('eval/')} if evals else {}
      if evals:
        _print(
          f"already trained to step {start_step}; its evaluation at step {evals[-1]['step']}: "
          f'{loop.evaluator.summary(last_eval)}'
        )
    if step >= total_steps:
      minutes, seconds = divmod(int(round(time.perf_counter() - run_start)), 60)
      _print(
        f'done: step {step}/{total_steps} in {minutes}m{seconds:02d}s | metrics {workdir}/metrics.jsonl | '
        f'results {workdir}/eval | pictures {workdir}/viz'
      )
    if start_step < total_steps:
      _print(loop.goodput.summary_line())
    return last_eval
  finally:
    train_iter.close()


def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=eval`: evaluates the latest checkpoint in `workdir` and logs `eval/<dataset>/<metric>`."""
  config = drop_missing_datasets(config)  # the datasets the run trained on, under the same config.data.missing
  validate_config(config)
  workdir = os.path.abspath(workdir)
  _, _, _, trainer = build(config, steps_per_epoch=1)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is None:
    raise UserError(f'no checkpoint in {workdir}/checkpoints; train first or pass the right --workdir')
  check_restorable(checkpointer, latest, trainer, workdir, workdir_lib.read_run_config(workdir))
  abstract = checkpoint_lib.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  state = checkpointer.restore_model(latest, abstract)
  results = evaluator_lib.Evaluator(config, trainer, workdir).run(state, latest)
  metrics_lib.MetricWriter(workdir).write(latest, results)
  _print(eval_lib.format_table(results, unified=any(t.kind == 'distill' for t in trainer.tasks.values())))
  checkpointer.close()
  return results
