"""The cluster launch scripts, run against stand-ins for SLURM's commands (no SLURM here)."""

import os
import re
import signal
import subprocess
import sys

from conftest import REPO
from conftest import assert_resumed
from conftest import losses as _losses

# srun: drops its own options and runs the task in its place (the real one forwards signals to its tasks).
_FAKE_SRUN = '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
_FAKE_SCONTROL = '#!/usr/bin/env bash\necho "$@" >> "$SCONTROL_LOG"\n'


def test_slurm_script_checkpoints_and_requeues_at_the_time_limit(tmp_path, data_dir):
  """`launch/slurm.sbatch` gets SIGTERM from SLURM 120 s before the time limit (`--signal=B:TERM@120`, to the
  batch script only): it passes it to the trainer, which checkpoints and exits 0, then requeues the job; the
  requeued job runs the same command and resumes. (Before, the signal went to the tasks and the job just ended at
  its time limit, so the run never resumed by itself.) The trainer's side is a single process's preemption: it stops
  at the next step boundary after the signal with one checkpoint, and the same command resumes there and trains
  only the steps after it."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, text in (('srun', _FAKE_SRUN), ('scontrol', _FAKE_SCONTROL)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / 'scontrol.log'
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  env.update(
    PATH=f'{bin_dir}:{env["PATH"]}',
    SLURM_JOB_ID='4242',
    SCONTROL_LOG=str(log),
    PYTHON=sys.executable,
    PYTHONPATH=REPO,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=1',
  )
  workdir = tmp_path / 'run'
  args = [
    'bash',
    'launch/slurm.sbatch',
    'configs/demo.py:tiny',
    str(workdir),
    f'--config.data.data_dir={data_dir}',
    '--config.eval_every_steps=0',
    '--config.checkpoint_every_steps=1000',
  ]
  job = subprocess.Popen(
    args + ['--config.total_steps=100000'],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    start_new_session=True,
  )
  try:
    for line in job.stdout:
      if line.startswith('step 2/'):
        job.send_signal(signal.SIGTERM)  # to the script only, as SLURM's B: does
        break
    # (A script that dies of the signal leaves the trainer running on: the timeout, then the group kill.)
    rest, _ = job.communicate(timeout=300)
    assert job.returncode == 0, rest[-2000:]
  finally:
    try:
      os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  stopped = int(re.search(r'stopped at step (\d+); re-run the same command to resume', rest).group(1))
  assert 'requeueing job 4242' in rest and log.read_text() == 'requeue 4242\n'
  assert sorted(os.listdir(workdir / 'checkpoints')) == [str(stopped)]
  # The requeued job: the same script and arguments (a shorter run here), resumed, finishing without a requeue.
  again = subprocess.run(
    args + [f'--config.total_steps={stopped + 2}'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert again.returncode == 0, again.stderr[-2000:]
  assert stopped >= 3 and f'done: step {stopped + 2}/{stopped + 2}' in again.stdout
  assert_resumed(again.stdout, workdir, stopped, stopped + 2)  # not a silent restart: each step logged once
  assert log.read_text() == 'requeue 4242\n' and sorted(_losses(workdir))[-1] == stopped + 2
