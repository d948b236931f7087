"""Pictures of a run: prototype embeddings in 2D (`python -m posebh_jax.viz.prototypes`) and every training head's
skeleton on the same image (`python -m posebh_jax.viz.formats`). Drawing uses OpenCV only."""
