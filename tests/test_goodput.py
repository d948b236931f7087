"""The goodput account of a run (`metrics.Goodput`) on a hand-driven clock: each category gets exactly the seconds
spent in it, the train step the rest of the loop, startup the time before it, and the shares sum to 1; and the
metric writer's TensorBoard mirror."""

import pytest

from conftest import run_module
from posebh_jax import metrics


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_shares_follow_the_time_spent_in_each_category():
  clock = FakeClock()
  goodput = metrics.Goodput(clock, start=clock())
  clock.now += 3.0  # building the trainer, restoring: startup
  with goodput.measure('compile'):
    clock.now += 4.0
  goodput.loop_started()
  for _ in range(5):
    with goodput.measure('data_wait'):
      clock.now += 0.2
    clock.now += 1.0  # the step itself
  with goodput.measure('checkpoint'):
    clock.now += 2.0
  with goodput.measure('eval'):
    clock.now += 6.0
  with goodput.measure('compile'):  # a later phase's compile, inside the loop
    clock.now += 1.0
  shares = goodput.shares()
  wall = 3 + 4 + 5 * 1.2 + 2 + 6 + 1
  expected = {'startup': 3, 'compile': 5, 'train_step': 5, 'data_wait': 1, 'checkpoint': 2, 'eval': 6}
  for key, seconds in expected.items():
    assert shares[f'goodput/{key}'] == pytest.approx(seconds / wall), key
  assert sum(shares.values()) == pytest.approx(1.0)
  line = goodput.summary_line()
  assert line.startswith('time 0m22s: startup 14% | compile 23% | train step 23% | data wait 5%'), line


def test_a_failing_body_is_still_counted():
  clock = FakeClock()
  goodput = metrics.Goodput(clock)
  with pytest.raises(RuntimeError):
    with goodput.measure('eval'):
      clock.now += 2.5
      raise RuntimeError('evaluation failed')
  assert goodput.seconds['eval'] == pytest.approx(2.5)


def test_metric_writer_writes_tensorboard_without_importing_torch(tmp_path):
  """The TensorBoard mirror (tensorboardX) is written without importing PyTorch, which tensorboardX imports where it
  can (2-3 s of every run's start on a CPU). In a fresh process: the test session may have imported torch."""
  pytest.importorskip('tensorboardX')
  script = (
    'import sys\n'
    'from posebh_jax import metrics\n'
    f'writer = metrics.MetricWriter({str(tmp_path)!r})\n'
    "writer.write(3, {'train/loss': 0.5})\n"
    'writer.close()\n'
    "print('torch' in sys.modules)\n"
  )
  result = run_module(['-c', script])
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == 'False'
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert (tmp_path / 'metrics.jsonl').read_text().strip() == '{"step": 3, "train/loss": 0.5}'
