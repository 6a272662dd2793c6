"""Pytest setup: 8 simulated CPU devices and cheap compiles, configured before jax is imported."""
import contextlib
import os
import subprocess

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)


import pytest  # noqa: E402

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
  import time
  deadline = time.time() + timeout
  while not ready() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, f"the process ended before {what}"
  assert ready(), f"{what} did not happen within {timeout} s"
  proc.send_signal(signum)


def kill_9_when(proc, path: str, timeout: float = 300) -> None:
  """Sends SIGKILL to `proc` as soon as `path` exists (e.g. a checkpoint's
  commit_success.txt) and waits for it to end."""
  import signal
  signal_when(proc, lambda: os.path.exists(path), signal.SIGKILL, timeout, f"{path} appeared")
  proc.wait()


def logged_step(workdir: str, key: str) -> int:
  """The last step of workdir/metrics.jsonl with `key` (0 when none yet)."""
  import json
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.endswith("\n")]
  except (OSError, ValueError):
    return 0
  return max((r["step"] for r in rows if key in r), default=0)


def free_port() -> int:
  """A TCP port free on this machine now (for a jax.distributed coordinator)."""
  import socket
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


def save_random_run(config, workdir: str, step: int = 1) -> str:
  """Saves a freshly initialised run of `config` as a training run would."""
  import json
  from elm_jax import checkpointing, sharding
  from elm_jax.main import make_stage

  state = sharding.unbox(jax.jit(make_stage(config).init)(jax.random.PRNGKey(0)))
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(step, state, None, json.loads(config.to_json_best_effort()))
  ckpt.close()
  return workdir


def tiny_config(stage_name: str, arg: str):
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  from config_loading import get_config
  return get_config(stage_name, arg)


def save_tiny_generator(stage_name: str, tokenizer_dir: str, workdir: str) -> str:
  """A random-weight configs/<ar|mlm>.py:tiny run (2-4 split) over the tokenizer."""
  config = tiny_config(stage_name, "tiny,split=2-4")
  config.tokenizer.checkpoint = tokenizer_dir
  return save_random_run(config, workdir, step=3)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
  """A configs/bae.py:tiny checkpoint (random weights, 8-bit codes, 16x16 grid)."""
  config = tiny_config("bae", "tiny")
  config.loss.gan_weight = 0.0
  return save_random_run(config, str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="session")
def tiny_ar_dir(tiny_tokenizer_dir, tmp_path_factory):
  """A configs/ar.py:tiny checkpoint (random weights) over tiny_tokenizer_dir."""
  return save_tiny_generator("ar", tiny_tokenizer_dir,
                             str(tmp_path_factory.mktemp("ar")))


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
  """He-initialised kernels, unit batch-norm statistics: a random but non-degenerate network."""
  import numpy as np
  from elm_jax.evaluation import convert_inception, inception
  rng = np.random.default_rng(0)

  def leaf(path, shape):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      fan_in = np.prod(shape.shape[:3])
      return rng.normal(0, np.sqrt(2.0 / fan_in), shape.shape).astype(np.float32)
    if "var" in name:
      return np.ones(shape.shape, np.float32)
    return np.zeros(shape.shape, np.float32)
  params = jax.tree_util.tree_map_with_path(leaf, inception.expected_params())
  path = str(tmp_path_factory.mktemp("inception") / "random.npz")
  convert_inception.write_npz(params, path)
  return path


def pytest_configure(config):
  # `pytest -m "not slow" tests` is the quick local tier (under 3 minutes on
  # 2 cores); CI runs everything.
  config.addinivalue_line(
      "markers", "slow: 3 s or more on a 2-core CPU (commands in subprocesses, "
      "training runs, several model compiles)")
