"""Faults met by the loop: signals, a second run, broken checkpoints, storage."""

import glob
import json
import os
import re
import signal
import subprocess
import sys

import grain
import numpy as np
import pytest

from processes import ROOT
from elm_jax import bad_input, checkpointing, workdir_lock
from elm_jax.metrics import read_jsonl
from elm_jax.train import loop, preemption
from counting_stage import CountingStage, config


def _w(state) -> float:
  return float(state.params["w"][0])


def _train_rows(workdir):
  return [(r["step"], r["train/loss"]) for r in read_jsonl(workdir) if "train/loss" in r]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted 6-step run: (final w, its train rows)."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  state = loop.train_and_evaluate(config(6), workdir, CountingStage())
  return _w(state), _train_rows(workdir)


class SignalAtBatch(CountingStage):
  """Sends `signum` to this process while batch `at` (1-based) is prepared."""

  def __init__(self, signum, at):
    super().__init__()
    self.signum, self.at = signum, at

  def train_loader(self):
    def element(i):
      if i == 8 * (self.at - 1):
        os.kill(os.getpid(), self.signum)
      return {"x": np.full((), i, np.float32)}
    # No read-ahead: batch `at` is made when step `at` asks for it.
    return (grain.MapDataset.range(10_000).map(element).batch(8).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_and_the_rerun_matches(tmp_path, straight, signum):
  workdir = str(tmp_path)
  with pytest.raises(preemption.Stopped, match=r"at step 3; checkpoint .*/3 is saved") as e:
    loop.train_and_evaluate(config(6), workdir, SignalAtBatch(signum, at=3))
  assert e.value.exit_status == 128 + signum
  assert checkpointing.Checkpointer(workdir).all_steps() == [2, 3]
  assert signal.getsignal(signum) is not None  # handlers are put back
  state = loop.train_and_evaluate(config(6), workdir, CountingStage())
  assert _w(state) == straight[0]
  assert _train_rows(workdir) == straight[1]


def test_metrics_list_each_step_once_after_a_resume(tmp_path, straight):
  workdir = str(tmp_path)
  loop.train_and_evaluate(config(4), workdir, CountingStage())
  # As if killed after logging steps 3 and 4 but before checkpoint 4 was written.
  os.rename(os.path.join(workdir, "checkpoints", "4"), str(tmp_path / "lost"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 4, "train/lo')  # a row cut short by the kill
  loop.train_and_evaluate(config(6), workdir, CountingStage())
  assert _train_rows(workdir) == straight[1]


@pytest.mark.parametrize("damage", ["truncated array file", "no _METADATA",
                                    "no manifest.ocdbt"])
def test_a_broken_latest_checkpoint_falls_back_and_is_kept(tmp_path, straight, damage,
                                                             caplog):
  workdir = str(tmp_path)
  loop.train_and_evaluate(config(4), workdir, CountingStage())
  state_dir = os.path.join(workdir, "checkpoints", "4", "state")
  if damage == "truncated array file":
    files = [f for f in glob.glob(f"{state_dir}/**/d/*", recursive=True) if os.path.isfile(f)]
    biggest = max(files, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) // 2)
  elif damage == "no _METADATA":
    os.remove(os.path.join(state_dir, "_METADATA"))
  else:
    os.remove(os.path.join(state_dir, "manifest.ocdbt"))
  state = loop.train_and_evaluate(config(6), workdir, CountingStage())
  assert _w(state) == straight[0]
  assert _train_rows(workdir) == straight[1]
  moved = glob.glob(os.path.join(workdir, checkpointing.BROKEN_DIR, "4-*"))
  assert len(moved) == 1 and os.path.isdir(os.path.join(moved[0], "state"))
  assert any("checkpoints/4 does not read back" in r.getMessage() and "step 2" in r.getMessage()
             for r in caplog.records)


def test_a_second_run_on_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from elm_jax import workdir_lock; "
       f"lock = workdir_lock.WorkdirLock({workdir!r}).__enter__(); print('held', flush=True); "
       "time.sleep(120)"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
      env={**os.environ, "PYTHONPATH": ROOT})
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"in use by another run \\(pid {holder.pid} on "):
      loop.train_and_evaluate(config(2), workdir, CountingStage())
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  finally:
    holder.kill()
    holder.wait()
  # The holder died without cleaning up: its record is taken over.
  record = json.loads(open(os.path.join(workdir, workdir_lock.LOCK_FILE)).read())
  assert record["pid"] == holder.pid
  state = loop.train_and_evaluate(config(2), workdir, CountingStage())
  assert int(state.step) == 2
  assert open(os.path.join(workdir, workdir_lock.LOCK_FILE)).read() == ""  # released


def test_an_empty_evaluation_split_fails_before_the_workdir_is_made(tmp_path):
  with pytest.raises(ValueError, match="evaluation split has no images"):
    loop.train_and_evaluate(config(2), str(tmp_path / "run"), CountingStage(eval_images=0))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path,match", [("gs://bucket/run", "is a URL"),
                                        (__file__, "is a file, not a directory")])
