"""Training phases: stretches of steps that share frozen groups, active losses and a learning-rate schedule.

A plain ViTPose++ run is one phase. PoseBH (docs/METHOD.md §2) is staged: the phase boundaries are the stage
boundaries and the backbone thaw point from `config.posebh`. A domain-transfer run (`config.transfer`) has two
phases: the new datasets' prototypes are momentum-updated in the first and frozen in the second. Every phase gets a fresh AdamW state (as the
reference runs each stage as a new run from the previous checkpoint) and its own compiled step; within a phase
nothing recompiles.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from posebh_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Phase:
  """Steps [start_step, end_step) of one phase.

  Attributes:
    index: position in the plan.
    stage: PoseBH stage (0, 1, 2), or -1 for a plain run.
    lr: the phase's base lr (warmup restarts at start_step), or None for the config's global schedule.
    frozen: parameter-path regexes that get no gradient and no optimizer state.
    posebh: whether prototype losses run at all.
    update_prototypes: momentum-update the prototypes this phase.
    css: cross-type self-supervision on.
    cps: cluster-prototype terms on.
    prototype_datasets: domain transfer: the prototype terms and update run only on these (new) datasets'
      samples against their own prototype rows; empty = every dataset (PoseBH stages).
    embedding_frozen: the embedding module gets no updates and its BatchNorm runs in inference mode.
    bn_inference: every head's BatchNorm runs in inference mode (running statistics, not updated): the last
      `config.bn_inference_last_steps` of a run (MeTRAbs's last 1000 updates, docs/METHOD.md §3).
  """

  index: int
  start_step: int
  end_step: int
  stage: int = -1
  lr: float | None = None
  frozen: tuple[str, ...] = ()
  posebh: bool = False
  update_prototypes: bool = False
  css: bool = False
  cps: bool = False
  prototype_datasets: tuple[str, ...] = ()
  embedding_frozen: bool = False
  bn_inference: bool = False

  def describe(self) -> str:
    if not self.posebh:
      note = ": the heads' BatchNorm in inference mode" if self.bn_inference else ''
      return f'steps {self.start_step}-{self.end_step}{note}'
    if self.prototype_datasets:
      return (
        f"transfer, steps {self.start_step}-{self.end_step}: frozen {', '.join(self.frozen)}, prototypes of "
        f"{', '.join(self.prototype_datasets)} {'momentum-updated' if self.update_prototypes else 'frozen'} "
        '(the others frozen), losses heads+PHM+PPC+PPD on the new datasets'
      )
    losses = ['heads', 'PHM', 'PPC', 'PPD'] + (['CSS'] if self.css else []) + (['CPS'] if self.cps else [])
    frozen = ', '.join(self.frozen) or 'nothing'
    return (
      f'stage {self.stage + 1}, steps {self.start_step}-{self.end_step}: lr {self.lr:g}, frozen {frozen}, '
      f"prototypes {'momentum-updated' if self.update_prototypes else 'frozen'}, losses {'+'.join(losses)}"
    )


def plan_phases(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> list[Phase]:
  """The run's phases, covering [0, total_steps). Raises UserError for inconsistent stage settings."""
  base_frozen = tuple(config.optim.frozen)
  if config.transfer.enabled:
    return plan_transfer(config, steps_per_epoch, total_steps)
  posebh = config.posebh
  bn_steps = int(config.get('bn_inference_last_steps', 0))
  if bn_steps < 0:
    raise UserError(f'config.bn_inference_last_steps must be >= 0 (got {bn_steps})')
  if bn_steps and posebh.enabled:
    raise UserError('config.bn_inference_last_steps works in runs without PoseBH stages; set it to 0')
  if not posebh.enabled:
    cut = max(0, total_steps - bn_steps) if bn_steps else total_steps
    phases = [Phase(0, 0, cut, frozen=base_frozen)] if cut > 0 else []
    if cut < total_steps:
      phases.append(Phase(len(phases), cut, total_steps, frozen=base_frozen, bn_inference=True))
    return phases
  stage_epochs = tuple(float(e) for e in posebh.stage_epochs)
  if len(stage_epochs) != 2 or not 0 <= stage_epochs[0] <= stage_epochs[1]:
    raise UserError(
      f'config.posebh.stage_epochs must be two increasing epochs (stage 2 and 3 starts), got '
      f'{tuple(posebh.stage_epochs)}'
    )
  if len(posebh.stage_lrs) != 3 or min(posebh.stage_lrs) <= 0:
    raise UserError(f'config.posebh.stage_lrs must be three positive learning rates, got {tuple(posebh.stage_lrs)}')
  to_step = lambda epoch: min(total_steps, int(round(epoch * steps_per_epoch)))
  stage_starts = [0, to_step(stage_epochs[0]), to_step(stage_epochs[1])]
  thaw = to_step(float(posebh.backbone_thaw_epoch))
  cuts = sorted({0, total_steps, thaw, *stage_starts})
  phases = []
  for start, end in zip(cuts[:-1], cuts[1:]):
    if start >= end:
      continue
    stage = max(i for i, s in enumerate(stage_starts) if s <= start)
    frozen = base_frozen + (() if start >= thaw else ('^backbone/',)) + (('^head_',) if stage == 0 else ())
    phases.append(
      Phase(
        len(phases),
        start,
        end,
        stage=stage,
        lr=float(posebh.stage_lrs[stage]),
        frozen=frozen,
        posebh=True,
        update_prototypes=stage == 0,
        css=stage >= 1,
        cps=stage >= 1,
      )
    )
  return phases


def plan_transfer(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> list[Phase]:
  """Phases of a domain-transfer run (docs/METHOD.md §2): [0, prototype_epochs) updates the new datasets' prototypes,
  the rest keeps them frozen; the embedding module is frozen throughout and the lr follows `config.optim`.
  Raises UserError for inconsistent settings."""
  transfer, posebh = config.transfer, config.posebh
  new = tuple(transfer.new_datasets)
  if not posebh.enabled:
    raise UserError(
      'config.transfer needs config.posebh.enabled (the embedding module and prototypes of the '
      'PoseBH run in config.init_from)'
    )
  missing = [n for n in new if n not in tuple(config.data.order)]
  if not new or missing:
    raise UserError(
      f'config.transfer.new_datasets {new} must name datasets of config.data.order {tuple(config.data.order)}'
    )
  if transfer.prototype_epochs < 0:
    raise UserError(f'config.transfer.prototype_epochs must be >= 0 (got {transfer.prototype_epochs})')
  frozen = tuple(config.optim.frozen) + ('^embedding/',) + tuple(transfer.frozen)
  cut = min(total_steps, int(round(float(transfer.prototype_epochs) * steps_per_epoch)))
  phases = []
  for start, end, update in ((0, cut, True), (cut, total_steps, False)):
    if start < end:
      phases.append(
        Phase(
          len(phases),
          start,
          end,
          frozen=frozen,
          posebh=True,
          update_prototypes=update,
          prototype_datasets=new,
          embedding_frozen=True,
        )
      )
  return phases


def phase_at(phases: list[Phase], step: int) -> Phase:
  """The phase that runs step `step` (0-based; the last phase for step >= its end)."""
  for phase in phases:
    if phase.start_step <= step < phase.end_step:
      return phase
  return phases[-1]


def phase_of_state(phases: list[Phase], state_step: int) -> Phase:
  """The phase whose optimizer state a state saved after `state_step` steps carries."""
  return phase_at(phases, max(state_step - 1, 0))
