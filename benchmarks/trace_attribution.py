"""Device time of a profiled step by model scope, and the difference between two steps.

Kernels in a perfetto trace carry XLA's instruction names (`input_reduce_fusion_12`); the compiled module's
optimised HLO (`benchmarks.train_step --trace_dir` writes it next to each trace as `<trace>.hlo.txt.gz`) maps
each instruction to the JAX op path that produced it (`jvp(PoseModel)/PoseModel._own_heads/vmap()/concatenate`).
This sums kernel time per path, with repeated modules collapsed (`block_7` → `block_N`, `head_coco` →
`head_*`), and with a second trace prints where one step spends more than the other:

  python -m benchmarks.trace_attribution DIR/B16_no_experts.trace.json.gz DIR/B16_plain.trace.json.gz --steps=3

Library kernels launched from a command buffer (cuBLAS GEMMs inside a CUDA graph) name no instruction and are
summed as `library kernels`. Meant for accelerator traces: a CPU trace has no kernel streams, and most of its host
threads' events (the runtime's, Python's) match no instruction (`unmatched kernels`).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import os
import re

from benchmarks import trace_summary

LIBRARY = 'library kernels'
UNKNOWN = 'unmatched kernels'

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?metadata=\{([^}]*)\}')


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """{instruction name: JAX op path} from optimised HLO text (`compiled.as_text()`), without the leading
  `jit(<fn>)/`. An instruction without an op path of its own (XLA keeps only `deduplicated_name` on fusions it
  deduplicated, and none on fusions of several ops) gets its alias's, else the last op path inside the
  computation it calls (usually its root)."""
  op_names, aliases, calls, computation_op = {}, {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    header = re.match(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$', line)
    if header:
      computation = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, metadata = match.groups()
    op_name = re.search(r'op_name="([^"]*)"', metadata)
    called = re.search(r'calls=%?([\w.\-]+)', line)
    if called:
      calls[name] = called.group(1)
    if op_name:
      op_names[name] = re.sub(r'^jit\([^)]*\)/', '', op_name.group(1))
      if computation is not None:
        computation_op[computation] = op_names[name]
    else:
      alias = re.search(r'deduplicated_name="([^"]*)"', metadata)
      if alias and alias.group(1) != name:
        aliases[name] = alias.group(1)

  def resolve(name: str) -> str | None:
    current, seen = name, set()
    while current not in op_names and current in aliases and current not in seen:
      seen.add(current)
      current = aliases[current]
    return (
      op_names.get(current) or computation_op.get(calls.get(current, '')) or computation_op.get(calls.get(name, ''))
    )

  resolved = {name: resolve(name) for name in set(op_names) | set(aliases) | set(calls)}
  return {name: op_name for name, op_name in resolved.items() if op_name}


def scope(op_name: str, depth: int = 8) -> str:
  """The first `depth` components of an op path with layer and head indices collapsed."""
  op_name = re.sub(r'block_\d+', 'block_N', op_name)
  op_name = re.sub(r'head_[A-Za-z0-9_]+', 'head_*', op_name)
  return '/'.join(op_name.split('/')[:depth])


def _instruction_for(kernel: dict, op_names: dict[str, str]) -> str | None:
  name = kernel['name']
  for candidate in (name, re.sub(r'_(\d+)$', r'.\1', name), kernel.get('args', {}).get('hlo_op', '')):
    if candidate in op_names:
      return candidate
  return None


def attribute(trace_path: str, hlo_text: str, steps: int, depth: int = 8) -> dict[str, tuple[float, float]]:
  """{scope: (device milliseconds per step, kernels per step)} of the trace's kernels (its stream threads, or
  all device threads when none is named as a stream)."""
  op_names = hlo_op_names(hlo_text)
  threads = trace_summary.load_device_threads(trace_path)
  streams = {t: e for t, e in threads.items() if 'Stream' in t} or threads
  totals = collections.defaultdict(lambda: [0.0, 0])
  for events in streams.values():
    for kernel in events:
      instruction = _instruction_for(kernel, op_names)
      if instruction is not None:
        key = scope(op_names[instruction], depth) or '(no op path)'
      elif kernel['name'].startswith(('nvjet', 'cutlass', 'sm90', 'sm80', 'ampere', 'void ', 'cudnn')):
        key = LIBRARY
      else:
        key = UNKNOWN
      totals[key][0] += float(kernel['dur'])
      totals[key][1] += 1
  return {key: (micros / steps / 1e3, count / steps) for key, (micros, count) in totals.items()}


def hlo_path_beside(trace_path: str) -> str:
  """Where `benchmarks.train_step` writes a trace's HLO: `X.trace.json.gz` → `X.hlo.txt.gz`."""
  return re.sub(r'\.trace\.json(\.gz)?$', '', trace_path) + '.hlo.txt.gz'


def read_hlo(trace_path: str, hlo_path: str = '') -> str:
  """The HLO text for a trace: `hlo_path`, else the file written beside the trace (`hlo_path_beside`)."""
  path = hlo_path or hlo_path_beside(trace_path)
  if not os.path.exists(path):
    raise SystemExit(
      f'no HLO for {trace_path}: expected {path} (benchmarks.train_step --trace_dir writes it) or pass --hlo'
    )
  with gzip.open(path, 'rt') if path.endswith('.gz') else open(path) as f:
    return f.read()


def report(first: dict, second: dict | None = None, top: int = 30) -> str:
  """Lines of the table: per scope, ms per step (and, with `second`, its ms and the difference), sorted by
  time or by the size of the difference."""

  def total(table):
    return sum(ms for ms, _ in table.values())

  if second is None:
    lines = [f'total {total(first):.3f} ms per step']
    for key, (ms, count) in sorted(first.items(), key=lambda kv: -kv[1][0])[:top]:
      lines.append(f'{ms:8.3f} ms {count:6.0f}x  {key}')
    return '\n'.join(lines)
  lines = [
    f'total {total(first):.3f} vs {total(second):.3f} ms per step (difference {total(first) - total(second):+.3f})',
    f'{"diff ms":>9} {"first":>8} {"second":>8} {"kernels":>13}  scope',
  ]
  keys = sorted(set(first) | set(second), key=lambda k: -abs(first.get(k, (0.0, 0))[0] - second.get(k, (0.0, 0))[0]))
  for key in keys[:top]:
    (ms_a, n_a), (ms_b, n_b) = first.get(key, (0.0, 0)), second.get(key, (0.0, 0))
    lines.append(f'{ms_a - ms_b:+9.3f} {ms_a:8.3f} {ms_b:8.3f} {n_a:6.0f}/{n_b:<6.0f}  {key}')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('traces', nargs='+', help='one trace, or two to compare (first minus second)')
  parser.add_argument('--hlo', nargs='*', default=[], help='HLO text per trace (default: beside each trace)')
  parser.add_argument('--steps', type=int, default=3, help='steps each trace covers (train_step traces: 3)')
  parser.add_argument('--depth', type=int, default=8, help='op path components kept per scope')
  parser.add_argument('--top', type=int, default=30)
  args = parser.parse_args()
  if len(args.traces) > 2:
    raise SystemExit('give one trace or two')
  hlo_paths = args.hlo + [''] * (len(args.traces) - len(args.hlo))
  tables = [attribute(path, read_hlo(path, hlo), args.steps, args.depth) for path, hlo in zip(args.traces, hlo_paths)]
  print(report(tables[0], tables[1] if len(tables) == 2 else None, args.top))


if __name__ == '__main__':
  main()
