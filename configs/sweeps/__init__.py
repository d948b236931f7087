"""Sweep files for `python -m launch.sweep configs/sweeps/<name>.py[:demo]` (docs/SWEEPS.md): the papers' ablation
tables as sweeps, each at full scale and, with `:demo`, at demo scale on the synthetic data on a CPU. `_scales`
holds what the families share."""
