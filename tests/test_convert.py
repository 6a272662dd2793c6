"""`python -m elm_jax.convert`: the reference vectors through the command line
and back out of the written checkpoint, other sizes and splits, LlamaGen's GPT
against an independent NumPy forward, .pt input, resuming training, errors."""

import argparse
import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from elm_jax import checkpointing, convert, generator_config
from elm_jax.tokens import Codes
from elm_jax.train import frozen_tokenizer
from pytorch_layouts import (elm_bae_state_dict, llamagen_freqs_cis,
                             numpy_ar_forward, random_ar_state_dict)
from processes import subprocess_env as env

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = ROOT / "tests" / "reference"
ATOL = 1e-4


def cli(*args) -> int:
  return convert.cli(["convert", *map(str, args)])


def ok(*args) -> None:
  assert cli(*args) == 0


def cfg(spec: str) -> str:
  return f"--config={ROOT}/configs/{spec}"


def restore(workdir):
  ckpt = checkpointing.Checkpointer(str(workdir))
  step = ckpt.latest_step()
  state, config = ckpt.restore(step), ckpt.restore_config(step)
  ckpt.close()
  return step, state, config


def nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same_values(sd: dict, tree, skip=()) -> None:
  """Every tensor of `sd` (but `skip`) lands in `tree` once: equal sorted values."""
  a = np.sort(np.concatenate([np.ravel(v) for k, v in sd.items()
                              if not k.startswith(tuple(skip))]))
  b = np.sort(np.concatenate([np.ravel(x) for x in leaves(tree)]))
  np.testing.assert_array_equal(a, b)


# Both 32x32 -> 4x4 grids (3 downsamplings), unlike configs/bae.py:tiny.
BAE_ARCHS = {
    10: dict(nf=32, ch_mult=(1, 1, 1, 2), res_blocks=1, attn_levels=(1,),
             emb_dim=32, bits=10),
    5: dict(nf=32, ch_mult=(1, 2, 2, 2), res_blocks=2, attn_levels=(2,),
            emb_dim=64, bits=5),
}


