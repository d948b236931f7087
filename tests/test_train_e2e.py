"""End to end through `python -m posebh_jax.main`: 1 vs 8 simulated devices, kill-and-resume, user errors."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import assert_resumed
from conftest import losses as _losses
from conftest import run_module as _run
from conftest import train as _train


# The float64 runs of the 8-devices-vs-1 test; the resume test's uninterrupted run is the 1-device one. All compiled
# fast (`conftest.FAST_COMPILE`; the resumed run must compile as the uninterrupted one): the 8-device test took 116
# instead of 142 s on the 2-core VM.
_FLOAT64_RUN = (
  '--config.batch_size=48',
  '--config.total_steps=20',
  '--config.model.dtype=float64',
  '--config.model.param_dtype=float64',
)


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory, data_dir):
  """20 steps of demo:tiny on 1 device in float64 (batch 48), checkpointed at steps 10 and 20, no evaluation."""
  workdir = tmp_path_factory.mktemp('one_device') / 'run'
  overrides = (*_FLOAT64_RUN, '--config.checkpoint_every_steps=10', '--config.eval_every_steps=0')
  _train(workdir, data_dir, *overrides, fast_compile=True)
  return workdir


def test_eight_devices_match_one_device(tmp_path, data_dir, one_device_run):
  """20 free-running steps on 8 devices (4×2 data×fsdp) and on 1 give the same losses, in float64.

  In float32 the two runs differ first by rounding only (the sharded reductions sum in another order: <= 2.3e-7
  on the first steps), but Adam turns rounding-level differences of near-zero gradients into O(lr) parameter
  steps and the trajectory amplifies them: over 20 steps to between 9e-8 and 2e-4 for nearby settings (README,
  "8 devices vs 1"). In float64 the same code, data and meshes start ~1e9 times closer and stay within 4.2e-12
  (measured), so a sharding mistake of any size shows. The float32 step is held to 1e-6 at every state of a run
  by `test_sharded_step_matches_one_device_along_the_run`."""
  # Only the sharded run evaluates (the 1-device evaluation is covered elsewhere), with one checkpoint (at the end).
  one, eight = one_device_run, tmp_path / 'eight'
  sharded = (*_FLOAT64_RUN, '--config.checkpoint_every_steps=20', '--config.eval_every_steps=20')
  _train(eight, data_dir, *sharded, '--config.mesh.data=4', '--config.mesh.fsdp=2', devices=8, fast_compile=True)
  losses_one, losses_eight = _losses(one), _losses(eight)
  assert sorted(losses_one) == list(range(1, 21))
  assert losses_one[20] < 0.95 * losses_one[1]  # it trained
  for step in losses_one:
    np.testing.assert_allclose(losses_eight[step], losses_one[step], rtol=1e-8, err_msg=f'step {step}')
  # The sharded run also evaluated, wrote COCO-format results and pictures.
  with open(eight / 'metrics.jsonl') as f:
    evals = [json.loads(line) for line in f if 'eval/coco/AP' in line]
  assert evals and 0.0 <= evals[-1]['eval/coco/AP'] <= 1.0 and 'eval/mpii/PCKh' in evals[-1]
  assert any(name.startswith('coco_results_step20') for name in os.listdir(eight / 'eval'))
  assert any(name.endswith('.png') for name in os.listdir(eight / 'viz'))
  # The same command again (`make demo` twice): nothing to compile or train; it repeats the last evaluation.
  records = (eight / 'metrics.jsonl').read_text()
  again = _train(
    eight, data_dir, *sharded, '--config.mesh.data=4', '--config.mesh.fsdp=2', devices=8, fast_compile=True
  )
  assert 'compiled train step' not in again.stdout and (eight / 'metrics.jsonl').read_text() == records
  assert "already trained to step 20; its evaluation at step 20: " in again.stdout
  assert f"eval/coco/AP={evals[-1]['eval/coco/AP']:.4f}" in again.stdout
  assert json.loads((one / 'config.json').read_text())['batch_size'] == 48


_ALONG_THE_RUN = """
import json, sys
import jax
import numpy as np
from configs import demo
from data_pipeline import pipeline
from posebh_jax import sharding as sharding_lib, trainer as trainer_lib

config = demo.get_config('tiny')
config.data.data_dir = sys.argv[1]
config.batch_size = 48
tasks, states, steps = {}, {}, {}
for label, devices, shape in (('one', jax.devices()[:1], (1, 1)), ('eight', jax.devices(), (4, 2))):
  config.mesh.data, config.mesh.fsdp = shape
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  counts = pipeline.composition(config.data, config.batch_size, sharding_lib.num_batch_groups(mesh))
  tasks[label] = trainer_lib.Trainer(config, mesh, steps_per_epoch=100, counts=counts)
  struct = tasks[label].batch_structure(counts)
  states[label], steps[label] = tasks[label].init_state(0), tasks[label].compile_train_step(struct)
