"""PoseBH supplement Table 1: the embedding width F (`posebh.embed_dim`) around the paper's 64: {32, 64, 128} at full
scale; at demo scale, whose default F is 32 (half the paper's, as its model is smaller), {16, 32, 64}: 3 points.

  python -m launch.sweep configs/sweeps/posebh_table1.py:demo --run=local       # synthetic data, CPU (make demo first)
  python -m launch.sweep configs/sweeps/posebh_table1.py --run=slurm --config.init_from=VITPOSE_B16_RUN
"""

from configs.sweeps import _scales
from launch.sweep import product

FULL = (32, 64, 128)
DEMO = (16, 32, 64)


def get_sweep(arg=''):
  """F at full scale, or with `demo` the demo's F scaled by its default."""
  return _scales.posebh(arg, product(**{'posebh.embed_dim': FULL}), product(**{'posebh.embed_dim': DEMO}))
