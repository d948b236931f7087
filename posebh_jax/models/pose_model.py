"""The multi-dataset top-down pose model (ViT backbone with MoE FFN, one head per dataset as its task asks) and its
per-dataset split (expert merged into fc2)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.models import composition as composition_lib
from posebh_jax.models import vit
from posebh_jax.models.heatmap_head import HeatmapHeadSpec
from posebh_jax.models.partitioning import BATCH
from posebh_jax.models.embedding import KeypointEmbedding
from posebh_jax.models.multi_head import head_parts


class PoseModel(nn.Module):
  """ViT backbone with MoE FFN + one head per dataset, built from the dataset's head spec (its task's); datasets
  whose specs have the same `head_name` share one head module `head_<head_name>` (each runs it on its own
  examples), every other dataset has its own `head_<dataset>`.

  Call: `images_by_dataset {name: uint8 (n_d, H, W, 3)}` → `{name: head output}` (heatmap heads: float32
  `(n_d, H/4, W/4, K_d)` for patch 16 and two deconvolutions). Each n_d must be a multiple of `num_groups`.
  """

  dataset_names: tuple[str, ...]
  head_specs: tuple[Any, ...]
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_padding: int = 2
  drop_path: float = 0.0
  expert_dim: int = 0
  use_experts: bool = True
  num_groups: int = 1
  remat: bool = False
  scan: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  # PoseBH keypoint embedding module (docs/METHOD.md §2); 0 disables it (plain ViTPose++).
  embed_dim: int = 0
  embed_channels: int = 256
  embed_hidden: int = 64
  embed_num_deconv: int = 2
  # Equal per-dataset counts: experts as one batched matmul, heads of one kind as one stacked computation (same
  # results).
  stack_equal_datasets: bool = True
  # The MoE expert index of each dataset (datasets may share one, e.g. every 3D dataset); empty: one per dataset.
  dataset_experts: tuple[int, ...] = ()

  @property
  def num_experts(self) -> int:
    """The number of MoE experts (distinct `dataset_experts`, or one per dataset)."""
    return max(self.dataset_experts) + 1 if self.dataset_experts else len(self.dataset_names)

  @property
  def num_keypoints(self) -> tuple[int, ...]:
    """Each head's keypoint count, in dataset order."""
    return tuple(spec.num_keypoints for spec in self.head_specs)

  def setup(self):
    self.backbone = vit.ViTBackbone(
      width=self.width,
      depth=self.depth,
      num_heads=self.num_heads,
      mlp_ratio=self.mlp_ratio,
      patch_size=self.patch_size,
      patch_padding=self.patch_padding,
      drop_path=self.drop_path,
      expert_dim=self.expert_dim if self.use_experts else 0,
      num_experts=self.num_experts if self.use_experts else 0,
      remat=self.remat,
      scan=self.scan,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      stack_equal_datasets=self.stack_equal_datasets,
    )
    # One module per head name: datasets whose specs share a `head_name` share one head (and its parameters).
    specs = {}
    for name, spec in zip(self.dataset_names, self.head_specs):
      for _, key, part in head_parts(name, spec):
        if specs.setdefault(key, part) != part:
          raise ValueError(f"datasets sharing head '{key}' have different head specs: {specs[key]} and {part}")
    self.heads = {key: spec.build(self.dtype, self.param_dtype, name=f'head_{key}') for key, spec in specs.items()}
    if self.embed_dim > 0:
      self.embedding = KeypointEmbedding(
        channels=self.embed_channels,
        num_deconv=self.embed_num_deconv,
        hidden=self.embed_hidden,
        embed_dim=self.embed_dim,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
      )

  def head_of(self, name: str) -> nn.Module:
    """The head module that dataset `name` runs (its own, or the one its spec's `head_name` shares); a dataset with
    several heads (`MultiHeadSpec`): its own one."""
    parts = head_parts(name, self.head_specs[self.dataset_names.index(name)])
    own = [key for _, key, _ in parts if key == name]
    return self.heads[own[0] if own else parts[0][1]]

  def composition(self, images_by_dataset: Mapping[str, Any]) -> composition_lib.Composition:
    unknown = set(images_by_dataset) - set(self.dataset_names)
    if unknown:
      raise ValueError(f'unknown dataset(s) {sorted(unknown)}; the model has heads for {list(self.dataset_names)}')
    counts = {name: x.shape[0] for name, x in images_by_dataset.items()}
    return composition_lib.make_composition(self.dataset_names, counts, self.num_groups, self.dataset_experts)

  def features(self, images_by_dataset, train: bool = False):
    """Backbone features `(B, h, w, D)` in grouped order, and the batch Composition."""
    comp = self.composition(images_by_dataset)
    images = composition_lib.group_by_dataset(images_by_dataset, comp)
    images = nn.with_logical_constraint(images, (BATCH, None, None, None))
    return self.backbone(images, comp, train), comp

  def __call__(self, images_by_dataset, train: bool = False, bn_inference: bool = False):
    """`bn_inference`: in training, the heads' BatchNorm still uses (and keeps) its running statistics."""
    features, comp = self.features(images_by_dataset, train)
    return self._own_heads(features, comp, train and not bn_inference)

  def _own_heads(self, features, comp: composition_lib.Composition, train: bool):
    """{name: dataset `name`'s head output on its own examples of `features`}, in dataset order (a `MultiHeadSpec`
    dataset: {output key: that head's output}). A head shared by several datasets (`head_name`) runs once on all
    their examples, dataset after dataset in global batch order (`composition.datasets_slice`: ghost BatchNorm's
    virtual batches and its one running-statistics update see the same examples on any number of devices);
    heads of one kind (equal `stack_key`) with equal per-dataset counts run as one stacked computation (e.g.
    `heatmap_head.stacked_heads`); the others one after another on static slices."""
    present = list(comp.present())
    # One run per (dataset, head part): (dataset, output key, module key, spec, offset, count).
    runs = []
    for _, name, offset, count in present:
      for key, module_key, spec in head_parts(name, self.head_specs[self.dataset_names.index(name)]):
        runs.append((name, key, module_key, spec, offset, count))
    results = {}
    by_module: dict[str, list] = {}
    for run in runs:
      by_module.setdefault(run[2], []).append(run)
    for module_key, members in by_module.items():
      if len(members) < 2:
        continue
      x = composition_lib.datasets_slice(features, comp, [(offset, count) for *_, offset, count in members])
      x = nn.with_logical_constraint(x, (BATCH, None, None, None))
      out = self.heads[module_key](x, train)
      counts = [count for *_, count in members]
      pieces = jax.tree.map(lambda y: composition_lib.split_datasets(y, comp.groups, counts), out)
      for index, (name, key, *_) in enumerate(members):
        results[(name, key)] = jax.tree.map(lambda p, i=index: p[i], pieces, is_leaf=lambda v: isinstance(v, list))
    alone = [run for run in runs if (run[0], run[1]) not in results]
    groups: dict[Any, list] = {}
    if self.stack_equal_datasets and not self.is_initializing():
      for run in alone:
        stack_key = getattr(run[3], 'stack_key', None)
        if stack_key is not None:
          groups.setdefault((stack_key, run[5]), []).append(run)
    for (_, count), members in groups.items():
      if len(members) < 2:
        continue
      if len(members) == len(present) and len(runs) == len(present):
        # Every dataset of the batch, one head each: a reshape, no gathering of slices.
        per_dataset = features.reshape((comp.groups, len(present), count) + features.shape[1:])
        per_dataset = jnp.swapaxes(per_dataset, 0, 1)
      else:
        per_dataset = jnp.stack(
          [
            composition_lib.dataset_slice(features, comp, offset, count).reshape(
              (comp.groups, count) + features.shape[1:]
            )
            for *_, offset, count in members
          ]
        )
      per_dataset = per_dataset.reshape((len(members), comp.groups * count) + features.shape[1:])
      per_dataset = nn.with_logical_constraint(per_dataset, (None, BATCH, None, None, None))
      outs = members[0][3].run_stacked([self.heads[run[2]] for run in members], per_dataset, train)
      results.update({(run[0], run[1]): out for run, out in zip(members, outs)})
    for name, key, module_key, _, offset, count in alone:
      if (name, key) not in results:
        results[(name, key)] = self.heads[module_key](
          composition_lib.dataset_slice(features, comp, offset, count), train
        )
    outputs = {}
    for name, key, *_ in runs:
      if key is None:
        outputs[name] = results[(name, None)]
      else:
        outputs.setdefault(name, {})[key] = results[(name, key)]
    return outputs

  def posebh_outputs(self, images_by_dataset, train: bool = False, cross: bool = False, frozen_embedding: bool = False):
    """Heads, keypoint embeddings and (with `cross`) every head's prediction on every other dataset's samples.

    Returns a dict: `heatmaps` {name: (n_d, h, w, K_d)} from each head on its own samples; `embeddings`
    {name: (n_d, h, w, F)} float32; `cross` {d: (Σ_{i≠d} n_i, h, w, K_d)}: head d on the samples of every other
    dataset i, concatenated in dataset order (empty without `cross`).
    Cross predictions use the heads' running BatchNorm statistics, so that other datasets' samples neither
    update nor shift them. With `frozen_embedding` (domain transfer) the embedding module runs in inference mode
    (running BatchNorm statistics, not updated) even when training.
    """
    features, comp = self.features(images_by_dataset, train)
    embeddings = self.embedding(features, train and not frozen_embedding)
    out = {'heatmaps': {}, 'embeddings': {}, 'cross': {}}
    present = list(comp.present())
    out['heatmaps'] = self._own_heads(features, comp, train)
    for _, name, offset, count in present:
      out['embeddings'][name] = composition_lib.dataset_slice(embeddings, comp, offset, count)
    if cross:
      for _, dataset, _, _ in present:
        everything = self.head_of(dataset)(features, False)
        others = [
          composition_lib.dataset_slice(everything, comp, offset, count)
          for _, name, offset, count in present
          if name != dataset
        ]
        if others:
          out['cross'][dataset] = jnp.concatenate(others, axis=0)
    return out

  def init_all(self, images_by_dataset, train: bool = False):
    """Creates every parameter (heads and, when enabled, the embedding module); returns the heads' output."""
    if self.embed_dim > 0:
      return self.posebh_outputs(images_by_dataset, train)['heatmaps']
    return self(images_by_dataset, train)


