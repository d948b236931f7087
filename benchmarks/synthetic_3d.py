"""Separate 3D joints vs the three ACAE consistency variants on the synthetic 3D benchmark: MPJPE per format and
cross-format consistency, with the same fine-tuning budget.

  python -m benchmarks.synthetic_3d [--workdir DIR] [--data_dir DIR] [--base_steps N] [--finetune_steps M] [--tiny]

Runs, on the CPU (or whatever JAX finds), in DIR (default workdirs/synthetic_3d; --tiny workdirs/synthetic_3d_tiny):

  base        configs/demo.py:task=3d                N steps (default the config's, 600): separate joints, the
                                                     three synthetic formats (syn_smpl, syn_h36m, syn_markers)
  acae        python -m posebh_jax.acae --workdir=DIR/base   the ACAE fitted on the base run's predictions
  none        configs/demo.py:task=3d,consistency=none        M more steps from base (default 200): the separate
                                                              head continued (the equal-budget control)
  regularize  ...,consistency=regularize    (a) + mean|P − dec(enc(P))| / 1000
  latent      ...,consistency=latent        (b) the head predicts the 48 latents, decoded by the frozen decoder
  hybrid      ...,consistency=hybrid        (c) both heads, the latent one distilled, inference through it

Every fine-tuning run has the same schedule (configs/common.py consistency_finetune: the backbone at a tenth of the
heads' lr) and evaluates once at its end with the training-time evaluation (flip test), which writes each format's
results and ground truth; this script reads them. The synthetic formats' validation splits hold the same images, so
for every pair of formats (f, g) and every joint j of f, the joint k of g nearest to it in the ground truth (mean
distance over the split) is its counterpart, and

  consistency(f, g) = mean over people and joints of |(P_fj − P_gk) − (G_fj − G_gk)|   (mm)

with each format's prediction P first moved by one translation onto its own ground truth's centroid (each format's
absolute pose is reconstructed separately; the translation is not what consistency is about). A consistent model
reproduces the formats' known offsets (syn_h36m's hips sit 30 mm wider and 25 mm higher than syn_smpl's, the
markers sit on the skin): a low value. Finished runs in DIR are reused (benchmark_run.json records each command).

Printed, and written to DIR/synthetic_3d.md and DIR/synthetic_3d.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.synthetic_mdt import REPO, ensure_run

FORMATS = ('syn_smpl', 'syn_h36m', 'syn_markers')
VARIANTS = ('none', 'regularize', 'latent', 'hybrid')
LABELS = {
  'base': 'separate (base run)',
  'none': 'separate, continued',
  'regularize': '(a) output regularisation',
  'latent': '(b) direct latent prediction',
  'hybrid': '(c) hybrid',
}
METRICS = ('MPJPE', 'PA-MPJPE', 'PCK150', 'MPJPE-abs')


def _log(message: str):
  print(f'[synthetic_3d] {message}', flush=True)


def _config(tiny: bool, variant: str | None = None) -> str:
  flags = (['tiny'] if tiny else []) + ['task=3d'] + ([f'consistency={variant}'] if variant else [])
  return 'configs/demo.py:' + ','.join(flags)


def run_plan(workdir: str, data_dir: str, tiny: bool, base_steps: int, finetune_steps: int) -> dict[str, dict]:
  """{run: {'workdir', 'steps', 'args'}} of the base run and the four fine-tuning runs."""
  base = os.path.join(workdir, 'base')
  data = f'--config.data.data_dir={data_dir}'
  plan = {
    'base': {
      'workdir': base,
      'steps': base_steps,
      'args': [
        '-m',
        'posebh_jax.main',
        f'--config={_config(tiny)}',
        f'--workdir={base}',
        data,
        f'--config.total_steps={base_steps}',
        f'--config.eval_every_steps={base_steps}',
      ],
    }
  }
  for variant in VARIANTS:
    path = os.path.join(workdir, variant)
    plan[variant] = {
      'workdir': path,
      'steps': finetune_steps,
      'args': [
        '-m',
        'posebh_jax.main',
        f'--config={_config(tiny, variant)}',
        f'--workdir={path}',
        data,
        f'--config.init_from={base}',
        f'--config.consistency.acae={base}',
        f'--config.total_steps={finetune_steps}',
        f'--config.eval_every_steps={finetune_steps}',
        f'--config.checkpoint_every_steps={finetune_steps}',
      ],
    }
  return plan


def _run(args: list[str], what: str) -> None:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  result = subprocess.run([sys.executable] + args, cwd=REPO, env=env)
  if result.returncode != 0:
    raise SystemExit(f'error: {what} failed (exit {result.returncode}): python {" ".join(args)}')


def ensure_acae(base: str, acae_args: list[str]) -> dict:
  """Fits the ACAE on the base run unless `base`/acae/weights.npz exists; returns {'seconds', 'reused'}."""
  if os.path.exists(os.path.join(base, 'acae', 'weights.npz')):
    _log(f'acae: reusing {base}/acae')
    return {'seconds': None, 'reused': True}
  start = time.perf_counter()
  _run(['-m', 'posebh_jax.acae', f'--workdir={base}', *acae_args], 'fitting the ACAE')
  return {'seconds': time.perf_counter() - start, 'reused': False}


def last_eval(workdir: str) -> tuple[int, dict[str, float]]:
  """(step, {metric: value}) of the last evaluation row of `workdir`/metrics.jsonl."""
  rows = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if any(key.startswith('eval/') for key in row):
        rows.append(row)
  if not rows:
    raise SystemExit(f'error: {workdir} has no evaluation in metrics.jsonl')
  return int(rows[-1]['step']), rows[-1]


def read_predictions(workdir: str, step: int) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
  """{format: {image_id: (predicted (J, 3), ground truth (J, 3)) mm, original camera}} from the evaluation's files."""
  out = {}
  for fmt in FORMATS:
    with open(os.path.join(workdir, 'eval', f'{fmt}_gt.json')) as f:
      gt = {a['image_id']: np.asarray(a['keypoints_3d'], np.float64) for a in json.load(f)['annotations']}
    with open(os.path.join(workdir, 'eval', f'{fmt}_results_step{step}.json')) as f:
      results = {r['image_id']: np.asarray(r['keypoints_3d'], np.float64) for r in json.load(f)}
    out[fmt] = {i: (results[i], gt[i]) for i in results if i in gt}
  return out


