"""PoseBH's stage boundaries (`posebh.stage_epochs`: where stages 2 and 3 start) and the backbone thaw epoch
(`posebh.backbone_thaw_epoch`), one at a time around the reference configs' (50, 90) with the thaw at 90
(docs/METHOD.md §2): the thaw at 50 as the supplement's prose says, a shorter and a longer stage 1, and an earlier
stage 3 (the thaw moving with it): 5 points. Demo scale: the same around the demo's (0.5, 1.2), thaw 1.2 (epochs of
its 300-step run, ~83 steps each).

  python -m launch.sweep configs/sweeps/posebh_stages.py:demo --run=local       # synthetic data, CPU (make demo first)
  python -m launch.sweep configs/sweeps/posebh_stages.py --run=slurm --config.init_from=VITPOSE_B16_RUN
"""

from configs.sweeps import _scales
from launch.sweep import around, zip_

STAGES, THAW = 'posebh.stage_epochs', 'posebh.backbone_thaw_epoch'


def _points(default_stages, default_thaw, prose_thaw, stage1_ends, stage3_start):
  return around(
    {STAGES: default_stages, THAW: default_thaw},
    [{THAW: prose_thaw}],
    zip_(**{STAGES: [(s, default_stages[1]) for s in stage1_ends]}),
    [{STAGES: (default_stages[0], stage3_start), THAW: stage3_start}],
  )


def get_sweep(arg=''):
  """The stage boundaries at full scale, or with `demo` at demo scale."""
  full = _points((50.0, 90.0), 90.0, 50.0, (30.0, 70.0), 70.0)
  demo = _points((0.5, 1.2), 1.2, 0.5, (0.3, 0.8), 0.9)
  return _scales.posebh(arg, full, demo)
