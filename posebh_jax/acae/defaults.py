"""The defaults of `config.acae` (plain data, no imports: `configs/common.py` builds the section from them, and the
fitting command fills in a run made before the section existed)."""

ACAE = dict(
  num_latents=48,  # L latent points
  num_centre_latents=8,  # of them on the body's midline; the rest pair up as 20 left + 20 right
  chiral=True,  # the [[S, Q, X], [Q, S, X], [C, C, Z]] block structure (mirror-equivariant); False: free weights
  lambda_sparsity=0.6,  # weight of mean|W_enc| + mean|W_dec| against the projection error in metres
  batch_size=32,
  steps=20000,
  lrs=(3e-2, 3e-3, 3e-4),  # Adam's rate: lrs[i] from lr_drop_fractions[i - 1] of the steps on
  lr_drop_fractions=(0.5, 0.75),
  log_every=1000,  # steps between progress lines
  # Pseudo-ground truth: the train records of these datasets of the run; empty: its 'h36m' and 'bml_movi'
  # datasets where it has them, else every 3D (metrabs3d) dataset.
  fit_datasets=(),
  max_records_per_dataset=50000,  # evenly spaced records of a larger dataset; 0: all
  flip=True,  # the mirrored crop's prediction is a second (mirrored) sample
  held_out=0.1,  # fraction of the records whose poses only measure the reconstruction error
  seed=0,
)
