"""Generators over every tokenizer kind: BAE bits, LFQ bits, VQ ids; and
LlamaGen's VQ tokenizer imported, with a LlamaGen GPT over its ids."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from config_loading import get_config
from main_command import run as run_main
from processes import ROOT, subprocess_env
from pytorch_layouts import random_ar_state_dict
from random_runs import save_random_run
from elm_jax import convert
from elm_jax.config_error import ConfigError
from elm_jax.sampling import autoregressive, generator_checkpoint
from elm_jax.sampling.images import decode_tokens
from elm_jax.sampling.settings import SamplerSettings
from elm_jax.train import frozen_tokenizer
from elm_jax.train.ar import ARStage
from elm_jax.train.mlm import MLMStage

VQ_REF = pathlib.Path(__file__).parent / "reference" / "llamagen_vq_8x8"


def _random_tokenizer(quantizer, tmp_path_factory):
  config = get_config("bae", f"tiny,quantizer={quantizer}")
  config.loss.gan_weight = 0.0
  return save_random_run(config, str(tmp_path_factory.mktemp(quantizer)))


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
  """A random configs/bae.py:tiny VQ tokenizer: 1024 codes on a 16x16 grid."""
  return _random_tokenizer("vq", tmp_path_factory)


@pytest.fixture(scope="module", params=["vq", "lfq"])
def kind_dir(request, tmp_path_factory):
  """(quantizer, workdir): a random configs/bae.py:tiny tokenizer of that kind
  (VQ: 1024 codes; LFQ: 8 bits; both on a 16x16 grid)."""
  return request.param, _random_tokenizer(request.param, tmp_path_factory)


def _images(n=4, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
          "label": np.arange(n, dtype=np.int32) % 10}


@pytest.mark.slow
@pytest.mark.parametrize("stage_class,name", [(ARStage, "ar"), (MLMStage, "mlm")])
def test_generator_trains_and_decodes_over_each_kind(kind_dir, stage_class, name):
  """split=auto: VQ ids whole (one 1024-way table), LFQ bits as two 4-bit
  sub-codes; a train step runs; the generator's ids decode to what the
  tokenizer reconstructs."""
  kind, workdir = kind_dir
  config = get_config(name, "tiny")
  config.tokenizer.checkpoint = workdir
  stage = stage_class(config)
  want = (1, 1024) if kind == "vq" else (2, 16)
  assert (stage.model.num_subcodes, stage.model.vocab_size) == want
  batch = _images()
  ids = stage.tokenize(stage.frozen(), batch, jax.random.key(0))
  assert ids.shape == (4, 256, want[0])
  assert 0 <= int(ids.min()) and int(ids.max()) < want[1]
  # Deterministic codes: the Bernoulli rng changes nothing for VQ and LFQ.
  np.testing.assert_array_equal(ids, stage.tokenize(stage.frozen(), batch, None))
  state = jax.jit(stage.init)(jax.random.key(1))
  state, metrics = jax.jit(stage.train_step)(state, batch, stage.frozen())
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
  tok = stage.tokenizer
  decoded = np.asarray(jax.jit(lambda p, i: decode_tokens(tok.model, p, i))(
      tok.params, ids))
  x = batch["image"].astype(np.float32) / 255.0
  recon, _ = tok.model.apply({"params": tok.params}, x, train=False)
  recon = np.clip(np.round(np.asarray(recon) * 255.0), 0, 255)
  assert np.abs(decoded.astype(np.int32) - recon).max() <= 1


@pytest.mark.slow
def test_vq_ids_at_patch_2(vq_dir):
  """patch=2 over VQ: 8x8 positions of four ids, in raster order per block."""
  workdir = vq_dir
  config = get_config("ar", "tiny")
  config.tokenizer.checkpoint, config.patch = workdir, 2
  stage = ARStage(config)
  assert (stage.model.grid_size, stage.model.num_subcodes,
          stage.model.vocab_size) == (8, 4, 1024)
  batch = _images(2)
  ids = np.asarray(stage.tokenize(stage.frozen(), batch, None))  # [2, 64, 4]
  tok = stage.tokenizer
  x = batch["image"].astype(np.float32) / 255.0
  cells = np.asarray(tok.model.apply({"params": tok.params}, x,
                                     method=tok.model.encode).ids)  # [2, 16, 16]
  np.testing.assert_array_equal(ids[:, 0], cells[:, :2, :2].reshape(2, 4))
  np.testing.assert_array_equal(ids[:, 9], cells[:, 2:4, 2:4].reshape(2, 4))


def test_split_over_vq_ids_is_refused(vq_dir):
  config = get_config("ar", "tiny,split=2-5")
  config.tokenizer.checkpoint = vq_dir
  with pytest.raises(ConfigError, match=r"config.split='2-5' splits bits, but "
                     r"the tokenizer in .* makes ids of a 1024-entry codebook.*"
                     r"Pass split=auto"):
    ARStage(config)


def test_pretokenized_codes_need_a_bae(vq_dir, tmp_path):
  config = get_config("ar", "tiny")
  config.tokenizer.checkpoint = vq_dir
  config.data.tokens = str(tmp_path)
  with pytest.raises(ConfigError, match="model.quantizer is 'vq'; leave "
                     "config.data.tokens empty"):
    ARStage(config)


# ------------------------------------------------------------ LlamaGen VQ


@pytest.fixture(scope="module")
def llamagen_vq_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("llamagen_vq")
  assert convert.cli(["convert", "--from=llamagen-vq",
                      f"--src={VQ_REF / 'state_dict.npz'}", f"--out={out}",
                      "--image_size=32"]) == 0
  return str(out)


@pytest.mark.slow
def test_llamagen_vq_workdir_reproduces_the_reference(llamagen_vq_dir):
  """The converted workdir, loaded as a frozen tokenizer: LlamaGen's indices
  exactly, its reconstruction within 1e-4 (its [-1, 1] range at the edge)."""
  tok = frozen_tokenizer.load(llamagen_vq_dir)
  assert tok.codes.describe() == "ids of a 512-entry codebook"
  assert tok.grid_size == 8 and tok.config.data.image_size == 32
  x = (np.transpose(np.load(VQ_REF / "inputs.npz")["images_nchw"],
                    (0, 2, 3, 1)) + 1.0) / 2.0
  out = np.load(VQ_REF / "outputs.npz")
  recon, q = tok.model.apply({"params": tok.params}, x)
  np.testing.assert_array_equal(q.ids, out["indices"])
  want = (np.transpose(out["forward_nchw"], (0, 2, 3, 1)) + 1.0) / 2.0
  np.testing.assert_allclose(recon, want, atol=1e-4)


def _llamagen_gpt(tmp_path, vocab_bits):
  sd = random_ar_state_dict(5, layers=1, dim=128, mlp=512, classes=10, n=1,
                            bits=vocab_bits, llamagen=True)
  src = tmp_path / f"gpt{vocab_bits}.npz"
  np.savez(src, **sd)
  return src


@pytest.mark.slow
def test_llamagen_gpt_over_its_vq_makes_images(llamagen_vq_dir, tmp_path, capsys):
  """A LlamaGen GPT over the imported VQ: its 512-way vocabulary is the
  codebook, the grid is the tokenizer's; sampled ids decode to images."""
  src = _llamagen_gpt(tmp_path, 9)
  out = tmp_path / "gpt"
  tiny = (f"--config={ROOT}/configs/ar.py:tiny", "--config.model.num_layers=1")
  assert convert.cli(["convert", "--from=llamagen-gpt", f"--src={src}",
                      f"--out={out}", f"--tokenizer={llamagen_vq_dir}",
                      *tiny]) == 0
  gen = generator_checkpoint.load(str(out))
  assert (gen.model.grid_size, gen.model.num_subcodes,
          gen.model.vocab_size) == (8, 1, 512)
  settings = SamplerSettings(cfg_scale=2.0, cfg_schedule="constant")
  ids = jax.jit(lambda p, l, r: autoregressive.sample(gen.model, p, l, r, settings))(
      gen.params, np.array([1, 2], np.int32), jax.random.key(0))
  images = np.asarray(decode_tokens(gen.tokenizer.model, gen.tokenizer.params, ids))
  assert images.shape == (2, 32, 32, 3) and images.std() > 0
  # A vocabulary that is not the tokenizer's codebook, and a grid or split
  # beside a tokenizer, are refused by name.
  capsys.readouterr()
  small = _llamagen_gpt(tmp_path, 8)
  assert convert.cli(["convert", "--from=llamagen-gpt", f"--src={small}",
                      f"--out={tmp_path / 'bad'}",
                      f"--tokenizer={llamagen_vq_dir}", *tiny]) == 1
  assert ("the file has 1 table(s) of 256 entries (tok_embedder.weight [256, "
          "128]), the tokenizer's codes need 1 of 512") in capsys.readouterr().err
  assert convert.cli(["convert", "--from=llamagen-gpt", f"--src={src}",
                      f"--out={tmp_path / 'bad'}", "--grid_size=8",
                      f"--tokenizer={llamagen_vq_dir}", *tiny]) == 1
  assert "the tokenizer fixes the grid" in capsys.readouterr().err
  assert not (tmp_path / "bad" / "checkpoints").exists()


