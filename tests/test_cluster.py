"""What jobs on a cluster rely on: several processes training as one (jax.distributed, here over localhost with
gloo collectives on CPU) and preemption (SIGTERM) checkpointing at the next step and resuming."""
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np

from conftest import REPO
from conftest import losses as _losses
from conftest import train as _train


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_two_devices(tmp_path, data_dir):
  """Multi-process training as on a cluster (jax.distributed over localhost, gloo collectives on CPU): each process
  reads its own share of every dataset and the global batch is assembled from the two; the losses equal one
  process driving two devices (measured: within 8e-8)."""
  common = ['-m', 'posebh_jax.main', '--config=configs/demo.py:tiny', f'--config.data.data_dir={data_dir}',
            '--config.total_steps=3', '--config.eval_every_steps=0']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  port = _free_port()
  processes = [subprocess.Popen([sys.executable, *common, f'--workdir={tmp_path / "two"}',
                                 f'--coordinator_address=localhost:{port}', '--num_processes=2',
                                 f'--process_id={index}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for index in range(2)]
  try:
    outputs = [p.communicate(timeout=400) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
  assert "mesh {'data': 2," in outputs[0][0] and 'done: step 3/3' in outputs[0][0]
  assert 'step 1/3' not in outputs[1][0]  # only process 0 reports progress
  _train(tmp_path / 'one', data_dir, '--config.total_steps=3', '--config.eval_every_steps=0', devices=2)
  two, one = _losses(tmp_path / 'two'), _losses(tmp_path / 'one')
  assert sorted(two) == [1, 2, 3]
  for step in one:
    np.testing.assert_allclose(two[step], one[step], rtol=1e-6, err_msg=f'step {step}')
  assert os.path.isdir(tmp_path / 'two' / 'checkpoints' / '3')

def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path, data_dir):
  """A preempted job (SIGTERM) checkpoints at the next step boundary and exits 0; re-running resumes there."""
  args = [sys.executable, '-m', 'posebh_jax.main', '--config=configs/demo.py:tiny', f'--workdir={tmp_path}',
          f'--config.data.data_dir={data_dir}', '--config.eval_every_steps=0', '--config.checkpoint_every_steps=1000']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  process = subprocess.Popen(args + ['--config.total_steps=100000'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  try:
    for line in process.stdout:
      if line.startswith('step 3/'):
        process.send_signal(signal.SIGTERM)
        break
    rest = process.stdout.read()
    assert process.wait(timeout=300) == 0
  finally:
    process.kill()
  stopped = int(re.search(r'stopped at step (\d+); re-run the same command to resume', rest).group(1))
  assert stopped >= 3 and os.path.isdir(tmp_path / 'checkpoints' / str(stopped))
  resumed = _train(tmp_path, data_dir, '--config.eval_every_steps=0', f'--config.total_steps={stopped + 2}')
  assert f'resumed from {tmp_path}/checkpoints at step {stopped}' in resumed.stdout
  assert f'done: step {stopped + 2}/{stopped + 2}' in resumed.stdout
  assert sorted(_losses(tmp_path))[-2:] == [stopped + 1, stopped + 2]