def head_name(dataset: str, spec) -> str:
  """The head a single-head dataset runs: its spec's `head_name` when set (datasets with equal names share one
  module `head_<head_name>`), else the dataset's own name (module `head_<dataset>`). See `head_parts` for a
  `MultiHeadSpec`."""
  return getattr(spec, 'head_name', None) or dataset


def check_head_batches(head_specs: Mapping[str, Any], counts: Mapping[str, int]) -> None:
  """Raises UserError (one line) when a head's examples per global batch (`counts` {dataset: count}; a shared head
  runs on every dataset that names it) do not suit it (its spec's `batch_error`, e.g. ghost BatchNorm's)."""
  totals, users, specs = {}, {}, {}
  for name, spec in head_specs.items():
    for _, key, part in head_parts(name, spec):
      totals[key] = totals.get(key, 0) + int(counts.get(name, 0))
      users.setdefault(key, []).append(name)
      specs[key] = part
  for key, total in totals.items():
    check = getattr(specs[key], 'batch_error', None)
    message = check(total) if check is not None and total else None
    if message:
      raise UserError(f"head_{key} (datasets {', '.join(users[key])}): {message}")


def heatmap_head_specs(model_config, num_keypoints: Sequence[int]) -> tuple[HeatmapHeadSpec, ...]:
  """One `HeatmapHeadSpec` per keypoint count, shaped by `config.model`'s head keys."""
  return tuple(
    HeatmapHeadSpec(int(k), model_config.head_channels, model_config.head_num_deconv, model_config.head_deconv_init_std)
    for k in num_keypoints
  )


