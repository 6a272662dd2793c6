"""Careless input to the training, checkpoint and conversion paths: each fails with a message
that names the problem and the fix, and leaves existing files alone."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from config_loading import get_config
from elm_jax import checkpointing
from elm_jax.config_error import ConfigError
from elm_jax.models import resolve_dtypes
from elm_jax.train import frozen_tokenizer, optim
from elm_jax.train.ar import ARStage
from elm_jax.weights import state_dict_io
from processes import ROOT


@pytest.mark.slow
def test_split_override_and_suggestions(tiny_tokenizer_dir):
  config = get_config("ar", "tiny")  # split=auto: 2-4 over 8 bits
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.split = "2-4"  # what --config.split=2-4 does
  stage = ARStage(config)
  assert (stage.num_subcodes, stage.model.vocab_size) == (2, 16)
  config.split = "1-8"  # one 256-way sub-code per cell: one table, one head
  stage = ARStage(config)
  params = jax.eval_shape(stage.init, jax.random.key(0)).params
  assert sorted(k for k in params if k.startswith(("tok_embed", "head", "proj"))) == [
      "head_0", "tok_embed_0"]
  assert (stage.num_subcodes, stage.model.vocab_size) == (1, 256)
  config = get_config("ar", "tiny,split=3-3")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  with pytest.raises(ValueError, match=r"makes 8-bit codes.*\(one of 1-8, 2-4, 4-2, 8-1\)"):
    ARStage(config)


def test_unknown_dtype_and_bad_learning_rates():
  with pytest.raises(ValueError, match=r"config.model.dtype='bf16' is unknown.*bfloat16"):
    resolve_dtypes({"dtype": "bf16"})
  for lr in (0.0, -1e-3, float("nan")):
    with pytest.raises(ValueError, match="optim.lr=.* must be positive"):
      optim.make_optimizer(lr=lr)
  with pytest.raises(ValueError, match="warmup_steps=-1"):
    optim.make_optimizer(lr=1e-3, warmup_steps=-1)


@pytest.mark.slow
def test_misspelt_config_override_is_named_without_a_traceback(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "elm_jax.main", "--config=configs/bae.py:tiny",
       f"--workdir={workdir}", "--config.optim.lrr=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert ("--config.optim.lrr: the config has no field 'lrr'; did you mean 'lr'?"
          in result.stderr)
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("arg,message", [
    ("tiny,split=3", r"split='3': expected n-k"),
    ("tiny,split=x-y", r"split='x-y': expected n-k"),
    ("tiny,split=0-8", r"split='0-8': expected n-k"),
    ("size=B,tiny=maybe", r"'tiny=maybe' in 'size=B,tiny=maybe': expected true or false"),
])
def test_malformed_config_arguments_are_named(arg, message):
  config = get_config("ar", "size=B,tiny=yes")  # tiny's schedule, the explicit size
  assert (config.batch_size, config.model.num_layers) == (8, 12)
  with pytest.raises(ConfigError, match=message):
    get_config("ar", arg)


def test_malformed_number_in_a_config_argument_is_named():
  with pytest.raises(ConfigError, match=r"'bits=x' in 'tiny,bits=x': 'x' is not a int"):
    get_config("bae", "tiny,bits=x")


@pytest.mark.slow
def test_a_mesh_that_does_not_fit_exits_with_the_fix_not_a_traceback(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "elm_jax.main", "--config=configs/bae.py:tiny",
       f"--workdir={workdir}", "--config.mesh.data=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode != 0
  assert "Invalid config: config.mesh=" in result.stderr
  assert "set one axis to -1" in result.stderr
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


def test_checkpoint_with_a_broken_config_file_is_named(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), asynchronous=False)
  for step in (1, 2):
    ckpt.save(step, {"w": np.zeros(2)}, None, {"stage": "bae"})
  ckpt.close()
  metadata = tmp_path / "checkpoints" / "2" / "config" / "metadata"
  metadata.write_text('{"stage": "ba')
  with pytest.raises(ValueError, match=r"checkpoints/2 has no readable config.*"
                     r"JSONDecodeError.*earlier step \[1\]"):
    frozen_tokenizer.load(str(tmp_path))
  metadata.unlink()
  with pytest.raises(ValueError, match="has no readable config.*FileNotFoundError"):
    frozen_tokenizer.load(str(tmp_path))


def test_a_file_that_is_not_a_pytorch_checkpoint_is_named(tmp_path):
  path = tmp_path / "model.pt"
  path.write_bytes(b"not a torch file")
  with pytest.raises(ValueError, match=r"is not a PyTorch checkpoint \(it starts with "
                     r"b'not '"):
    state_dict_io.read_state_dict(str(path))


@pytest.mark.parametrize("command,message", [
    (["elm_jax.main", "--config=configs/ar.py:tiny",
      "--config.tokenizer.checkpoint={missing}", "--workdir={tmp}/run"],
     "elm_jax.main: config.tokenizer.checkpoint='{missing}' holds no checkpoint"),
    (["elm_jax.sample", "--config=configs/sample.py:tiny",
      "--config.generator.checkpoint={missing}", "--workdir={tmp}/run"],
     "elm_jax.sample: config.generator.checkpoint='{missing}' holds no checkpoint"),
    (["elm_jax.tokenize", "--tokenizer={missing}", "--out={tmp}/run"],
     "elm_jax.tokenize: --tokenizer='{missing}' holds no checkpoint"),
    (["elm_jax.analyze", "token-randomness", "--tokenizer={missing}", "--out={tmp}/run"],
     "elm_jax.analyze: --tokenizer='{missing}' holds no checkpoint"),
    (["elm_jax.evaluate", "--samples={tmp}/s.npz", "--reference={tmp}/r.npz",
      "--inception={missing}.npz", "--out={tmp}/run"],
     "elm_jax.evaluate: Inception weights '{missing}.npz' not found"),
    (["elm_jax.evaluation.convert_inception", "--out={tmp}/run/i.npz",
      "--torchscript={missing}.pt"],
     "elm_jax.evaluation.convert_inception: --torchscript='{missing}.pt' is not a file"),
    (["elm_jax.main", "--config=configs/bae.py:tiny", "--config.data.source=folder",
      "--config.data.path={missing}", "--workdir={tmp}/run"],
     "elm_jax.main: Image folder dataset root {missing} does not exist"),
    (["elm_jax.main", "--config=configs/ar.py:size=Q", "--workdir={tmp}/run"],
     "Invalid config: config.model (size): 'Q' unknown; expected one of"),
    (["elm_jax.sample", "--config={missing}.py", "--workdir={tmp}/run"],
     "--config: Failed loading config file"),
])
@pytest.mark.slow
def test_entry_points_exit_with_the_message_not_a_traceback(tmp_path, command, message):
  """A missing input path or a refused config: the command ends with the
  message naming it, exit status 1, and nothing is written for the run."""
  paths = dict(tmp=tmp_path, missing=tmp_path / "missing")
  result = subprocess.run(
      [sys.executable, "-m"] + [a.format(**paths) for a in command],
      cwd=ROOT, capture_output=True, text=True, timeout=180,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1, result.stderr[-2000:]
  assert message.format(**paths) in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()
  assert not (tmp_path / "missing").exists()
