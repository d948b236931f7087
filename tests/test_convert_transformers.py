"""The converter on transformers' VitPose / VitPose++ and on MAE / timm ViT weights: tiny random models, float32.

transformers' `VitPoseForPoseEstimation` is the reference: its eval-mode heatmaps (per `dataset_index`) must equal
`Predictor.heatmaps` of the converted checkpoint. The MAE / timm state dict is written by hand (names of the timm
layout, random values) and its conversion checked parameter by parameter.
"""

import os

import numpy as np
import pytest
from conftest import require_reference, run_module
from flax import traverse_util

from configs import demo
from posebh_jax import convert
from posebh_jax.errors import UserError
from posebh_jax.importers import common, timm_vit, transformers_vitpose
from posebh_jax.inference import Predictor

torch = require_reference('torch')
transformers = require_reference('transformers')

# The tiny architecture on both sides: width, depth, heads, MLP ratio, patch, expert channels, input and heatmaps.
WIDTH, DEPTH, HEADS, MLP_RATIO, PATCH, EXPERT_DIM = 32, 2, 2, 4, 8, 8
IMAGE_SIZE, HEATMAP_SIZE = (64, 48), (32, 24)
HEAD_CHANNELS = 256  # fixed in transformers' classic decoder
# The command-line overrides that turn configs/demo.py:tiny into the config of the tiny transformers model.
CLI_OVERRIDES = (
  f'--config.model.width={WIDTH}',
  f'--config.model.depth={DEPTH}',
  f'--config.model.num_heads={HEADS}',
  f'--config.model.mlp_ratio={float(MLP_RATIO)}',
  f'--config.model.patch_size={PATCH}',
  f'--config.model.expert_dim={EXPERT_DIM}',
  '--config.model.patch_padding=2',
  f'--config.model.head_channels={HEAD_CHANNELS}',
)


def tiny_config(use_experts: bool = True, all_coco: bool = False):
  """configs/demo.py:tiny with the tiny transformers model's architecture; `all_coco`: every head has COCO's 17
  keypoints (so that the checkpoint's one head fills all of them)."""
  config = demo.get_config('tiny')
  config.model.update(
    dict(
      width=WIDTH,
      depth=DEPTH,
      num_heads=HEADS,
      mlp_ratio=float(MLP_RATIO),
      patch_size=PATCH,
      expert_dim=EXPERT_DIM,
      patch_padding=2,
      head_channels=HEAD_CHANNELS,
      use_experts=use_experts,
    )
  )
  config.data.image_size = IMAGE_SIZE
  config.data.heatmap_size = HEATMAP_SIZE
  if all_coco:
    for name in config.data.order:
      config.data.datasets[name].format = 'coco'
  return config


def hf_model(num_experts: int, simple: bool = False, num_heads: int = HEADS, seed: int = 0):
  """A tiny `VitPoseForPoseEstimation` (17 keypoints) in eval mode with random weights of unit-scale activations
  and random BatchNorm running statistics."""
  backbone = transformers.VitPoseBackboneConfig(
    image_size=list(IMAGE_SIZE),
    patch_size=[PATCH, PATCH],
    hidden_size=WIDTH,
    num_hidden_layers=DEPTH,
    num_attention_heads=num_heads,
    mlp_ratio=MLP_RATIO,
    num_experts=num_experts,
    part_features=EXPERT_DIM,
    layer_norm_eps=1e-6,  # the official ViTPose's and this model's (transformers' default is 1e-12)
    out_indices=[DEPTH],
  )
  config = transformers.VitPoseConfig(backbone_config=backbone, use_simple_decoder=simple, num_labels=17)
  model = transformers.VitPoseForPoseEstimation(config).eval()
  generator = torch.Generator().manual_seed(seed)
  randn = lambda shape: torch.randn(shape, generator=generator)
  with torch.no_grad():
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
      if not tensor.is_floating_point():
        continue
      if name.endswith('running_var'):
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
      elif name.endswith('weight') and ('layernorm' in name or 'batchnorm' in name):
        tensor.copy_(1.0 + 0.2 * randn(tensor.shape))
      elif tensor.ndim >= 2 and 'position_embeddings' not in name:
        fan_in = tensor.shape[0] * 4 if 'deconv' in name else int(np.prod(tensor.shape[1:]))
        tensor.copy_(randn(tensor.shape) / fan_in**0.5)
      else:  # biases, running means, position embeddings (a non-zero slot 0, which transformers adds everywhere)
        tensor.copy_(0.2 * randn(tensor.shape))
  return model


