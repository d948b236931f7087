"""What the paper-ablation sweeps run at each scale (docs/SWEEPS.md): full scale is B/16 on the real datasets
(configs/b16.py; the starting runs passed with --config.*), demo scale (`:demo`) the demo model on the synthetic
data on a CPU (configs/demo.py; the starting runs are the demos' own workdirs). Each function returns a
`launch.sweep.Sweep` for one family of sweeps."""

from __future__ import annotations

import os

from launch import sweep as sweep_lib


def posebh(arg: str, full_points, demo_points=None, metric: str = 'eval/coco/AP') -> sweep_lib.Sweep:
  """A PoseBH ablation (docs/METHOD.md §2). Full scale: configs/b16.py:method=posebh (100 epochs, stages at epochs
  0/50/90) from a trained ViTPose++-B/16 run, --config.init_from=RUN (required). Demo scale (`demo_points`, else
  `full_points`): configs/demo.py:posebh (300 steps) from `make demo`'s run, workdirs/demo (benchmarks.synthetic_mdt
  starts PoseBH the same way)."""
  if sweep_lib.scale(arg) == 'demo':
    return sweep_lib.Sweep(
      config='configs/demo.py:posebh',
      points=demo_points if demo_points is not None else full_points,
      fixed={'init_from': 'workdirs/demo'},
      metric=metric,
    )
  return sweep_lib.Sweep(
    config='configs/b16.py:method=posebh',
    points=full_points,
    metric=metric,
    required={'init_from': 'the trained ViTPose++-B/16 run (configs/b16.py) PoseBH starts from'},
  )


def consistency(arg: str, points, per_point_acae: bool = False) -> sweep_lib.Sweep:
  """An ACAE consistency fine-tuning ablation (docs/METHOD.md §3.4-3.5) of a trained separate-head 3D run,
  variant (a) 'regularize' unless the points or --config.consistency.variant say otherwise. Full scale:
  configs/b16.py:task=3d,consistency=regularize (40k steps) from --config.init_from=RUN (required). Demo scale:
  configs/demo.py:task=3d,consistency=regularize (200 steps) from the 3D demo's run, workdirs/demo3d. The ACAE:
  --config.consistency.acae (full scale: required; demo: workdirs/demo3d), or with `per_point_acae` one fitted
  for each point with its `acae.*` values (`acae_fit`)."""
  demo = sweep_lib.scale(arg) == 'demo'
  fixed = {'init_from': 'workdirs/demo3d'} if demo else {}
  required = {} if demo else {'init_from': 'the trained separate-head B/16 3D run (configs/b16.py:task=3d)'}
  if not per_point_acae:
    if demo:
      fixed['consistency.acae'] = 'workdirs/demo3d'
    else:
      required['consistency.acae'] = 'the run where `python -m posebh_jax.acae --workdir=RUN` fitted the ACAE'
  return sweep_lib.Sweep(
    config=f'configs/{"demo" if demo else "b16"}.py:task=3d,consistency=regularize',
    points=points,
    fixed=fixed,
    required=required,
    metric='eval/syn_h36m/MPJPE' if demo else 'eval/h36m/MPJPE',
    setup=acae_fit if per_point_acae else None,
  )


def acae_fit(overrides: dict, workdir: str, fixed: dict) -> tuple[list, dict]:
  """Setup of a point that sweeps `acae.*` keys: fits its own ACAE on the starting run (`init_from`) with the
  point's values, in <point>/acae_fit (a run directory whose config.json and checkpoints link to the starting
  run's, so that `python -m posebh_jax.acae` writes there), and fine-tunes with it (consistency.acae)."""
  fit_dir = os.path.join(workdir, 'acae_fit')
  keys = {k: v for k, v in fixed.items() if k.startswith('acae.') or k == 'data.data_dir'}
  keys.update({k: sweep_lib.cli_value(v) for k, v in overrides.items() if k.startswith('acae.')})
  steps = [
    {
      'args': ['-m', 'launch.sweep', '_link_run', fixed.get('init_from', ''), fit_dir],
      'creates': os.path.join(fit_dir, 'config.json'),
    },
    {
      'args': ['-m', 'posebh_jax.acae', f'--workdir={fit_dir}']
      + [f'--config.{k}={v}' for k, v in sorted(keys.items())],
      'creates': os.path.join(fit_dir, 'acae', 'weights.npz'),
    },
  ]
  return steps, {'consistency.acae': fit_dir}


def distill(arg: str, points, metric: str = '') -> sweep_lib.Sweep:
  """A multi-teacher distillation ablation (docs/METHOD.md §4). Full scale: configs/distill.py with the COCO and
  MPII teacher runs (--config.distill.teachers.coco=RUN, --config.distill.teachers.mpii=RUN, unless the config
  names them). Demo scale: configs/demo.py:distill."""
  if sweep_lib.scale(arg) == 'demo':
    return sweep_lib.Sweep(config='configs/demo.py:distill', points=points, metric=metric)
  return sweep_lib.Sweep(
    config='configs/distill.py',
    points=points,
    metric=metric,
    required={
      'distill.teachers.coco': 'the COCO teacher run',
      'distill.teachers.mpii': 'the MPII teacher run',
    },
  )
