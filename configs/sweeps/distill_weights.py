"""The multi-teacher distillation's loss weights (w1, w2, w3) = (`distill.gt_weight`, `distill.teacher_weights.coco`,
`distill.teacher_weights.mpii`): (0.3, 0.35, 0.35) against (0.3, 0.25, 0.45) (docs/METHOD.md §4.2): 2 points.

  python -m launch.sweep configs/sweeps/distill_weights.py:demo --run=local
  python -m launch.sweep configs/sweeps/distill_weights.py --run=slurm --config.distill.teachers.coco=RUN \
      --config.distill.teachers.mpii=RUN
"""

from configs.sweeps import _scales
from launch.sweep import zip_

WEIGHTS = ((0.3, 0.35, 0.35), (0.3, 0.25, 0.45))


def get_sweep(arg=''):
  """The two weightings at full scale, or with `demo` at demo scale."""
  points = zip_(
    **{
      'distill.gt_weight': [w[0] for w in WEIGHTS],
      'distill.teacher_weights.coco': [w[1] for w in WEIGHTS],
      'distill.teacher_weights.mpii': [w[2] for w in WEIGHTS],
    }
  )
  return _scales.distill(arg, points)
