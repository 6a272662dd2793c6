"""elm_jax.aot: topology names, the abstract tokenizer, memory report and the
overflow exit on this machine's CPU devices; a real TPU compile where libtpu
is importable (or named by LIBTPU_DIR)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from config_loading import get_config
from elm_jax import aot_compile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,chips,topology,hbm", [
    ("v5p-128", 64, "v5p:4x4x4", 95),
    ("v4-64", 32, "v4:2x4x4", 32),
    ("v5e-256", 256, "v5e:16x16", 16),
    ("v6e-8", 8, "v6e:2x4", 32),
    ("v5p:2x2x1", 4, "v5p:2x2x1", 95),
])
def test_parse_topology(name, chips, topology, hbm):
  t = aot_compile.parse_topology(name)
  assert (t.chips, t.topology_name, t.hbm_gib) == (chips, topology, hbm)
  assert aot_compile.parse_topology(name, hbm_gib=8).hbm_gib == 8


@pytest.mark.parametrize("name,message", [
    ("v5p-127", "number of TensorCores"),
    ("v7-8", "chip in"),
    ("v5e-12", "no standard v5e slice of 12 chips"),
    ("v5p", "expected <chip>-<cores>"),
])
def test_bad_topology_names_the_fix(name, message):
  with pytest.raises(ValueError, match=message):
    aot_compile.parse_topology(name)


def test_abstract_tokenizer_from_configs_bae():
  config = get_config("ar", "imagenet,size=B,split=2-12")
  tok = aot_compile.abstract_tokenizer(config)  # no checkpoint: configs/bae.py:imagenet
  assert (tok.bits, tok.grid_size) == (24, 16)
  leaves = jax.tree.leaves(tok.params)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  n = sum(int(np.prod(x.shape)) for x in leaves)
  assert 60e6 < n < 70e6  # docs/spec.md section 2: about 30.4M + 35.0M


def _tiny_config(tokenizer_dir, **mesh):
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tokenizer_dir
  config.mesh = {"data": 1, "fsdp": 1, "tensor": 1, **mesh}
  return config


@pytest.mark.slow
def test_cpu_compile_report_and_overflow_exit(tmp_path, tiny_tokenizer_dir, capsys):
  config = _tiny_config(tiny_tokenizer_dir, fsdp=8)
  out = str(tmp_path / "report.json")
  target = aot_compile.parse_topology("cpu", hbm_gib=1e-3)  # 1 MiB: cannot fit
  assert aot_compile.run(config, target, out) == 1
  printed = capsys.readouterr()
  assert "train_step" in printed.out and "NO" in printed.out
  assert "DOES NOT FIT: train_step needs" in printed.err
  assert "GiB per chip" in printed.err and "--config.mesh.fsdp=-1" in printed.err

  report = json.load(open(out))
  assert report["fits"] is False and report["chips"] == 8
  assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  m = report["memory"]
  assert m["total"] > report["hbm_bytes"] and m["temporaries"] > 0
  # params + 2 Adam moments + EMA in float32, split 8 ways by fsdp (the
  # largest weights divide; a few small ones stay replicated).
  state_bytes = 4 * report["parameters"] * 4
  assert state_bytes / 8 <= m["arguments"] < state_bytes / 2
  assert m["aliased"] > 0  # the donated state
  # FLOPs: 256 positions (16x16 grid); unscanned layers, so XLA's count (which
  # also holds the frozen encoder and the optimizer) is near the model FLOPs.
  model = 8 * 256 * (6 * report["parameters"] + 12 * 2 * 256 * 128)
  assert report["model_flops_per_step"] == model
  assert 0.7 * model < report["flops_per_step"] < 3 * model

  report["hbm_bytes"] = 2 ** 40
  assert aot_compile.overflow(report) == ""
  assert "yes" in aot_compile.format_report(report)


def test_compiler_out_of_memory_is_reported_as_overflow(tmp_path, monkeypatch, capsys):
  """A TPU compile that XLA refuses for lack of HBM still gives a report."""
  def refuse(*args):
    raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total "
                       "memory required for HLO temporaries (53.39G) exceeds "
                       "available HBM (30.75G).\nmore detail")
  monkeypatch.setattr(aot_compile, "compile_train_step", refuse)
  config = get_config("ar", "tiny,split=2-4")
  config.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  out = str(tmp_path / "refused.json")
  assert aot_compile.run(config, aot_compile.parse_topology("cpu", hbm_gib=32), out) == 1
  err = capsys.readouterr().err
  assert "DOES NOT FIT" in err and "53.39G" in err and "--config.mesh.fsdp=-1" in err
  report = json.load(open(out))
  assert report["fits"] is False and report["mesh"]["data"] == -1
  assert "ran out of memory" in report["error"]

  def broken(*args):
    raise RuntimeError("INTERNAL: something else")
  monkeypatch.setattr(aot_compile, "compile_train_step", broken)
  with pytest.raises(RuntimeError, match="INTERNAL"):  # not mistaken for a fit
    aot_compile.run(config, aot_compile.parse_topology("cpu", hbm_gib=32), out)


def _libtpu_dir():
  spec = importlib.util.find_spec("libtpu")
  if spec is not None:
    return os.path.dirname(os.path.dirname(spec.origin))
  d = os.environ.get("LIBTPU_DIR", "")
  return d if d and os.path.isdir(os.path.join(d, "libtpu")) else None


@pytest.mark.skipif(_libtpu_dir() is None,
                    reason="libtpu not importable (launch/requirements-tpu.txt; "
                    "or set LIBTPU_DIR)")
@pytest.mark.slow
def test_tpu_compile(tmp_path, tiny_tokenizer_dir):
  out = str(tmp_path / "tpu.json")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_SKIP_MDS_QUERY="1")
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-m", "elm_jax.aot", "--topology=v5e:2x2",
         f"--libtpu={_libtpu_dir()}", "--config=configs/ar.py:tiny,split=2-4",
         f"--config.tokenizer.checkpoint={tiny_tokenizer_dir}",
         "--config.mesh.data=2", "--config.mesh.fsdp=2", "--batch=8",
         f"--json={out}"]
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(out))
  assert report["chip"] == "v5e" and report["chips"] == 4 and report["fits"]
  assert report["hbm_bytes"] == 16 * 2 ** 30
  assert 0 < report["memory"]["total"] < report["hbm_bytes"]
  assert report["flops_per_chip"] > 0
  assert "train_step" in result.stdout
