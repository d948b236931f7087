"""The converter on official ViTPose / ViTPose++ / PoseBH checkpoints (posebh_jax/importers/mmpose.py): tiny PyTorch
models with the official parameter names (tests/torch_vitpose.py), random weights and random BatchNorm statistics,
saved as mmpose checkpoints, converted, and compared with PyTorch's eval-mode outputs; then each mismatch's error."""

import dataclasses
import os
import sys

import numpy as np
import pytest

from conftest import require_reference, run_module

torch = require_reference('torch')

import torch_vitpose as tv  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from posebh_jax import convert  # noqa: E402
from posebh_jax.errors import UserError  # noqa: E402
from posebh_jax.importers import mmpose  # noqa: E402
from posebh_jax.inference import Predictor  # noqa: E402
from posebh_jax.models.pose_model import PoseModel  # noqa: E402

ATOL = 1e-4
PROTO = dict(deconv_channels=16, hidden=8, features=8, per_keypoint=3, clusters=5)  # demo.py:tiny,posebh's sizes


def _compare_heads(predictor, model, images, datasets):
  """Every head of `datasets` (source order = torch head index) against torch; returns our heatmaps by name."""
  ours = {}
  for index, name in enumerate(datasets):
    ours[name] = predictor.heatmaps(images, name)
    reference = tv.torch_heatmaps(model, images, index)
    assert ours[name].shape == reference.shape, name
    np.testing.assert_allclose(ours[name], reference, atol=ATOL, rtol=0, err_msg=name)
  return ours


# ------------------------------------------------------------------------------------------------- equal outputs
def test_vitpose_plus_plus_every_head_by_dataset_name(tmp_path):
  """Three datasets in the official order converted into a config that lists them the other way round: each head
  and expert lands on its dataset by name, and every head's heatmaps equal PyTorch's."""
  model = tv.make_model([17, 14, 16], seed=1)
  source = tv.save_checkpoint(model, tmp_path / 'vitpose_plus.pth')
  summary = convert.convert(tv.tiny_config(('mpii', 'aic', 'coco')), source, str(tmp_path / 'out'))
  assert summary['kind'] == 'official ViTPose++ (mmpose)'
  assert summary['loaded'] == ['backbone', 'head_aic', 'head_coco', 'head_mpii'] and summary['fresh'] == []
  assert any('0 → coco, 1 → aic, 2 → mpii' in note for note in summary['notes'])
  assert any('class-token slot' in note for note in summary['notes'])
  images = tv.random_images(2, seed=1)
  ours = _compare_heads(Predictor.load(str(tmp_path / 'out')), model, images, ('coco', 'aic', 'mpii'))
  # The experts matter at this tolerance: coco's head on the features of aic's expert is far from ours.
  with torch.no_grad():
    wrong_expert = model.keypoint_head(model.features(tv.to_torch_input(images), 1)).numpy().transpose(0, 2, 3, 1)
  assert np.abs(wrong_expert - ours['coco']).max() > 100 * ATOL


def test_single_dataset_vitpose(tmp_path):
  """A ViTPose without experts (full-width fc2, one head) into a one-dataset config with use_experts=False."""
  model = tv.make_model([17], seed=2, experts=False)
  source = tv.save_checkpoint(model, tmp_path / 'vitpose.pth')
  summary = convert.convert(tv.tiny_config(('coco',), use_experts=False), source, str(tmp_path / 'out'))
  assert summary['kind'] == 'official ViTPose (mmpose)'
  assert summary['loaded'] == ['backbone', 'head_coco'] and summary['fresh'] == []
  _compare_heads(Predictor.load(str(tmp_path / 'out')), model, tv.random_images(2, seed=2), ('coco',))


def test_scanned_model(tmp_path):
  """A config whose blocks are scanned (`model.scan`, L/16 and H/16's default) gets the blocks stacked."""
  model = tv.make_model([17, 14], seed=3)
  source = tv.save_checkpoint(model, tmp_path / 'vitpp.pth')
  config = tv.tiny_config(('coco', 'aic'), scan=True)
  convert.convert(config, source, str(tmp_path / 'out'))
  predictor = Predictor.load(str(tmp_path / 'out'))
  assert 'blocks' in predictor.variables['params']['backbone']
  _compare_heads(predictor, model, tv.random_images(2, seed=3), ('coco', 'aic'))


