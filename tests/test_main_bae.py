"""The tokenizer stage through `python -m elm_jax.main`: smoke run and exact resume."""

import glob
import os
import signal
import subprocess

import jax
import numpy as np
import pytest

from elm_jax import checkpointing
from elm_jax.metrics import read_jsonl

from main_command import main_cmd, run
from processes import ROOT, kill_9_when, logged_step, signal_when, subprocess_env as env

# Every test here runs commands in subprocesses: the `slow` tier.
pytestmark = pytest.mark.slow


def test_smoke_run_writes_checkpoints_summaries_and_eval(tmp_path):
  workdir = str(tmp_path / "bae")
  proc = run(workdir)
  # The console: the project's lines and clu's reports; orbax's INFO lines
  # only in the run's log file.
  assert "Checkpoint of step 2 saving to" in proc.stderr and "ETA" in proc.stderr
  assert "checkpoint_manager.py" not in proc.stderr
  assert len(proc.stderr.splitlines()) < 40, proc.stderr
  (log,) = glob.glob(os.path.join(workdir, "logs", "main-*-p0.log"))
  text = open(log).read()
  assert "checkpoint_manager.py" in text and "Checkpoint of step 4" in text
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  assert steps == [2, 4]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  rows = read_jsonl(workdir)
  train = [r for r in rows if "train/loss/total" in r]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  evals = [r for r in rows if "eval/psnr" in r]
  assert evals and evals[-1]["step"] == 4
  for key in ("eval/psnr", "eval/ssim", "eval/lpips", "eval/code_usage",
              "eval/bit_entropy"):
    assert np.isfinite(evals[-1][key]), key
  names = {k for r in rows for k in r}
  assert [k for k in names if "steps_per_sec" in k] == ["train/steps_per_sec"]
  assert "train/learning_rate" in names
  config = checkpointing.Checkpointer(workdir).restore_config(4)
  assert config["model"]["bits"] == 8


def _losses(workdir):
  out = {}
  for r in read_jsonl(workdir):
    if "train/loss/total" in r:
      out[r["step"]] = (r["train/loss/total"], r["train/loss/disc"])
  return out


def test_sigkill_or_sigterm_and_resume_is_exact(tmp_path):
  """Killed after a checkpoint, restarted, stopped by SIGTERM, restarted: the
  same losses and parameters as one run."""
  common = ["--config.total_steps=8", "--config.checkpoint_every=2",
            "--config.eval_every=1000", "--config.eval.max_batches=1"]
  cache = tmp_path / "xla_cache"  # the runs compile the same programs
  straight = str(tmp_path / "straight")
  run(straight, *common, compilation_cache=cache)

  stopped = str(tmp_path / "stopped")
  proc = subprocess.Popen(main_cmd(stopped, *common), cwd=ROOT, env=env(cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  kill_9_when(proc, os.path.join(stopped, "checkpoints", "2", "commit_success.txt"), 240)
  assert max(_losses(stopped)) < 8

  # The restart resumes from step 2; SIGTERM (preemption) once it has logged
  # a step of its own (its event file exists and the killed run's rows after
  # step 2 are gone): the step it reached is saved, exit 143.
  proc = subprocess.Popen(main_cmd(stopped, *common), cwd=ROOT, env=env(cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  restarted = lambda: (len(glob.glob(os.path.join(stopped, "events.out.tfevents.*"))) == 2
                       and logged_step(stopped, "train/loss/total") >= 3)
  signal_when(proc, restarted, signal.SIGTERM, 240, "the restart logged step 3")
  stderr = proc.communicate(timeout=120)[1]
  assert proc.returncode == 143, stderr[-3000:]
  stop_step = checkpointing.Checkpointer(stopped).latest_step()
  assert 3 <= stop_step < 8
  assert stderr.strip().splitlines()[-1] == (
      f"Stopped by SIGTERM at step {stop_step}; checkpoint {stopped}/checkpoints/"
      f"{stop_step} is saved. Run the same command again to resume.")
  run(stopped, *common, compilation_cache=cache)

  a, b = _losses(straight), _losses(stopped)
  logged = [r["step"] for r in read_jsonl(stopped) if "train/loss/total" in r]
  assert sorted(a) == logged == list(range(1, 9))  # each step once, in order
  for step in a:
    np.testing.assert_allclose(b[step], a[step], rtol=1e-6, err_msg=f"step {step}")
  _assert_same_final_state(straight, stopped)


def _assert_same_final_state(a, b, step=8):
  leaves_a = jax.tree.leaves(checkpointing.Checkpointer(a).restore(step))
  leaves_b = jax.tree.leaves(checkpointing.Checkpointer(b).restore(step))
  assert len(leaves_a) == len(leaves_b) > 100
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
