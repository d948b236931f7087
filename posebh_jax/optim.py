"""AdamW with layer-wise lr decay, gradient clipping, warmup + step schedule and frozen parameter groups."""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from posebh_jax.errors import UserError


SCHEDULES = ('step', 'cosine', 'metrabs')  # config.optim.schedule
# The 'metrabs' schedule (docs/METHOD.md §3.6): ×1/3 over the first KNEE of the run, then a drop to 1/DROP of the
# base lr that decays by ×LAST_DECAY over the rest.
METRABS_KNEE = 0.92
METRABS_FIRST_DECAY = 1.0 / 3.0
METRABS_DROP = 30.0
METRABS_LAST_DECAY = 0.3


def check_frozen_patterns(section: str, patterns: Sequence[str]) -> None:
  """Raises UserError (one line) when a `config.<section>.frozen` entry is not a regular expression."""
  for pattern in patterns:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise UserError(
        f'config.{section}.frozen: {pattern!r} is not a regular expression ({e}); patterns are '
        "searched in parameter paths such as 'backbone/block_0/attn/qkv/kernel'"
      ) from None


def validate_config(optim_config) -> None:
  """Checks `config.optim`; raises UserError (one line) naming the key and what to do."""
  if not optim_config.lr > 0:
    raise UserError(
      f'config.optim.lr must be > 0 (got {optim_config.lr}); to keep parameters fixed use config.optim.frozen'
    )
  if optim_config.schedule not in SCHEDULES:
    raise UserError(f"config.optim.schedule is '{optim_config.schedule}'; use one of {', '.join(SCHEDULES)}")
  if optim_config.warmup_steps < 0:
    raise UserError(f'config.optim.warmup_steps must be >= 0 (got {optim_config.warmup_steps})')
  check_frozen_patterns('optim', optim_config.frozen)


def learning_rate_schedule(
  base_lr: float,
  warmup_steps: int,
  warmup_ratio: float,
  decay_steps: Sequence[int],
  decay_factor: float,
  kind: str = 'step',
  total_steps: int = 0,
  final_ratio: float = 0.0,
) -> Callable[[jax.Array], jax.Array]:
  """Linear warmup from `base_lr * warmup_ratio` to `base_lr` over `warmup_steps`, then either (kind 'step')
  ×decay_factor at each step in `decay_steps`, or (kind 'cosine') a half cosine from `base_lr` down to
  `base_lr * final_ratio` at `total_steps`, or (kind 'metrabs', MeTRAbs' schedule; T = `total_steps`, K = 0.92 T)
  `base_lr * (1/3)^(t/K)` for t < K, then `base_lr / 30 * 0.3^((t - K)/(T - K))`, both times the warmup factor
  (t counts from step 0, as the 'step' kind's decay does). Returns step → lr (float32)."""
  if kind not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}")
  boundaries = jnp.asarray(sorted(decay_steps) or [np.iinfo(np.int32).max], jnp.int32)

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    progress = jnp.minimum(step.astype(jnp.float32) / max(warmup_steps, 1), 1.0)
    warm = warmup_ratio + (1.0 - warmup_ratio) * progress if warmup_steps > 0 else 1.0
    if kind == 'cosine':
      done = jnp.clip((step - warmup_steps).astype(jnp.float32) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
      return base_lr * warm * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * done)))
    if kind == 'metrabs':
      t = step.astype(jnp.float32)
      knee = METRABS_KNEE * total_steps
      first = METRABS_FIRST_DECAY ** (t / max(knee, 1.0))
      last = METRABS_LAST_DECAY ** ((t - knee) / max(total_steps - knee, 1.0)) / METRABS_DROP
      return base_lr * warm * jnp.where(t < knee, first, last)
    drops = jnp.sum(step >= boundaries) if decay_steps else 0
    return base_lr * warm * decay_factor**drops

  return schedule


def layer_ids(params, depth: int) -> Any:
  """Tree of layer ids like the param tree: patch/pos embedding 0, block i → i+1, everything else depth+1.
  Scanned blocks get an int array (depth, 1, …) so that each layer keeps its own id."""
  flat = traverse_util.flatten_dict(params)
  out = {}
  for path, value in flat.items():
    name = '/'.join(path)
    match = re.search(r'backbone/block_(\d+)/', name)
    if match:
      out[path] = int(match.group(1)) + 1
    elif '/blocks/' in name or name.startswith('backbone/blocks'):
      out[path] = np.arange(1, depth + 1).reshape((depth,) + (1,) * (np.ndim(value) - 1))
    elif name.startswith('backbone/patch_embed') or name.startswith('backbone/pos_embed'):
      out[path] = 0
    else:
      out[path] = depth + 1
  return traverse_util.unflatten_dict(out)