def test_posebh_heads_embedding_and_prototypes(tmp_path):
  """PoseBH with --source_datasets=aic,coco into a config ordered coco,aic: heads, the embedding map (proto head
  output before normalisation) and the prototypes' rows, all by dataset name."""
  model = tv.make_model([14, 17], seed=3, proto=PROTO)
  source = tv.save_checkpoint(model, tmp_path / 'posebh.pth')
  config = tv.tiny_config(('coco', 'aic'), posebh=True)
  summary = convert.convert(config, source, str(tmp_path / 'out'), source_datasets=['aic', 'coco'])
  assert summary['kind'] == 'official PoseBH (mmpose)'
  assert summary['fresh'] == []
  assert {'backbone', 'embedding', 'extra/prototypes', 'head_aic', 'head_coco'} <= set(summary['loaded'])
  assert any('folded into the running means' in note for note in summary['notes'])
  predictor = Predictor.load(str(tmp_path / 'out'))
  images = tv.random_images(2, seed=3)
  _compare_heads(predictor, model, images, ('aic', 'coco'))
  for index, name in enumerate(('aic', 'coco')):
    outputs = predictor.model.apply(predictor.variables, {name: images}, method=PoseModel.posebh_outputs)
    np.testing.assert_allclose(
      np.asarray(outputs['embeddings'][name]), tv.torch_embeddings(model, images, index), atol=ATOL, rtol=0
    )
  source_rows = model.proto_head.kpt_prototype.prototypes.detach().numpy()  # aic's 14 rows, then coco's 17
  expected = np.concatenate([source_rows[14:], source_rows[:14]])
  np.testing.assert_array_equal(np.asarray(predictor.extra['prototypes']), expected)
  np.testing.assert_array_equal(np.asarray(predictor.extra['cluster_prototypes']), expected)