# Both meshes split each dataset's 8 examples evenly, so they read the same batches.
batches = pipeline.make_train_iterator(config.data, config.batch_size, 4)
out = {'one': [], 'eight_from_one': [], 'eight': []}
for _ in range(20):
  batch = next(batches)
  on = {label: sharding_lib.global_batch(batch, task.mesh) for label, task in tasks.items()}
  # The 8-device step applied to the 1-device run's current state (a copy: the step donates its input).
  forced = jax.device_put(jax.device_get(states['one']), tasks['eight'].state_shardings)
  _, metrics = steps['eight'](forced, on['eight'])
  out['eight_from_one'].append([float(metrics['train/loss']), float(metrics['train/grad_norm'])])
  for label in ('one', 'eight'):
    states[label], metrics = steps[label](states[label], on[label])
    out[label].append([float(metrics['train/loss']), float(metrics['train/grad_norm'])])
print(json.dumps(out))
"""


def test_sharded_step_matches_one_device_along_the_run(data_dir):
  """At each of 20 states of a 1-device demo:tiny run, the 8-device (4×2 data×fsdp) step gives the 1-device step's
  loss and gradient norm to float rounding; the free-running float32 pair agrees to rounding for 3 steps and then
  drifts as far as the trajectory amplifies rounding (README, "8 devices vs 1"; the float64 pair: the test above)."""
  result = _run(['-c', _ALONG_THE_RUN, data_dir], devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  one, forced, free = (np.array(out[k]) for k in ('one', 'eight_from_one', 'eight'))
  assert one.shape == (20, 2) and one[-1, 0] < 0.95 * one[0, 0]  # it trained (0.098 -> 0.084)
  np.testing.assert_allclose(forced[:, 0], one[:, 0], rtol=1e-6)
  np.testing.assert_allclose(forced[:, 1], one[:, 1], rtol=1e-6)
  np.testing.assert_allclose(free[:3], one[:3], rtol=1e-5)
  np.testing.assert_allclose(free[:, 0], one[:, 0], rtol=1e-2)


def test_resumed_run_matches_uninterrupted_run(tmp_path, data_dir, one_device_run):
  """A run ended at its step-10 checkpoint and re-run to step 20 resumes there and gives the uninterrupted run's losses
  bit for bit (the 8-devices test's 1-device float64 run: same process layout, same programs, nothing may differ)."""
  overrides = [o for o in _FLOAT64_RUN if not o.startswith('--config.total_steps')]
  common = (*overrides, '--config.eval_every_steps=0', '--config.checkpoint_every_steps=10')
  resumed = tmp_path / 'resumed'
  _train(resumed, data_dir, '--config.total_steps=10', *common, fast_compile=True)
  second = _train(resumed, data_dir, '--config.total_steps=20', *common, fast_compile=True)
  assert 'done: step 20/20 in ' in second.stdout
  assert_resumed(second.stdout, resumed, 10, 20)
  losses_full, losses_resumed = _losses(one_device_run), _losses(resumed)
  assert [losses_resumed[step] for step in range(11, 21)] == [losses_full[step] for step in range(11, 21)]


def _error_line(result):
  assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, result.stderr
  return lines[0]


def test_bad_override_is_one_line_error(tmp_path):
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      '--config.optim.learning_rate=1',
    ]
  )
  assert 'learning_rate' in _error_line(result)


def test_missing_dataset_is_one_line_error(tmp_path):
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path / "w"}',
      f'--config.data.data_dir={tmp_path / "empty"}',
    ]
  )
  line = _error_line(result)
  assert 'data_pipeline.prepare' in line


def test_unknown_dataset_is_one_line_error(tmp_path, data_dir):
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      f'--config.data.data_dir={data_dir}',
      "--config.data.order=('coco','cocoo')",
    ]
  )
  line = _error_line(result)
  assert "'cocoo'" in line and 'coco' in line


def test_missing_config_file_is_one_line_error(tmp_path):
  result = _run(['-m', 'posebh_jax.main', '--config=configs/no_such_config.py', f'--workdir={tmp_path}'])
  line = _error_line(result)
  assert 'configs/no_such_config.py' in line and 'No such file' in line


