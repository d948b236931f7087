"""The CPU allocator hint, and the page faults it is about: XLA's per-step temporaries with and without huge pages."""

import json
import os
import subprocess
import sys

import pytest

from posebh_jax import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _thp_file(tmp_path, mode: str) -> str:
  path = tmp_path / 'enabled'
  path.write_text(
    {'always': '[always] madvise never\n', 'madvise': 'always [madvise] never\n', 'never': 'always madvise [never]\n'}[
      mode
    ]
  )
  return str(path)


def test_hint_only_on_cpu_without_the_tunable_where_thp_is_on_request(tmp_path):
  madvise = _thp_file(tmp_path, 'madvise')
  hint = metrics.cpu_allocator_hint('cpu', {}, madvise)
  assert hint is not None and metrics.HUGEPAGE_TUNABLE in hint and '\n' not in hint
  assert metrics.cpu_allocator_hint('gpu', {}, madvise) is None
  assert metrics.cpu_allocator_hint('tpu', {}, madvise) is None
  set_already = {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'}
  assert metrics.cpu_allocator_hint('cpu', set_already, madvise) is None
  # Other tunables alone still get the hint.
  assert metrics.cpu_allocator_hint('cpu', {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, madvise) is not None
  assert metrics.cpu_allocator_hint('cpu', {}, _thp_file(tmp_path, 'always')) is None
  assert metrics.cpu_allocator_hint('cpu', {}, _thp_file(tmp_path, 'never')) is None
  assert metrics.cpu_allocator_hint('cpu', {}, str(tmp_path / 'missing')) is None


_FAULTS_PER_CALL = r'''
import json, resource
import jax, jax.numpy as jnp
x = jnp.ones((2048, 2048), jnp.float32)
# 16 MiB intermediates that XLA cannot fuse away (a reversal, a transpose): its temporary buffer, allocated per
# execution. (Elementwise on purpose: the matmul kernels' own scratch faults wildly with or without huge pages.)
step = jax.jit(lambda x: (jnp.sin(x) * jnp.cos(x) + jnp.tanh(x[::-1]) * jnp.exp(-x.T)).sum())
step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step(x).block_until_ready()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5))
'''


def _faults_per_call(tunables: str | None) -> float:
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'XLA_FLAGS')}
  env['JAX_PLATFORMS'] = 'cpu'
  if tunables:
    env['GLIBC_TUNABLES'] = tunables
  out = subprocess.run(
    [sys.executable, '-c', _FAULTS_PER_CALL], env=env, cwd=REPO, capture_output=True, text=True, check=True
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_huge_pages_spare_the_per_step_page_faults():
  try:
    with open(metrics.THP_MODE_FILE) as f:
      mode = f.read()
  except OSError:
    pytest.skip('no transparent huge pages on this machine')
  if '[madvise]' not in mode:
    pytest.skip(f'THP mode is not madvise ({mode.strip()}): the tunable changes nothing here')
  plain = _faults_per_call(None)
  huge = _faults_per_call(metrics.HUGEPAGE_TUNABLE)
  # 4 KiB pages: the 64 MiB of temporaries fault in on every call (~16k faults); 2 MiB pages: ~100 (measured).
  assert plain > 4000, plain
  assert huge < plain / 10, (plain, huge)
