"""SIGTERM and SIGINT stop training at a step boundary, after a checkpoint.

TPU preemption, SLURM (`--signal`, `scancel`), Kubernetes and Ctrl-C all
stop a job with one of these signals. The loop asks `StopSignal.reached(step)`
after every step; once it answers True the loop saves that step, waits for
the save, and raises `Stopped`, which the commands turn into exit status
128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a process
killed by it would report, so schedulers see a stopped job.

Several processes (jax.distributed) must stop at the same step: JAX's
preemption service catches SIGTERM in any process and agrees on a step with
the others (orbax's `reached_preemption`). SIGINT is forwarded to it as
SIGTERM. One process without jax.distributed uses its own flag.
"""

import contextlib
import os
import signal
import sys

import jax
from absl import logging
from orbax.checkpoint import multihost as ocp_multihost


class Stopped(Exception):
  """Training stopped by a signal after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int, directory: str):
    self.signum, self.step = signum, step
    self.exit_status = 128 + signum
    super().__init__(
        f"Stopped by {signal.Signals(signum).name} at step {step}; checkpoint "
        f"{directory}/{step} is saved. Run the same command again to resume.")


class StopSignal:
  """Context manager that turns SIGTERM/SIGINT into `reached(step)`."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, object] = {}
    self._distributed = jax.process_count() > 1

  def __enter__(self) -> "StopSignal":
    if self._distributed:
      # SIGTERM stays with JAX's preemption service (installed by
      # jax.distributed.initialize); SIGINT is sent on to it.
      self._install(signal.SIGINT, self._forward_as_sigterm)
    else:
      self._install(signal.SIGTERM, self._note)
      self._install(signal.SIGINT, self._note)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      # None: a handler installed outside Python, which cannot be put back.
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    self._previous.clear()

  def reached(self, step: int) -> bool:
    """True when training should stop after `step` (the same step on every
    process); call it after every step, on every process."""
    if self._distributed:
      if ocp_multihost.reached_preemption(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None

  def _install(self, signum: int, handler) -> None:
    self._previous[signum] = signal.signal(signum, handler)

  def _note(self, signum, frame) -> None:
    if self.signum is not None and signum == signal.SIGINT:
      # A second Ctrl-C: the user does not want to wait for the save.
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning("%s received: saving a checkpoint after this step, then "
                    "stopping.", signal.Signals(signum).name)

  def _forward_as_sigterm(self, signum, frame) -> None:
    self.signum = signum
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def exit_when_stopped():
  """Ends the command with `Stopped`'s status and one line."""
  try:
    yield
  except Stopped as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