def test_mesh_that_does_not_fit_the_devices_is_one_line_error(tmp_path, data_dir):
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      f'--config.data.data_dir={data_dir}',
      '--config.mesh.data=3',
    ],
    devices=2,
  )
  line = _error_line(result)
  assert 'config.mesh' in line and '2 are available' in line and '-1' in line


def test_batch_that_cannot_be_sharded_is_one_line_error(tmp_path, data_dir):
  # 8 batch shards x 6 datasets need at least 48 examples.
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      f'--config.data.data_dir={data_dir}',
      '--config.batch_size=20',
    ],
    devices=8,
  )
  line = _error_line(result)
  assert 'config.batch_size' in line and 'at least 48' in line


def test_diverging_run_stops_with_one_line_error_before_saving_it(tmp_path, data_dir):
  """lr 1e30: step 1 is finite (its loss is computed before the update), the parameters it leaves overflow the
  next forward pass. The run stops there with one line, having saved every step before and none after."""
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      f'--config.data.data_dir={data_dir}',
      '--config.optim.lr=1e30',
      '--config.optim.grad_clip=0',
      '--config.checkpoint_every_steps=1',
      '--config.eval_every_steps=0',
    ],
    fast_compile=True,  # `conftest.FAST_COMPILE`: a program of its own (the lr is a constant in it) for two steps
  )
  line = _error_line(result)
  step = int(re.search(r'diverged at step (\d+): train/loss nan', line).group(1))
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert step >= 2 and saved and saved[-1] == step - 1, (line, saved)
  assert f'last checkpoint is step {step - 1}' in line and 'optim.lr' in line


def test_resuming_with_another_model_is_one_line_error(tmp_path, data_dir, one_device_run):
  """Resuming a run (a copy of the 20-step float64 run above) with another model width, and starting a new run
  from it (`init_from`) with that width, end with one line each."""
  workdir = tmp_path / 'run'
  shutil.copytree(one_device_run, workdir)
  # The run's own settings but for the width: the line names that change.
  run_overrides = [o for o in _FLOAT64_RUN if not o.startswith('--config.total_steps')]
  run_overrides += ['--config.checkpoint_every_steps=10', '--config.eval_every_steps=0']
  # (--mode=eval runs the same check before its restore.)
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
      *run_overrides,
      '--config.total_steps=40',
      '--config.model.width=48',
    ]
  )
  line = _error_line(result)
  assert 'checkpoints/20 holds another model' in line and 'model.width: 32 -> 48' in line, line
  assert 'is saved as (32,) float64, this config has (48,) float64' in line, line
  # The workdir still describes the run its checkpoints came from.
  assert json.loads((workdir / 'config.json').read_text())['model']['width'] == 32
  # Starting a new run from it (init_from) with another width: one line too (was a broadcast traceback).
  result = _run(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path / "new"}',
      f'--config.data.data_dir={data_dir}',
      *run_overrides,
      '--config.total_steps=40',
      '--config.model.width=48',
      f'--config.init_from={workdir}',
    ]
  )
  line = _error_line(result)
  assert line.startswith(
    f'error: config.init_from: {workdir} holds another architecture than this config builds (params/backbone/'
  ), line
  assert 'is (32,) there and (48,) here' in line and 'more differ' in line, line


def test_training_loop_compiles_nothing_after_the_first_step_and_donates_the_state(tmp_path, data_dir, monkeypatch):
  """Counts JAX lowerings (every new jit specialisation is lowered, cached or not) before each step of an 8-step
  run that logs every step and checkpoints at step 4, and checks that each step consumed (donated) its input, also
  the first step after resuming from the checkpoint."""
  import jax
  from jax import monitoring

  from configs import demo
  from posebh_jax import train
  from posebh_jax import trainer as trainer_lib

  lowerings, before_step, donated = [], [], []

  def listener(event, duration, **kwargs):
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      lowerings.append(duration)

  compile_train_step = trainer_lib.Trainer.compile_train_step

  def recording_compile(self, example_batch):
    compiled = compile_train_step(self, example_batch)

    def step(state, batch):
      params = jax.tree.leaves(state['params'])
      before_step.append(len(lowerings))
      out = compiled(state, batch)
      donated.append(all(p.is_deleted() for p in params))
      return out

    step.memory_analysis = compiled.memory_analysis
    return step

  monkeypatch.setattr(trainer_lib.Trainer, 'compile_train_step', recording_compile)
  config = demo.get_config('tiny')
  config.data.data_dir = data_dir
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps, config.eval_every_steps = 8, 1, 4, 0
  monitoring.register_event_duration_secs_listener(listener)
  try:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert len(before_step) == 8 and before_step[0] > 0
  assert before_step == [before_step[0]] * 8  # no lowering between the first step and the last
  # Step 5's input was just handed to the asynchronous checkpoint save. On the CPU the "device-to-host copy" is a
  # zero-copy numpy view of the device buffer, and XLA does not donate a buffer that a live view shares (it copies
  # instead: correct, one more state's worth of memory for that step; checked with a bare jitted function), so
  # step 5 donates only if orbax has finished writing and dropped its views (a 5 s pause before step 5 lets it).
  # On a GPU the host copy is a separate buffer.
  assert all(d for i, d in enumerate(donated) if i != 4), donated
  # Resumed: the state restored by orbax is donated by the first step too (else a resumed run would need a second
  # copy of the state for that step, and one that fits only just would run out of memory on resuming).
  del donated[:]
  config.total_steps = 11
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert donated == [True] * 3, donated