def consistency(predictions) -> dict[str, float]:
  """{'f/g': mm} for every ordered pair of formats, and 'mean' over the pairs (module docstring)."""
  out = {}
  for f, g in itertools.permutations(FORMATS, 2):
    images = sorted(set(predictions[f]) & set(predictions[g]))
    if not images:
      continue
    pred_f = np.stack([predictions[f][i][0] for i in images])
    gt_f = np.stack([predictions[f][i][1] for i in images])
    pred_g = np.stack([predictions[g][i][0] for i in images])
    gt_g = np.stack([predictions[g][i][1] for i in images])
    # Each format's prediction moved onto its own ground truth's centroid (one translation per person).
    pred_f = pred_f - pred_f.mean(1, keepdims=True) + gt_f.mean(1, keepdims=True)
    pred_g = pred_g - pred_g.mean(1, keepdims=True) + gt_g.mean(1, keepdims=True)
    distance = np.linalg.norm(gt_f[:, :, None] - gt_g[:, None], axis=-1).mean(0)  # (J_f, J_g)
    partner = distance.argmin(1)
    error = (pred_f - pred_g[:, partner]) - (gt_f - gt_g[:, partner])
    out[f'{f}/{g}'] = float(np.linalg.norm(error, axis=-1).mean())
  out['mean'] = float(np.mean(list(out.values())))
  return out


def _table(header, rows) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + ['| ' + ' | '.join(r) + ' |' for r in rows]


