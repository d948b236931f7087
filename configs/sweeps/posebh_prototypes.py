"""PoseBH: prototypes per keypoint M (`posebh.prototypes_per_keypoint`) ∈ {1, 3, 5} around the paper's 3
(docs/METHOD.md §2), at either scale: 3 points.

  python -m launch.sweep configs/sweeps/posebh_prototypes.py:demo --run=local   # synthetic data, CPU (make demo first)
  python -m launch.sweep configs/sweeps/posebh_prototypes.py --run=slurm --config.init_from=VITPOSE_B16_RUN
"""

from configs.sweeps import _scales
from launch.sweep import product

M = (1, 3, 5)


def get_sweep(arg=''):
  """M at full scale, or with `demo` at demo scale (the same values)."""
  return _scales.posebh(arg, product(**{'posebh.prototypes_per_keypoint': M}))
