"""How far a training recipe amplifies float rounding in its first steps.

  python -m benchmarks.rounding_sensitivity --config=configs/demo.py [--steps=20] [--seeds=0,1,2]
      [--set model.head_deconv_init_std=0.01 --set optim.eps=1e-5] [--data_dir=DIR] [--batch_size=N]

For each seed it trains the config on one device twice over the same batches: once from the seed's initial
parameters and once from those parameters multiplied by (1 + 1e-7 ε), ε ~ N(0, 1) per element (a perturbation of
float32 rounding size). It prints the relative loss difference at every step, its maximum, and the parameters
that differ most at the end. Runs of the same config on 8 devices and on 1 drift about as far, because the sharded
reductions round differently (README, "8 devices vs 1"); this measures the recipe's sensitivity without them.
"""

from __future__ import annotations

import argparse
import ast
import sys

import jax
import numpy as np
from flax import traverse_util

from data_pipeline import pipeline
from data_pipeline.prepare import load_config
from posebh_jax import sharding as sharding_lib
from posebh_jax import trainer as trainer_lib

PERTURBATION = 1e-7


def set_override(config, assignment: str):
  """Applies `a.b.c=value` (value parsed as a Python literal, else kept as a string) to a ConfigDict."""
  key, sep, text = assignment.partition('=')
  if not sep:
    raise ValueError(f'--set {assignment!r}: use key=value, e.g. --set optim.eps=1e-5')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  node, parts = config, key.split('.')
  for part in parts[:-1]:
    node = node[part]
  if parts[-1] not in node:
    raise ValueError(f'--set {assignment!r}: the config has no key {key!r}')
  node[parts[-1]] = type(node[parts[-1]])(value) if isinstance(node[parts[-1]], float) else value


def perturbed(params, seed: int, size: float = PERTURBATION):
  """`params` with every element multiplied by (1 + size·ε), ε ~ N(0, 1) drawn from `seed`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    treedef, [leaf * (1 + size * jax.random.normal(key, leaf.shape, leaf.dtype)) for leaf, key in zip(leaves, keys)]
  )


def twin_losses(config, steps: int, perturbation: float = PERTURBATION):
  """Trains `config` and its twin (parameters x (1 + perturbation·ε)) for `steps` steps on the same batches (one
  device).
  Returns (losses (steps,), twin losses (steps,), [(max |Δ| / max |p|, parameter path)] at the end, largest first)."""
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:1])
  counts = pipeline.composition(config.data, config.batch_size, 1)
  steps_per_epoch = pipeline.steps_per_epoch(config.data, config.batch_size)
  task = trainer_lib.Trainer(config, mesh, steps_per_epoch, counts)
  step_fn = task.compile_train_step(task.batch_structure(counts))
  batches = pipeline.make_train_iterator(config.data, config.batch_size, 1, seed=config.seed)
  state = task.init_state(config.seed)
  twin = dict(jax.device_get(state), params=perturbed(jax.device_get(state['params']), config.seed + 1, perturbation))
  twin = jax.device_put(twin, task.state_shardings)
  losses, twin_losses_ = [], []
  try:
    for _ in range(steps):
      batch = sharding_lib.global_batch(next(batches), mesh)
      state, metrics = step_fn(state, batch)
      twin, twin_metrics = step_fn(twin, batch)
      losses.append(float(metrics['train/loss']))
      twin_losses_.append(float(twin_metrics['train/loss']))
  finally:
    batches.close()
  first = traverse_util.flatten_dict(jax.device_get(state['params']))
  second = traverse_util.flatten_dict(jax.device_get(twin['params']))
  moved = sorted(
    ((float(np.abs(first[k] - second[k]).max() / (np.abs(first[k]).max() + 1e-12)), '/'.join(k)) for k in first),
    reverse=True,
  )
  return np.array(losses), np.array(twin_losses_), moved


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo.py', help='config file[:arg]')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--seeds', default='0', help='comma-separated config seeds')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  parser.add_argument('--data_dir', default=None, help='tfds data directory (default: the config\'s)')
  parser.add_argument('--batch_size', type=int, default=None)
  args = parser.parse_args(argv)
  try:
    config = load_config(args.config)
    with config.unlocked():
      for assignment in args.set:
        set_override(config, assignment)
      if args.data_dir:
        config.data.data_dir = args.data_dir
      if args.batch_size:
        config.batch_size = args.batch_size
      config.eval_every_steps = 0
  except (ValueError, KeyError, AttributeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(
    f'{args.config} {" ".join(args.set)} batch {config.batch_size}: relative loss difference, run vs twin '
    f'with parameters x (1 + {PERTURBATION:g} eps)'
  )
  for seed in (int(s) for s in args.seeds.split(',')):
    with config.unlocked():
      config.seed = seed
    losses, twin, moved = twin_losses(config, args.steps)
    relative = np.abs(losses - twin) / np.abs(losses)
    print(
      f'seed {seed}: max {relative.max():.1e} (step {int(relative.argmax()) + 1}); loss {losses[0]:.4f} -> '
      f'{losses[-1]:.4f}; per step: {" ".join(f"{r:.0e}" for r in relative)}'
    )
    print(
      '  parameters that differ most at the end (max |diff| / max |value|): '
      + ', '.join(f'{path} {d:.1e}' for d, path in moved[:3])
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
