"""The benchmark scripts run end to end at tiny sizes and write their JSON."""

import json
import os
import runpy
import sys

import pytest

from processes import ROOT


def run_script(name, args, monkeypatch):
  monkeypatch.setattr(sys, "argv", [name] + args)
  runpy.run_path(os.path.join(ROOT, "benchmarks", name), run_name="__main__")


@pytest.mark.parametrize("dtype,steps,impl", [("float32", 2, "einsum"),
                                              ("bfloat16", 1, "jax")])
@pytest.mark.slow
def test_ar_train_step_reports_mfu_per_step(dtype, steps, impl, tmp_path,
                                            monkeypatch, capsys):
  """float32: the CPU target; bfloat16: the commands of the GPU target."""
  out = tmp_path / "ar.json"
  run_script("ar_train_step.py", ["--sizes=tiny", f"--steps={steps}",
                                  f"--dtype={dtype}", f"--attention_impl={impl}",
                                  f"--json={out}"], monkeypatch)
  (row,) = json.loads(out.read_text())
  assert (row["size"], row["dtype"], row["attention_impl"]) == ("tiny", dtype, impl)
  assert len(row["mfu_all"]) == len(row["peak_tflops_all"]) == steps
  assert row["peak_tflops"] > 0
  # MFU is the median of the per-step ratios to the peak measured beside them.
  for t, p, m in zip(row["step_s_all"], row["peak_tflops_all"], row["mfu_all"]):
    assert m == pytest.approx(row["model_tflop_per_step"] / t / p)
  assert 0 < row["mfu"] < 1.5
  header = capsys.readouterr().out.splitlines()[1].split()
  assert header == ["size", "batch", "compile", "s", "step", "s", "tokens/s", "TFLOP/step",
                    "TFLOP/s", "peak", "MFU", "MFU", "per", "step"]


@pytest.mark.slow
def test_sampler_batch_and_cpu_dots_tables(tmp_path, monkeypatch):
  out = tmp_path / "sampler.json"
  run_script("sampler.py", ["--tables=batch,cpu_dots", "--sizes=tiny",
                            "--batches=2", "--dots_size=tiny", "--dot_rows=2,16",
                            "--repeats=1", f"--json={out}"], monkeypatch)
  row, *dots = json.loads(out.read_text())["rows"]
  assert [(d["table"], d["rows"], d["sampler_uses"]) for d in dots] == [
      ("cpu_dots", 2, "ynnpack"), ("cpu_dots", 16, "eigen")]
  assert all(d["ynnpack_ms"] > 0 and d["eigen_ms"] > 0 and d["numpy_ms"] > 0
             for d in dots)
  assert (row["table"], row["size"], row["batch"], row["tokens"]) == (
      "batch", "tiny", 2, 256)
  assert row["images_per_s"] == pytest.approx(2 / row["seconds"])


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_host_matmul_chain_computes_what_xla_computes(library):
  """The numpy / PyTorch rows of `cpu_dots` time the same products as XLA's."""
  if library == "torch":
    pytest.importorskip("torch")
  import jax
  import numpy as np
  from benchmarks import sampler
  model, params = sampler.build("tiny", 4)
  mats, heads = sampler.weight_matrices(model, params)
  x = np.full((3, model.dim), 0.01, np.float32)
  want = sampler.matmul_chain(x, mats, heads, jax.nn.silu)
  got = sampler.host_matmul_chain(model, params, 3, library)()
  assert len(got) == len(want) == model.num_subcodes
  for g, w in zip(got, want):
    assert np.asarray(g).shape == (3, 2 ** (16 // model.num_subcodes))
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("layers,dim,heads,split", [(2, 128, 2, (2, 4)), (3, 64, 1, (1, 6))])
def test_ar_model_flops_count_six_per_weight_and_token_plus_attention(layers, dim, heads,
                                                                      split):
  """MFU's numerator, counted from the architecture: 6 FLOPs per non-embedding
  weight and token (2 forward, 4 backward) plus 12 L D T^2 per sequence for
  the attention scores and their use, forward and backward."""
  import jax
  import jax.numpy as jnp
  from benchmarks import ar_train_step
  from elm_jax.models.transformer import Transformer
  n, k = split
  model = Transformer(num_layers=layers, dim=dim, num_heads=heads, bits=n * k,
                      num_subcodes=n, grid_size=4)
  from elm_jax import sharding
  params = sharding.unbox(model.init(jax.random.key(0), jnp.zeros((1, 15, n), jnp.int32),
                                     jnp.zeros((1,), jnp.int32), train=False)["params"])
  mlp = params["layers_0"]["feed_forward"]["w1"]["kernel"].shape[1]
  per_layer = 4 * dim * dim + 3 * dim * mlp + 2 * dim  # qkv + out, SwiGLU, 2 norms
  weights = (layers * per_layer + dim          # the final norm
             + (n * dim * dim if n > 1 else 0)  # n sub-code embeddings projected to one
             + n * dim * 2 ** k)               # one head per sub-code
  batch, seq = 3, 16
  want = 6 * weights * batch * seq + 12 * layers * dim * seq * seq * batch
  assert ar_train_step.model_flops(model, params, batch, seq) == want


def test_tokenizer_kinds_table_from_finished_runs(tmp_path, monkeypatch, capsys):
  """Finished pipeline workdirs are tabulated, not run again: each kind's
  code usage from its tokenizer's last evaluation, the rest from report.json."""
  for kind, usage in (("bae", 0.98), ("vq", 0.61)):
    (tmp_path / kind / "tokenizer").mkdir(parents=True)
    (tmp_path / kind / "tokenizer" / "metrics.jsonl").write_text(
        json.dumps({"step": 600, "eval/code_usage": 0.5}) + "\n"
        + json.dumps({"step": 1200, "eval/code_usage": usage}) + "\n")
    (tmp_path / kind / "report.json").write_text(json.dumps(dict(
        psnr=25.5, class_accuracy=0.8, fid=50.0, fid_real_floor=21.9,
        precision=0.7, recall=0.2, minutes={"total": 30.0, "tokenizer": 10.0})))
  out = tmp_path / "kinds.json"
  run_script("tokenizer_kinds.py", [f"--root={tmp_path}", "--kinds=bae,vq",
                                    f"--json={out}"], monkeypatch)
  rows = json.loads(out.read_text())["rows"]
  assert [(r["kind"], r["code_usage"], r["minutes"]) for r in rows] == [
      ("bae", 0.98, 30.0), ("vq", 0.61, 30.0)]
  header = capsys.readouterr().out.splitlines()[0]
  assert header == ("| kind | code_usage | psnr | class_accuracy | fid | "
                    "fid_real_floor | precision | recall | minutes |")


def test_startup_rows_for_two_entry_points():
  """Timed in fresh processes; neither imports TensorFlow or torch for --help."""
  startup = runpy.run_path(os.path.join(ROOT, "benchmarks", "startup.py"))
  rows = startup["measure"](("pipeline", "sample"), repeats=1)
  assert [r["entry_point"] for r in rows] == ["elm_jax.pipeline", "elm_jax.sample"]
  assert all(r["fastest_s"] > 0 and r["heavy_imports"] == "-" for r in rows)
  assert startup["table"](rows).splitlines()[0] == (
      "| entry_point | median_s | fastest_s | heavy_imports |")