def format_report(results: dict, settings: dict) -> str:
  lines = [
    f"Synthetic 3D benchmark: base {settings['base_steps']} steps, then {settings['finetune_steps']} fine-tuning "
    f"steps per variant ({'tiny' if settings['tiny'] else 'demo'} model, the same budget for each).",
    '',
  ]
  header = ['run'] + [f'{fmt} MPJPE' for fmt in FORMATS] + ['mean MPJPE', 'mean PA-MPJPE', 'consistency (mm)']
  rows = []
  for name, result in results.items():
    metrics = result['metrics']
    mpjpe = [metrics[f'eval/{fmt}/MPJPE'] for fmt in FORMATS]
    pa = [metrics[f'eval/{fmt}/PA-MPJPE'] for fmt in FORMATS]
    rows.append(
      [LABELS[name]]
      + [f'{v:.1f}' for v in mpjpe]
      + [f'{np.mean(mpjpe):.1f}', f'{np.mean(pa):.1f}', f"{result['consistency']['mean']:.1f}"]
    )
  lines += _table(header, rows)
  lines += ['', 'Consistency per pair of formats (mm; f/g: f\'s joints against their nearest g joints):', '']
  pairs = [key for key in next(iter(results.values()))['consistency'] if key != 'mean']
  lines += _table(
    ['run'] + pairs,
    [[LABELS[name]] + [f"{r['consistency'][p]:.1f}" for p in pairs] for name, r in results.items()],
  )
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.synthetic_3d', description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default=None, help='default workdirs/synthetic_3d[_tiny]')
  parser.add_argument('--data_dir', default=None, help='tfds data dir (default data/tfds, --tiny data/tfds_tiny)')
  parser.add_argument('--base_steps', type=int, default=None, help="the base run's steps (default the config's)")
  parser.add_argument('--finetune_steps', type=int, default=None, help='each fine-tuning run\'s steps (default 200)')
  parser.add_argument('--tiny', action='store_true', help='configs/demo.py:tiny,task=3d (tests)')
  parser.add_argument('--acae_steps', type=int, default=None, help='ACAE fitting steps (default the config\'s)')
  args = parser.parse_args(argv)
  workdir = os.path.abspath(
    args.workdir or os.path.join(REPO, 'workdirs', 'synthetic_3d_tiny' if args.tiny else 'synthetic_3d')
  )
  data_dir = os.path.abspath(args.data_dir or os.path.join(REPO, 'data', 'tfds_tiny' if args.tiny else 'tfds'))
  os.chdir(REPO)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  from configs import demo

  base_config = demo.get_config(_config(args.tiny).partition(':')[2])
  finetune_config = demo.get_config(_config(args.tiny, 'none').partition(':')[2])
  base_steps = args.base_steps or base_config.total_steps
  finetune_steps = args.finetune_steps or finetune_config.total_steps
  if base_steps < 1 or finetune_steps < 1:
    print('error: --base_steps and --finetune_steps must be >= 1', file=sys.stderr)
    return 2
  start = time.perf_counter()
  _run(
    ['-m', 'data_pipeline.prepare', 'synthetic3d', f'--config={_config(args.tiny)}', f'--data_dir={data_dir}'],
    'preparing the synthetic 3D data',
  )
  plan = run_plan(workdir, data_dir, args.tiny, base_steps, finetune_steps)
  records = {'base': ensure_run('base', plan['base'], log=_log)}
  acae_args = [f'--config.acae.steps={args.acae_steps}'] if args.acae_steps else []
  records['acae'] = ensure_acae(plan['base']['workdir'], acae_args)
  for variant in VARIANTS:
    records[variant] = ensure_run(variant, plan[variant], log=_log)
  results = {}
  for name in ('base',) + VARIANTS:
    step, metrics = last_eval(plan[name]['workdir'])
    predictions = read_predictions(plan[name]['workdir'], step)
    results[name] = {
      'step': step,
      'metrics': {k: v for k, v in metrics.items() if k.startswith('eval/')},
      'consistency': consistency(predictions),
      'train_seconds': records[name].get('train_seconds'),
    }
  settings = {'base_steps': base_steps, 'finetune_steps': finetune_steps, 'tiny': args.tiny, 'workdir': workdir}
  report = format_report(results, settings)
  print(report, flush=True)
  with open(os.path.join(workdir, 'synthetic_3d.md'), 'w') as f:
    f.write(report + '\n')
  with open(os.path.join(workdir, 'synthetic_3d.json'), 'w') as f:
    json.dump({'settings': settings, 'results': results, 'acae': records['acae']}, f, indent=1)
  _log(f'done in {time.perf_counter() - start:.0f} s: {workdir}/synthetic_3d.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())