def build_model(
  model_config,
  dataset_names: Sequence[str],
  num_keypoints: Sequence[int] | None = None,
  num_groups: int = 1,
  use_experts: bool | None = None,
  posebh_config=None,
  head_specs: Sequence[Any] | None = None,
  experts: Sequence[str] | None = None,
) -> PoseModel:
  """Builds a PoseModel from `config.model`; each dataset's head from `head_specs` (its task's), or, without them,
  a heatmap head per entry of `num_keypoints`; `experts`: each dataset's expert name (`dataset_experts(config)`;
  datasets with equal names share one MoE expert), default one expert per dataset. With an enabled
  `config.posebh` it also has the keypoint embedding module."""
  if head_specs is None:
    head_specs = heatmap_head_specs(model_config, num_keypoints)
  embed = posebh_config is not None and posebh_config.enabled
  dtypes = (model_config.dtype, model_config.param_dtype)
  if 'float64' in dtypes and not jax.config.jax_enable_x64:
    raise UserError(
      "model.dtype/param_dtype float64 needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 "
      "(posebh_jax.main turns it on for such a config)"
    )
  return PoseModel(
    dataset_names=tuple(dataset_names),
    head_specs=tuple(head_specs),
    width=model_config.width,
    depth=model_config.depth,
    num_heads=model_config.num_heads,
    mlp_ratio=model_config.mlp_ratio,
    patch_size=model_config.patch_size,
    patch_padding=model_config.patch_padding,
    drop_path=model_config.drop_path,
    expert_dim=model_config.expert_dim,
    use_experts=model_config.use_experts if use_experts is None else use_experts,
    num_groups=num_groups,
    remat=model_config.remat,
    scan=model_config.scan,
    dtype=jnp.dtype(model_config.dtype),
    param_dtype=jnp.dtype(model_config.param_dtype),
    embed_dim=posebh_config.embed_dim if embed else 0,
    embed_channels=posebh_config.embed_channels if embed else 256,
    embed_hidden=posebh_config.embed_hidden if embed else 64,
    embed_num_deconv=model_config.head_num_deconv,
    stack_equal_datasets=resolve_stacking(model_config.stack_equal_datasets),
    dataset_experts=expert_indices(experts) if experts is not None else (),
  )