def test_llamagen_vq_shape_mismatch_names_both_shapes(tmp_path, capsys):
  sd = dict(np.load(VQ_REF / "state_dict.npz"))
  sd["decoder.conv_out.weight"] = np.zeros((3, 32, 3, 2), np.float32)
  np.savez(tmp_path / "bad.npz", **sd)
  assert convert.cli(["convert", "--from=llamagen-vq", f"--src={tmp_path / 'bad.npz'}",
                      f"--out={tmp_path / 'w'}", "--image_size=32"]) == 1
  err = capsys.readouterr().err
  assert ("'decoder.conv_out.weight' has shape (3, 32, 3, 2), expected "
          "(3, 32, 3, 3)") in err
  assert not (tmp_path / "w" / "checkpoints").exists()


# ------------------------------------------------------- through the CLIs


def _sample(gen_dir, out_dir, *flags):
  cmd = [sys.executable, "-m", "elm_jax.sample", "--config=configs/sample.py:tiny",
         f"--config.generator.checkpoint={gen_dir}", f"--workdir={out_dir}", *flags]
  proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ar", "mlm"])
def test_train_and_sample_over_each_kind(kind_dir, stage, tmp_path):
  """`elm_jax.main` trains a tiny generator over the VQ / LFQ tokenizer, and
  `elm_jax.sample` writes its grid and samples."""
  _, workdir = kind_dir
  gen = str(tmp_path / stage)
  run_main(gen, f"--config.tokenizer.checkpoint={workdir}",
           config=f"configs/{stage}.py:tiny")
  rows = [json.loads(line) for line in open(os.path.join(gen, "metrics.jsonl"))]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  out = str(tmp_path / "samples")
  flags = ["--config.sampler.iterations=4"] if stage == "mlm" else []
  _sample(gen, out, *flags)
  assert os.path.getsize(os.path.join(out, "grid.png")) > 0
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["arr_0"].shape == (20, 32, 32, 3) and f["arr_0"].std() > 0


@pytest.mark.slow
def test_converted_llamagen_pair_samples_through_the_cli(llamagen_vq_dir, tmp_path):
  """docs/import.md's LlamaGen path: VQ workdir, GPT workdir over it (stored
  bfloat16, sampled in float32 by --config.generator.dtype), `elm_jax.sample`."""
  src = _llamagen_gpt(tmp_path, 9)
  gen = tmp_path / "gpt"
  assert convert.cli(["convert", "--from=llamagen-gpt", f"--src={src}",
                      f"--out={gen}", f"--tokenizer={llamagen_vq_dir}",
                      f"--config={ROOT}/configs/ar.py:tiny",
                      "--config.model.num_layers=1",
                      "--config.model.dtype=bfloat16"]) == 0
  out = tmp_path / "samples"
  _sample(gen, out, "--config.generator.dtype=float32")
  pinned = json.loads((out / "sample_config.json").read_text())
  assert pinned["dtype"] == "float32"
  with np.load(out / "samples.npz") as f:
    assert f["arr_0"].shape == (20, 32, 32, 3)