def lr_multipliers(params, depth: int, layer_decay: float, frozen_mask, backbone_scale: float = 1.0) -> Any:
  """Per-parameter lr scale = layer_decay^(depth + 1 − layer_id) (heads 1), × `backbone_scale` in the backbone
  (e.g. a fine-tuning run that trains its heads faster than the backbone); 0 for frozen parameters."""
  ids = layer_ids(params, depth)
  in_backbone = traverse_util.unflatten_dict(
    {path: path[0] == 'backbone' for path in traverse_util.flatten_dict(params)}
  )
  return jax.tree.map(
    lambda i, frozen, backbone: (
      np.float32(0.0)
      if frozen
      else (layer_decay ** (depth + 1 - np.asarray(i)) * (backbone_scale if backbone else 1.0)).astype(np.float32)
    ),
    ids,
    frozen_mask,
    in_backbone,
  )


def weight_decay_mask(params) -> Any:
  """True for matrices/kernels (decayed), False for biases, norms and position embeddings."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({path: path[-1] in ('kernel', 'expert_kernel') for path in flat})


def frozen_mask(params, patterns: Sequence[str]) -> Any:
  """True where the parameter path ('backbone/block_0/attn/qkv/kernel') matches one of the regexes. A pattern
  that matches no parameter raises UserError (a mistyped pattern would otherwise freeze nothing, silently)."""
  paths = {path: '/'.join(path) for path in traverse_util.flatten_dict(params)}
  compiled = [re.compile(p) for p in patterns]
  example = next(iter(paths.values()), '')
  for pattern, regex in zip(patterns, compiled):
    if not any(regex.search(text) for text in paths.values()):
      raise UserError(
        f"frozen parameter pattern {pattern!r} (config.optim.frozen, config.transfer.frozen) matches "
        f"no parameter of this model; patterns are regexes searched in paths such as '{example}', "
        "e.g. '^backbone/' or '^head_coco/'"
      )
  return traverse_util.unflatten_dict({path: any(c.search(text) for c in compiled) for path, text in paths.items()})


def scale_by_tree(multipliers) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-parameter multiplier (scalar or broadcastable array)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state

  return optax.GradientTransformation(init_fn, update_fn)


def build_optimizer(
  optim_config, params, depth: int, steps_per_epoch: int, total_steps: int = 0, schedule_start: int = 0
):
  """AdamW (decoupled weight decay, torch semantics: decay scaled by the group's lr) with layer-wise lr decay.

  Frozen parameters (config regexes) keep no Adam moments (`optax.masked`) and get zero updates.
  The transformation evaluates the schedule on its own step count (0 at `tx.init`); the returned schedule takes
  the global step, i.e. is shifted by `schedule_start`, the global step at which this optimizer starts.
  Returns (optax transformation, lr schedule of the global step, frozen mask tree).
  """
  frozen = frozen_mask(params, tuple(optim_config.frozen))
  trainable = jax.tree.map(lambda f: not f, frozen)
  decay = jax.tree.map(lambda d, t: bool(d and t), weight_decay_mask(params), trainable)
  schedule = learning_rate_schedule(
    optim_config.lr,
    optim_config.warmup_steps,
    optim_config.warmup_ratio,
    [int(e * steps_per_epoch) for e in optim_config.decay_epochs],
    optim_config.decay_factor,
    kind=optim_config.schedule,
    total_steps=total_steps,
    final_ratio=optim_config.final_lr_ratio,
  )

  tx = optax.chain(
    optax.clip_by_global_norm(optim_config.grad_clip) if optim_config.grad_clip > 0 else optax.identity(),
    optax.masked(optax.scale_by_adam(optim_config.b1, optim_config.b2, optim_config.eps), trainable),
    optax.add_decayed_weights(optim_config.weight_decay, mask=decay),
    scale_by_tree(
      lr_multipliers(params, depth, optim_config.layer_decay, frozen, float(optim_config.get('backbone_lr_scale', 1.0)))
    ),
    optax.scale_by_learning_rate(schedule),
  )
  global_schedule = (lambda step: schedule(step - schedule_start)) if schedule_start else schedule
  return tx, global_schedule, frozen