def dataset_experts(config) -> tuple[str, ...]:
  """Each dataset's MoE expert name in `config.data.order`: its entry's `expert` when set (datasets with equal
  names share one expert), else its own name."""
  return tuple(config.data.datasets[n].get('expert', '') or n for n in config.data.order)


def expert_indices(experts: Sequence[str]) -> tuple[int, ...]:
  """Expert names per dataset → expert indices, numbered by first appearance (one per distinct name)."""
  order = list(dict.fromkeys(experts))
  return tuple(order.index(e) for e in experts)


def validate_config(model_config) -> None:
  """Checks `config.model`; raises UserError (one line) naming the key and what to do."""
  for key, allowed in (('dtype', ('float32', 'bfloat16', 'float64')), ('param_dtype', ('float32', 'float64'))):
    if model_config[key] not in allowed:
      raise UserError(f"config.model.{key} is '{model_config[key]}'; use one of {', '.join(allowed)}")
  for key in ('width', 'depth', 'num_heads', 'patch_size', 'head_channels', 'head_num_deconv'):
    if model_config[key] < 1:
      raise UserError(f'config.model.{key} must be at least 1 (got {model_config[key]})')
  if model_config.patch_padding < 0 or not model_config.mlp_ratio > 0:
    raise UserError(
      f'config.model.patch_padding must be >= 0 and mlp_ratio > 0 (got '
      f'{model_config.patch_padding} and {model_config.mlp_ratio})'
    )
  if model_config.width % model_config.num_heads:
    raise UserError(f'config.model.width {model_config.width} is not divisible by num_heads {model_config.num_heads}')
  if model_config.use_experts and not 0 < model_config.expert_dim < model_config.width:
    raise UserError(
      f'config.model.expert_dim must be in (0, width={model_config.width}) (got {model_config.expert_dim})'
    )
  try:
    resolve_stacking(model_config.stack_equal_datasets)
  except ValueError as e:
    raise UserError(f'config.{e}') from None
  if not 0 <= model_config.drop_path < 1:
    raise UserError(f'config.model.drop_path is a stochastic-depth rate in [0, 1) (got {model_config.drop_path})')


