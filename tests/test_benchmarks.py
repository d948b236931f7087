"""Benchmark helpers that need no accelerator: the profiler-trace summary on a hand-made perfetto trace."""
import gzip
import json

from benchmarks import trace_summary


def _trace(path):
  events = [
      {'ph': 'M', 'name': 'process_name', 'pid': 1, 'args': {'name': '/device:GPU:0'}},
      {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 7, 'args': {'name': 'Stream #14(Compute)'}},
      {'ph': 'M', 'name': 'process_name', 'pid': 2, 'args': {'name': '/host:CPU'}},
      {'ph': 'M', 'name': 'thread_name', 'pid': 2, 'tid': 3, 'args': {'name': 'python3'}},
      {'ph': 'X', 'name': 'PjitFunction(jit(train_step))', 'pid': 2, 'tid': 3, 'ts': 0, 'dur': 9000},
  ]
  # Two steps: each runs gemm twice (300 us each) and one reduce (400 us).
  for step in range(2):
    base = step * 2000
    events += [{'ph': 'X', 'name': 'gemm', 'pid': 1, 'tid': 7, 'ts': base, 'dur': 300},
               {'ph': 'X', 'name': 'gemm', 'pid': 1, 'tid': 7, 'ts': base + 400, 'dur': 300},
               {'ph': 'X', 'name': 'input_reduce_fusion', 'pid': 1, 'tid': 7, 'ts': base + 800, 'dur': 400}]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)


def test_trace_summary_counts_device_time_per_step(tmp_path):
  path = str(tmp_path / 'step.trace.json.gz')
  _trace(path)
  threads = trace_summary.load_device_threads(path)
  assert list(threads) == ['/device:GPU:0 / Stream #14(Compute)']  # host events are left out
  text = trace_summary.summarise(path, steps=2)
  lines = text.splitlines()
  assert '3 events, 1.00 ms per step' in lines[1]
  assert lines[2].split()[:3] == ['0.600', 'ms', '2x'] and lines[2].endswith('gemm')
  assert lines[3].split()[:3] == ['0.400', 'ms', '1x'] and '40.0%' in lines[3]
