"""Method modes of the experiment configs: `method=posebh` / `method=transfer` of b16 and h16, and the demo's
`transfer`; the expected numbers are docs/METHOD.md §2's, written out here."""

import pytest

from configs import b16, common, demo, h16
from posebh_jax import stages
from posebh_jax.errors import UserError

TRAIN = ('coco', 'aic', 'mpii', 'ap10k', 'apt36k', 'coco_wholebody')


def _assert_locked(config):
  with pytest.raises(AttributeError):
    config.not_a_key = 1
  with pytest.raises(AttributeError):
    config.posebh.not_a_key = 1


def _assert_posebh_values(config):
  p = config.posebh
  assert p.enabled
  assert (p.prototypes_per_keypoint, p.embed_dim, p.embed_channels, p.embed_hidden) == (3, 64, 256, 64)
  assert (p.kappa, p.sinkhorn_iterations, p.momentum) == (0.05, 3, 0.999)
  assert dict(p.weights) == {'phm': 3.33e-6, 'ppc': 1.25e-7, 'ppd': 1.25e-8, 'cps': 0.01, 'css': 0.001}
  assert (p.css_min_peak, p.css_max_distance) == (0.25, 2.1)
  assert tuple(p.stage_epochs) == (50.0, 90.0) and tuple(p.stage_lrs) == (1e-3, 1e-4, 1e-5)
  assert p.backbone_thaw_epoch == 90.0
  assert config.num_epochs == 100 and config.total_steps == -1
  o = config.optim
  assert (o.name, o.weight_decay, o.grad_clip, o.warmup_steps) == ('adamw', 0.1, 1.0, 500)


@pytest.mark.parametrize('module, variant, depth, layer_decay', [(b16, 'B/16', 12, 0.75), (h16, 'H/16', 32, 0.8)])
def test_posebh_mode_has_method_values(module, variant, depth, layer_decay):
  config = module.get_config('method=posebh')
  _assert_locked(config)
  _assert_posebh_values(config)
  assert config.model.variant == variant and config.model.depth == depth
  assert config.optim.layer_decay == layer_decay
  assert config.data.sources == 'real' and tuple(config.data.order) == TRAIN
  assert not config.transfer.enabled
  # Three stages at epochs 0/50/90 of 100, the backbone thawed with stage 3, heads frozen in stage 1.
  phases = stages.plan_phases(config, steps_per_epoch=10, total_steps=1000)
  assert [(p.start_step, p.end_step, p.lr) for p in phases] == [(0, 500, 1e-3), (500, 900, 1e-4), (900, 1000, 1e-5)]
  assert '^backbone/' in phases[1].frozen and phases[2].frozen == ()


def test_default_method_is_vitpose():
  config = b16.get_config('')
  assert not config.posebh.enabled and not config.transfer.enabled and config.num_epochs == 210
  assert b16.get_config('method=vitpose').to_dict() == config.to_dict()


def test_posebh_mode_combines_with_runlocal():
  config = b16.get_config('runlocal,method=posebh')
  _assert_locked(config)
  assert config.data.sources == 'synthetic' and config.total_steps == 6 and config.posebh.enabled
  assert config.model.variant == 'B/16' and tuple(config.posebh.stage_lrs) == (1e-3, 1e-4, 1e-5)
  # runlocal's 72 examples / batch 6 = 12 steps per epoch: all three stages within the 6 steps.
  phases = stages.plan_phases(config, steps_per_epoch=12, total_steps=6)
  assert [(p.start_step, p.stage) for p in phases] == [(0, 0), (2, 1), (4, 2)]
  assert h16.get_config('method=posebh,runlocal').model.variant == 'H/16'


def test_bad_method_argument():
  with pytest.raises(ValueError, match='method'):
    b16.get_config('method=posebhh')
  with pytest.raises(ValueError, match='unknown config argument'):
    b16.get_config('methods=posebh')


