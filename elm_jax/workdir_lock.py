"""One run per workdir: a lock file that names its holder.

`WORKDIR/run.lock` is held with flock(2) for as long as the run lives, so the
kernel (or the NFS server) releases it when the holder dies, however it dies.
The file also records who holds it (host, pid, command, since when), which a
refused second run prints. A record left by a holder that is gone is taken
over with a warning. In a multi-process run, process 0 holds the lock for all
of them and tells the others whether it got it.
"""

import datetime
import fcntl
import json
import os
import socket
import sys

import jax
from absl import logging

from elm_jax import distributed

LOCK_FILE = "run.lock"


class WorkdirBusyError(ValueError):
  """Another live run holds the workdir."""


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, running "
          f"{holder.get('command', '?')!r} since {holder.get('since', '?')}")


class WorkdirLock:
  """`with WorkdirLock(workdir): train()`; raises WorkdirBusyError when held."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def __enter__(self) -> "WorkdirLock":
    error = ""
    if jax.process_index() == 0:
      error = self._acquire()
    # Every process must refuse together, or the others wait forever.
    if distributed.process_0_says(bool(error)) and not error:
      error = f"{os.path.dirname(self.path)} is held by another run (see process 0's log)."
    if error:
      raise WorkdirBusyError(error)
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a clean exit leaves no holder to report
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def _acquire(self) -> str:
    """'' when acquired, else the refusal's message."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if not isinstance(e, BlockingIOError):
        os.close(fd)
        return (f"{self.path}: this file system refuses locks ({e.strerror}); use a "
                "local disk or NFS for the workdir.")
      holder = _read(fd)
      os.close(fd)
      return (f"{os.path.dirname(self.path)} is in use by another run ({_describe(holder)}). "
              "Wait for it to end or stop it, or pass another --workdir.")
    previous = _read(fd)
    if previous:
      logging.warning("Taking over %s from a run that is gone (%s).", self.path,
                      _describe(previous))
    record = dict(host=socket.gethostname(), pid=os.getpid(),
                  command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:500],
                  since=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  processes=jax.process_count())
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
      os.fsync(fd)
    except OSError as e:  # a full disk: name the file
      os.close(fd)
      raise OSError(e.errno, e.strerror, self.path) from e
    self._fd = fd
    return ""


def _read(fd: int) -> dict:
  try:
    text = os.pread(fd, 1 << 16, 0).decode()
    return json.loads(text) if text.strip() else {}
  except (OSError, ValueError):
    return {"pid": "?", "host": "?", "command": "unreadable lock record"}
