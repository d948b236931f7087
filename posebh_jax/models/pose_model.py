"""The multi-dataset top-down pose model and its per-dataset split (expert merged into fc2)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from posebh_jax.errors import UserError
from posebh_jax.models import vit

VARIANTS = {
    # name: (width, depth, heads, drop_path, expert_dim, layer_decay)
    'S/16': (384, 12, 12, 0.1, 192, 0.8),
    'B/16': (768, 12, 12, 0.3, 192, 0.75),
    'L/16': (1024, 24, 16, 0.5, 256, 0.8),
    'H/16': (1280, 32, 16, 0.55, 320, 0.8),
}


class PoseModel(nn.Module):
  """ViT backbone with MoE FFN + one heatmap head per dataset.

  Call: `images_by_dataset {name: uint8 (n_d, H, W, 3)}` → `{name: float32 heatmaps (n_d, H/4, W/4, K_d)}`
  (for patch 16 and two deconvolutions). Each n_d must be a multiple of `num_groups`.
  """
  dataset_names: tuple[str, ...]
  num_keypoints: tuple[int, ...]
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_padding: int = 2
  drop_path: float = 0.0
  expert_dim: int = 0
  use_experts: bool = True
  head_channels: int = 256
  head_num_deconv: int = 2
  head_deconv_init_std: float = 0.001
  num_groups: int = 1
  remat: bool = False
  scan: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  # PoseBH keypoint embedding module (METHOD.md §2); 0 disables it (plain ViTPose++).
  embed_dim: int = 0
  embed_channels: int = 256
  embed_hidden: int = 64
  # Equal per-dataset counts: experts as one batched matmul, heads as one stacked computation (same results).
  stack_equal_datasets: bool = True

  def setup(self):
    self.backbone = vit.ViTBackbone(
        width=self.width, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
        patch_size=self.patch_size, patch_padding=self.patch_padding, drop_path=self.drop_path,
        expert_dim=self.expert_dim if self.use_experts else 0,
        num_experts=len(self.dataset_names) if self.use_experts else 0,
        remat=self.remat, scan=self.scan, dtype=self.dtype, param_dtype=self.param_dtype,
        stack_equal_datasets=self.stack_equal_datasets)
    self.heads = {name: vit.HeatmapHead(k, self.head_channels, self.head_num_deconv, self.dtype,
                                        self.param_dtype, self.head_deconv_init_std, name=f'head_{name}')
                  for name, k in zip(self.dataset_names, self.num_keypoints)}
    if self.embed_dim > 0:
      from posebh_jax.posebh.embedding import KeypointEmbedding
      self.embedding = KeypointEmbedding(channels=self.embed_channels, num_deconv=self.head_num_deconv,
                                         hidden=self.embed_hidden, embed_dim=self.embed_dim, dtype=self.dtype,
                                         param_dtype=self.param_dtype)

  def composition(self, images_by_dataset: Mapping[str, Any]) -> vit.Composition:
    unknown = set(images_by_dataset) - set(self.dataset_names)
    if unknown:
      raise ValueError(f'unknown dataset(s) {sorted(unknown)}; the model has heads for {list(self.dataset_names)}')
    counts = {name: x.shape[0] for name, x in images_by_dataset.items()}
    return vit.make_composition(self.dataset_names, counts, self.num_groups)

  def features(self, images_by_dataset, train: bool = False):
    """Backbone features `(B, h, w, D)` in grouped order, and the batch Composition."""
    comp = self.composition(images_by_dataset)
    images = vit.group_by_dataset(images_by_dataset, comp)
    images = nn.with_logical_constraint(images, ('batch', None, None, None))
    return self.backbone(images, comp, train), comp

  def __call__(self, images_by_dataset, train: bool = False):
    features, comp = self.features(images_by_dataset, train)
    return self._own_heads(features, comp, train)

  def _own_heads(self, features, comp: vit.Composition, train: bool):
    """{name: head `name` on dataset `name`'s examples of `features`}; with equal per-dataset counts all heads
    run as one stacked computation (vit.stacked_heads), else one after another on static slices."""
    present = list(comp.present())
    count = comp.stack_count() if self.stack_equal_datasets else 0
    if count and not self.is_initializing():
      per_dataset = features.reshape((comp.groups, len(present), count) + features.shape[1:])
      per_dataset = jnp.swapaxes(per_dataset, 0, 1).reshape((len(present), comp.groups * count) + features.shape[1:])
      per_dataset = nn.with_logical_constraint(per_dataset, (None, 'batch', None, None, None))
      outputs = vit.stacked_heads([self.heads[name] for _, name, _, _ in present], per_dataset, train)
      return {name: out for (_, name, _, _), out in zip(present, outputs)}
    return {name: self.heads[name](vit.dataset_slice(features, comp, offset, count), train)
            for _, name, offset, count in present}

  def posebh_outputs(self, images_by_dataset, train: bool = False, cross: bool = False,
                     frozen_embedding: bool = False):
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
      out['embeddings'][name] = vit.dataset_slice(embeddings, comp, offset, count)
    if cross:
      for _, head_name, _, _ in present:
        everything = self.heads[head_name](features, False)
        others = [vit.dataset_slice(everything, comp, offset, count)
                  for _, name, offset, count in present if name != head_name]
        if others:
          out['cross'][head_name] = jnp.concatenate(others, axis=0)
    return out

  def init_all(self, images_by_dataset, train: bool = False):
    """Creates every parameter (heads and, when enabled, the embedding module); returns the heads' output."""
    if self.embed_dim > 0:
      return self.posebh_outputs(images_by_dataset, train)['heatmaps']
    return self(images_by_dataset, train)


def build_model(model_config, dataset_names: Sequence[str], num_keypoints: Sequence[int],
                num_groups: int = 1, use_experts: bool | None = None, posebh_config=None) -> PoseModel:
  """Builds a PoseModel from `config.model` (variant name or explicit width/depth/heads); with an enabled
  `config.posebh` it also has the keypoint embedding module."""
  embed = posebh_config is not None and posebh_config.enabled
  dtypes = (model_config.dtype, model_config.param_dtype)
  if 'float64' in dtypes and not jax.config.jax_enable_x64:
    raise UserError("model.dtype/param_dtype float64 needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 "
                    "(posebh_jax.main turns it on for such a config)")
  width, depth, heads = model_config.width, model_config.depth, model_config.num_heads
  return PoseModel(
      dataset_names=tuple(dataset_names), num_keypoints=tuple(int(k) for k in num_keypoints),
      width=width, depth=depth, num_heads=heads, mlp_ratio=model_config.mlp_ratio,
      patch_size=model_config.patch_size, patch_padding=model_config.patch_padding,
      drop_path=model_config.drop_path, expert_dim=model_config.expert_dim,
      use_experts=model_config.use_experts if use_experts is None else use_experts,
      head_channels=model_config.head_channels, head_num_deconv=model_config.head_num_deconv,
      head_deconv_init_std=model_config.get('head_deconv_init_std', PoseModel.head_deconv_init_std),
      num_groups=num_groups, remat=model_config.remat, scan=model_config.scan,
      dtype=jnp.dtype(model_config.dtype), param_dtype=jnp.dtype(model_config.param_dtype),
      embed_dim=posebh_config.embed_dim if embed else 0,
      embed_channels=posebh_config.embed_channels if embed else 256,
      embed_hidden=posebh_config.embed_hidden if embed else 64,
      stack_equal_datasets=resolve_stacking(model_config.get('stack_equal_datasets', 'auto')))


STACKING_CHOICES = ('auto', 'always', 'never')


def resolve_stacking(choice: str) -> bool:
  """config.model.stack_equal_datasets ('auto', 'always', 'never') → whether equal-count datasets run stacked;
  'auto' stacks on accelerators only (on XLA's CPU backend the stacked form measured 8-13% slower, README
  "Performance")."""
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
  params = jax.tree.map(np.asarray, nn.unbox(variables['params']))
  backbone = _unscan_blocks(dict(params['backbone']), model.depth)
  for key in [k for k in backbone if k.startswith('block_')]:
    block = dict(backbone[key])
    mlp = dict(block['mlp'])
    if 'expert_kernel' in mlp:
      fc2 = dict(mlp['fc2'])
      mlp['fc2'] = {'kernel': np.concatenate([fc2['kernel'], mlp.pop('expert_kernel')[index]], axis=-1),
                    'bias': np.concatenate([fc2['bias'], mlp.pop('expert_bias')[index]], axis=-1)}
    block['mlp'] = mlp
    backbone[key] = block
  single = model.clone(dataset_names=(name,), num_keypoints=(model.num_keypoints[index],), use_experts=False,
                       num_groups=1, scan=False, remat=False, drop_path=0.0, embed_dim=0)
  out = {'params': {'backbone': backbone, f'head_{name}': params[f'head_{name}']}}
  if 'batch_stats' in variables:
    out['batch_stats'] = {f'head_{name}': jax.tree.map(np.asarray, variables['batch_stats'][f'head_{name}'])}
  return single, out
