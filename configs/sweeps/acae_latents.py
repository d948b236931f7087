"""The ACAE's latent count L (`acae.num_latents`; 8 of them on the midline, the rest in left/right pairs) around
the paper's 48 (docs/METHOD.md §3.4): {16, 32, 48, 64}. Each point fits its own ACAE on the trained run with its L
(`python -m posebh_jax.acae`, in <point>/acae_fit), then fine-tunes with it, variant (a) 'regularize' (another:
--config.consistency.variant=latent): 4 points.

  python -m launch.sweep configs/sweeps/acae_latents.py:demo --run=local   # after the 3D demo (workdirs/demo3d)
  python -m launch.sweep configs/sweeps/acae_latents.py --run=slurm --config.init_from=RUN
"""

from configs.sweeps import _scales
from launch.sweep import product

L = (16, 32, 48, 64)


def get_sweep(arg=''):
  """L at full scale, or with `demo` at demo scale (the same values; the synthetic formats have 74 joints)."""
  return _scales.consistency(arg, product(**{'acae.num_latents': L}), per_point_acae=True)
