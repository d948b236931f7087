"""Metric writers (metrics.jsonl, TensorBoard without TensorFlow, console) and a throughput chronometer."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable, Mapping

import jax
import numpy as np


@contextlib.contextmanager
def _without_torch():
  """Hides PyTorch from imports made inside (where it is installed but not yet imported): tensorboardX imports it
  when it can (2-3 s of a run's start on a CPU) only to accept torch tensors, and the writer is given floats."""
  import sys

  if 'torch' in sys.modules:
    yield
    return
  sys.modules['torch'] = None  # an import of it raises ImportError, which tensorboardX tolerates
  try:
    yield
  finally:
    del sys.modules['torch']


class MetricWriter:
  """Appends `{"step": s, name: value}` lines to DIR/metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      try:
        with _without_torch():
          from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # TensorBoard output is optional
        self._tb = None

  def write(self, step: int, scalars: Mapping[str, float]):
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.add_scalar(key, float(value), int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of DIR/metrics.jsonl (a resumed run appends; later records of a step win in `by_step`)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Chrono:
  """Tracks step time, data-wait time and pauses (eval, checkpoints) between log points; estimates ETA."""

  def __init__(self, total_steps: int, examples_per_step: int, flops_per_step: float, peak_tflops: float):
    self.total_steps = total_steps
    self.examples_per_step = examples_per_step
    self.flops_per_step = flops_per_step
    self.peak_tflops = peak_tflops
    self._window_start = time.perf_counter()
    self._window_steps = 0
    self._data_wait = 0.0
    self._paused = 0.0
    self._steps_done = 0
    self._busy_time = 0.0

  def data_wait(self, seconds: float):
    self._data_wait += seconds

  def pause(self, seconds: float):
    self._paused += seconds

  def tick(self):
    self._window_steps += 1

  def summary(self, step: int) -> dict:
    """Throughput numbers for the window since the last call; resets the window."""
    now = time.perf_counter()
    elapsed = max(now - self._window_start - self._paused, 1e-9)
    steps = max(self._window_steps, 1)
    step_time = elapsed / steps
    out = {
      'perf/step_time_s': step_time,
      'perf/img_per_s': self.examples_per_step / step_time,
      'perf/img_per_s_per_device': self.examples_per_step / step_time / jax.device_count(),
      'perf/data_wait_fraction': min(self._data_wait / elapsed, 1.0),
    }
    if self.flops_per_step:
      tflops = self.flops_per_step / step_time / 1e12 / jax.device_count()
      out['perf/tflops_per_device'] = tflops
      if self.peak_tflops:
        out['perf/mfu'] = tflops / self.peak_tflops
    self._steps_done += self._window_steps
    self._busy_time += elapsed
    out['perf/eta_s'] = (self.total_steps - step) * (self._busy_time / max(self._steps_done, 1))
    self._window_start, self._window_steps, self._data_wait, self._paused = now, 0, 0.0, 0.0
    return out


class Goodput:
  """Where a run's wall time goes: seconds in each of `MEASURED` (timed around those calls) since the run started;
  the train step's share is what the step loop spent outside them, and 'startup' the time before the loop (building,
  restoring, the first data), so that the shares sum to 1."""

  MEASURED = ('compile', 'data_wait', 'checkpoint', 'eval')

  def __init__(self, clock: Callable[[], float] = time.perf_counter, start: float | None = None):
    """Args: `clock` in seconds; `start`: when the run started (default now)."""
    self.clock = clock
    self.start = clock() if start is None else start
    self.seconds = dict.fromkeys(self.MEASURED, 0.0)
    self.loop_start: float | None = None
    self._before_loop = dict(self.seconds)

  @contextlib.contextmanager
  def measure(self, category: str):
    """Adds the time the `with` body takes to `category` (one of MEASURED)."""
    begin = self.clock()
    try:
      yield
    finally:
      self.seconds[category] += self.clock() - begin

  def loop_started(self) -> None:
    """Marks the start of the step loop (the time before it, less what was measured, is 'startup')."""
    self.loop_start = self.clock()
    self._before_loop = dict(self.seconds)

  def shares(self) -> dict[str, float]:
    """{'goodput/<category>': share of the wall time since the start} for startup, compile, train_step, data_wait,
    checkpoint, eval; they sum to 1."""
    now = self.clock()
    wall = max(now - self.start, 1e-9)
    loop_start = now if self.loop_start is None else self.loop_start
    measured_before = sum(self._before_loop.values())
    startup = max(loop_start - self.start - measured_before, 0.0)
    in_loop = sum(self.seconds.values()) - measured_before
    step = max(now - loop_start - in_loop, 0.0)
    seconds = {'startup': startup, **self.seconds, 'train_step': step}
    order = ('startup', 'compile', 'train_step', 'data_wait', 'checkpoint', 'eval')
    return {f'goodput/{key}': seconds[key] / wall for key in order}

  def summary_line(self) -> str:
    """One line: the wall time and each category's share, e.g. 'time 4m30s: train step 81% | data wait 2% | ...'."""
    wall = self.clock() - self.start
    parts = [f'{key.split("/")[1].replace("_", " ")} {100 * v:.0f}%' for key, v in self.shares().items()]
    minutes, seconds = divmod(int(round(wall)), 60)
    return f'time {minutes}m{seconds:02d}s: ' + ' | '.join(parts)


def format_progress(step: int, total: int, scalars: Mapping[str, float]) -> str:
  """One console line: step, loss, img/s, data wait, MFU, ETA."""
  eta = scalars.get('perf/eta_s', float('nan'))
  parts = [
    f'step {step}/{total}',
    f"loss {scalars.get('train/loss', float('nan')):.6g}",
    f"{scalars.get('perf/img_per_s', 0):.1f} img/s",
    f"data-wait {100 * scalars.get('perf/data_wait_fraction', 0):.0f}%",
  ]
  if 'perf/mfu' in scalars:
    parts.append(f"MFU {100 * scalars['perf/mfu']:.1f}%")
  elif 'perf/tflops_per_device' in scalars:
    parts.append(f"{scalars['perf/tflops_per_device']:.2f} TFLOP/s/dev")
  if np.isfinite(eta):
    parts.append(f'ETA {int(eta) // 3600}h{int(eta) % 3600 // 60:02d}m{int(eta) % 60:02d}s')
  return ' | '.join(parts)


HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def cpu_allocator_hint(
  backend: str, environ: Mapping[str, str] | None = None, thp_mode_file: str = THP_MODE_FILE
) -> str | None:
  """A one-line hint when a CPU run would page-fault through XLA's temporaries every step, else None.

  XLA's CPU runtime allocates the step's temporary buffer (hundreds of MiB for the demo) afresh on every
  execution; glibc maps and unmaps it each time, so with 4 KiB pages every step page-faults through all of it, a
  large share of the demo's step time (docs/MEASUREMENTS.md). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
  makes glibc ask for transparent huge pages, which this kernel grants only when its THP mode is `madvise`
  (with `always` every process has them already; with `never` the tunable does nothing).
  """
  environ = os.environ if environ is None else environ
  if backend != 'cpu' or 'glibc.malloc.hugetlb' in environ.get('GLIBC_TUNABLES', ''):
    return None
  try:
    with open(thp_mode_file) as f:
      mode = f.read()
  except OSError:  # not Linux, or no THP support
    return None
  if '[madvise]' not in mode:
    return None
  return (
    f'hint: on CPU, start with GLIBC_TUNABLES={HUGEPAGE_TUNABLE} for faster steps (XLA maps its temporary '
    'buffer every step; huge pages save most of its page faults); `make demo` sets it'
  )
