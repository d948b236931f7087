"""Inference for users: `Predictor.predict` (top-down crops, flip test, decoding, back to the image), the `predict`
command on the real COCO samples (results that `python -m posebh_jax.evaluate` scores, pictures, unreadable files),
the `export` command (the plain single-dataset model as a checkpoint and as a jax.export function, equal to the
multi-dataset model), one-line errors, and the inference benchmark at tiny sizes.

The model is the demo's tiny one with random O(1) weights (no training: the plumbing and the geometry are tested),
with four heads: coco (UDP), aic and coco_wholebody (MSRA), and a second COCO-format dataset `coco_again`."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, require_reference, run_module
from configs import demo
from data_pipeline.transforms import TopDownEvalTransform, decode_jpeg
from posebh_jax import export, inference, predict
from posebh_jax import tasks as tasks_lib
from posebh_jax.errors import UserError
from posebh_jax.models import pose_model
from realdata_samples import REALDATA, needs_realdata

COCO = os.path.join(REALDATA, 'coco')
BATCH = 8  # one compiled shape per head in every test


def _config():
  config = demo.get_config('tiny')
  datasets = {name: config.data.datasets[name].to_dict() for name in ('coco', 'aic', 'coco_wholebody')}
  datasets['coco_again'] = dict(datasets['coco'], codec='msra')
  config.data.order = tuple(datasets)
  config.data.datasets = datasets
  return config


def _random_variables(config, seed=0):
  """O(1) random parameters (BatchNorm variances in [0.5, 2]) of the config's model, without compiling its init."""
  tasks = tasks_lib.build_tasks(config)
  names = tuple(config.data.order)
  model = pose_model.build_model(config.model, names, head_specs=[tasks[n].head_spec() for n in names])
  image_h, image_w = config.data.image_size
  dummy = {n: jnp.zeros((1, image_h, image_w, 3), jnp.uint8) for n in names}
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), dummy, method=pose_model.PoseModel.init_all)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
    return (0.2 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A weights-only checkpoint of the four-head tiny model with random weights."""
  path = str(tmp_path_factory.mktemp('inference_run'))
  config = _config()
  inference.write_weights(path, config, _random_variables(config), step=7)
  return path


@pytest.fixture(scope='module')
def predictor(workdir):
  return inference.Predictor.load(workdir)


def _crops(config, count=3, seed=1):
  image_h, image_w = config.data.image_size
  return np.random.default_rng(seed).integers(0, 256, (count, image_h, image_w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------- export
def test_export_gives_the_multi_dataset_heatmaps_as_checkpoint_and_as_jax_function(workdir, predictor, tmp_path):
  require_reference('flatbuffers', 'pip install flatbuffers (jax.export serialisation; requirements.txt)')
  crops = _crops(predictor.config, BATCH)
  expected = predictor.heatmaps(crops, 'aic')
  assert np.abs(expected).max() > 0.1  # random O(1) weights: not a trivially small output

  out = tmp_path / 'aic'
  assert export.main([f'--workdir={workdir}', '--dataset=aic', f'--out={out}', '--platforms=cpu']) == 0
  single = inference.Predictor.load(str(out))
  assert single.dataset_names == ('aic',) and not single.model.use_experts and single.step == 7
  assert set(single.variables['params']) == {'backbone', 'head_aic'}
  np.testing.assert_allclose(single.heatmaps(crops, 'aic'), expected, rtol=1e-5, atol=1e-5)

  with open(out / export.EXPORT_FILE, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  np.testing.assert_allclose(np.asarray(exported.call(crops)), expected, rtol=1e-5, atol=1e-5)
  # The batch is symbolic: another batch size runs the same function.
  np.testing.assert_allclose(np.asarray(exported.call(crops[:3])), expected[:3], rtol=1e-5, atol=1e-5)
  meta = json.loads((out / 'model.json').read_text())
  assert meta['format'] == 'aic' and meta['num_keypoints'] == 14 and meta['codec'] == 'msra'
  assert meta['image_size'] == list(predictor.config.data.image_size) and not meta['flip_test_included']

  # The loader written beside it needs only jax and numpy.
  result = run_module([str(out / 'load_exported.py'), '3'])
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split()[:1] == ['aic'] and '(3, 32, 24, 14)' in result.stdout

  # A second export into the same directory needs --overwrite.
  assert export.main([f'--workdir={workdir}', '--dataset=aic', f'--out={out}', '--platforms=cpu']) == 2


def test_exported_flip_test_equals_the_predictor_flip_test(workdir, predictor, tmp_path):
  require_reference('flatbuffers', 'pip install flatbuffers (jax.export serialisation; requirements.txt)')
  crops = _crops(predictor.config, BATCH, seed=2)
  expected = np.asarray(predictor.predict_function('coco', True)(predictor.variables, crops))
  export.export(workdir, 'coco', str(tmp_path / 'coco'), flip=True, platforms=('cpu', 'cuda'))
  with open(tmp_path / 'coco' / export.EXPORT_FILE, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  assert set(exported.platforms) == {'cpu', 'cuda'}
  np.testing.assert_allclose(np.asarray(exported.call(crops)), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- predict()
class _KnownPeaks(inference.Predictor):
  """A predictor whose heads output, for every crop, a unit Gaussian (sigma 1.5 heatmap px) for keypoint k at the
  integer heatmap pixel `peaks(dataset)[k]`: both codecs decode such a heatmap to exactly that pixel."""

  def predict_function(self, dataset, flip):
    self._check_dataset(dataset)
    heat_h, heat_w = self.config.data.heatmap_size
    peaks = self.peaks(dataset)
    ys, xs = np.mgrid[0:heat_h, 0:heat_w]
    maps = np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2)) for x, y in peaks], -1)
    return lambda variables, images: np.broadcast_to(maps, (images.shape[0],) + maps.shape).astype(np.float32)

  def peaks(self, dataset):
    heat_h, heat_w = self.config.data.heatmap_size
    k = self.tasks[dataset].num_keypoints
    # At least 6 px from the border: DARK-UDP's 11x11 blur sees a symmetric neighbourhood there.
    return np.stack([6 + np.arange(k) % (heat_w - 12), 6 + (np.arange(k) * 7) % (heat_h - 12)], -1)


def test_predict_maps_known_heatmap_peaks_back_to_the_image_in_closed_form(predictor):
  config = predictor.config
  stub = _KnownPeaks(config, predictor.variables)
  (heat_h, heat_w), (image_h, image_w) = config.data.heatmap_size, config.data.image_size
  padding = config.data.bbox_padding
  image = np.zeros((240, 320, 3), np.uint8)
  # The first box has the input's aspect ratio (w/h = 48/64); the second is too wide and grows in height.
  boxes = np.array([[30.0, 40.0, 60.0, 80.0, 0.9], [10.0, 20.0, 100.0, 50.0, 0.4]])
  centers = np.array([[60.0, 80.0], [60.0, 45.0]])
  scales = np.array([[60.0, 80.0], [100.0, 100.0 * image_h / image_w]]) * padding
  out = stub.predict(image, boxes, formats=['coco', 'aic'], batch_size=BATCH)
  assert set(out) == {'coco', 'aic'}
  for fmt, udp in (('coco', True), ('aic', False)):
    peaks = stub.peaks(fmt).astype(np.float64)
    per_cell = scales / (np.array([heat_w, heat_h]) - (1.0 if udp else 0.0))  # UDP: scale / (w - 1); MSRA: / w
    expected = centers[:, None] - scales[:, None] / 2 + peaks[None] * per_cell[:, None]
    assert out[fmt]['keypoints'].shape == expected.shape and out[fmt]['keypoints'].dtype == np.float32
    np.testing.assert_allclose(out[fmt]['keypoints'], expected, atol=2e-3)
    np.testing.assert_allclose(out[fmt]['scores'], 1.0, atol=1e-6)
  # No boxes: empty arrays of the right shapes.
  empty = stub.predict(image, np.zeros((0, 4)), formats='coco_wholebody')
  assert empty['coco_wholebody']['keypoints'].shape == (0, 133, 2) and empty['coco_wholebody']['scores'].shape == (
    0,
    133,
  )


@needs_realdata
def test_predict_equals_the_evaluation_path_on_the_same_boxes(predictor):
  """The evaluation's crops (`TopDownEvalTransform` on the JPEG), the task's flip-test heatmaps and the codec's
  decoding give the keypoints `predict` gives."""
  config = predictor.config
  with open(os.path.join(COCO, '000000196141.jpg'), 'rb') as f:
    data = f.read()
  gt = json.load(open(os.path.join(COCO, 'test_coco.json')))
  boxes = np.asarray([a['bbox'] for a in gt['annotations'] if a['image_id'] == 196141], np.float64)
  assert len(boxes) >= 2
  out = predictor.predict(decode_jpeg(data), boxes, formats=['coco', 'coco_wholebody'], batch_size=BATCH)
  for fmt in ('coco', 'coco_wholebody'):
    task = predictor.tasks[fmt]
    transform = TopDownEvalTransform(config.data.image_size, config.data.bbox_padding, task.codec.use_udp)
    examples = [transform.map({'image': data, 'bbox': box, 'image_id': 196141}) for box in boxes]
    crops = np.stack([e['image'] for e in examples])
    center, scale = np.stack([e['center'] for e in examples]), np.stack([e['scale'] for e in examples])
    ours, our_center, our_scale = inference.crop_people(
      decode_jpeg(data), boxes, config.data.image_size, config.data.bbox_padding, task.codec.use_udp
    )
    np.testing.assert_array_equal(ours, crops)
    np.testing.assert_array_equal(our_center, center)
    np.testing.assert_array_equal(our_scale, scale)
    padded = np.concatenate([crops, np.zeros((BATCH - len(crops),) + crops.shape[1:], np.uint8)])
    heatmaps = np.asarray(predictor.predict_function(fmt, config.eval_flip)(predictor.variables, padded))
    coords, scores = task.codec.decode(heatmaps[: len(crops)].transpose(0, 3, 1, 2))
    expected = task.codec.to_image(coords, center, scale, task.heatmap_size_wh)
    np.testing.assert_allclose(out[fmt]['keypoints'], expected, atol=1e-3)
    np.testing.assert_allclose(out[fmt]['scores'], scores, atol=1e-6)


def test_predict_many_batches_across_images_in_order(predictor):
  """Crops of several images share batches; each image's result equals its own `predict`."""
  stub = _KnownPeaks(predictor.config, predictor.variables)
  rng = np.random.default_rng(3)
  items = [(f'image{i}', np.zeros((100 + 10 * i, 120, 3), np.uint8), rng.uniform(5, 60, (i % 3, 4))) for i in range(7)]
  results = list(stub.predict_many(items, formats=['coco', 'aic'], batch_size=3))
  assert [key for key, _ in results] == [key for key, _, _ in items]
  for (_, image, boxes), (_, result) in zip(items, results):
    alone = stub.predict(image, boxes, formats=['coco', 'aic'], batch_size=5)
    for fmt in ('coco', 'aic'):
      np.testing.assert_allclose(result[fmt]['keypoints'], alone[fmt]['keypoints'], atol=1e-4)


def test_formats_default_to_every_dataset_format_and_a_shared_format_goes_to_the_first(predictor):
  assert predictor.resolve_formats() == {'coco': 'coco', 'aic': 'aic', 'coco_wholebody': 'coco_wholebody'}
  assert predictor.resolve_formats('coco_wholebody, coco') == {'coco_wholebody': 'coco_wholebody', 'coco': 'coco'}


# ---------------------------------------------------------------------------------------------------- the command
@needs_realdata
def test_predict_command_on_coco_samples_gives_evaluable_results_pictures_and_lists_unreadable(
  workdir, tmp_path, capsys
):
  images = tmp_path / 'images'
  images.mkdir()
  for name in sorted(os.listdir(COCO)):
    if name.endswith('.jpg'):
      shutil.copy(os.path.join(COCO, name), images / name)
  (images / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a JPEG')
  out = tmp_path / 'out'
  status = predict.main(
    [
      f'--workdir={workdir}',
      f'--images={images}',
      f'--boxes={os.path.join(COCO, "test_coco_det_AP_H_56.json")}',
      f'--out={out}',
      f'--batch_size={BATCH}',
    ]
  )
  captured = capsys.readouterr()
  assert status == 0, captured.err
  assert 'img/s' in captured.err and '\r' in captured.err  # the progress line
  assert '1 unreadable' in captured.out and f'unreadable (1): {images / "broken.jpg"}' in captured.out
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['predicted'] == 4 and summary['unreadable'] == [str(images / 'broken.jpg')]
  assert summary['people'] == len(json.load(open(os.path.join(COCO, 'test_coco_det_AP_H_56.json'))))
  assert summary['formats'] == {'coco': 'coco', 'aic': 'aic', 'coco_wholebody': 'coco_wholebody'}
  assert summary['image_ids'][str(images / '000000000785.jpg')] == 785
  assert sorted(p.name for p in out.glob('*.png')) == sorted(
    n.replace('.jpg', '.png') for n in os.listdir(COCO) if n.endswith('.jpg')
  )
  gt_ids = {im['id'] for im in json.load(open(os.path.join(COCO, 'test_coco.json')))['images']}
  coco_results = json.loads((out / 'coco_results.json').read_text())
  assert coco_results and {r['image_id'] for r in coco_results} <= gt_ids
  assert all(
    len(r['keypoints']) == 17 * 3 and set(r) == {'image_id', 'category_id', 'keypoints', 'score'} for r in coco_results
  )
  for fmt, gt in (('coco', 'test_coco.json'), ('coco_wholebody', 'test_coco_wholebody.json')):
    result = run_module(
      [
        '-m',
        'posebh_jax.evaluate',
        f'--dataset={fmt}',
        f'--gt={os.path.join(COCO, gt)}',
        f'--results={out / f"{fmt}_results.json"}',
      ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert 'AP' in metrics and 0.0 <= metrics['AP'] <= 1.0

  # Without --boxes the whole image is the one box; a non-numeric stem gets its position in the file list.
  shutil.copy(images / '000000040083.jpg', images / 'skier.jpg')
  whole = tmp_path / 'whole'
  args = [
    f'--workdir={workdir}',
    f'--images={images}/s*.jpg',
    f'--out={whole}',
    '--formats=coco',
    f'--batch_size={BATCH}',
  ]
  assert predict.main(args) == 0
  results = json.loads((whole / 'coco_results.json').read_text())
  assert [r['image_id'] for r in results] == [1] and (whole / 'skier.png').exists()


# ---------------------------------------------------------------------------------------------------- errors
def test_user_errors_are_one_line(workdir, predictor, tmp_path, capsys):
  config = predictor.config
  with pytest.raises(UserError, match="unknown dataset 'nope'"):
    predictor.heatmaps(_crops(config), 'nope')
  with pytest.raises(UserError, match=r'unknown format\(s\) mpii; this model predicts coco, aic, coco_wholebody'):
    predictor.predict(np.zeros((50, 50, 3), np.uint8), [[0, 0, 10, 10]], formats=['coco', 'mpii'])
  with pytest.raises(UserError, match=r'image must be uint8 \(H, W, 3\)'):
    predictor.predict(np.zeros((50, 50), np.uint8), [[0, 0, 10, 10]])
  with pytest.raises(UserError, match=r'image must be uint8'):
    predictor.predict(np.zeros((50, 50, 3), np.float32), [[0, 0, 10, 10]])
  with pytest.raises(UserError, match=r'boxes must be \(n, 4\)'):
    predictor.predict(np.zeros((50, 50, 3), np.uint8), [[0, 0, 10]])
  with pytest.raises(UserError, match=r'images must be uint8 \(N, 64, 48, 3\)'):
    predictor.heatmaps(np.zeros((2, 32, 32, 3), np.uint8), 'coco')
  with pytest.raises(UserError, match='no config.json'):
    inference.Predictor.load(str(tmp_path / 'missing'))
  with pytest.raises(UserError, match="unknown dataset 'nope'"):
    predictor.single_dataset('nope')

  def one_line_error(status):
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith('error: ') and '\n' not in err, err
    return err

  image = os.path.join(REPO, 'tests', 'missing.jpg')
  assert 'no config.json' in one_line_error(
    predict.main([f'--workdir={tmp_path / "missing"}', f'--images={tmp_path}', f'--out={tmp_path / "o"}'])
  )
  assert 'is not a file, a folder or a glob' in one_line_error(
    predict.main([f'--workdir={workdir}', f'--images={image}', f'--out={tmp_path / "o"}'])
  )
  picture = tmp_path / 'p.png'
  picture.write_bytes(b'')
  assert 'unknown format(s) nope' in one_line_error(
    predict.main([f'--workdir={workdir}', f'--images={picture}', f'--out={tmp_path / "o"}', '--formats=nope'])
  )
  assert "unknown dataset 'nope'" in one_line_error(
    export.main([f'--workdir={workdir}', '--dataset=nope', f'--out={tmp_path / "e"}'])
  )
  assert 'no config.json' in one_line_error(
    export.main([f'--workdir={tmp_path / "missing"}', '--dataset=coco', f'--out={tmp_path / "e"}'])
  )


# ---------------------------------------------------------------------------------------------------- benchmark
def test_inference_benchmark_runs_at_tiny_sizes(capsys):
  require_reference('torch')
  require_reference('transformers')
  from benchmarks import inference as benchmark

  summary = benchmark.main(['--tiny', '--batch=2', '--repeats=1', '--rounds=1', '--warmup=0'])
  assert summary['posebh_jax_img_s'] > 0 and summary['transformers_img_s'] > 0 and summary['ratio'] > 0
  # Both sides ran the same weights (transformers' converted by posebh_jax.convert).
  assert summary['max_heatmap_difference'] < 1e-4
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert json.loads(last) == summary
