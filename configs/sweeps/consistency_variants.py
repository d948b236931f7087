"""The ACAE consistency fine-tuning's variants (`consistency.variant`, docs/METHOD.md §3.5): 'none' (separate
joints, continued under the same fine-tuning: the equal-budget control), (a) 'regularize', (b) 'latent',
(c) 'hybrid', all from the same trained run with the same ACAE: 4 points.

  python -m launch.sweep configs/sweeps/consistency_variants.py:demo --run=local   # after the 3D demo and its ACAE:
      # python -m posebh_jax.main --config=configs/demo.py:task=3d --workdir=workdirs/demo3d
      # python -m posebh_jax.acae --workdir=workdirs/demo3d
  python -m launch.sweep configs/sweeps/consistency_variants.py --run=slurm --config.init_from=RUN \
      --config.consistency.acae=RUN
"""

from configs.sweeps import _scales
from launch.sweep import product

VARIANTS = ('none', 'regularize', 'latent', 'hybrid')


def get_sweep(arg=''):
  """The four variants at full scale, or with `demo` at demo scale."""
  return _scales.consistency(arg, product(**{'consistency.variant': VARIANTS}))
