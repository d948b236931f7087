"""launch/sweep.py and launch/slurm_array.sbatch: points, the paper-ablation sweep files, a 2×2 sweep of the tiny
demo run locally (resumed, skipped when finished, collected), statuses read from workdirs, and the SLURM array and
TPU launchers against stand-ins for sbatch / srun / scontrol / gcloud."""

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, assert_resumed, records, run_module

from launch import sweep as sweep_lib

# The 2×2 sweep of the e2e test: two flip probabilities × two seeds of configs/demo.py:tiny. Neither key changes
# the compiled programs, so every point after the first hits the XLA cache; evaluation of MPII alone, no flip
# test and no pictures keep each point at a few seconds.
TINY_SWEEP = """
from launch.sweep import Sweep, product, seeds


def get_sweep(arg=''):
  return Sweep(
    config='configs/demo.py:tiny',
    points=seeds(product(**{'data.aug.flip_prob': [0.0, 0.5]}), 2),
    fixed={
      'total_steps': 4,
      'checkpoint_every_steps': 2,
      'eval_flip': False,
      'viz_examples': 0,
      'eval_datasets': ('mpii',),
    },
  )
"""


@pytest.fixture(autouse=True)
def _in_repository(monkeypatch):
  """Sweep and config specs are paths relative to the repository root, where the sweeps run from."""
  monkeypatch.chdir(REPO)


def _sweep_file(tmp_path, text=TINY_SWEEP, name='tiny2x2.py') -> str:
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _csv_rows(path) -> list[dict]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _sweep(*args, timeout=300):
  return run_module(['-m', 'launch.sweep', *args], timeout=timeout)


def test_local_sweep_runs_resumes_skips_finished_points_and_collects(tmp_path, data_dir, capsys):
  """A 2×2 sweep: one point first trained for 2 of its steps (stopped early), then the whole sweep, 4 points at a
  time: that point resumes from its checkpoint, the others train from scratch, the table is collected at the end;
  run again, every point is skipped. The table's metrics are the last eval values of each point's metrics.jsonl."""
  spec = _sweep_file(tmp_path)
  root_arg = f'--workdir_root={tmp_path / "sweeps"}'
  common = [spec, '--run=local', root_arg, f'--config.data.data_dir={data_dir}']
  root = tmp_path / 'sweeps' / 'tiny2x2'
  # (It evaluates too: the 4 points of the next command then find the eval programs in the XLA cache.)
  first = _sweep(*common, '--only=0', '--config.total_steps=2')
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  rows = _csv_rows(root / 'results.csv')
  assert [r['status'] for r in rows] == ['finished', 'not started', 'not started', 'not started']
  assert rows[0]['steps'] == rows[0]['total_steps'] == '2'
  points = json.loads((root / 'sweep.json').read_text())['points']
  assert [p['name'] for p in points] == [
    'flip_prob=0.0,seed=0',
    'flip_prob=0.0,seed=1',
    'flip_prob=0.5,seed=0',
    'flip_prob=0.5,seed=1',
  ]

  start = time.perf_counter()
  second = _sweep(*common, '--parallel=4')
  took = time.perf_counter() - start
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
  assert f'resume {points[0]["name"]}: finished at step 2 by another command' in second.stdout
  assert second.stdout.count(': started (log ') == 4 and 'skip' not in second.stdout
  workdir0 = points[0]['workdir']
  assert_resumed((root / points[0]['name'] / 'sweep.log').read_text(), workdir0, 2, 4)

  rows = {r['point']: r for r in _csv_rows(root / 'results.csv')}
  markdown = (root / 'results.md').read_text()
  assert (root / 'results.png').read_bytes()[:4] == b'\x89PNG'
  losses = {}
  for point in points:
    row = rows[point['name']]
    assert (row['status'], row['steps'], row['total_steps'], row['eval_step']) == ('finished', '4', '4', '4')
    assert row['data.aug.flip_prob'] == repr(point['overrides']['data.aug.flip_prob'])
    assert row['seed'] == str(point['overrides']['seed'])
    assert 0 < float(row['wall_time_s']) < took + 60
    # The last evaluation and loss in the point's own metrics.jsonl, read here independently.
    history = records(point['workdir'])
    last_eval = [r for r in history if 'eval/mpii/PCKh' in r][-1]
    for key in ('eval/mpii/PCKh', 'eval/mpii/PCKh@0.1', 'eval/mpii/AP'):
      assert float(row[key]) == last_eval[key]
    losses[point['name']] = [r['train/loss'] for r in history if 'train/loss' in r][-1]
    assert float(row['train/loss']) == losses[point['name']]
  best = min(losses, key=losses.get)
  assert [name for name, row in rows.items() if 'train/loss' in row['best'].split(';')] == [best]
  assert f'**{losses[best]:.4g}**' in markdown and markdown.count('| finished |') == 4

  third = _sweep(*common, '--parallel=4')
  assert third.returncode == 0, third.stderr[-2000:]
  assert third.stdout.count('finished (4 steps)') == 4 and 'started' not in third.stdout
  assert sweep_lib.main(['collect', spec, root_arg, '--metric=eval/mpii/AP']) == 0
  assert capsys.readouterr().out.count(': finished eval/mpii/AP=') == 4
  assert [r['best'] for r in _csv_rows(root / 'results.csv')] == [rows[p['name']]['best'] for p in points]