def hf_heatmaps(model, images: np.ndarray, dataset_index: int | None = None) -> np.ndarray:
  """transformers' eval-mode heatmaps of uint8 (N, H, W, 3) images, as (N, h, w, K) float32."""
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  pixels = torch.from_numpy(((images.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())
  kwargs = {}
  if dataset_index is not None:
    kwargs['dataset_index'] = torch.full((len(images),), dataset_index, dtype=torch.long)
  with torch.no_grad():
    heatmaps = model(pixel_values=pixels, **kwargs).heatmaps
  return heatmaps.numpy().transpose(0, 2, 3, 1)


def random_images(count: int = 2, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (count,) + IMAGE_SIZE + (3,), dtype=np.uint8)


def assert_heatmaps_equal(predictor, dataset, images, reference):
  ours = predictor.heatmaps(images, dataset)
  assert ours.shape == reference.shape == (len(images),) + HEATMAP_SIZE + (17,)
  assert np.abs(reference).max() > 0.1  # the comparison is not between near-zero maps
  np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0, err_msg=dataset)


@pytest.fixture(scope='module')
def vitpose_plus(tmp_path_factory):
  """(model, directory) of a saved tiny VitPose++ with the official six experts."""
  model = hf_model(num_experts=6, seed=1)
  directory = str(tmp_path_factory.mktemp('vitpose_plus'))
  model.save_pretrained(directory)
  return model, directory


def test_vitpose_heatmaps_match_transformers(tmp_path):
  model = hf_model(num_experts=1)
  model.save_pretrained(str(tmp_path / 'hf'))
  assert os.path.isfile(tmp_path / 'hf' / 'model.safetensors')
  summary = convert.convert(tiny_config(use_experts=False), str(tmp_path / 'hf'), str(tmp_path / 'out'))
  assert summary['kind'] == 'transformers VitPose'
  # The one head goes to every 17-keypoint dataset; aic (14), mpii (16) and COCO-WholeBody (133) stay fresh.
  assert {'head_coco', 'head_ap10k', 'head_apt36k', 'backbone'} <= set(summary['loaded'])
  assert {'head_aic', 'head_mpii', 'head_coco_wholebody'} <= set(summary['fresh'])
  assert any('copied into the heads of coco, ap10k, apt36k' in note for note in summary['notes'])
  predictor = Predictor.load(str(tmp_path / 'out'))
  images = random_images()
  reference = hf_heatmaps(model, images)
  for dataset in ('coco', 'ap10k'):
    assert_heatmaps_equal(predictor, dataset, images, reference)


def test_vitpose_plus_heatmaps_match_transformers_for_each_expert(vitpose_plus, tmp_path):
  model, directory = vitpose_plus
  config = tiny_config(all_coco=True)
  summary = convert.convert(config, os.path.join(directory, 'model.safetensors'), str(tmp_path / 'out'))
  assert summary['kind'] == 'transformers VitPose++'
  assert not summary['fresh'], summary['fresh']
  predictor = Predictor.load(str(tmp_path / 'out'))
  images = random_images(seed=1)
  for index, dataset in enumerate(common.OFFICIAL_DATASET_ORDER):
    assert dataset in predictor.dataset_names
    assert_heatmaps_equal(predictor, dataset, images, hf_heatmaps(model, images, dataset_index=index))


def test_vitpose_plus_through_the_command_line(vitpose_plus, tmp_path):
  model, directory = vitpose_plus
  out = str(tmp_path / 'out')
  result = run_module(
    ['-m', 'posebh_jax.convert', f'--from={directory}', f'--to={out}', '--config=configs/demo.py:tiny', *CLI_OVERRIDES]
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert 'transformers VitPose++: loaded' in result.stdout
  assert 'fresh (not in the checkpoint): head_aic, head_coco_wholebody, head_mpii' in result.stdout
  predictor = Predictor.load(out)
  images = random_images(seed=2)
  for dataset in ('coco', 'ap10k'):  # experts 0 and 3; both heads are copies of the checkpoint's one head
    index = common.OFFICIAL_DATASET_ORDER.index(dataset)
    assert_heatmaps_equal(predictor, dataset, images, hf_heatmaps(model, images, dataset_index=index))


def _target(config):
  """A Target without a built model: enough for the checks that come before any shape."""
  names = tuple(config.data.order)
  return common.Target(config, names, {name: 17 for name in names}, {}, (8, 6))


def test_simple_decoder_is_refused(tmp_path):
  hf_model(num_experts=1, simple=True).save_pretrained(str(tmp_path))
  arrays, meta = convert.read_source(str(tmp_path))
  assert transformers_vitpose.accepts(arrays, meta)
  with pytest.raises(UserError, match='simple decoder.*classic-decoder') as error:
    transformers_vitpose.convert(arrays, meta, _target(tiny_config(use_experts=False)))
  assert '\n' not in str(error.value)


@pytest.mark.parametrize(
  'change, key',
  [
    (dict(num_heads=4), 'config.model.num_heads'),  # equal shapes: only config.json tells
    (dict(width=64), 'config.model.width'),
    (dict(expert_dim=16), 'config.model.expert_dim'),
    (dict(use_experts=False), 'config.model.use_experts'),
    (dict(patch_padding=0), 'config.model.patch_padding'),
  ],
)
def test_architecture_mismatch_names_the_config_key(vitpose_plus, change, key):
  arrays, meta = convert.read_source(vitpose_plus[1])
  config = tiny_config()
  config.model.update(change)
  with pytest.raises(UserError, match=key.replace('.', r'\.')) as error:
    transformers_vitpose.convert(arrays, meta, _target(config))
  assert '\n' not in str(error.value)


def test_mismatch_through_convert_names_the_key(tmp_path):
  hf_model(num_experts=6, num_heads=4).save_pretrained(str(tmp_path / 'hf'))
  with pytest.raises(UserError, match=r'num_attention_heads = 4 but config\.model\.num_heads is 2'):
    convert.convert(tiny_config(), str(tmp_path / 'hf'), str(tmp_path / 'out'))


# --------------------------------------------------------------------------------------------------- MAE / timm
def mae_state_dict(seed: int = 0, grid: int = 14) -> dict:
  """A MAE pre-training state dict in timm's names (encoder, class token, 14x14 position grid of 224 px, and the
  decoder and mask token that the converter ignores), random float32 values."""
  rng = np.random.default_rng(seed)
  hidden, decoder = int(WIDTH * MLP_RATIO), 16
  shapes = {
    'cls_token': (1, 1, WIDTH),
    'pos_embed': (1, 1 + grid * grid, WIDTH),
    'patch_embed.proj.weight': (WIDTH, 3, PATCH, PATCH),
    'patch_embed.proj.bias': (WIDTH,),
    'norm.weight': (WIDTH,),
    'norm.bias': (WIDTH,),
    'mask_token': (1, 1, decoder),
    'decoder_embed.weight': (decoder, WIDTH),
    'decoder_embed.bias': (decoder,),
    'decoder_pos_embed': (1, 1 + grid * grid, decoder),
    'decoder_blocks.0.norm1.weight': (decoder,),
    'decoder_blocks.0.attn.qkv.weight': (3 * decoder, decoder),
    'decoder_norm.weight': (decoder,),
    'decoder_pred.weight': (PATCH * PATCH * 3, decoder),
  }
  for index in range(DEPTH):
    block = f'blocks.{index}.'
    shapes.update(
      {
        f'{block}norm1.weight': (WIDTH,),
        f'{block}norm1.bias': (WIDTH,),
        f'{block}attn.qkv.weight': (3 * WIDTH, WIDTH),
        f'{block}attn.qkv.bias': (3 * WIDTH,),
        f'{block}attn.proj.weight': (WIDTH, WIDTH),
        f'{block}attn.proj.bias': (WIDTH,),
        f'{block}norm2.weight': (WIDTH,),
        f'{block}norm2.bias': (WIDTH,),
        f'{block}mlp.fc1.weight': (hidden, WIDTH),
        f'{block}mlp.fc1.bias': (hidden,),
        f'{block}mlp.fc2.weight': (WIDTH, hidden),
        f'{block}mlp.fc2.bias': (WIDTH,),
      }
    )
  return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def test_mae_weights_fill_the_backbone_only(tmp_path):
  source = mae_state_dict()
  path = str(tmp_path / 'mae_pretrain.pth')
  torch.save({'model': {name: torch.from_numpy(value) for name, value in source.items()}}, path)  # MAE's layout
  config = tiny_config()
  summary = convert.convert(config, path, str(tmp_path / 'out'))
  assert summary['kind'] == 'MAE ViT (backbone only)'
  assert summary['loaded'] == ['backbone']
  assert any('resampled (bicubic) from a 14x14 to the 8x6' in note for note in summary['notes'])
  params = traverse_util.flatten_dict(Predictor.load(str(tmp_path / 'out')).variables['params'])
  get = lambda *path: np.asarray(params[('backbone',) + path])
  close = lambda ours, theirs: np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

  close(get('patch_embed', 'kernel'), source['patch_embed.proj.weight'].transpose(2, 3, 1, 0))
  close(get('patch_embed', 'bias'), source['patch_embed.proj.bias'])
  # Slot 0 (the class token's) is dropped; the 14x14 patch grid is resampled as F.interpolate(bicubic) does.
  grid = torch.from_numpy(source['pos_embed'][:, 1:]).reshape(1, 14, 14, WIDTH).permute(0, 3, 1, 2)
  resampled = torch.nn.functional.interpolate(grid, size=(8, 6), mode='bicubic', align_corners=False)
  resampled = resampled.permute(0, 2, 3, 1).reshape(1, 48, WIDTH).numpy()
  np.testing.assert_allclose(get('pos_embed'), resampled, rtol=0, atol=1e-5)  # torch interpolates in float32
  close(get('norm', 'scale'), source['norm.weight'])
  close(get('norm', 'bias'), source['norm.bias'])
  shared = WIDTH - EXPERT_DIM
  for index in range(DEPTH):
    block = lambda *path: get(f'block_{index}', *path)
    theirs = lambda name: source[f'blocks.{index}.{name}']
    close(block('norm1', 'scale'), theirs('norm1.weight'))
    close(block('norm2', 'bias'), theirs('norm2.bias'))
    close(block('attn', 'qkv', 'kernel'), theirs('attn.qkv.weight').T)
    close(block('attn', 'qkv', 'bias'), theirs('attn.qkv.bias'))
    close(block('attn', 'proj', 'kernel'), theirs('attn.proj.weight').T)
    close(block('mlp', 'fc1', 'kernel'), theirs('mlp.fc1.weight').T)
    close(block('mlp', 'fc1', 'bias'), theirs('mlp.fc1.bias'))
    # fc2 split: the first D - P output columns shared, the last P copied into every dataset's expert.
    close(block('mlp', 'fc2', 'kernel'), theirs('mlp.fc2.weight').T[:, :shared])
    close(block('mlp', 'fc2', 'bias'), theirs('mlp.fc2.bias')[:shared])
    experts = block('mlp', 'expert_kernel')
    assert experts.shape == (len(config.data.order), int(WIDTH * MLP_RATIO), EXPERT_DIM)
    for expert, bias in zip(experts, block('mlp', 'expert_bias')):
      close(expert, theirs('mlp.fc2.weight').T[:, shared:])
      close(bias, theirs('mlp.fc2.bias')[shared:])
  # The heads keep the fresh (seeded) initialisation of a conversion-free build of the same config.
  fresh = convert.build_target(config).flat
  heads = [path for path in fresh if path[0] == 'params' and path[1].startswith('head_')]
  assert len(heads) > 6
  for path in heads:
    np.testing.assert_array_equal(params[path[1:]], fresh[path], err_msg='/'.join(path))


def test_mae_names_are_ignored_with_reasons():
  source = mae_state_dict(grid=7)
  arrays = dict(source, **{'head.weight': np.zeros((10, WIDTH), np.float32), 'fc_norm.weight': source['norm.weight']})
  assert timm_vit.accepts(arrays, {}) and not transformers_vitpose.accepts(arrays, {})
  config = tiny_config(use_experts=False)
  conversion = timm_vit.convert(arrays, {}, _target(config))
  for name in ('decoder_embed.weight', 'decoder_blocks.0.attn.qkv.weight', 'mask_token', 'cls_token', 'head.weight'):
    assert name in conversion.ignored, name
  assert set(arrays) - conversion.used - set(conversion.ignored) == set()
  # Without experts fc2 is copied whole.
  np.testing.assert_array_equal(
    conversion.arrays[('params', 'backbone', 'block_1', 'mlp', 'fc2', 'kernel')], source['blocks.1.mlp.fc2.weight'].T
  )
  config.model.depth = 3
  with pytest.raises(UserError, match=r'depth \(blocks\) = 2 but config\.model\.depth is 3'):
    timm_vit.convert(arrays, {}, _target(config))
