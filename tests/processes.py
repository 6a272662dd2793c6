"""Commands run by tests: their environment, signals at the right moment, two-process runs."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(compilation_cache=None) -> dict:
  """The environment of a command run by a test: one CPU device, cheap
  compiles, this checkout on the path. compilation_cache: a directory in
  which runs of the same config share compiled programs (JAX's persistent
  cache), so repeats skip compiling."""
  e = dict(os.environ)
  e["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  e["XLA_FLAGS"] = ""  # one CPU device
  e["PYTHONPATH"] = ROOT
  if compilation_cache:
    e["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return e


def signal_when(proc, ready, signum, timeout: float = 300, what: str = "") -> None:
  """Sends `signum` to `proc` as soon as `ready()` holds; fails if the
  process ended first. Does not wait for it to end."""
  deadline = time.time() + timeout
  while not ready() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, f"the process ended before {what}"
  assert ready(), f"{what} did not happen within {timeout} s"
  proc.send_signal(signum)


def kill_9_when(proc, path: str, timeout: float = 300) -> None:
  """Sends SIGKILL to `proc` as soon as `path` exists (e.g. a checkpoint's
  commit_success.txt) and waits for it to end."""
  signal_when(proc, lambda: os.path.exists(path), signal.SIGKILL, timeout, f"{path} appeared")
  proc.wait()


def logged_step(workdir: str, key: str) -> int:
  """The last step of workdir/metrics.jsonl with `key` (0 when none yet)."""
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.endswith("\n")]
  except (OSError, ValueError):
    return 0
  return max((r["step"] for r in rows if key in r), default=0)


def free_port() -> int:
  """A TCP port free on this machine now (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def two_processes(argv: list[str], **popen_kw):
  """Starts `argv` as processes 0 and 1 of one jax.distributed run (a free
  local port); yields the Popen objects and kills any still running on exit."""
  coordinator = [f"--coordinator_address=127.0.0.1:{free_port()}",
                 "--num_processes=2"]
  procs = [subprocess.Popen([*argv, *coordinator, f"--process_id={i}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen_kw) for i in range(2)]
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def finished_logs(procs, timeout: float = 300) -> list[str]:
  """Waits for every process, asserts each exited 0 (showing the tail of its
  log otherwise) and returns their logs."""
  logs = [p.communicate(timeout=timeout)[0] for p in procs]
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"
  return logs
