"""The shared loop with a minimal stage: non-finite guard, broken checkpoints."""

import os

import pytest

from counting_stage import CountingStage, config
from elm_jax import checkpointing
from elm_jax.metrics import read_jsonl
from elm_jax.train import loop


def test_resume_continues_the_data_stream(tmp_path):
  loop.train_and_evaluate(config(4), str(tmp_path), CountingStage())
  state = loop.train_and_evaluate(config(6), str(tmp_path), CountingStage())
  # Batches i hold 8i..8i+7, mean 8i+3.5: w after 6 steps = sum over i<6.
  assert float(state.params["w"][0]) == sum(8 * i + 3.5 for i in range(6))
  steps = [r["step"] for r in read_jsonl(str(tmp_path)) if "train/loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(loop.NonFiniteLossError, match="step 3.*checkpoint \\(2\\)"):
    loop.train_and_evaluate(config(10), str(tmp_path), CountingStage(nan_at=3))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == [2]
  restored = ckpt.restore(2)
  assert float(restored["params"]["w"][0]) == 3.5 + 11.5


def _garble(directory):
  for root, _, files in os.walk(directory):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")


def test_every_checkpoint_broken_fails_naming_them_and_moves_nothing(tmp_path):
  loop.train_and_evaluate(config(4), str(tmp_path), CountingStage())
  for step in (2, 4):
    _garble(os.path.join(tmp_path, "checkpoints", str(step), "state"))
  before = _snapshot(tmp_path)
  with pytest.raises(checkpointing.BrokenCheckpointError,
                     match=r"Every checkpoint in .*checkpoints is broken \(steps \[4, 2\]"):
    loop.train_and_evaluate(config(6), str(tmp_path), CountingStage())
  assert _snapshot(tmp_path) == before


def test_batch_not_divisible_by_mesh_fails_before_compiling(tmp_path):
  c = config(2)
  c.batch_size = 6
  with pytest.raises(ValueError, match="batch_size=6 is not divisible"):
    loop.train_and_evaluate(c, str(tmp_path / "run"), CountingStage())
  assert not (tmp_path / "run").exists()  # no empty workdir left behind


def _snapshot(root):
  return {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
          for d, _, files in os.walk(root) for f in files}


def test_resuming_another_stage_or_other_shapes_is_refused_untouched(tmp_path):
  c = config(4)
  c.stage, c.model = "bae", dict(width=4)
  loop.train_and_evaluate(c, str(tmp_path), CountingStage())
  before = _snapshot(tmp_path)
  other = config(6)
  other.stage, other.model = "ar", dict(width=4)
  with pytest.raises(ValueError, match="holds a 'bae' run but this config trains 'ar'"):
    loop.train_and_evaluate(other, str(tmp_path), CountingStage())
  wider = config(6)
  wider.stage, wider.model = "bae", dict(width=5)
  with pytest.raises(ValueError, match=r"params/w: saved \(4,\), now \(5,\).*"
                     r"model.width: 4 -> 5"):
    loop.train_and_evaluate(wider, str(tmp_path), CountingStage(width=5))
  assert _snapshot(tmp_path) == before  # not even an event file was added
  c.total_steps = 6  # the same run, extended, still resumes
  state = loop.train_and_evaluate(c, str(tmp_path), CountingStage())
  assert int(state.step) == 6


def test_a_failing_evaluation_keeps_the_checkpoint_of_its_step(tmp_path):
  c = config(4)
  c.eval_every = 4
  with pytest.raises(ZeroDivisionError):
    loop.train_and_evaluate(c, str(tmp_path), CountingStage(eval_error=ZeroDivisionError()))
  assert checkpointing.Checkpointer(str(tmp_path)).all_steps() == [2, 4]
  # The same command again evaluates the finished run, once.
  evals = lambda: [r["step"] for r in read_jsonl(str(tmp_path)) if "eval/w0" in r]
  assert evals() == []
  for _ in range(2):
    loop.train_and_evaluate(c, str(tmp_path), CountingStage())
    assert evals() == [4]