def test_train_iterator_is_closed_when_the_run_ends(tmp_path, data_dir, monkeypatch):
  """The data iterator (and with it grain's worker processes) is closed explicitly, also when the run fails:
  left to the garbage collector, grain kills a worker only after its join timeout (25 s in grain 0.2.18)."""
  from configs import demo
  from data_pipeline import pipeline
  from posebh_jax import train
  from posebh_jax import trainer as trainer_lib

  closed = []

  class RecordingIterator:
    def __init__(self, inner):
      self.inner = inner

    def __getattr__(self, name):
      return getattr(self.inner, name)

    def __next__(self):
      return next(self.inner)

    def close(self):
      closed.append(True)
      self.inner.close()

  make = pipeline.make_train_iterator
  monkeypatch.setattr(pipeline, 'make_train_iterator', lambda *a, **k: RecordingIterator(make(*a, **k)))

  def failing_compile(self, example_batch):
    raise RuntimeError('compilation failed')

  monkeypatch.setattr(trainer_lib.Trainer, 'compile_train_step', failing_compile)
  config = demo.get_config('tiny')
  config.data.data_dir = data_dir
  config.total_steps = 2
  config.eval_every_steps = 0
  with pytest.raises(RuntimeError, match='compilation failed'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert closed == [True]


def test_initial_state_compiled_for_speed_is_bitwise_the_default_compilation():
  """Trainer.init_state compiles the initialisation with LLVM level-1 optimisation on the CPU (2-4x faster to
  compile); the state must be bitwise what the default compilation gives."""
  import jax
  from configs import demo
  from data_pipeline import pipeline
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import trainer as trainer_lib

  config = demo.get_config('tiny')
  config.data.order = ('coco', 'mpii')  # two heads keep the two compilations short
  mesh = sharding_lib.make_mesh(config.mesh)
  task = trainer_lib.Trainer(config, mesh, 10, pipeline.composition(config.data, config.batch_size, 1))
  state = task.init_state(7)
  with task.activate():
    reference = jax.jit(task._init_state, out_shardings=task.state_shardings)(jax.random.key(7))
  leaves, reference_leaves = jax.tree.leaves(state), jax.tree.leaves(reference)
  assert len(leaves) == len(reference_leaves) > 50
  for got, want in zip(leaves, reference_leaves):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_workdir_that_is_a_file_is_one_line_error(tmp_path):
  workdir = tmp_path / 'a_file'
  workdir.write_text('')
  for mode in ('train', 'eval'):
    result = _run(['-m', 'posebh_jax.main', '--config=configs/demo.py:tiny', f'--workdir={workdir}', f'--mode={mode}'])
    assert _error_line(result) == f'error: --workdir={workdir} is a file; pass a directory'


def test_url_workdir_is_one_line_error_and_creates_nothing():
  """`--workdir=gs://...` (as TPU users write) used to become a local directory named `gs:` under the current one,
  a separate one on every host."""
  from conftest import REPO

  result = _run(['-m', 'posebh_jax.main', '--config=configs/demo.py:tiny', '--workdir=gs://bucket/run'])
  line = _error_line(result)
  assert line.startswith('error: --workdir=gs://bucket/run: the workdir must be a filesystem path')
  assert 'gcsfuse' in line
  assert not os.path.exists(os.path.join(REPO, 'gs:'))  # run_module runs in the repository root


def test_unknown_config_file_argument_is_one_line_error_without_the_override_hint(tmp_path):
  result = _run(
    ['-m', 'posebh_jax.main', '--config=configs/demo.py:tinyy', f'--workdir={tmp_path}', '--config.total_steps=2']
  )
  line = _error_line(result)
  assert "unknown demo config argument(s) ['tinyy']" in line and '--config.<key>' not in line
