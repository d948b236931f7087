"""The affine-combining autoencoder (docs/METHOD.md §3): `model` (pure encode / decode / loss over column-normalised,
chirality-structured weights) and `fit` (the command `python -m posebh_jax.acae --workdir=<3D run>`: pseudo-ground
truth from a trained run's shared 3D head, the fit, `<workdir>/acae/`, and `load_acae` that reads it back)."""
