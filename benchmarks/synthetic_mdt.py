"""ViTPose++ vs PoseBH on the synthetic multi-skeleton benchmark: accuracy per format and cross-format consistency.

  python -m benchmarks.synthetic_mdt [--steps N] [--extra_steps M] [--workdir DIR] [--data_dir DIR] [--tiny]
      [--jobs 1|2]

Trains, on the CPU (or whatever JAX finds), three runs in DIR (default workdirs/synthetic_mdt, with --tiny
workdirs/synthetic_mdt_tiny), each with `python -m posebh_jax.main`, then evaluates them in this process:

  baseline   configs/demo.py                  N steps (default: the config's total_steps, 750)
  posebh     configs/demo.py:posebh           M more steps (default: that config's total_steps, 300), from the
                                              baseline (--config.init_from=DIR/baseline)
  continued  configs/demo.py:posebh           the same M steps from the same baseline with every PoseBH loss
             + posebh.weights.*=0             weight at 0: the baseline continued under PoseBH's exact schedule

The "continued" run is the equal-budget control: the same extra steps, batches, stage boundaries, per-stage
learning rates and fresh AdamW states, and the same frozen groups (backbone and heads frozen in stage 1,
backbone until the thaw point) as PoseBH, so the only difference to PoseBH is the PoseBH loss terms (PHM, PPC,
PPD, CPS, CSS). Restarting the baseline's own schedule instead would change the learning rate as well. (The
zero-weighted terms are still computed, so the control costs PoseBH's step time.)

The runs do not evaluate while training (--config.eval_every_steps=0): all three are evaluated here, once, with
the same code. A finished run in DIR is reused (DIR/<run>/benchmark_run.json records its command); an interrupted one resumes.
`--tiny` uses configs/demo.py:tiny (tests). The synthetic dataset is prepared in --data_dir first when missing
(default data/tfds, --tiny data/tfds_tiny), with the config's generator settings.

Reported (printed, and written to DIR/synthetic_mdt.md and DIR/synthetic_mdt.json):
- per format: AP (OKS, %; PCKh@0.5 for MPII) on the validation split with flip test, as the training-time
  evaluation computes it;
- cross-format consistency (posebh_jax/evaluation/consistency.py): for every landmark that several formats
  share by the skeleton registry's mapping (e.g. left_knee in COCO, AIC, MPII and WholeBody), on the same
  validation person, every pair of heads (a, b) gives
    pred dist  |p_a - p_b|                         how far apart the two heads put it,
    GT dist    |g_a - g_b|                         how far apart the two formats define it,
    incons.    |(p_a - p_b) - (g_a - g_b)|         the error of the predicted inter-format offset,
  in % of the person box diagonal, averaged over (person, pair). The formats disagree on purpose (AIC's hips
  sit higher and wider than COCO's), so consistency means reproducing GT dist, i.e. a low incons., not a zero
  pred dist. Every human head runs on every human validation person, every animal head on every animal.
  Tables: per format (accuracy, and incons. over the pairs that include the format), per shared landmark and
  per pair of formats; the JSON also holds each head's error against its own format's ground truth ('error').
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = 'configs/demo.py'
# The five PoseBH loss weights (config.posebh.weights); the control run sets them all to 0.
POSEBH_WEIGHTS = ('phm', 'ppc', 'ppd', 'cps', 'css')
RUNS = ('baseline', 'continued', 'posebh')
LABELS = {'baseline': 'ViTPose++', 'continued': 'ViTPose++ cont.', 'posebh': 'PoseBH'}


_PRINT_LOCK = threading.Lock()


def _log(message: str):
  with _PRINT_LOCK:
    print(f'[synthetic_mdt] {message}', flush=True)


def _config_arg(tiny: bool, posebh: bool) -> str:
  flags = (['tiny'] if tiny else []) + (['posebh'] if posebh else [])
  return ','.join(flags)


def load_config(tiny: bool, posebh: bool = False, data_dir: str | None = None):
  """configs/demo.py[:tiny][,posebh] as `get_config` returns it, with `data.data_dir` set when given."""
  from configs import demo

  config = demo.get_config(_config_arg(tiny, posebh))
  if data_dir is not None:
    config.data.data_dir = data_dir
  return config


def run_plan(workdir: str, data_dir: str, tiny: bool, steps: int, extra_steps: int) -> dict[str, dict]:
  """{run: {'workdir', 'steps' (its total_steps), 'args' (the posebh_jax.main arguments)}} for the three runs."""
  common = [f'--config.data.data_dir={data_dir}', '--config.eval_every_steps=0']
  baseline_dir = os.path.join(workdir, 'baseline')
  plan = {
    'baseline': {
      'workdir': baseline_dir,
      'steps': steps,
      'config': f'{CONFIG_FILE}:{_config_arg(tiny, False)}'.rstrip(':'),
      'overrides': common + [f'--config.total_steps={steps}'],
    }
  }
  posebh_overrides = common + [f'--config.total_steps={extra_steps}', f'--config.init_from={baseline_dir}']
  plan['posebh'] = {
    'workdir': os.path.join(workdir, 'posebh'),
    'steps': extra_steps,
    'config': f'{CONFIG_FILE}:{_config_arg(tiny, True)}',
    'overrides': posebh_overrides,
  }
  plan['continued'] = {
    'workdir': os.path.join(workdir, 'continued'),
    'steps': extra_steps,
    'config': f'{CONFIG_FILE}:{_config_arg(tiny, True)}',
    'overrides': posebh_overrides + [f'--config.posebh.weights.{w}=0.0' for w in POSEBH_WEIGHTS],
  }
  for run in plan.values():
    run['args'] = [
      '-m',
      'posebh_jax.main',
      f'--config={run["config"]}',
      f'--workdir={run["workdir"]}',
      *run['overrides'],
    ]
  return plan


def _latest_step(workdir: str) -> int | None:
  """The latest checkpoint step in `workdir`/checkpoints (the layout posebh_jax.checkpoint writes), or None."""
  directory = os.path.join(workdir, 'checkpoints')
  steps = [
    int(d)
    for d in (os.listdir(directory) if os.path.isdir(directory) else [])
    if d.isdigit() and os.path.isdir(os.path.join(directory, d, 'state'))
  ]
  return max(steps) if steps else None


def _existing(name: str, run: dict) -> tuple[dict | None, int | None]:
  """(the run's benchmark record or None, its latest checkpoint step or None); raises SystemExit (one line)
  when the workdir holds a run of other settings."""
  record_path = os.path.join(run['workdir'], 'benchmark_run.json')
  record = None
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
  latest = _latest_step(run['workdir'])
  if (record is not None and record.get('args') != run['args']) or (record is None and latest is not None):
    raise SystemExit(
      f'error: {run["workdir"]} holds a {name} run with other settings; pass another --workdir or delete it'
    )
  return record, latest


def ensure_run(name: str, run: dict, log=None) -> dict:
  """Trains `run` unless its workdir holds the finished run; returns its record (args, steps, train_seconds,
  reused); `log` prints the progress lines (default: this benchmark's). Raises SystemExit (one line) when the
  workdir holds another run or training fails."""
  say = log or _log
  record_path = os.path.join(run['workdir'], 'benchmark_run.json')
  record, latest = _existing(name, run)
  if record is not None and latest is not None and latest >= run['steps'] and record.get('train_seconds'):
    say(f'{name}: reusing the finished run in {run["workdir"]} (step {latest})')
    return dict(record, reused=True)
  command = ' '.join(['python'] + run['args'])
  say(f'{name}: training {run["steps"]} steps{" (resuming at step %d)" % latest if latest else ""}: {command}')
  os.makedirs(run['workdir'], exist_ok=True)
  record = {'args': run['args'], 'steps': run['steps'], 'train_seconds': None}
  with open(record_path, 'w') as f:
    json.dump(record, f, indent=1)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  start = time.perf_counter()
  # The trainer's lines, prefixed with the run's name (two runs may train at once, see --jobs).
  process = subprocess.Popen(
    [sys.executable] + run['args'],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    bufsize=1,
  )
  for line in process.stdout:
    with _PRINT_LOCK:
      print(f'  [{name}] {line.rstrip()}', flush=True)
  returncode = process.wait()
  seconds = time.perf_counter() - start
  if returncode != 0:
    raise SystemExit(f'error: the {name} run failed (exit {returncode}); its command: {command}')
  record['train_seconds'] = seconds
  with open(record_path, 'w') as f:
    json.dump(record, f, indent=1)
  say(f'{name}: trained in {seconds:.0f} s')
  return dict(record, reused=False)


def evaluate_runs(config, plan: dict[str, dict]) -> tuple[dict, dict, float]:
  """Evaluates every run of `plan` with one Task of the baseline `config` (one compiled prediction per head):
  (accuracy {run: {dataset: {metric: value}}}, consistency {run: {category: consistency dict}}, seconds)."""
  from data_pipeline import pipeline
  from posebh_jax import cross_format
  from posebh_jax import evaluator as evaluator_lib
  from posebh_jax import sharding as sharding_lib
  from posebh_jax import trainer as trainer_lib

  start = time.perf_counter()
  mesh = sharding_lib.make_mesh(config.mesh)
  counts = pipeline.composition(config.data, config.batch_size, sharding_lib.num_batch_groups(mesh))
  task = cross_format.share_predict_fns(trainer_lib.Trainer(config, mesh, steps_per_epoch=1, counts=counts))
  truth = cross_format.ground_truth_by_category(config.data)
  _log(
    'validation: '
    + ', '.join(f'{c} {len(t["image_ids"])} persons in {"/".join(t["datasets"])}' for c, t in truth.items())
  )
  accuracy, consistency = {}, {}
  for name in RUNS:
    variables, step = cross_format.load_variables(task, plan[name]['workdir'])
    results = evaluator_lib.Evaluator(config, task, plan[name]['workdir']).run(variables, step)
    accuracy[name] = {}
    for key, value in results.items():
      _, dataset, metric = key.split('/', 2)
      accuracy[name].setdefault(dataset, {})[metric] = float(value)
    consistency[name] = cross_format.consistency_by_category(task, variables, truth)
    summary = ', '.join(f'{c} incons. {100 * r["overall"]["inconsistency"]:.2f}%' for c, r in consistency[name].items())
    _log(f'{name} (step {step}) evaluated: {summary}')
  return accuracy, consistency, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- tables


def _pct(value) -> str:
  return '-' if value is None or not math.isfinite(value) else f'{100 * value:.2f}'


def _primary(metrics: dict) -> tuple[str, float | None]:
  """('PCKh', %) when the dataset reports PCKh, else ('AP', %)."""
  if 'PCKh' in metrics:
    return 'PCKh', metrics['PCKh']
  value = metrics.get('AP')
  return 'AP', None if value is None else 100 * value


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def format_report(accuracy, consistency, settings) -> str:
  """The markdown report: accuracy and consistency per format, then per shared landmark, then per format pair."""
  labels = [f'{LABELS[r]} ({settings["total_steps"][r]})' for r in RUNS]
  categories = list(next(iter(consistency.values())))
  lines = [
    f'# Synthetic multi-skeleton benchmark ({"tiny" if settings["tiny"] else "demo"})',
    '',
    f'ViTPose++ baseline {settings["steps"]} steps; PoseBH and the baseline continued with PoseBH\'s '
    f'schedule but zero PoseBH loss weights ("cont.") {settings["extra_steps"]} more steps each '
    '(step counts in brackets). Validation split, flip test.',
    '',
    'Consistency: distances in % of the person box diagonal, mean over (person, pair of formats sharing '
    'the landmark); GT = |g_a - g_b| (the formats\' own disagreement), pred = |p_a - p_b|, incons. = '
    '|(p_a - p_b) - (g_a - g_b)| (0: the heads reproduce the formats\' relation); a format\'s row averages '
    'the pairs that include it. Accuracy: AP (OKS) or PCKh@0.5, in %.',
    '',
    '## Per format',
    '',
  ]
  rows = []
  first = RUNS[0]
  for dataset in accuracy[first]:
    metric, _ = _primary(accuracy[first][dataset])
    values = [_primary(accuracy[r].get(dataset, {}))[1] for r in RUNS]
    delta = (values[2] - values[1]) if values[2] is not None and values[1] is not None else None
    per_format = [None] * len(RUNS)
    gt = None
    for category in categories:
      fmt = settings['formats'].get(dataset, dataset)
      for i, r in enumerate(RUNS):
        entry = consistency[r][category]['formats'].get(fmt)
        if entry is not None:
          per_format[i], gt = entry, entry['gt_dist']
    rows.append(
      [dataset, metric]
      + ['-' if v is None else f'{v:.1f}' for v in values]
      + ['-' if delta is None else f'{delta:+.1f}', _pct(gt)]
      + [_pct(p['inconsistency'] if p else None) for p in per_format]
    )
  lines += _table(
    ['format', 'metric'] + labels + ['PoseBH - cont.', 'GT dist'] + [f'incons. {LABELS[r]}' for r in RUNS], rows
  )

  def consistency_rows(key, describe):
    out = []
    for category in categories:
      entries = consistency[first][category][key]
      for name in entries:
        per_run = [consistency[r][category][key][name] for r in RUNS]
        out.append(
          [category, name]
          + describe(per_run[0])
          + [str(per_run[0]['count']), _pct(per_run[0]['gt_dist'])]
          + [_pct(p['pred_dist']) for p in per_run]
          + [_pct(p['inconsistency']) for p in per_run]
        )
      overall = [consistency[r][category]['overall'] for r in RUNS]
      out.append(
        [category, '**all**']
        + describe({'formats': []})
        + [str(overall[0]['count']), _pct(overall[0]['gt_dist'])]
        + [_pct(p['pred_dist']) for p in overall]
        + [_pct(p['inconsistency']) for p in overall]
      )
    return out

  metric_header = ['n', 'GT dist'] + [f'pred {LABELS[r]}' for r in RUNS] + [f'incons. {LABELS[r]}' for r in RUNS]
  lines += ['', '## Per shared landmark', '']
  lines += _table(
    ['category', 'landmark', 'formats'] + metric_header, consistency_rows('groups', lambda e: ['/'.join(e['formats'])])
  )
  lines += ['', '## Per format pair', '']
  lines += _table(['category', 'pair'] + metric_header, consistency_rows('format_pairs', lambda e: []))
  return '\n'.join(lines) + '\n'


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if hasattr(value, 'item'):
    return _jsonable(value.item())
  return value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.synthetic_mdt', description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=None, help='baseline steps (default: the config\'s)')
  parser.add_argument(
    '--extra_steps', type=int, default=None, help='PoseBH and continued-baseline steps (default: the posebh config\'s)'
  )
  parser.add_argument('--workdir', default=None, help='default workdirs/synthetic_mdt[_tiny]')
  parser.add_argument('--data_dir', default=None, help='tfds data dir (default data/tfds, --tiny data/tfds_tiny)')
  parser.add_argument('--tiny', action='store_true', help='configs/demo.py:tiny (for tests)')
  parser.add_argument(
    '--jobs',
    type=int,
    default=1,
    choices=(1, 2),
    help='2: train PoseBH and the continued baseline at the same time (each then gets about '
    'half the cores; mostly helps when compilation dominates, as with --tiny)',
  )
  args = parser.parse_args(argv)
  # Given directories are relative to the current directory, the defaults to the repository.
  workdir = os.path.abspath(
    args.workdir or os.path.join(REPO, 'workdirs', 'synthetic_mdt_tiny' if args.tiny else 'synthetic_mdt')
  )
  data_dir = os.path.abspath(args.data_dir or os.path.join(REPO, 'data', 'tfds_tiny' if args.tiny else 'tfds'))
  os.chdir(REPO)  # the config paths are relative to the repository
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  base_config = load_config(args.tiny, False, data_dir)
  posebh_config = load_config(args.tiny, True, data_dir)
  steps = args.steps if args.steps is not None else base_config.total_steps
  extra_steps = args.extra_steps if args.extra_steps is not None else posebh_config.total_steps
  if steps < 1 or extra_steps < 1:
    print(f'error: --steps and --extra_steps must be >= 1 (got {steps}, {extra_steps})', file=sys.stderr)
    return 2
  start = time.perf_counter()
  plan = run_plan(workdir, data_dir, args.tiny, steps, extra_steps)
  for name in ('baseline', 'posebh', 'continued'):
    _existing(name, plan[name])  # refuse a workdir of other settings before any work

  from data_pipeline import prepare
  from data_pipeline.builders import synthetic

  s = base_config.data.synthetic
  params = synthetic.SyntheticParams(
    num_train_per_format=s.num_train_per_format,
    num_val=s.num_val,
    image_size=tuple(s.image_size),
    difficulty=s.difficulty,
    seed=s.seed,
  )
  try:
    prepare.prepare_synthetic(data_dir, params, log=_log)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  records = {'baseline': ensure_run('baseline', plan['baseline'])}
  for name in ('posebh', 'continued'):
    if not records['baseline']['reused'] and _latest_step(plan[name]['workdir']) is not None:
      raise SystemExit(
        f'error: {plan[name]["workdir"]} was trained from an earlier baseline; delete it (or the '
        'whole --workdir) and run again'
      )
  with futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
    pending = {name: pool.submit(ensure_run, name, plan[name]) for name in ('posebh', 'continued')}
    records.update({name: future.result() for name, future in pending.items()})
  accuracy, consistency, eval_seconds = evaluate_runs(base_config, plan)
  settings = {
    'tiny': args.tiny,
    'steps': steps,
    'extra_steps': extra_steps,
    'data_dir': data_dir,
    'total_steps': {'baseline': steps, 'continued': steps + extra_steps, 'posebh': steps + extra_steps},
    'formats': {n: base_config.data.datasets[n].format for n in base_config.data.order},
  }
  report = format_report(accuracy, consistency, settings)
  print(report, flush=True)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'synthetic_mdt.md'), 'w') as f:
    f.write(report)
  timing = {name: records[name]['train_seconds'] for name in records}
  timing['eval'] = eval_seconds
  timing['total_this_invocation'] = time.perf_counter() - start
  with open(os.path.join(workdir, 'synthetic_mdt.json'), 'w') as f:
    json.dump(
      _jsonable(
        {
          'settings': settings,
          'runs': {n: dict(records[n], workdir=plan[n]['workdir']) for n in RUNS},
          'accuracy': accuracy,
          'consistency': consistency,
          'seconds': timing,
        }
      ),
      f,
      indent=1,
    )
  _log(
    f'wrote {workdir}/synthetic_mdt.md and .json; seconds: '
    + ', '.join(f'{k} {v:.0f}' for k, v in timing.items() if v is not None)
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
