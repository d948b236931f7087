"""PoseBH supplement Table 2: the prototype-loss weights α (PHM, `posebh.weights.phm`) ∈ {3.33e-6, 6.25e-6,
1.25e-5} and (β, γ) (PPC, PPD: `posebh.weights.ppc`, `.ppd`) ∈ {(1e-7, 1e-8), (1.25e-7, 1.25e-8), (5e-7, 5e-8),
(1e-6, 1e-7)}, one at a time around the defaults α 3.33e-6, (β, γ) (1.25e-7, 1.25e-8) (docs/METHOD.md §2): 6 points.

  python -m launch.sweep configs/sweeps/posebh_table2.py:demo --run=local       # synthetic data, CPU (make demo first)
  python -m launch.sweep configs/sweeps/posebh_table2.py --run=slurm --config.init_from=VITPOSE_B16_RUN
"""

from configs.sweeps import _scales
from launch.sweep import around, product, zip_

DEFAULT = {'posebh.weights.phm': 3.33e-6, 'posebh.weights.ppc': 1.25e-7, 'posebh.weights.ppd': 1.25e-8}
ALPHA = (3.33e-6, 6.25e-6, 1.25e-5)
BETA_GAMMA = ((1e-7, 1e-8), (1.25e-7, 1.25e-8), (5e-7, 5e-8), (1e-6, 1e-7))


def get_sweep(arg=''):
  """Table 2's points at full scale, or with `demo` at demo scale (the same weights)."""
  points = around(
    DEFAULT,
    product(**{'posebh.weights.phm': ALPHA}),
    zip_(**{'posebh.weights.ppc': [b for b, _ in BETA_GAMMA], 'posebh.weights.ppd': [g for _, g in BETA_GAMMA]}),
  )
  return _scales.posebh(arg, points)
