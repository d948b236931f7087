"""Summary of a JAX profiler trace (the perfetto `*.trace.json.gz` that `jax.profiler.trace(...,
create_perfetto_trace=True)` writes): per device thread (XLA modules, XLA ops, kernel
streams), events and busy time per step and the costliest names.

  python -m benchmarks.trace_summary TRACE.json.gz [--steps=N] [--top=10]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json


def load_device_threads(path: str) -> dict[str, list[dict]]:
  """{'<process> / <thread>': complete ('X') events} for the trace's device processes (those named '/device:...',
  whose threads are e.g. 'XLA Modules', 'XLA Ops' and one per stream of kernels); a trace without device
  processes (a CPU run) gives its host threads instead."""
  with gzip.open(path, 'rt') if path.endswith('.gz') else open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  processes = {
    e['pid']: e.get('args', {}).get('name', '')
    for e in events
    if e.get('ph') == 'M' and e.get('name') == 'process_name'
  }
  threads = {
    (e['pid'], e.get('tid')): e.get('args', {}).get('name', '')
    for e in events
    if e.get('ph') == 'M' and e.get('name') == 'thread_name'
  }
  devices = {pid for pid, name in processes.items() if name.startswith('/device:')}
  grouped = collections.defaultdict(list)
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e and (not devices or e['pid'] in devices):
      grouped[f"{processes.get(e['pid'], e['pid'])} / {threads.get((e['pid'], e.get('tid')), e.get('tid'))}"].append(e)
  return dict(grouped)


def summarise(path: str, steps: int, top: int = 10) -> str:
  """Per device thread: events and busy time per step; for each thread with at least one event per step, its
  `top` event names by time per step (ms), with counts per step and share. `steps`: steps the trace covers."""
  lines = [path]
  for thread, events in sorted(load_device_threads(path).items()):
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for event in events:
      entry = by_name[event['name']]
      entry[0] += float(event['dur'])
      entry[1] += 1
    total = sum(v[0] for v in by_name.values()) or 1.0
    lines.append(f'  {thread}: {len(events) / steps:.0f} events, {total / steps / 1e3:.2f} ms per step')
    if len(events) < steps or len(by_name) < 2:
      continue
    for name, (micros, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
      lines.append(
        f'    {micros / steps / 1e3:8.3f} ms {count / steps:5.0f}x {100 * micros / total:5.1f}%  {name[:80]}'
      )
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('paths', nargs='+')
  parser.add_argument('--steps', type=int, default=1)
  parser.add_argument('--top', type=int, default=10)
  args = parser.parse_args()
  for path in args.paths:
    print(summarise(path, args.steps, args.top))


if __name__ == '__main__':
  main()
