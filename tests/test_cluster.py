"""What jobs on a cluster rely on: several processes training as one (jax.distributed, here over localhost with
gloo collectives on CPU) and preemption (SIGTERM) checkpointing at a step boundary and resuming. (One process's
SIGTERM, checkpoint and resume: tests/test_launch.py, through the SLURM script that passes the signal on.)"""

import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np

from configs import demo
from conftest import FAST_COMPILE
from conftest import REPO
from conftest import assert_resumed
from conftest import losses as _losses
from conftest import train as _train
from conftest import write_random_weights


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch_two_processes(args, env, port):
  return [
    subprocess.Popen(
      [sys.executable, *args, f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={index}'],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for index in range(2)
  ]


def _finish(processes, timeout=400):
  try:
    outputs = [p.communicate(timeout=timeout) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
  return [out for out, _ in outputs]


def test_two_processes_match_one_process_and_stop_together_on_sigterm(tmp_path, data_dir):
  """Multi-process training as on a cluster (jax.distributed over localhost, gloo collectives on CPU): each process
  reads its own share of every dataset and the global batch is assembled from the two. A SIGTERM that reaches one
  process only stops both at the same step, with one checkpoint (each process deciding alone hangs the job: the
  save is a collective); the same command resumes. Every loss of the preempted and resumed run equals one
  uninterrupted process driving two devices: in float64, so that the run stays at rounding (measured: within
  1.6e-16 over 20 steps, 1.2e-12 over 40; in float32 the two reductions' rounding grew to 1e-5 within 40 steps,
  README "8 devices vs 1"). The parameters are sharded across the two processes (fsdp 2), the run starts from a
  weights-only checkpoint (`init_from`; random weights, written in this process) and evaluates at the end: both
  fetched sharded arrays with `jax.device_get`, which fails for an array with shards on another process
  (measured: the evaluation ended the run with a RuntimeError); the pair's predictions are byte-identical to the
  one process's."""
  total = 20
  write_random_weights(tmp_path / 'source', demo.get_config('tiny'), seed=0, scale=0.2, step=2)
  common = [
    '-m',
    'posebh_jax.main',
    '--config=configs/demo.py:tiny',
    f'--config.data.data_dir={data_dir}',
    f'--config.total_steps={total}',
    f'--config.eval_every_steps={total}',
    '--config.log_every_steps=1',
    '--config.checkpoint_every_steps=1000',
    '--config.model.dtype=float64',
    '--config.model.param_dtype=float64',
    "--config.eval_datasets=('coco', 'mpii')",
    f'--config.init_from={tmp_path / "source"}',
    '--config.mesh.data=1',
    '--config.mesh.fsdp=2',
    f'--workdir={tmp_path / "two"}',
  ]
  # Every run compiled fast (`conftest.FAST_COMPILE`), alike.
  xla_flags = f'--xla_force_host_platform_device_count=1 {FAST_COMPILE}'
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags)
  processes = _launch_two_processes(common, env, _free_port())
  head = []
  for line in processes[0].stdout:  # only process 0 reports progress
    head.append(line)
    if line.startswith('step 2/'):
      processes[1].send_signal(signal.SIGTERM)
      break
  first = _finish(processes)
  first[0] = ''.join(head) + first[0]
  assert "mesh {'data': 1, 'fsdp': 2," in first[0] and 'step 1/' not in first[1]
  assert f'init_from {tmp_path / "source"} (step 2)' in first[0]
  stopped = int(re.search(r'stopped at step (\d+); re-run the same command to resume', first[0]).group(1))
  assert 2 < stopped < total
  assert sorted(os.listdir(tmp_path / 'two' / 'checkpoints')) == [str(stopped)]
  second = _finish(_launch_two_processes(common, env, _free_port()))
  assert f'done: step {total}/{total}' in second[0]
  # It resumed at the preemption checkpoint (not a silent restart: each step's loss is logged once).
  assert_resumed(second[0], tmp_path / 'two', stopped, total)
  assert f'eval at step {total}' in second[0]
  _train(tmp_path / 'one', data_dir, *common[3:-1], f'--workdir={tmp_path / "one"}', devices=2, fast_compile=True)
  two, one = _losses(tmp_path / 'two'), _losses(tmp_path / 'one')
  assert sorted(two) == sorted(one) == list(range(1, total + 1))
  for step in one:
    np.testing.assert_allclose(two[step], one[step], rtol=1e-9, err_msg=f'step {step}')
  for name in ('coco', 'mpii'):
    raw = [(tmp_path / run / 'eval' / f'{name}_topdown_step{total}.json').read_bytes() for run in ('two', 'one')]
    assert raw[0] == raw[1] and len(raw[0]) > 1000, name


def test_incomplete_multi_process_flags_are_one_line_error(tmp_path):
  from conftest import run_module

  result = run_module(
    [
      '-m',
      'posebh_jax.main',
      '--config=configs/demo.py:tiny',
      f'--workdir={tmp_path}',
      '--num_processes=2',
      '--process_id=0',
    ]
  )
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert lines == [
    'error: cannot join the multi-process run: coordinator_address should be defined; pass '
    "--coordinator_address=HOST:PORT (process 0's), --num_processes=N and --process_id=0..N-1 to "
    'every process, or start it under SLURM or on TPU VMs, where they are read from the environment'
  ]
