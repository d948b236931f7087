"""`python -m benchmarks.synthetic_mdt --tiny` end to end: three tiny runs (baseline, PoseBH, baseline continued),
evaluated into the per-format / per-landmark / per-pair tables and the JSON."""

import json
import math
import os
import subprocess
import sys

import numpy as np

from conftest import REPO

FORMATS = ['coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody']
RUNS = ['baseline', 'continued', 'posebh']


def _run(args):
  # XLA's backend optimisation level 0 compiles the tiny train steps about 3x faster; one step each does not
  # care how fast the compiled code is.
  env = dict(
    os.environ,
    PYTHONPATH=REPO,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0',
  )
  return subprocess.run(
    [sys.executable, '-m', 'benchmarks.synthetic_mdt', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _tables(markdown):
  """{section title: rows (lists of cell strings), header first}."""
  tables, title = {}, None
  for line in markdown.splitlines():
    if line.startswith('## '):
      title = line[3:].strip()
    elif line.startswith('|') and title and not line.startswith('|---'):
      tables.setdefault(title, []).append([c.strip() for c in line.strip('|').split('|')])
  return tables


def _finite(cell):
  return math.isfinite(float(cell))


def test_tiny_benchmark_end_to_end(tmp_path, data_dir):
  workdir = tmp_path / 'mdt'
  args = ['--tiny', '--steps=1', '--extra_steps=1', '--jobs=2', f'--workdir={workdir}', f'--data_dir={data_dir}']
  result = _run(args)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for run in RUNS:
    assert f'[synthetic_mdt] {run}: training 1 steps' in result.stdout
  markdown = (workdir / 'synthetic_mdt.md').read_text()
  assert markdown in result.stdout
  tables = _tables(markdown)
  assert set(tables) == {'Per format', 'Per shared landmark', 'Per format pair'}

  header, *rows = tables['Per format']
  assert header[:5] == ['format', 'metric', 'ViTPose++ (1)', 'ViTPose++ cont. (2)', 'PoseBH (2)']
  assert [r[0] for r in rows] == FORMATS
  assert [r[1] for r in rows] == ['AP', 'AP', 'PCKh', 'AP', 'AP', 'AP']
  assert all(_finite(c) for r in rows for c in r[2:]), rows

  header, *rows = tables['Per shared landmark']
  assert header[:5] == ['category', 'landmark', 'formats', 'n', 'GT dist']
  by_landmark = {(r[0], r[1]): r for r in rows}
  assert by_landmark[('human', 'left_knee')][2] == 'coco/aic/mpii/coco_wholebody'
  assert by_landmark[('human', 'nose')][2] == 'coco/coco_wholebody'
  assert len([r for r in rows if r[0] == 'human']) == 17 + 1  # COCO's 17 body keypoints + the **all** row
  assert len([r for r in rows if r[0] == 'animal']) == 17 + 1
  assert all(int(r[3]) > 0 and all(_finite(c) for c in r[4:]) for r in rows), rows
  header, *rows = tables['Per format pair']
  assert {r[1] for r in rows} == {
    'coco~aic',
    'coco~mpii',
    'coco~coco_wholebody',
    'aic~mpii',
    'aic~coco_wholebody',
    'mpii~coco_wholebody',
    'ap10k~apt36k',
    '**all**',
  }

  with open(workdir / 'synthetic_mdt.json') as f:
    report = json.load(f)
  assert report['settings']['total_steps'] == {'baseline': 1, 'continued': 2, 'posebh': 2}
  assert report['runs']['continued']['args'][-1] == '--config.posebh.weights.css=0.0'
  for run in RUNS:
    assert set(report['accuracy'][run]) == set(FORMATS)
    assert math.isfinite(report['accuracy'][run]['mpii']['PCKh'])
    for category in ('human', 'animal'):
      overall = report['consistency'][run][category]['overall']
      assert overall['count'] > 0
      assert all(math.isfinite(overall[k]) for k in ('pred_dist', 'gt_dist', 'inconsistency', 'error'))
      # The ground-truth disagreement does not depend on the model.
      assert overall['gt_dist'] == report['consistency']['baseline'][category]['overall']['gt_dist']
  # One step of PoseBH's stage 1 trains only the embedding module (backbone and heads frozen), so PoseBH and the
  # control, which see the same batches under the same schedule, predict identically: the control is matched.
  for category in ('human', 'animal'):
    a = report['consistency']['posebh'][category]['overall']
    b = report['consistency']['continued'][category]['overall']
    np.testing.assert_allclose([a['pred_dist'], a['error']], [b['pred_dist'], b['error']], rtol=1e-6)

  # The finished runs belong to these settings: other settings in the same workdir are refused.
  refused = _run([a for a in args if not a.startswith('--steps')] + ['--steps=2'])
  assert refused.returncode != 0 and 'holds a baseline run with other settings' in refused.stderr
