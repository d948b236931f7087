"""Preemption: SIGTERM / SIGINT become a request to checkpoint and stop at a step boundary, agreed on by every
process of a multi-process job."""

from __future__ import annotations

import os
import signal

import jax
from absl import logging
from jax.experimental import multihost_utils


class StopRequest:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at a step boundary (`should_stop(step)`).

  One process: at the next step boundary. Several processes (`jax.distributed`): a signal on any one of them goes
  to JAX's preemption sync service, which picks the same step for all (one past the largest step any has reached),
  so that they save together (the save is a collective) and none starts a step that the others will not run. A
  stop decided by each process alone hangs the job whenever the signal reaches the processes on either side of a
  step boundary, or reaches only some of them."""

  def __init__(self):
    self.requested = False
    self._previous = {}
    # jax.distributed.initialize starts the sync service unless this flag turns it off.
    self._synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service

  def __enter__(self):
    # With the sync service, SIGTERM stays with the notifier it installed; SIGINT is forwarded to it as SIGTERM.
    for sig in (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # second signal: give up at once
      raise KeyboardInterrupt
    logging.warning('signal %d: saving a checkpoint and stopping at a step boundary', signum)
    self.requested = True
    if self._synced:
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step` (1-based count of finished steps). Every process calls it after
    every step (the sync service needs each process's step)."""
    if self._synced:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