def test_point_builders():
  """product, zip_, seeds, around and union."""
  grid = sweep_lib.product(**{'a': [1, 2], 'b': ['x', 'y']})
  assert grid == [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  pairs = sweep_lib.zip_(**{'p': [1e-7, 5e-7], 'q': [1e-8, 5e-8]})
  assert pairs == [{'p': 1e-7, 'q': 1e-8}, {'p': 5e-7, 'q': 5e-8}]
  assert sweep_lib.product(pairs, **{'r': [0, 1]})[1] == {'p': 1e-7, 'q': 1e-8, 'r': 1}
  assert sweep_lib.seeds([{'a': 1}], 2) == [{'a': 1, 'seed': 0}, {'a': 1, 'seed': 1}]
  assert sweep_lib.seeds([{'a': 1}], [5]) == [{'a': 1, 'seed': 5}]
  one_at_a_time = sweep_lib.around({'a': 1, 'b': 2}, sweep_lib.product(**{'a': [1, 3]}), [{'b': 4}])
  assert one_at_a_time == [{'a': 1, 'b': 2}, {'a': 3, 'b': 2}, {'a': 1, 'b': 4}]
  assert sweep_lib.union([{'a': 1}], [{'a': 1}, {'a': 2}]) == [{'a': 1}, {'a': 2}]
  with pytest.raises(ValueError, match='different lengths'):
    sweep_lib.zip_(**{'a': [1, 2], 'b': [1]})
  with pytest.raises(ValueError, match='twice'):
    sweep_lib.product([{'a': 1}], **{'a': [2]})
  assert sweep_lib.cli_value((50.0, 90.0)) == '(50.0,90.0)' and sweep_lib.cli_value(('coco',)) == "('coco',)"
  assert sweep_lib.point_name({'posebh.weights.phm': 3.33e-6, 'seed': 1}) == 'phm=3.33e-06,seed=1'
  assert sweep_lib.point_name({'a.coco': 1, 'b.coco': 2}) == 'a.coco=1,b.coco=2'


# What each paper-ablation sweep must hold (docs/METHOD.md's numbers): {file: (points at full scale, {key: values})}.
PAPER_SWEEPS = {
  'posebh_table2.py': (
    6,
    {
      'posebh.weights.phm': {3.33e-6, 6.25e-6, 1.25e-5},
      ('posebh.weights.ppc', 'posebh.weights.ppd'): {(1e-7, 1e-8), (1.25e-7, 1.25e-8), (5e-7, 5e-8), (1e-6, 1e-7)},
    },
  ),
  'posebh_table3.py': (5, {'posebh.weights.cps': {5e-3, 1e-2, 5e-2}, 'posebh.weights.css': {1e-4, 1e-3, 1e-2}}),
  'posebh_table1.py': (3, {'posebh.embed_dim': {32, 64, 128}}),
  'posebh_prototypes.py': (3, {'posebh.prototypes_per_keypoint': {1, 3, 5}}),
  'posebh_stages.py': (5, {'posebh.backbone_thaw_epoch': {50.0, 70.0, 90.0}}),
  'consistency_variants.py': (4, {'consistency.variant': {'none', 'regularize', 'latent', 'hybrid'}}),
  'acae_latents.py': (4, {'acae.num_latents': {16, 32, 48, 64}}),
  'acae_lambda.py': (4, {'acae.lambda_sparsity': {0.15, 0.3, 0.6, 1.2}}),
  'distill_weights.py': (
    2,
    {
      ('distill.gt_weight', 'distill.teacher_weights.coco', 'distill.teacher_weights.mpii'): {
        (0.3, 0.35, 0.35),
        (0.3, 0.25, 0.45),
      }
    },
  ),
}
# The runs the full-scale sweeps start from: passed on the command line.
RUNS = {
  'init_from': '/runs/base',
  'consistency.acae': '/runs/base',
  'distill.teachers.coco': '/runs/coco',
  'distill.teachers.mpii': '/runs/mpii',
}


@pytest.mark.parametrize('name', sorted(PAPER_SWEEPS))
@pytest.mark.parametrize('scale', ['', 'demo'])
def test_paper_sweeps_expand_at_both_scales(name, scale):
  """Every paper-ablation sweep file, at full scale (configs/b16.py or configs/distill.py) and demo scale
  (configs/demo.py): its points, their keys checked against the config, and its values."""
  spec = f'configs/sweeps/{name}' + (f':{scale}' if scale else '')
  sweep = sweep_lib.load_sweep(spec)
  config_file = sweep.config.partition(':')[0]
  if not os.path.exists(os.path.join(REPO, config_file)):
    pytest.skip(f'{config_file} does not exist yet')
  assert config_file == (
    'configs/demo.py' if scale else ('configs/distill.py' if 'distill' in name else 'configs/b16.py')
  )
  cli = {k: v for k, v in RUNS.items() if k in sweep.required}
  points = sweep_lib.plan(sweep, '/sweeps/x', cli)
  count, values = PAPER_SWEEPS[name]
  assert len(points) == count
  for keys, expected in values.items():
    if scale and keys in ('posebh.embed_dim', 'posebh.backbone_thaw_epoch'):
      continue  # scaled down for the demo
    found = {tuple(p.overrides[k] for k in keys) if isinstance(keys, tuple) else p.overrides[keys] for p in points}
    assert found == expected, keys
  assert len({p.workdir for p in points}) == count


def test_print_shows_the_demo_commands(capsys):
  """`--run=print` of a demo-scale sweep: one posebh_jax.main command per point, from the demo's baseline run."""
  assert sweep_lib.main(['configs/sweeps/posebh_table3.py:demo', '--run=print', '--python=python']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 5
  argv = shlex.split(lines[1])
  assert argv[:4] == ['python', '-m', 'posebh_jax.main', '--config=configs/demo.py:posebh']
  assert argv[4] == '--workdir=workdirs/sweeps/posebh_table3_demo/cps=0.005,css=0.001'
  assert argv[5:] == [
    '--config.init_from=workdirs/demo',
    '--config.posebh.weights.cps=0.005',
    '--config.posebh.weights.css=0.001',
  ]
  assert sweep_lib.main(['configs/sweeps/acae_latents.py:demo', '--run=print', '--python=python', '--only=1']) == 0
  fit, acae, train = (shlex.split(line) for line in capsys.readouterr().out.splitlines())
  workdir = 'workdirs/sweeps/acae_latents_demo/num_latents=32'
  assert fit[3:] == ['_link_run', 'workdirs/demo3d', f'{workdir}/acae_fit']
  assert acae[1:] == ['-m', 'posebh_jax.acae', f'--workdir={workdir}/acae_fit', '--config.acae.num_latents=32']
  assert train[-1] == f'--config.consistency.acae={workdir}/acae_fit'


@pytest.mark.parametrize(
  'args, message',
  [
    (['configs/sweeps/nope.py'], 'error: sweep file configs/sweeps/nope.py does not exist'),
    (['configs/sweeps/posebh_table2.py:large'], "unknown argument 'large': use :demo"),
    (['configs/sweeps/demo_lr.py:demo'], 'takes no argument'),
    (['configs/sweeps/posebh_table2.py'], 'this sweep needs --config.init_from=...'),
    (['configs/sweeps/demo_lr.py', '--config.optim.lrr=1'], "unknown config key 'optim.lrr' in the command line"),
    (['configs/sweeps/demo_lr.py', '--config.optim.lr=1'], '--config.optim.lr is swept by this sweep'),
    (['configs/sweeps/demo_lr.py', '--only=9'], "--only: no point '9'"),
    (['configs/sweeps/demo_lr.py', '--run=tpu'], '--run=tpu needs --tpu=NAME and --zone=ZONE'),
  ],
)
def test_user_mistakes_end_with_one_line(args, message, capsys):
  """Unknown sweep files, scale arguments and keys, missing required keys: one `error: ...` line, status 2."""
  assert sweep_lib.main(args) == 2
  captured = capsys.readouterr()
  assert captured.err.count('\n') == 1 and captured.err.startswith('error: ') and message in captured.err, captured


def test_unknown_key_in_a_sweep_file(tmp_path, capsys):
  """A misspelt key in a sweep file's points names the point and the nearest real key; a value of the wrong type
  is refused the same way."""
  spec = _sweep_file(
    tmp_path, "def get_sweep():\n  return 'configs/demo.py', [{'posebh.weights.phn': 1e-6}]\n", 'bad_key.py'
  )
  assert sweep_lib.main([spec]) == 2
  err = capsys.readouterr().err
  assert "unknown config key 'posebh.weights.phn' in point 0" in err and 'did you mean posebh.weights.phm' in err
  spec = _sweep_file(tmp_path, "def get_sweep():\n  return 'configs/demo.py', [{'optim.lr': 'fast'}]\n", 'bad_value.py')
  assert sweep_lib.main([spec]) == 2
  assert "bad value 'fast' for config key 'optim.lr'" in capsys.readouterr().err


def _fake_run(workdir, *, total=4, checkpoints=(), attempts=(), log='', metrics=()):
  """A point's workdir as a run leaves it: config.json, checkpoints/<step>, sweep_attempts.jsonl, sweep.log and
  metrics.jsonl."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'total_steps': total}, f)
  for step in checkpoints:
    os.makedirs(os.path.join(workdir, 'checkpoints', str(step)))
  with open(os.path.join(workdir, sweep_lib.ATTEMPTS_FILE), 'w') as f:
    f.writelines(json.dumps(a) + '\n' for a in attempts)
  with open(os.path.join(workdir, sweep_lib.LOG_FILE), 'w') as f:
    f.write(log)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(m) + '\n' for m in metrics)


def _dead_pid() -> int:
  proc = subprocess.Popen(['true'])
  proc.wait()
  return proc.pid


def test_status_is_read_from_the_workdir(tmp_path):
  """finished / running / stopped / failed (with the last error line, or interrupted) / not started, and the
  wall time over attempts, from the files a point's attempts leave."""
  host, now = socket.gethostname(), time.time()
  start = {'event': 'start', 'time': now - 100, 'host': host, 'pid': _dead_pid(), 'args': ['a']}
  end = {'event': 'end', 'time': now - 40, 'host': host, 'rc': 0, 'args': ['a']}
  traceback = (
    '\n[sweep] attempt 1\nstep 1/4\nerror: an old attempt\n\n[sweep] attempt 2\nstep 3/4\nTraceback (most '
    'recent call last):\n  File "x.py"\nValueError: boom\n[sweep] exit status 1\n'
  )
  cases = {
    'finished': dict(checkpoints=(2, 4), attempts=[start, end], metrics=[{'step': 4, 'train/loss': 0.1}]),
    'stopped': dict(checkpoints=(2,), attempts=[start, end], metrics=[{'step': 3, 'train/loss': 0.1}]),
    'failed': dict(checkpoints=(2,), attempts=[start, dict(end, rc=1)], log=traceback),
    'interrupted': dict(checkpoints=(2,), attempts=[start], log='\n[sweep] attempt 1\nstep 3/4 | loss 0.1\n'),
    'running': dict(checkpoints=(2,), attempts=[dict(start, pid=os.getpid())]),
    'elsewhere': dict(attempts=[dict(start, host='node-7', job='slurm job 5_1')], log='step 1/4\n'),
  }
  for name, files in cases.items():
    _fake_run(tmp_path / name, **files)
  state = {name: sweep_lib.point_state(str(tmp_path / name)) for name in cases}
  assert state['finished'].status == 'finished' and state['finished'].steps == 4 and state['finished'].total == 4
  assert state['finished'].wall_s == pytest.approx(60) and state['finished'].last_args == ['a']
  assert state['stopped'].status == 'stopped' and state['stopped'].steps == 3
  assert (state['failed'].status, state['failed'].detail) == ('failed', 'ValueError: boom')
  assert state['interrupted'].status == 'failed' and state['interrupted'].detail.startswith('interrupted')
  assert state['interrupted'].detail.endswith('step 3/4 | loss 0.1')
  assert state['running'].status == 'running' and state['elsewhere'].status == 'running'
  assert 'slurm job 5_1' in state['elsewhere'].detail
  stale = sweep_lib.point_state(str(tmp_path / 'elsewhere'), now=now + 2 * sweep_lib.STALE_AFTER_S)
  assert stale.status == 'failed'
  assert sweep_lib.point_state(str(tmp_path / 'nothing')).status == 'not started'
  # The latest checkpoint against the log's `| N steps` line when config.json has no total (an epoch-based run).
  _fake_run(tmp_path / 'epochs', total=-1, checkpoints=(5,), log='mesh {} | batch 8 | 5 steps/epoch | 5 steps\n')
  assert sweep_lib.point_state(str(tmp_path / 'epochs')).status == 'finished'


def test_best_values_and_metric_directions(tmp_path):
  """Higher is better for AP / PCKh / AUC, lower for losses and errors; only finished points compete, and a
  metric whose values are all equal marks none."""
  assert sweep_lib.higher_is_better('eval/coco/AP') and sweep_lib.higher_is_better('eval/mpii/PCKh')
  assert sweep_lib.higher_is_better('eval/h36m/AUC') and sweep_lib.higher_is_better('eval/h36m/PCK150')
  for name in ('train/loss', 'eval/h36m/MPJPE', 'eval/h36m/PA-MPJPE', 'eval/h36m/MPJPE-abs', 'eval/hand/EPE'):
    assert not sweep_lib.higher_is_better(name), name
  sweep = sweep_lib.Sweep(config='configs/demo.py:tiny', points=[{'seed': s} for s in range(3)])
  points = sweep_lib.plan(sweep, str(tmp_path), {})
  host, now = socket.gethostname(), time.time()
  values = [(0.5, 200.0, 'finished'), (0.6, 180.0, 'finished'), (0.9, 100.0, 'failed')]
  for point, (ap, mpjpe, status) in zip(points, values):
    attempts = [{'event': 'start', 'time': now, 'host': host, 'pid': _dead_pid()}]
    attempts.append({'event': 'end', 'time': now + 1, 'host': host, 'rc': 0 if status == 'finished' else 1})
    _fake_run(
      point.workdir,
      checkpoints=(4 if status == 'finished' else 2,),
      attempts=attempts,
      metrics=[{'step': 4, 'eval/x/AP': ap, 'eval/x/MPJPE': mpjpe, 'eval/x/same': 1.0}],
    )
  result = sweep_lib.collect(sweep, points, str(tmp_path))
  rows = _csv_rows(result['csv'])
  assert [r['best'] for r in rows] == ['', 'eval/x/AP;eval/x/MPJPE', '']
  assert [r['status'] for r in rows] == ['finished', 'finished', 'failed']
  markdown = open(result['md']).read()
  assert '**0.6**' in markdown and '**0.9**' not in markdown and 'eval/x/MPJPE' not in markdown  # headline: AP
  markdown = open(sweep_lib.collect(sweep, points, str(tmp_path), columns='/x/')['md']).read()
  assert '**0.6**' in markdown and '**180**' in markdown and '**1**' not in markdown  # 'same': unmarked
  assert result['metric'] == 'eval/x/AP' and result['png']


def _bin(tmp_path, **scripts) -> str:
  """A directory of stand-in commands (name → bash script) to put first on PATH."""
  directory = tmp_path / 'bin'
  directory.mkdir(exist_ok=True)
  for name, text in scripts.items():
    (directory / name).write_text('#!/usr/bin/env bash\n' + text)
    (directory / name).chmod(0o755)
  return str(directory)


# A sweep for the launchers: 4 points of the tiny config, each with a setup step that writes a file.
SETUP_SWEEP = """
import os
from launch.sweep import Sweep, product


def _setup(overrides, workdir, fixed):
  done = os.path.join(workdir, 'setup_done')
  return [{'args': ['-c', f'open({done!r}, "w").write("ok")'], 'creates': done}], {'eval_every_steps': 0}


def get_sweep(arg=''):
  return Sweep(config='configs/demo.py:tiny', points=product(**{'optim.lr': [1e-3, 2e-3], 'seed': [0, 1]}), setup=_setup)
"""


def test_slurm_submits_one_array_job_of_the_unfinished_points(tmp_path, monkeypatch, capsys):
  """`--run=slurm`: ONE `sbatch --array` of launch/slurm_array.sbatch over ROOT/sweep.json; re-submitted after a
  point finished, the array leaves it out; `--parallel` caps the tasks running at a time."""
  log = tmp_path / 'sbatch.log'
  monkeypatch.setenv(
    'PATH', _bin(tmp_path, sbatch=f'echo "$@" >> {log}\necho "Submitted batch job 77"\n') + ':' + os.environ['PATH']
  )
  spec = _sweep_file(tmp_path, SETUP_SWEEP, 'setup4.py')
  root = tmp_path / 'sweeps' / 'setup4'
  assert sweep_lib.main([spec, '--run=slurm', f'--workdir_root={tmp_path / "sweeps"}']) == 0
  (call,) = log.read_text().splitlines()
  argv = call.split()
  assert argv[0] == '--array=0-3' and argv[-2:] == [sweep_lib.ARRAY_SCRIPT, str(root / 'slurm' / 'sweep-1.json')]
  record = json.loads((root / 'sweep.json').read_text())
  assert [s['job'] for s in record['submissions']] == ['77'] and len(record['points']) == 4
  # The array reads its own copy of the points, which a later launch of a changed sweep does not touch.
  assert json.loads((root / 'slurm' / 'sweep-1.json').read_text())['points'] == record['points']
  point = record['points'][1]
  _fake_run(
    point['workdir'],
    checkpoints=(20,),
    total=20,
    attempts=[
      {'event': 'start', 'time': 1, 'host': 'n', 'args': point['args']},
      {'event': 'end', 'time': 2, 'rc': 0, 'args': point['args']},
    ],
  )
  assert sweep_lib.main([spec, '--run=slurm', f'--workdir_root={tmp_path / "sweeps"}', '--parallel=2']) == 0
  second = log.read_text().splitlines()[1].split()
  assert second[0] == '--array=0,2-3%2' and second[-1] == str(root / 'slurm' / 'sweep-2.json')
  assert f'skip {point["name"]}: finished' in capsys.readouterr().out
  # squeue still lists tasks 0 and 3 of job 77: submitted again, only point 2 goes.
  _bin(tmp_path, squeue='printf "77_0\\n77_3\\n"\n')
  assert sweep_lib.main([spec, '--run=slurm', f'--workdir_root={tmp_path / "sweeps"}']) == 0
  assert log.read_text().splitlines()[2].split()[0] == '--array=2'
  assert capsys.readouterr().out.count('queued or running in an earlier array job') == 2


_FAKE_SRUN = """while [[ "$1" == --* ]]; do shift; done
printf '%s\\n' "$@" > "$SRUN_ARGS"
if [ -n "${SRUN_WAIT:-}" ]; then
  trap 'echo term >> "$SRUN_ARGS.term"; exit 0' TERM
  touch "$SRUN_ARGS.ready"
  while :; do sleep 0.05; done
fi
"""


def test_slurm_array_task_runs_its_point_and_requeues_at_the_time_limit(tmp_path):
  """launch/slurm_array.sbatch under stand-ins: array task 2 runs point 2's setup step and then its trainer
  arguments through srun, with start / end records; SIGTERM to the script (SLURM's B: signal before the time
  limit) reaches the trainer, which exits 0, and the task requeues itself (`scontrol requeue 77_2`)."""
  spec = _sweep_file(tmp_path, SETUP_SWEEP, 'setup4.py')
  sweep = sweep_lib.load_sweep(spec)
  points = sweep_lib.plan(sweep, str(tmp_path / 'root'), {})
  points_file = sweep_lib.write_points_file(str(tmp_path / 'root'), spec, sweep, points)
  srun_args, scontrol_log = tmp_path / 'srun.args', tmp_path / 'scontrol.log'
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  env.update(
    PATH=_bin(tmp_path, srun=_FAKE_SRUN, scontrol=f'echo "$@" >> {scontrol_log}\n') + ':' + env['PATH'],
    SLURM_ARRAY_TASK_ID='2',
    SLURM_ARRAY_JOB_ID='77',
    SLURM_JOB_ID='80',
    PYTHON=sys.executable,
    PYTHONPATH=REPO,
    SRUN_ARGS=str(srun_args),
  )
  command = ['bash', 'launch/slurm_array.sbatch', points_file]
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  point = points[2]
  assert srun_args.read_text().splitlines() == [sys.executable] + point.args
  assert open(os.path.join(point.workdir, 'setup_done')).read() == 'ok'
  events = [json.loads(line) for line in open(os.path.join(point.workdir, sweep_lib.ATTEMPTS_FILE))]
  assert [e['event'] for e in events] == ['start', 'child', 'end'] and events[-1]['rc'] == 0
  assert events[0]['job'] == 'slurm job 77_2' and events[-1]['args'] == point.args
  assert not scontrol_log.exists() and not os.path.exists(points[1].workdir)

  job = subprocess.Popen(command, cwd=REPO, env=dict(env, SRUN_WAIT='1'), stdout=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 60
    while not os.path.exists(f'{srun_args}.ready') and time.time() < deadline:
      time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # to the script only, as SLURM's --signal=B:TERM does
    out, _ = job.communicate(timeout=60)
  finally:
    job.kill()
  assert job.returncode == 0, out
  assert 'requeueing 77_2' in out and scontrol_log.read_text() == 'requeue 77_2\n'
  assert open(f'{srun_args}.term').read() == 'term\n'
  log = open(os.path.join(point.workdir, sweep_lib.LOG_FILE)).read()
  assert 'setup_done exists; skipping' in log and log.count('[sweep] attempt ') == 2
  state = sweep_lib.point_state(point.workdir)
  assert state.status == 'stopped' and state.last_args == point.args


def test_tpu_runs_points_one_after_another_through_tpu_vm_sh(tmp_path):
  """`--run=tpu`: each point through launch/tpu_vm.sh (gcloud's stand-in records the command it would run on
  every worker), one after another; the overrides survive the remote shell."""
  log = tmp_path / 'gcloud.log'
  gcloud = f'for a in "$@"; do case "$a" in --command=*) printf "%s\\n" "${{a#--command=}}" >> {log};; esac; done\n'
  spec = _sweep_file(
    tmp_path,
    "def get_sweep():\n  return 'configs/demo.py:posebh', [{'posebh.stage_epochs': (0.5, 1.2)}, {'seed': 3}]\n",
    'tpu2.py',
  )
  env_path = _bin(tmp_path, gcloud=gcloud) + ':' + os.environ['PATH']
  result = subprocess.run(
    [sys.executable, '-m', 'launch.sweep', spec, '--run=tpu', '--tpu=pod', '--zone=z1', f'--workdir_root={tmp_path}'],
    cwd=REPO,
    env=dict(os.environ, PATH=env_path, PYTHONPATH=REPO),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 1, result.stderr  # the stand-in trains nothing: both points stay unfinished
  first, second = log.read_text().splitlines()
  argv = shlex.split(first)
  assert argv[:3] == ['cd', '~/posebh_jax', '&&'] and argv[3:6] == ['.venv/bin/python', '-m', 'posebh_jax.main']
  assert argv[-1] == '--config.posebh.stage_epochs=(0.5,1.2)'
  assert argv[7] == f'--workdir={tmp_path}/tpu2/stage_epochs=0.5_1.2' and 'seed=3' in second


def test_collect_before_anything_ran(tmp_path, capsys):
  """`collect` of a full-scale sweep needs only its workdirs (not the runs it starts from): every point 'not
  started', no plot without values."""
  assert sweep_lib.main(['collect', 'configs/sweeps/posebh_table2.py', f'--workdir_root={tmp_path}']) == 0
  rows = _csv_rows(tmp_path / 'posebh_table2' / 'results.csv')
  assert [r['status'] for r in rows] == ['not started'] * 6 and rows[0]['posebh.weights.phm'] == '3.33e-06'
  assert not (tmp_path / 'posebh_table2' / 'results.png').exists() and '6 not started' in capsys.readouterr().out
