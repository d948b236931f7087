"""Metric writers (metrics.jsonl, TensorBoard without TensorFlow, console) and a throughput chronometer."""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
  """Appends `{"step": s, name: value}` lines to DIR/metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      try:
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
