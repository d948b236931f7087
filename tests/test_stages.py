"""Phase planning for the staged PoseBH schedule."""

import pytest

from configs import demo
from posebh_jax import stages
from posebh_jax.errors import UserError


def _posebh_config(stage_epochs=(50.0, 90.0), thaw=90.0):
  config = demo.get_config()
  config.unlock()
  config.posebh.enabled = True
  config.posebh.stage_epochs = stage_epochs
  config.posebh.backbone_thaw_epoch = thaw
  return config


def test_plain_run_is_one_phase():
  phases = stages.plan_phases(demo.get_config(), steps_per_epoch=10, total_steps=100)
  assert len(phases) == 1 and phases[0].start_step == 0 and phases[0].end_step == 100
  assert not phases[0].posebh and phases[0].lr is None


def test_reference_schedule_has_three_stages():
  phases = stages.plan_phases(_posebh_config(), steps_per_epoch=10, total_steps=1000)
  assert [(p.start_step, p.end_step, p.stage) for p in phases] == [(0, 500, 0), (500, 900, 1), (900, 1000, 2)]
  first, second, third = phases
  assert first.update_prototypes and not first.css and not first.cps
  assert '^backbone/' in first.frozen and '^head_' in first.frozen
  assert not second.update_prototypes and second.css and second.cps
  assert '^backbone/' in second.frozen and '^head_' not in second.frozen
  assert third.frozen == () and [p.lr for p in phases] == [1e-3, 1e-4, 1e-5]


def test_backbone_thaw_inside_stage_two_splits_it():
  phases = stages.plan_phases(_posebh_config(thaw=50.0), steps_per_epoch=10, total_steps=1000)
  assert [(p.start_step, p.stage) for p in phases] == [(0, 0), (500, 1), (900, 2)]
  assert '^backbone/' not in phases[1].frozen
  phases = stages.plan_phases(_posebh_config(thaw=70.0), steps_per_epoch=10, total_steps=1000)
  assert [(p.start_step, p.stage) for p in phases] == [(0, 0), (500, 1), (700, 1), (900, 2)]
  assert '^backbone/' in phases[1].frozen and '^backbone/' not in phases[2].frozen


def test_phase_lookup_and_state_phase():
  phases = stages.plan_phases(_posebh_config(), steps_per_epoch=10, total_steps=1000)
  assert stages.phase_at(phases, 499).index == 0 and stages.phase_at(phases, 500).index == 1
  # A state saved after 500 steps still carries stage 1's optimizer state.
  assert stages.phase_of_state(phases, 500).index == 0 and stages.phase_of_state(phases, 501).index == 1


def test_bad_stage_epochs_are_user_errors():
  with pytest.raises(UserError, match='stage_epochs'):
    stages.plan_phases(_posebh_config(stage_epochs=(90.0, 50.0)), steps_per_epoch=10, total_steps=1000)
