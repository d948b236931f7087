"""The distillation task end to end: frozen teachers inside the jit'd step (on 1 and 8 devices) against teachers run
apart and a NumPy loss, a student run with a teacher of another input size, evaluation and prediction in the
unified skeleton, and the one-line errors."""

import json

import numpy as np
import pytest

from configs import demo
from posebh_jax import inference
from posebh_jax.errors import UserError
from posebh_jax.tasks import teachers as teachers_lib
from tests.conftest import run_module, train, write_random_weights


def _write_teacher(workdir, arg: str, seed: int, image_size=None, **model) -> str:
  """A teacher run in `workdir`: config `configs/demo.py:<arg>` (model keys overridden by `model`; `image_size`:
  another input size, heatmaps a quarter of it) with random weights (every parameter N(0, 0.3²), so that its
  heatmaps have structure), written by `write_weights` (`conftest.write_random_weights`)."""
  config = demo.get_config(arg)
  config.model.update(model)
  if image_size is not None:
    config.data.image_size, config.data.heatmap_size = image_size, (image_size[0] // 2, image_size[1] // 2)
  return write_random_weights(workdir, config, seed, 0.3)


@pytest.fixture(scope='module')
def teacher_dirs(tmp_path_factory):
  """A COCO teacher of another architecture than the student (plain ViT, width 48, depth 1) and an MPII teacher
  that is a whole six-dataset MoE model (its MPII expert and head are used), both at the student's input size;
  and a COCO teacher at twice the input size."""
  root = tmp_path_factory.mktemp('teachers')
  return {
    'coco': _write_teacher(root / 'coco', 'tiny,teacher=coco', 1, width=48, depth=1, num_heads=2),
    'mpii': _write_teacher(root / 'mpii', 'tiny', 2),
    'coco_large': _write_teacher(root / 'coco_large', 'tiny,teacher=coco', 3, image_size=(128, 96)),
  }


_STEP_SCRIPT = """
import json, sys
import jax, numpy as np
from configs import demo
from data_pipeline import pipeline
from posebh_jax import inference, sharding as sharding_lib, trainer as trainer_lib

coco_dir, mpii_dir = sys.argv[1:3]
config = demo.get_config('tiny,distill')
config.distill.teachers.coco, config.distill.teachers.mpii = coco_dir, mpii_dir
rng = np.random.default_rng(0)
batch = {}
for name in ('coco', 'mpii'):
  weights = (rng.random((8, 21)) > 0.3).astype(np.float32)
  weights[:, 17:] = 0 if name == 'coco' else weights[:, 17:]
  weights[:, :5] = 0 if name == 'mpii' else weights[:, :5]
  batch[name] = {'image': rng.integers(0, 256, (8, 64, 48, 3), dtype=np.uint8),
                 'heatmaps': rng.random((8, 32, 24, 21)).astype(np.float32), 'target_weights': weights}
out = {}
for label, devices, shape in (('one', jax.devices()[:1], (1, 1)), ('eight', jax.devices(), (4, 2))):
  config.mesh.data, config.mesh.fsdp = shape
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  counts = pipeline.composition(config.data, config.batch_size, sharding_lib.num_batch_groups(mesh))
  trainer = trainer_lib.Trainer(config, mesh, steps_per_epoch=5, counts=counts)
  state = trainer.init_state(0)
  if label == 'one':  # the student's train-mode heatmaps before the step (the step donates the state)
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    student, _ = trainer.model.apply(variables, {n: b['image'] for n, b in batch.items()}, train=True,
                                     rngs={'dropout': jax.random.key(0)}, mutable=['batch_stats'])
    out['student'] = {n: np.asarray(v).tolist() for n, v in student.items()}
  step = trainer.compile_train_step(trainer.batch_structure())
  _, metrics = step(state, sharding_lib.global_batch(batch, mesh))
  out[label] = {k: float(v) for k, v in metrics.items()}
teachers = {}
for fmt, path in (('coco', coco_dir), ('mpii', mpii_dir)):
  predictor = inference.Predictor.load(path)
  dataset = [n for n in predictor.dataset_names if predictor.config.data.datasets[n].format == fmt][0]
  teachers[fmt] = {n: predictor.heatmaps(b['image'], dataset).tolist() for n, b in batch.items()}
out['teachers'] = teachers
out['batch'] = {n: {k: np.asarray(v).tolist() for k, v in b.items() if k != 'image'} for n, b in batch.items()}
print('RESULT' + json.dumps(out))
"""


def _kl_reference(student, teacher, temperature):
  """mean over examples and channels of KL(softmax(teacher/T) ‖ softmax(student/T)) over each channel's cells."""
  n, h, w, k = student.shape

  def log_softmax(x):
    x = x.reshape(n, h * w, k).astype(np.float64) / temperature
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

  log_s, log_t = log_softmax(student), log_softmax(teacher)
  return float(np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=1)))