def bae_flags(arch) -> list[str]:
  attn = tuple(32 // 2 ** i for i in arch["attn_levels"])
  return [cfg(f"bae.py:tiny,bits={arch['bits']}"),
          f"--config.model.ch_mult={arch['ch_mult']}",
          f"--config.model.num_res_blocks={arch['res_blocks']}",
          f"--config.model.attn_resolutions={attn}",
          f"--config.model.emb_dim={arch['emb_dim']}",
          "--config.loss.gan_weight=0"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  """{bits: (workdir, state dict)}: random ELM BAEs converted through the CLI."""
  out = {}
  for bits, arch in BAE_ARCHS.items():
    sd = elm_bae_state_dict(bits, **arch)
    src = tmp_path_factory.mktemp("src") / f"bae{bits}.npz"
    # Saved as a whole BinaryGAN would be: autoencoder under ae., more beside.
    np.savez(src, **{"ae." + k: v for k, v in sd.items()},
             **{"disc.main.0.weight": np.ones((64, 3, 4, 4), np.float32),
                "perceptual.lin0.model.1.weight": np.ones((1, 64, 1, 1))})
    workdir = tmp_path_factory.mktemp(f"bae{bits}")
    ok("--from=elm-bae", f"--src={src}", f"--out={workdir}", *bae_flags(arch))
    out[bits] = (str(workdir), sd)
  return out


@pytest.mark.slow
def test_bae_reference_through_cli(tmp_path):
  ok("--from=elm-bae", f"--src={REF}/bae_k8/state_dict.npz",
     f"--out={tmp_path}", cfg("bae.py:tiny"))
  step, state, config = restore(tmp_path)
  assert step == 0 and config["stage"] == "bae"
  for a, b in zip(leaves(state["params"]["ae"]), leaves(state["ema_params"])):
    np.testing.assert_array_equal(a, b)
  tok = frozen_tokenizer.load(str(tmp_path))
  inputs, out = np.load(REF / "bae_k8/inputs.npz"), np.load(REF / "bae_k8/outputs.npz")
  model = tok.model
  encode = jax.jit(lambda x: model.apply({"params": tok.params}, x,
                                         method=model.encode))
  decode = jax.jit(lambda c: model.apply({"params": tok.params}, c,
                                         method=model.decode))
  q = encode(jnp.asarray(nhwc(inputs["images"])))
  np.testing.assert_allclose(q.probs, nhwc(out["probs"]), atol=ATOL)
  far = ~nhwc(out["near_threshold"])
  np.testing.assert_array_equal(np.asarray(q.bits)[far], nhwc(out["codes"])[far])
  codes = np.concatenate([nhwc(out["codes"]), nhwc(inputs["codes_random"])])
  recon = np.concatenate([nhwc(out["recon"]), nhwc(out["recon_random"])])
  np.testing.assert_allclose(decode(jnp.asarray(codes)), recon, atol=ATOL)


@pytest.mark.slow
def test_other_bae_sizes_round_trip(tokenizers):
  for bits, (workdir, sd) in tokenizers.items():
    tok = frozen_tokenizer.load(workdir)
    assert (tok.bits, tok.grid_size) == (bits, 4)
    assert tuple(tok.config.model.ch_mult) == BAE_ARCHS[bits]["ch_mult"]
    # Every used tensor exactly once (ResBlocks' identity conv_out and
    # logsigma are ELM's dead weights), in the right place:
    dead = [k[:-len("weight")] for k in sd if k.endswith("conv_out.weight")
            and sd[k].shape[0] == sd[k].shape[1]] + ["generator.logsigma."]
    same_values(sd, tok.params, skip=dead)
    enc = tok.params["encoder"]
    np.testing.assert_array_equal(
        enc["conv_in"]["kernel"],
        np.transpose(sd["encoder.blocks.0.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(tok.params["quantize"]["embed"],
                                  sd["quantize.embed.weight"])
    x = jax.eval_shape(lambda c: tok.model.apply(
        {"params": tok.params}, c, method=tok.model.decode),
        jax.ShapeDtypeStruct((1, 4, 4, bits), jnp.float32))
    assert x.shape == (1, 32, 32, 3)


# ------------------------------------------------------ transformers


def model_from_checkpoint(config: dict, grid: int = 4):
  """The generator as a sampler builds it: the saved config, bits, grid."""
  config = ml_collections.ConfigDict(config)
  n, k = generator_config.split_of(config)
  return generator_config.build_transformer(
      config, Codes(config.model.get("grid_size", grid),
                    bits=config.model.get("bits", n * k)))


def logits_of(config, params, idx, labels):
  model = model_from_checkpoint(config)
  out, _ = jax.jit(model.apply)({"params": params}, jnp.asarray(idx, jnp.int32),
                                jnp.asarray(labels, jnp.int32))
  return np.asarray(out)  # [B, L, n, V]


@pytest.mark.slow
def test_ar_reference_through_cli(tmp_path, tokenizers):
  ok("--from=elm-ar", f"--src={REF}/ar_2x5/state_dict.npz", f"--out={tmp_path}",
     f"--tokenizer={tokenizers[10][0]}", cfg("ar.py:tiny,split=2-5"))
  step, state, config = restore(tmp_path)
  assert step == 0 and config["stage"] == "ar"
  assert config["tokenizer"]["checkpoint"] == tokenizers[10][0]
  inputs, out = np.load(REF / "ar_2x5/inputs.npz"), np.load(REF / "ar_2x5/outputs.npz")
  params = state["ema_params"]
  for labels, ref in (("labels", "logits"), ("labels_null", "logits_null_label")):
    got = logits_of(config, params, inputs["idx"], inputs[labels])
    np.testing.assert_allclose(got.reshape(out[ref].shape), out[ref], atol=ATOL)
  prefill = logits_of(config, params, inputs["idx"][:, :0], inputs["labels"])
  np.testing.assert_allclose(prefill.reshape(2, 2, 32), out["logits_prefill"],
                             atol=ATOL)
  # A fresh optimizer: Adam moments zero, count 0.
  assert all(not np.any(x) for x in leaves(state["opt_state"]))


@pytest.mark.slow
def test_mlm_reference_through_cli(tmp_path, tokenizers):
  ok("--from=elm-mlm", f"--src={REF}/mlm_1x5/state_dict.npz", f"--out={tmp_path}",
     f"--tokenizer={tokenizers[5][0]}", cfg("mlm.py:tiny,split=1-5"))
  _, state, config = restore(tmp_path)
  inputs, out = np.load(REF / "mlm_1x5/inputs.npz"), np.load(REF / "mlm_1x5/outputs.npz")
  for labels, ref in (("labels", "logits"), ("labels_null", "logits_null_label")):
    got = logits_of(config, state["ema_params"], inputs["idx"], inputs[labels])
    np.testing.assert_allclose(got.reshape(out[ref].shape), out[ref], atol=ATOL)


@pytest.mark.slow
def test_other_ar_size_and_split(tmp_path, tokenizers):
  """5 sub-codes of 2 bits, width 192 (3 heads), 3 layers, a non-default MLP."""
  sd = random_ar_state_dict(1, layers=3, dim=192, mlp=320, classes=7, n=5, bits=2)
  np.savez(tmp_path / "ar.npz", **sd)
  ok("--from=elm-ar", f"--src={tmp_path / 'ar.npz'}", f"--out={tmp_path / 'w'}",
     f"--tokenizer={tokenizers[10][0]}", cfg("ar.py:tiny,split=5-2"),
     "--config.model.num_layers=3", "--config.model.dim=192",
     "--config.model.num_heads=3", "--config.model.mlp_dim=320",
     "--config.data.num_classes=7")
  _, state, config = restore(tmp_path / "w")
  rng = np.random.default_rng(0)
  idx, labels = rng.integers(0, 4, (2, 15, 5)), np.array([3, 7])  # 7: null
  want = numpy_ar_forward(sd, idx, labels, num_heads=3, grid=4)
  got = logits_of(config, state["ema_params"], idx, labels)
  np.testing.assert_allclose(got, want, atol=ATOL)


def test_other_mlm_split(tmp_path, tokenizers):
  """MLM with 2 sub-codes: n read from the dead `proj`, grid from pos_embed."""
  rng = np.random.default_rng(2)
  sd = random_ar_state_dict(2, layers=2, dim=128, mlp=512, classes=10, n=1, bits=5)
  sd["tok_embedder.weight"] = rng.normal(0, 0.5, (33, 128)).astype(np.float32)
  sd.update({"pos_embed.weight": np.zeros((16, 128), np.float32),
             "proj.weight": np.zeros((128, 256), np.float32),
             "mlm_layer.fc.weight": rng.normal(0, 0.05, (128, 128)).astype(np.float32),
             "mlm_layer.fc.bias": np.zeros(128, np.float32),
             "mlm_layer.ln.weight": np.ones(128, np.float32),
             "mlm_layer.ln.bias": np.zeros(128, np.float32),
             "mlm_layer.bias": rng.normal(0, 0.1, (1, 1, 33)).astype(np.float32)})
  np.savez(tmp_path / "mlm.npz", **sd)
  ok("--from=elm-mlm", f"--src={tmp_path / 'mlm.npz'}", f"--out={tmp_path / 'w'}",
     f"--tokenizer={tokenizers[10][0]}", cfg("mlm.py:tiny,split=2-5"))
  _, state, config = restore(tmp_path / "w")
  assert config["split"] == "2-5" and "num_subcodes" not in config["model"]
  p = state["ema_params"]
  np.testing.assert_array_equal(p["tok_embed"]["embedding"], sd["tok_embedder.weight"])
  np.testing.assert_array_equal(p["mlm_head"]["bias"], sd["mlm_layer.bias"].ravel())
  logits = logits_of(config, p, np.zeros((1, 16, 2)), np.zeros(1))
  assert logits.shape == (1, 16, 2, 32) and np.isfinite(logits).all()


def test_llamagen_gpt_matches_numpy_forward(tmp_path, capsys):
  """LlamaGen's key layout (tok_embeddings, freqs_cis, a DDP prefix); head_dim
  100 as in GPT-3B; no tokenizer: bits and --grid_size go into the config,
  and a grid that freqs_cis contradicts, or none, is refused."""
  sd = random_ar_state_dict(3, layers=2, dim=200, mlp=768, classes=10, n=1,
                            bits=6, llamagen=True)
  sd["freqs_cis"] = llamagen_freqs_cis(4, 100).astype(np.float32)
  np.savez(tmp_path / "gpt.npz", **{"module." + k: v for k, v in sd.items()})
  args = ("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.npz'}",
          f"--out={tmp_path / 'w'}", cfg("ar.py:tiny,split=1-6"),
          "--config.model.dim=200", "--config.model.num_heads=2",
          "--config.model.head_dim=100")
  assert cli(*args) == 1
  assert ("needs --grid_size (16 for 256x256 models, 24 for 384x384); the "
          "file's freqs_cis [17, 50, 2] implies 4") in capsys.readouterr().err
  assert cli(*args, "--grid_size=5") == 1
  err = capsys.readouterr().err
  assert "implies a 4x4 grid, --grid_size gives 5x5" in err
  assert not (tmp_path / "w" / "checkpoints").exists()
  ok(*args, "--grid_size=4")
  out = capsys.readouterr().out
  assert "dtype: model.dtype=float32" in out
  # Progress: reading, mapping and writing, each with the time so far.
  assert re.search(r"read 19 tensors in [\d.]+ s", out), out
  assert re.search(r"mapped [\d,]+ parameters at [\d.]+ s; writing", out), out
  _, state, config = restore(tmp_path / "w")
  assert (config["model"]["bits"], config["model"]["grid_size"]) == (6, 4)
  rng = np.random.default_rng(1)
  idx, labels = rng.integers(0, 64, (2, 15, 1)), np.array([0, 10])
  want = numpy_ar_forward(sd, idx, labels, num_heads=2, grid=4)
  got = logits_of(config, state["ema_params"], idx, labels)
  np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.slow
def test_resume_training_from_converted_ar(tmp_path, tokenizers):
  out = tmp_path / "ar"
  ok("--from=elm-ar", f"--src={REF}/ar_2x5/state_dict.npz", f"--out={out}",
     f"--tokenizer={tokenizers[10][0]}", cfg("ar.py:tiny,split=2-5"), "--step=3")
  proc = subprocess.run(
      [sys.executable, "-m", "elm_jax.main", "--config=configs/ar.py:tiny,split=2-5",
       f"--config.tokenizer.checkpoint={tokenizers[10][0]}", f"--workdir={out}"],
      cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Resuming from checkpoint" in proc.stderr
  assert "has no data-iterator state" in proc.stderr
  rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [4]
  assert checkpointing.Checkpointer(str(out)).all_steps() == [3, 4]


def small_llamagen(seed=3):
  return random_ar_state_dict(seed, layers=1, dim=128, mlp=512, classes=10, n=1,
                              bits=4, llamagen=True)


LLAMAGEN_TINY = (cfg("ar.py:tiny,split=1-4"), "--config.model.num_layers=1",
                 "--grid_size=4")


def test_pt_input_prefers_ema(tmp_path):
  torch = pytest.importorskip("torch")
  sd = small_llamagen()
  ema = {"module." + k: torch.from_numpy(v) for k, v in sd.items()}
  model = {"module." + k: torch.from_numpy(v + 1).bfloat16()
           for k, v in sd.items()}
  torch.save({"model": model, "ema": ema, "steps": 5,
              "args": argparse.Namespace(gpt_model="GPT-B")}, tmp_path / "gpt.pt")
  ok("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.pt'}",
     f"--out={tmp_path / 'ema'}", *LLAMAGEN_TINY)
  p = restore(tmp_path / "ema")[1]["ema_params"]
  np.testing.assert_array_equal(p["norm"]["scale"], sd["norm.weight"])
  ok("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.pt'}", "--noema",
     f"--out={tmp_path / 'model'}", *LLAMAGEN_TINY)
  p = restore(tmp_path / "model")[1]["ema_params"]
  np.testing.assert_allclose(p["norm"]["scale"], sd["norm.weight"] + 1,
                             rtol=1e-2)  # stored as bfloat16
  (tmp_path / "cut.pt").write_bytes((tmp_path / "gpt.pt").read_bytes()[:5000])
  assert cli("--from=llamagen-gpt", f"--src={tmp_path / 'cut.pt'}",
             f"--out={tmp_path / 'cut'}", *LLAMAGEN_TINY) == 1


# ------------------------------------------------------------------ errors


def _ar_args(src, out, tokenizers):
  return ("--from=elm-ar", f"--src={src}", f"--out={out}",
          f"--tokenizer={tokenizers[10][0]}", cfg("ar.py:tiny,split=2-5"))


def _edited(sd, drop=(), **extra):
  return {**{k: v for k, v in sd.items() if k not in drop}, **extra}


@pytest.mark.parametrize("edit,message", [
    (lambda sd: _edited(sd, drop=["layers.1.feed_forward.w3.weight"]),
     r"lacks 'layers.1.feed_forward.w3.weight'"),
    (lambda sd: _edited(sd, **{"layers.0.attention.extra.weight": np.zeros(3)}),
     r"layers.0.attention.extra.weight"),
    (lambda sd: _edited(sd, **{"layers.1.attention.wo.weight": np.zeros((128, 127))}),
     r"'layers.1.attention.wo.weight' has shape \(128, 127\), expected "
     r"\(128, 128\)"),
    (lambda sd: _edited(sd, **{"layers.0.feed_forward.w2.weight":
                               sd["layers.0.feed_forward.w2.weight"].T}),
     r"'layers.0.feed_forward.w2.weight' has shape \((\d+), (\d+)\), expected "
     r"\(\2, \1\) \(for the model's .*w2"),
])
def test_bad_generator_tensors_are_named(tmp_path, tokenizers, capsys, edit,
                                         message):
  sd = edit(dict(np.load(REF / "ar_2x5/state_dict.npz")))
  np.savez(tmp_path / "bad.npz", **sd)
  assert cli(*_ar_args(tmp_path / "bad.npz", tmp_path / "w", tokenizers)) == 1
  assert re.search(message, capsys.readouterr().err)
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_bad_bae_shape_is_named(tmp_path, capsys):
  sd = dict(np.load(REF / "bae_k8/state_dict.npz"))
  sd["encoder.blocks.1.conv2.weight"] = np.zeros((32, 32, 3, 2), np.float32)
  np.savez(tmp_path / "bad.npz", **sd)
  assert cli("--from=elm-bae", f"--src={tmp_path / 'bad.npz'}",
             f"--out={tmp_path / 'w'}", cfg("bae.py:tiny")) == 1
  err = capsys.readouterr().err
  assert ("'encoder.blocks.1.conv2.weight' has shape (32, 32, 3, 2), expected "
          "(32, 32, 3, 3)") in err


def test_input_and_config_errors(tmp_path, tokenizers, capsys):
  ar = REF / "ar_2x5/state_dict.npz"
  # Non-existent and corrupt sources.
  assert cli(*_ar_args(tmp_path / "nope.npz", tmp_path / "w", tokenizers)) == 1
  assert "no such file" in capsys.readouterr().err
  (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
  assert cli(*_ar_args(tmp_path / "junk.npz", tmp_path / "w", tokenizers)) == 1
  assert "corrupt" in capsys.readouterr().err
  # The default config (size and split read off the file) names the fix.
  assert cli("--from=elm-ar", f"--src={ar}", f"--out={tmp_path / 'w'}",
             f"--tokenizer={tokenizers[10][0]}") == 1
  captured = capsys.readouterr()
  assert "config: configs/ar.py:imagenet,size=tiny,split=2-5" in captured.out
  assert "the file has 10" in captured.err
  assert "--config.data.num_classes=10" in captured.err
  # A split that contradicts the file, and a tokenizer of the wrong width.
  assert cli("--from=elm-ar", f"--src={ar}", f"--out={tmp_path / 'w'}",
             f"--tokenizer={tokenizers[10][0]}", cfg("ar.py:tiny,split=1-10")) == 1
  assert "split=2-5" in capsys.readouterr().err
  assert cli("--from=elm-ar", f"--src={ar}", f"--out={tmp_path / 'w'}",
             f"--tokenizer={tokenizers[5][0]}", cfg("ar.py:tiny,split=2-5")) == 1
  assert "makes 5-bit codes" in capsys.readouterr().err
  assert cli("--from=elm-ar", f"--src={ar}", f"--out={tmp_path / 'w'}",
             cfg("ar.py:tiny,split=2-5")) == 1
  assert "needs --tokenizer" in capsys.readouterr().err
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_existing_checkpoint_needs_overwrite(tmp_path, capsys):
  np.savez(tmp_path / "gpt.npz", **small_llamagen())
  args = ("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.npz'}",
          f"--out={tmp_path / 'w'}", *LLAMAGEN_TINY)
  ok(*args)
  assert cli(*args, "--step=7") == 1
  assert "already holds a checkpoint" in capsys.readouterr().err
  assert checkpointing.Checkpointer(str(tmp_path / "w")).all_steps() == [0]
  ok(*args, "--step=7", "--overwrite")
  assert checkpointing.Checkpointer(str(tmp_path / "w")).all_steps() == [7]
  assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith(".")]
  info = json.loads((tmp_path / "w" / "converted_from.json").read_text())
  assert info["step"] == 7 and info["kind"] == "llamagen-gpt"


@pytest.mark.slow
def test_command_line_exit_codes(tmp_path, capsys):
  assert cli("--from=elm-xx") == 2
  assert "usage" in capsys.readouterr().err
  proc = subprocess.run(
      [sys.executable, "-m", "elm_jax.convert", "--from=elm-bae",
       f"--src={tmp_path}/x.pt", f"--out={tmp_path}/w"], cwd=ROOT, env=env(),
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "no such file" in proc.stderr


def test_wrappers_and_prefixes_are_removed():
  from elm_jax.weights import state_dict_io
  w = np.ones(2, np.float32)
  # ema_pytorch: an EMA copy beside the online model, plus bookkeeping.
  sd, notes = state_dict_io.strip_prefixes({
      "ema_model._orig_mod.norm.weight": w, "online_model._orig_mod.norm.weight": 2 * w,
      "initted": np.array(True), "step": np.array(5)})
  assert list(sd) == ["norm.weight"] and sd["norm.weight"][0] == 1
  assert "kept the 'ema_model.' copy" in notes
  sd, _ = state_dict_io.strip_prefixes({"online_model.norm.weight": 2 * w,
                                        "ema_model.norm.weight": w}, prefer_ema=False)
  assert sd["norm.weight"][0] == 2
  # AveragedModel under DDP, inside a training checkpoint.
  ckpt = {"optimizer": {"state": {}}, "steps": 3,
          "ema": {"module.n_averaged": np.array(9), "module.norm.weight": w}}
  inner, path = state_dict_io.unwrap(ckpt)
  assert path == ["ema"]
  sd, notes = state_dict_io.strip_prefixes(inner)
  assert list(sd) == ["norm.weight"] and "n_averaged" in notes[-1]
  with pytest.raises(ValueError, match="no state dict found.*optimizer"):
    state_dict_io.unwrap({"optimizer": {"lr": 1.0}, "steps": 3})


def test_a_vocabulary_that_is_not_bits_needs_a_vq_tokenizer(tmp_path, capsys):
  sd = small_llamagen()
  sd["tok_embeddings.weight"] = sd["tok_embeddings.weight"][:10]
  sd["output.weight"] = sd["output.weight"][:10]
  np.savez(tmp_path / "gpt.npz", **sd)
  assert cli("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.npz'}",
             f"--out={tmp_path / 'w'}", "--grid_size=4") == 1
  assert ("10 entries is not a power of two, so not a vocabulary of bits; pass "
          "--tokenizer=DIR with a VQ tokenizer of 10 codes") in capsys.readouterr().err
  assert cli("--from=llamagen-gpt", f"--src={tmp_path / 'gpt.npz'}",
             f"--out={tmp_path / 'w'}", *LLAMAGEN_TINY) == 1
  assert "10 entries is not a power of two" in capsys.readouterr().err
