"""Learning-rate × expert-width ablation of the demo (python -m launch.sweep configs/sweeps/demo_lr.py)."""


def get_sweep():
  points = [{'optim.lr': lr, 'model.expert_dim': p} for lr in (1e-3, 2e-3, 4e-3) for p in (16, 32)]
  return 'configs/demo.py', points