def test_teachers_in_the_step_match_teachers_run_apart_on_one_and_eight_devices(teacher_dirs, tmp_path):
  """One distillation step's loss terms on a fixed batch equal a NumPy computation from the teachers' heatmaps as
  `Predictor` computes them (the whole multi-dataset MPII teacher with its expert, not the split model the step
  uses) and the student's heatmaps; the 8-device step (data 4 × FSDP 2) equals the 1-device one."""
  # Compiled fast (`conftest.FAST_COMPILE`): one step on each mesh, whose time is mostly compilation.
  result = run_module(['-c', _STEP_SCRIPT, teacher_dirs['coco'], teacher_dirs['mpii']], devices=8, fast_compile=True)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  out = json.loads(result.stdout.split('RESULT', 1)[1])
  config = demo.get_config('tiny,distill')
  coco_ids = np.arange(17)
  mpii_ids = np.asarray([16, 14, 12, 11, 13, 15, 17, 18, 19, 20, 10, 8, 6, 5, 7, 9])  # METHOD.md §4, MPII 0..15
  for name in ('coco', 'mpii'):
    student = np.asarray(out['student'][name])
    target = np.asarray(out['batch'][name]['heatmaps'])
    weights = np.asarray(out['batch'][name]['target_weights'])
    gt = np.mean((student * weights[:, None, None] - target * weights[:, None, None]) ** 2)
    kd_coco = _kl_reference(student[..., coco_ids], np.asarray(out['teachers']['coco'][name]), 0.1)
    kd_mpii = _kl_reference(student[..., mpii_ids], np.asarray(out['teachers']['mpii'][name]), 0.1)
    metrics = out['one']
    np.testing.assert_allclose(metrics[f'train/loss_{name}/gt'], gt, rtol=1e-4)
    np.testing.assert_allclose(metrics[f'train/loss_{name}/kd_coco'], kd_coco, rtol=2e-4)
    np.testing.assert_allclose(metrics[f'train/loss_{name}/kd_mpii'], kd_mpii, rtol=2e-4)
    assert kd_coco > 1e-3 and kd_mpii > 1e-3  # the teachers' heatmaps have structure: the check can fail
    np.testing.assert_allclose(metrics[f'train/loss_{name}/kd_scale_mpii'], 1.0)  # step 0: 1 − 0 / max
    weights3 = config.distill.gt_weight, config.distill.teacher_weights.coco, config.distill.teacher_weights.mpii
    expected = weights3[0] * gt + weights3[1] * kd_coco + weights3[2] * kd_mpii
    np.testing.assert_allclose(metrics[f'train/loss_{name}'], expected, rtol=2e-4)
  for key, value in out['one'].items():
    np.testing.assert_allclose(out['eight'][key], value, rtol=2e-4, atol=1e-7, err_msg=key)


def test_student_run_with_a_larger_teacher_evaluates_and_predicts_the_unified_skeleton(
  teacher_dirs, data_dir, tmp_path
):
  """A 3-step student run whose COCO teacher has twice the input size trains (every term finite), evaluates COCO,
  MPII and Halpe with the student's accuracy on the keypoints each format lacks, prints docs/METHOD.md §4's row in
  `--mode=eval`, and predicts the 21-point skeleton, whose first 17 points are its COCO prediction."""
  workdir = tmp_path / 'student'
  overrides = [
    '--config.total_steps=3',
    '--config.eval_every_steps=3',
    f'--config.distill.teachers.mpii={teacher_dirs["mpii"]}',
  ]
  overrides.append(f'--config.distill.teachers.coco={teacher_dirs["coco_large"]}')
  # Compiled fast (`conftest.FAST_COMPILE`): 3 steps and two evaluations, whose time is mostly compilation.
  result = train(workdir, data_dir, *overrides, config='configs/demo.py:tiny,distill', fast_compile=True)
  assert 'head coco, input 128x96' in result.stdout
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if 'train/loss' in r]
  assert len(train_rows) == 3 and all(np.isfinite(v) for r in train_rows for v in r.values())
  assert train_rows[-1]['train/loss_coco/kd_coco'] > 0
  evals = [r for r in rows if 'eval/coco/AP' in r][-1]
  for key in (
    'eval/coco/AP',
    'eval/mpii/PCKh',
    'eval/halpe/AP',
    'eval/coco/PCKh_unlabelled',
    'eval/mpii/PCKh_unlabelled',
  ):
    assert key in evals, key
  assert evals['eval/halpe/keypoints scored'] == 20
  result = run_module(
    ['-m', 'posebh_jax.main', '--config=configs/demo.py:tiny,distill', f'--workdir={workdir}', '--mode=eval']
    + [f'--config.data.data_dir={data_dir}']
    + overrides,
    fast_compile=True,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| model | COCO AP | MPII PCKh | average accuracy | Halpe AP |' in result.stdout
  predictor = inference.Predictor.load(str(workdir))
  image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
  boxes = np.asarray([[10.0, 8.0, 60.0, 100.0], [30.0, 20.0, 40.0, 70.0]])
  people = predictor.predict(image, boxes, formats='unified21,coco,mpii')
  assert people['unified21']['keypoints'].shape == (2, 21, 2)
  np.testing.assert_array_equal(people['coco']['keypoints'], people['unified21']['keypoints'][:, :17])
  np.testing.assert_array_equal(people['mpii']['keypoints'][:, 9], people['unified21']['keypoints'][:, 20])


def test_teacher_errors_are_one_line(teacher_dirs, tmp_path):
  """A teacher path without a run, and a run without a dataset of the teacher's format, are refused in one line."""
  config = demo.get_config('tiny,distill')
  with pytest.raises(UserError, match='holds no trained run; train the coco teacher first') as info:
    teachers_lib.load_teacher('coco', str(tmp_path / 'nothing'), config, 1)
  assert '\n' not in str(info.value)
  with pytest.raises(UserError, match='has no heatmap dataset of format mpii'):
    teachers_lib.load_teacher('mpii', teacher_dirs['coco'], config, 1)
  config.distill.teachers.coco = ''
  with pytest.raises(UserError, match='config.distill.teachers.coco is empty'):
    teachers_lib.load_teacher('coco', '', config, 1)