def test_workdirs_that_cannot_work_are_refused(path, match):
  with pytest.raises(ValueError if "URL" in match else NotADirectoryError, match=match):
    bad_input.local_path("--workdir", path)


def test_storage_errors_are_found_behind_other_errors():
  full = OSError(28, "No space left on device", "/w/checkpoints/4/state")
  try:
    try:
      raise full
    except OSError as e:
      raise RuntimeError("async save failed") from e
  except RuntimeError as wrapped:
    assert bad_input.storage_error(wrapped) == "/w/checkpoints/4/state: No space left on device"
  tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/ckpt/d/ab12": '
                           '[OS error 28: No space left on device]')
  assert bad_input.storage_error(tensorstore) == "/w/ckpt/d/ab12: No space left on device"
  assert bad_input.storage_error(ValueError("config.x: bad")) is None


# A run of the loop with 4 MB of incompressible state, ended as the commands end.
_DRIVER = """
import sys
import jax
from counting_stage import CountingStage, config
from elm_jax.bad_input import exit_on_bad_input
from elm_jax.train import loop

class Big(CountingStage):
  def init(self, rng):
    state = super().init(rng)
    return state.replace(model_state={"noise": jax.random.normal(rng, (1_000_000,))})

with exit_on_bad_input("elm_jax.main"):
  loop.train_and_evaluate(config(int(sys.argv[2])), sys.argv[1], Big())
print("finished", flush=True)
"""

# Each command's stderr and status, between markers, inside a private mount.
_SCRIPT = """
set -u
W={mount}; mount -t tmpfs -o size=12m tmpfs $W
step() {{ echo "== $1"; python {driver} $W/run $2 2>&1; echo "== rc $?"; ls $W/run/checkpoints; }}
step first 2
dd if=/dev/zero of=$W/fill bs=1M count=6 2>/dev/null
step full 6
rm $W/fill
step freed 6
mount -o remount,ro $W
step readonly 8
"""


@pytest.mark.slow
def test_a_full_or_read_only_disk_ends_in_one_line_and_keeps_the_checkpoints(tmp_path):
  if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
    pytest.skip("needs a private mount namespace (unshare -rm) for a small tmpfs")
  driver = tmp_path / "driver.py"
  driver.write_text(_DRIVER)
  mount = tmp_path / "disk"
  mount.mkdir()
  out = subprocess.run(["unshare", "-rm", "sh", "-c",
                        _SCRIPT.format(mount=mount, driver=driver)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_PLATFORMS": "cpu",
                            "PYTHONPATH": f"{ROOT}:{os.path.dirname(__file__)}"}).stdout
  # {command: (status, output, checkpoint steps listed after it)}
  runs = {}
  for block in re.split(r"^== (?=\w+\n)", out, flags=re.M)[1:]:
    name, _, rest = block.partition("\n")
    output, _, after = rest.rpartition("== rc ")
    status, *steps = after.split()
    runs[name] = (int(status), output, steps)
  lines = lambda text: [l for l in text.splitlines() if l.strip()]
  assert runs["first"][0] == 0 and runs["first"][2] == ["2"], out
  # Disk full during the step-4 save: orbax's errors are one line each, the
  # command ends with one line naming the file, and step 2 stays the latest
  # (the unfinished save is only a temporary directory).
  status, output, steps = runs["full"]
  assert status == 1 and "Traceback" not in output, output
  assert re.fullmatch(r"elm_jax\.main: storage error at .*/run/checkpoints/4\S*: No space "
                      r"left on device\. Files written before are intact; .*",
                      lines(output)[-1]), output
  assert [s for s in steps if s.isdigit()] == ["2"], out
  # With space again, the same command resumes and finishes.
  assert runs["freed"][0] == 0 and runs["freed"][2] == ["2", "4", "6"], out
  status, output, steps = runs["readonly"]
  assert status == 1 and lines(output) == [
      f"elm_jax.main: storage error at {mount}/run/run.lock: Read-only file system. Files "
      "written before are intact; free space or fix the permissions, then run the same "
      "command again."], out
  assert steps == ["2", "4", "6"]


def test_what_a_run_reads_is_checked_before_training(tmp_path):
  from config_loading import get_config
  from elm_jax.train.stages import make_stage
  config = get_config("bae", "tiny")
  config.eval.inception_params = str(tmp_path / "missing.npz")
  with pytest.raises(FileNotFoundError, match="config.eval.inception_params=.*missing.npz"):
    make_stage(config)
  a_file = tmp_path / "tokenizer.txt"
  a_file.write_text("not a workdir")
  with pytest.raises(NotADirectoryError, match="--tokenizer=.*tokenizer.txt' is a file"):
    checkpointing.load_run(str(a_file), "tokenizer", "--tokenizer")
  assert a_file.read_text() == "not a workdir"
