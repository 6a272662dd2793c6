"""checkpointing.load_run: reading another run's latest checkpoint, read-only."""

import os

import pytest

from elm_jax import checkpointing
from elm_jax.sampling import generator_checkpoint
from elm_jax.train import frozen_tokenizer


def _snapshot(root):
  """Every path under root with its size and modification time."""
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(d, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return out


def test_missing_or_empty_workdir_is_reported_and_not_created(tmp_path):
  missing = tmp_path / "typo"
  with pytest.raises(FileNotFoundError,
                     match=r"--tokenizer='.*typo' holds no checkpoint.*configs/bae.py"):
    frozen_tokenizer.load(str(missing), flag="--tokenizer")
  with pytest.raises(FileNotFoundError, match="config.generator.checkpoint"):
    generator_checkpoint.load(str(missing))
  assert not missing.exists()
  empty = tmp_path / "empty"  # e.g. a run killed before its first save
  (empty / checkpointing.CHECKPOINT_DIR).mkdir(parents=True)
  before = _snapshot(empty)
  with pytest.raises(FileNotFoundError, match="holds no checkpoint; train one"):
    checkpointing.load_run(str(empty), "generator", "--generator")
  assert _snapshot(empty) == before
  with pytest.raises(ValueError, match="--generator is empty"):
    checkpointing.load_run("", "generator", "--generator")


def test_a_run_of_the_wrong_kind_is_named(tiny_tokenizer_dir, tiny_ar_dir):
  with pytest.raises(ValueError, match=r"is a 'bae' run, not a generator \(ar / mlm\)"):
    checkpointing.load_run(tiny_tokenizer_dir, "generator", "--generator")
  with pytest.raises(ValueError, match=r"is a 'ar' run, not a tokenizer \(bae\)"):
    frozen_tokenizer.load(tiny_ar_dir)


def test_loading_leaves_the_runs_untouched(tiny_tokenizer_dir, tiny_ar_dir):
  before = _snapshot(tiny_tokenizer_dir), _snapshot(tiny_ar_dir)
  gen = generator_checkpoint.load(tiny_ar_dir)
  run = checkpointing.load_run(tiny_tokenizer_dir, "tokenizer", "--tokenizer")
  assert gen.step == 3 and gen.stage == "ar" and gen.tokenizer.step == run.step
  assert run.config.stage == "bae" and "ema_params" in run.state
  assert (_snapshot(tiny_tokenizer_dir), _snapshot(tiny_ar_dir)) == before
