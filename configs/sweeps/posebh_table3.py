"""PoseBH supplement Table 3: the cluster-prototype weight δ (CPS, `posebh.weights.cps`) ∈ {5e-3, 1e-2, 5e-2} and
the cross-type self-supervision weight ζ (CSS, `posebh.weights.css`) ∈ {1e-4, 1e-3, 1e-2}, one at a time around
the defaults δ 0.01, ζ 0.001 (docs/METHOD.md §2): 5 points.

  python -m launch.sweep configs/sweeps/posebh_table3.py:demo --run=local       # synthetic data, CPU (make demo first)
  python -m launch.sweep configs/sweeps/posebh_table3.py --run=slurm --config.init_from=VITPOSE_B16_RUN
"""

from configs.sweeps import _scales
from launch.sweep import around, product

DEFAULT = {'posebh.weights.cps': 1e-2, 'posebh.weights.css': 1e-3}
DELTA = (5e-3, 1e-2, 5e-2)
ZETA = (1e-4, 1e-3, 1e-2)


def get_sweep(arg=''):
  """Table 3's points at full scale, or with `demo` at demo scale (the same weights)."""
  points = around(DEFAULT, product(**{'posebh.weights.cps': DELTA}), product(**{'posebh.weights.css': ZETA}))
  return _scales.posebh(arg, points)
