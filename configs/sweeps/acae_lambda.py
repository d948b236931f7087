"""The ACAE's sparsity weight λ (`acae.lambda_sparsity`) around the paper's 0.6 (docs/METHOD.md §3.4): {0.15, 0.3,
0.6, 1.2}. Each point fits its own ACAE on the trained run with its λ (in <point>/acae_fit), then fine-tunes with
it, variant (a) 'regularize' (another: --config.consistency.variant=...): 4 points.

  python -m launch.sweep configs/sweeps/acae_lambda.py:demo --run=local    # after the 3D demo (workdirs/demo3d)
  python -m launch.sweep configs/sweeps/acae_lambda.py --run=slurm --config.init_from=RUN
"""

from configs.sweeps import _scales
from launch.sweep import product

LAMBDA = (0.15, 0.3, 0.6, 1.2)


def get_sweep(arg=''):
  """λ at full scale, or with `demo` at demo scale (the same values)."""
  return _scales.consistency(arg, product(**{'acae.lambda_sparsity': LAMBDA}), per_point_acae=True)