@pytest.mark.parametrize(
  'target, tfds_name, epochs, lr, proto_epochs',
  [('smpl24', 'pw3d', 30, 1e-4, 15.0), ('interhand', 'interhand26m', 60, 5e-4, 30.0)],
)
def test_transfer_mode_has_method_values(target, tfds_name, epochs, lr, proto_epochs):
  config = b16.get_config(f'method=transfer,target={target}')
  _assert_locked(config)
  assert tuple(config.data.order) == TRAIN + (target,)
  entry = config.data.datasets[target]
  assert (entry.tfds_name, entry.format, entry.train_split) == (tfds_name, target, 'train')
  assert entry.half_body == (target != 'interhand')
  assert config.posebh.enabled and config.transfer.enabled and tuple(config.transfer.new_datasets) == (target,)
  assert (config.num_epochs, config.optim.lr, config.transfer.prototype_epochs) == (epochs, lr, proto_epochs)
  assert tuple(config.eval_datasets) == (target,)
  # The new dataset dominates the batch; the old ones are kept with small weights.
  assert all(config.data.datasets[n].weight < entry.weight for n in TRAIN)
  phases = stages.plan_phases(config, steps_per_epoch=10, total_steps=epochs * 10)
  assert [(p.start_step, p.end_step, p.update_prototypes) for p in phases] == [
    (0, int(proto_epochs * 10), True),
    (int(proto_epochs * 10), epochs * 10, False),
  ]
  assert all(
    '^embedding/' in p.frozen
    and p.embedding_frozen
    and p.prototype_datasets == (target,)
    and p.lr is None
    and not p.css
    and not p.cps
    for p in phases
  )


def test_synthetic_transfer_is_smpl24_only():
  config = b16.get_config('runlocal,method=transfer')
  assert config.data.datasets.smpl24.keypoints_from == 'joints3d' and config.batch_size == 7
  with pytest.raises(ValueError, match='interhand'):
    b16.get_config('runlocal,method=transfer,target=interhand')


def test_demo_transfer_config():
  config = demo.get_config('tiny,transfer')
  _assert_locked(config)
  tiny_posebh = demo.get_config('tiny,posebh')
  # The transfer run must restore the tiny PoseBH run: same model and embedding sizes.
  assert config.model.to_dict() == tiny_posebh.model.to_dict()
  for key in ('embed_dim', 'embed_channels', 'embed_hidden', 'prototypes_per_keypoint'):
    assert config.posebh[key] == tiny_posebh.posebh[key]
  assert tuple(config.data.order) == TRAIN + ('smpl24',)
  assert config.data.datasets.smpl24.keypoints_from == 'joints3d'
  assert tuple(config.transfer.init_like) == (('smpl24', 'coco'),)
  phases = stages.plan_phases(config, steps_per_epoch=7, total_steps=7)
  assert [(p.start_step, p.end_step, p.update_prototypes) for p in phases] == [(0, 2, True), (2, 7, False)]


def test_transfer_needs_posebh_and_known_datasets():
  config = demo.get_config('tiny,transfer')
  config.unlock()
  config.transfer.new_datasets = ('smpl42',)
  with pytest.raises(UserError, match='new_datasets'):
    stages.plan_phases(config, 7, 7)
  config.transfer.new_datasets = ('smpl24',)
  config.posebh.enabled = False
  with pytest.raises(UserError, match='posebh'):
    stages.plan_phases(config, 7, 7)


# --- task=3d / task=joint (docs/METHOD.md §3) -----------------------------------------------------------------------

HUMAN_2D = ('coco', 'aic', 'mpii', 'coco_wholebody')


def _3d_datasets():
  from posebh_jax.skeletons import registry3d

  return registry3d.DATASETS_3D


@pytest.mark.parametrize('task', ['3d', 'joint'])
def test_task3d_configs_have_method_values(task):
  config = b16.get_config(f'task={task}')
  _assert_locked(config)
  datasets3d = _3d_datasets()
  names_2d = HUMAN_2D if task == '3d' else TRAIN
  assert tuple(config.data.order) == tuple(datasets3d) + names_2d
  for name, dataset in datasets3d.items():
    entry = config.data.datasets[name]
    assert (entry.task, entry.format, entry.weight) == ('metrabs3d', dataset.format, dataset.per_batch)
  protocols = {n: config.data.datasets[n].protocol for n in datasets3d if config.data.datasets[n].protocol}
  assert protocols == {'h36m': 'h36m', 'mpi_inf_3dhp': '3dhp'}
  kinds = {n: config.data.datasets[n].task for n in names_2d}
  if task == '3d':
    assert kinds == dict.fromkeys(HUMAN_2D, 'metrabs2d')
    assert all(config.data.datasets[n].weight == 8 for n in HUMAN_2D)
    assert tuple(config.eval_datasets) == ('h36m', 'mpi_inf_3dhp')
  else:
    assert kinds == {n: 'heatmap_metrabs' if n in HUMAN_2D else 'heatmap' for n in TRAIN}
    assert tuple(config.eval_datasets) == TRAIN + ('h36m', 'mpi_inf_3dhp')
  assert sum(config.data.datasets[n].weight for n in names_2d) == 32
  assert (config.batch_size, config.total_steps, config.data.image_size, config.data.heatmap_size) == (
    128,
    400_000,
    (256, 256),
    (64, 64),
  )
  assert (config.optim.name, config.optim.lr, config.optim.schedule) == ('adamw', 2.121e-4, 'metrabs')
  assert config.metrabs.to_dict() == common.metrabs_config().to_dict()
  assert config.data.missing == 'error'