STACKING_CHOICES = ('auto', 'always', 'never')


def resolve_stacking(choice: str) -> bool:
  """config.model.stack_equal_datasets ('auto', 'always', 'never') → whether equal-count datasets run stacked;
  'auto' stacks on accelerators only (XLA's CPU backend runs the stacked form slower: docs/MEASUREMENTS.md)."""
  if choice not in STACKING_CHOICES:
    raise ValueError(f"model.stack_equal_datasets is {choice!r}; use one of {', '.join(STACKING_CHOICES)}")
  if choice == 'auto':
    return jax.default_backend() != 'cpu'
  return choice == 'always'


def _unscan_blocks(backbone: dict, depth: int) -> dict:
  """Converts scanned `blocks` params (leading layer axis) to `block_{i}` entries."""
  if 'blocks' not in backbone:
    return backbone
  out = {k: v for k, v in backbone.items() if k != 'blocks'}
  for index in range(depth):
    out[f'block_{index}'] = jax.tree.map(lambda x, i=index: x[i], backbone['blocks'])
  return out


def split_dataset_variables(model: PoseModel, variables: Mapping[str, Any], name: str):
  """Model split for inference: a plain single-dataset model whose fc2 includes dataset `name`'s expert.

  Returns `(single_model, single_variables)`; `single_model.apply(single_variables, {name: images})` equals the
  multi-dataset model's output for that dataset.
  """
  index = model.dataset_names.index(name)
  expert = model.dataset_experts[index] if model.dataset_experts else index
  params = jax.tree.map(np.asarray, nn.unbox(variables['params']))
  backbone = _unscan_blocks(dict(params['backbone']), model.depth)
  for key in [k for k in backbone if k.startswith('block_')]:
    block = dict(backbone[key])
    mlp = dict(block['mlp'])
    if 'expert_kernel' in mlp:
      fc2 = dict(mlp['fc2'])
      mlp['fc2'] = {
        'kernel': np.concatenate([fc2['kernel'], mlp.pop('expert_kernel')[expert]], axis=-1),
        'bias': np.concatenate([fc2['bias'], mlp.pop('expert_bias')[expert]], axis=-1),
      }
    block['mlp'] = mlp
    backbone[key] = block
  single = model.clone(
    dataset_names=(name,),
    head_specs=(model.head_specs[index],),
    use_experts=False,
    dataset_experts=(),
    num_groups=1,
    scan=False,
    remat=False,
    drop_path=0.0,
    embed_dim=0,
  )
  heads = [f'head_{key}' for _, key, _ in head_parts(name, model.head_specs[index])]
  out = {'params': {'backbone': backbone, **{head: params[head] for head in heads}}}
  stats = variables.get('batch_stats', {})
  if any(head in stats for head in heads):
    out['batch_stats'] = {head: jax.tree.map(np.asarray, stats[head]) for head in heads if head in stats}
  return single, out