def test_command_line_resamples_position_embeddings_and_leaves_out_a_dataset(tmp_path):
  """The real command: a ViTPose++ of coco, aic, mpii trained at 96x64 (12x8 tokens) into a coco,mpii config at
  64x48 (8x6 tokens). Exit 0, the printed lines, the position embeddings equal torch's bicubic F.interpolate of
  the patch grid plus the class slot, and the heads equal PyTorch's with those embeddings."""
  model = tv.make_model([17, 14, 16], seed=4, image_size=(96, 64))
  source = tv.save_checkpoint(model, tmp_path / 'big.pth')
  out = tmp_path / 'out'
  result = run_module(
    [
      '-m',
      'posebh_jax.convert',
      f'--from={source}',
      f'--to={out}',
      '--config=configs/demo.py:tiny',
      '--config.model.patch_padding=2',
      "--config.data.order=('coco','mpii')",
    ]
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == 'official ViTPose++ (mmpose): loaded backbone, head_coco, head_mpii', lines
  assert (
    'note: position embeddings resampled (bicubic) from a 12x8 to the 8x6 token grid of image_size (64, 48)' in lines
  )
  assert "note: left out the heads and experts of aic (not in config.data.order ['coco', 'mpii'])" in lines
  assert any(line.startswith('note: class-token slot') for line in lines)
  assert lines[-1] == f'wrote {out}/checkpoints/0 and {out}/config.json'
  assert not any(line.startswith('fresh') for line in lines)

  pos = model.backbone.pos_embed.detach()
  grid = pos[:, 1:].reshape(1, 12, 8, -1).permute(0, 3, 1, 2)
  resampled = (
    F.interpolate(grid, size=(8, 6), mode='bicubic', align_corners=False).permute(0, 2, 3, 1).reshape(1, 48, -1)
  )
  predictor = Predictor.load(str(out))
  np.testing.assert_allclose(
    np.asarray(predictor.variables['params']['backbone']['pos_embed']), (resampled + pos[:, :1]).numpy(), atol=1e-6
  )
  with torch.no_grad():
    model.backbone.pos_embed = torch.nn.Parameter(torch.cat([pos[:, :1], resampled], dim=1))
  images = tv.random_images(2, seed=4)
  for index, name in ((0, 'coco'), (2, 'mpii')):
    np.testing.assert_allclose(
      predictor.heatmaps(images, name), tv.torch_heatmaps(model, images, index), atol=ATOL, rtol=0, err_msg=name
    )


# ------------------------------------------------------------------------------------------------------- errors
@pytest.fixture(scope='module')
def target():
  """The tiny ViTPose++ model of datasets coco, aic, built once for the error tests."""
  return convert.build_target(tv.tiny_config(('coco', 'aic')))


@pytest.fixture(scope='module')
def arrays():
  """A ViTPose++ state dict of coco, aic that fits `target`."""
  return tv.state_dict_arrays(tv.make_model([17, 14], seed=5))


def _convert(arrays, target, source_datasets=None, allow_unused=False):
  conversion = mmpose.convert(arrays, {}, target, source_datasets)
  convert.merge(target, conversion, allow_unused, arrays.keys())
  return conversion


def _with_config(target, **model):
  config = target.config.copy_and_resolve_references()
  config.model.update(model)
  return dataclasses.replace(target, config=config)


def test_the_fitting_source_converts(arrays, target):
  assert mmpose.accepts(arrays, {})
  assert not mmpose.accepts({'blocks.0.attn.qkv.weight': np.zeros(1), 'patch_embed.proj.weight': np.zeros(1)}, {})
  conversion = _convert(arrays, target)
  assert all(name in conversion.used or name in conversion.ignored for name in arrays)
  assert all(name.endswith('num_batches_tracked') for name in conversion.ignored)


def test_wrong_depth(arrays, target):
  deeper = dict(arrays)
  deeper.update(
    {k.replace('blocks.1.', 'blocks.2.'): v for k, v in arrays.items() if k.startswith('backbone.blocks.1.')}
  )
  shallower = {k: v for k, v in arrays.items() if not k.startswith('backbone.blocks.1.')}
  for source in (deeper, shallower):
    with pytest.raises(UserError, match=r'config\.model\.depth is 2'):
      _convert(source, target)


def test_wrong_width(target):
  wider = tv.state_dict_arrays(tv.make_model([17, 14], width=48))
  with pytest.raises(UserError, match=r'backbone\.patch_embed\.proj\.weight has shape .* config\.model\.width') as e:
    _convert(wider, target)
  assert '\n' not in str(e.value)


def test_datasets_the_config_lacks(arrays, target):
  with pytest.raises(UserError, match=r"mpii,ap10k \(--source_datasets\), none of which is in config\.data\.order"):
    _convert(arrays, target, source_datasets=('mpii', 'ap10k'))
  with pytest.raises(UserError, match='the checkpoint has 2 heads/experts but the source dataset order names 1'):
    _convert(arrays, target, source_datasets=('coco',))


def test_wrong_keypoint_count(arrays, target):
  sixteen = dict(arrays)
  for suffix in ('weight', 'bias'):
    sixteen[f'keypoint_head.final_layer.{suffix}'] = arrays[f'keypoint_head.final_layer.{suffix}'][:16]
  with pytest.raises(UserError, match=r'config\.data\.datasets\.coco\.format \(its keypoint count\)'):
    _convert(sixteen, target)


def test_experts_against_use_experts(arrays, target):
  plain = tv.state_dict_arrays(tv.make_model([17], experts=False))
  with pytest.raises(UserError, match=r'no experts .* config\.model\.use_experts is True'):
    _convert(plain, target)
  with pytest.raises(UserError, match=r'2 experts per block, but config\.model\.use_experts is False'):
    _convert(arrays, _with_config(target, use_experts=False))
  with pytest.raises(UserError, match=r'config\.model\.expert_dim is 12: set config\.model\.expert_dim=8'):
    _convert(arrays, _with_config(target, expert_dim=12))
  with pytest.raises(UserError, match=r'config\.model\.patch_padding is 0: set config\.model\.patch_padding=2'):
    _convert(arrays, _with_config(target, patch_padding=0))


def test_unknown_leftovers_are_listed_and_allowed_on_request(arrays, target):
  extra = dict(arrays, **{'backbone.cls_token': np.zeros((1, 1, 32), np.float32), 'neck.fc.weight': np.zeros(3)})
  with pytest.raises(
    UserError, match=r'2 parameter\(s\) .* \(backbone\.cls_token, neck\.fc\.weight\); .*--allow_unused'
  ):
    _convert(extra, target)
  conversion = _convert(extra, target, allow_unused=True)
  assert 'left out (--allow_unused): backbone.cls_token, neck.fc.weight' in conversion.notes


def test_posebh_checkpoint_into_a_config_without_posebh(target):
  posebh = tv.state_dict_arrays(tv.make_model([17, 14], proto=PROTO))
  with pytest.raises(UserError, match=r'fit nothing in this config \(proto_head\.'):
    _convert(posebh, target)
  conversion = _convert(posebh, target, allow_unused=True)
  assert any('config.posebh.enabled is False' in note for note in conversion.notes)
  assert not any(path[1] == 'embedding' for path in conversion.arrays)


def test_missing_torch_message(tmp_path, monkeypatch):
  path = tmp_path / 'model.pth'
  path.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  with pytest.raises(UserError, match=r'reading model\.pth needs PyTorch: pip install torch') as e:
    convert.read_source(os.fspath(path))
  assert '\n' not in str(e.value)