@pytest.mark.parametrize('task', ['3d', 'joint'])
@pytest.mark.parametrize('groups', [1, 8])
def test_task3d_composition_is_the_per_batch_counts_on_every_shard(task, groups):
  """Weights = per-batch counts and batch 128·G: each dataset gets count·G examples, count in every shard."""
  from data_pipeline import pipeline

  config = b16.get_config(f'task={task}')
  counts = pipeline.composition(config.data, 128 * groups, groups)
  assert counts == {n: int(config.data.datasets[n].weight) * groups for n in config.data.order}
  assert sum(counts[n] for n in _3d_datasets()) == 96 * groups


def test_task3d_sources_are_what_the_builders_write():
  from data_pipeline import builders
  from data_pipeline.builders import generic3d, h36m, mpi_inf_3dhp

  config = b16.get_config('task=3d')
  own = {'h36m': h36m.H36m, 'mpi_inf_3dhp': mpi_inf_3dhp.MpiInf3dhp}
  for name in _3d_datasets():
    entry = config.data.datasets[name]
    assert builders.entry_for_tfds_name(entry.tfds_name) is not None
    if name in own:
      assert entry.tfds_name == own[name].name and own[name].FORMAT == entry.format
      assert {entry.train_split, entry.eval_split} == set(own[name].LAYOUT)
    elif name == 'panoptic':  # its splits come from the sequence directories: train and validation
      assert (entry.tfds_name, entry.train_split, entry.eval_split) == ('panoptic', 'train', 'validation')
    else:
      assert entry.tfds_name == f'generic3d/{name}' and generic3d.CONFIG_FORMATS[name] == entry.format
      assert {entry.train_split, entry.eval_split} <= set(generic3d.Generic3D.LAYOUT)


def test_task_default_is_2d_and_3d_refuses_posebh():
  assert b16.get_config('task=2d').to_dict() == b16.get_config('').to_dict()
  for method in ('posebh', 'transfer'):
    with pytest.raises(ValueError, match=f'^task=3d does not combine with method={method}; drop one of them$'):
      b16.get_config(f'task=3d,method={method}')
  with pytest.raises(ValueError, match='task=joint does not combine'):
    b16.get_config('method=posebh,task=joint')
  with pytest.raises(ValueError, match="unknown task '4d'"):
    b16.get_config('task=4d')


@pytest.mark.parametrize('task', ['3d', 'joint'])
def test_task3d_runlocal_builds_on_synthetic_data(task):
  config = b16.get_config(f'runlocal,task={task}')
  _assert_locked(config)
  assert config.data.sources == 'synthetic' and config.data.data_dir == 'data/tfds_runlocal'
  synthetic3d = tuple(common.SYNTHETIC_3D_FORMATS)
  assert tuple(config.data.order[:3]) == synthetic3d
  assert config.batch_size == len(config.data.order) and config.total_steps == 5
  assert config.data.datasets.syn_smpl.tfds_name == 'posebh_synthetic3d'
  assert config.data.datasets.coco.tfds_name == 'posebh_synthetic'
  assert tuple(config.eval_datasets) == (synthetic3d if task == '3d' else TRAIN + synthetic3d)
  real = b16.get_config(f'runlocal,data=real,task={task}')
  assert real.batch_size == len(real.data.order) == 28 + (4 if task == '3d' else 6)


def test_metrabs_schedule_closed_form():
  """lr·(1/3)^(t/0.92T) before 0.92T, then lr/30·0.3^((t-0.92T)/0.08T); the warmup factor multiplies both."""
  from posebh_jax import optim

  lr, total = 2.121e-4, 1000
  schedule = optim.learning_rate_schedule(lr, 10, 0.0, [], 0.1, kind='metrabs', total_steps=total)
  assert float(schedule(5)) == pytest.approx(lr * 0.5 * (1 / 3) ** (5 / 920), rel=1e-5)
  for step in (10, 460, 919):
    assert float(schedule(step)) == pytest.approx(lr * (1 / 3) ** (step / 920), rel=1e-5)
  for step in (920, 960, 1000):
    assert float(schedule(step)) == pytest.approx(lr / 30 * 0.3 ** ((step - 920) / 80), rel=1e-5)
  assert float(schedule(919)) > float(schedule(920)) * 9  # the drop: 1/3 → 1/30
