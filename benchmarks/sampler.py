"""AR sampler throughput: the KV-cache scan sampler vs prefix recomputation.

  python benchmarks/sampler.py                      # all tables below (CPU: ~15 min)
  python benchmarks/sampler.py --json=out.json --tables=batch,length

Tables (random weights; 2-8 split; float32; one device):
  batch    images/s and tokens/s of the cached sampler at tiny and B for
           batch 1, 8, 64 (256-token images, no guidance).
  baseline the same model sampled as ELM does it: at every step the whole
           prefix is run again (jitted full forwards, prefix lengths padded to
           a multiple of 16 to bound compiles; compile time excluded), at
           `--baseline_size`, batch 8, 256 tokens; and the speed-up.
  length   per-token cost of the cached sampler for 64, 256, 1024-token
           images (grid 8, 16, 32) at `--length_size`, batch 8.
  roofline one decoding step at B, batch 8 with guidance (16 sequences):
           measured time beside (weight bytes / measured memory bandwidth)
           + (step FLOPs / measured float32 matmul peak), and beside the
           step's weight matmuls alone at 16 rows (matmuls_only_ms).
  cpu_dots the `--dots_size` weight matmuls alone at 2..64 rows with XLA:CPU's default
           (YNNPACK) dots and with Eigen dots: the measurement behind
           platform.decode_compiler_options (CPU only); beside them the same
           chain in numpy (its BLAS) and, when installed, PyTorch: what other
           matmul libraries make of these shapes on this machine.
Compile time is excluded everywhere (a warm-up call first); times are the
median of `--repeats` calls; the matmul peak and the bandwidth are the
fastest of their calls (benchmarks/device_rates.py).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.device_rates import (call_seconds, matmul_peak,  # noqa: E402
                                     memory_bandwidth)
from elm_jax import platform  # noqa: E402
from elm_jax.models.transformer import SIZES, Transformer  # noqa: E402
from elm_jax.sampling import autoregressive  # noqa: E402
from elm_jax.sampling.settings import SamplerSettings  # noqa: E402


def timed(fn, *args, repeats=3) -> float:
  return statistics.median(call_seconds(fn, *args, repeats=repeats))


def build(size: str, grid: int, bits=16, subcodes=2):
  layers, dim, heads = SIZES[size]
  model = Transformer(num_layers=layers, dim=dim, num_heads=heads, bits=bits,
                      num_subcodes=subcodes, grid_size=grid, num_classes=1000)
  ids = jnp.zeros((1, grid * grid - 1, subcodes), jnp.int32)
  params = jax.jit(lambda r: jax.tree.map(
      lambda x: getattr(x, "value", x),
      model.init(r, ids, jnp.zeros((1,), jnp.int32))["params"],
      is_leaf=lambda x: hasattr(x, "value")))(jax.random.key(0))
  # Non-zero heads, so sampling is not uniform noise.
  params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(
      jax.random.key(1), p.shape, p.dtype), params)
  return model, params


def cached_seconds(model, params, batch, settings, repeats):
  fn = autoregressive.jit_sampler(model, settings, batch=batch)  # as sample.py
  labels = jnp.arange(batch) % 1000
  return timed(fn, params, labels, jax.random.key(0), repeats=repeats)


def prefix_recompute_seconds(model, params, batch, repeats, bucket=16):
  """ELM's way: a full forward over the prefix at every step (no cache)."""
  length, n = model.grid_size ** 2, model.num_subcodes
  labels = jnp.arange(batch) % 1000
  forward = jax.jit(lambda p, ids: model.apply({"params": p}, ids, labels)[0])
  buckets = sorted({-(-max(t, 1) // bucket) * bucket for t in range(length)})
  for b in buckets:  # compile every padded prefix length up front
    forward(params, jnp.zeros((batch, min(b, length - 1), n), jnp.int32))

  def run(key):
    ids = np.zeros((batch, length, n), np.int32)
    for t in range(length):
      width = min(-(-max(t, 1) // bucket) * bucket, length - 1)
      logits = forward(params, jnp.asarray(ids[:, :width]))  # [B, width+1, N, V]
      step = jax.random.fold_in(key, t)
      ids[:, t] = np.asarray(jax.random.categorical(step, logits[:, t]))
    return ids

  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    run(jax.random.key(i))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def weight_matrices(model, params):
  """Per layer [qkv, out, w1, w3, w2] kernels, and the sub-code heads."""
  names = (("attention", "qkv"), ("attention", "out"), ("feed_forward", "w1"),
           ("feed_forward", "w3"), ("feed_forward", "w2"))
  mats = [[p[a][b]["kernel"] for a, b in names] for p in model.layer_params(params)]
  heads = [params[f"head_{i}"]["kernel"] for i in range(model.num_subcodes)]
  return mats, heads


def matmul_chain(x, mats, heads, silu):
  """One decoding step's weight matmuls in sequence, x [rows, E] -> heads'
  [rows, V] logits; any array library with `@` and slicing runs it."""
  for qkv, out, w1, w3, w2 in mats:
    x = x + (x @ qkv)[:, :x.shape[1]] @ out
    x = x + (silu(x @ w1) * (x @ w3)) @ w2
  return [x @ h for h in heads]


def matmuls_only_seconds(model, params, rows: int, repeats: int,
                         options=None) -> float:
  """One decoding step's weight matmuls alone (rows x each layer's qkv, out,
  w1, w3, w2 in sequence, then the heads), nothing else: the floor that
  XLA's small-M matmuls put under a decoding step on this device."""
  x = jnp.ones((rows, model.dim), jnp.float32) * 0.01
  if options is None:
    options = platform.decode_compiler_options(rows)
  fn = jax.jit(lambda x, mats, heads: matmul_chain(x, mats, heads, jax.nn.silu),
               compiler_options=options)
  return timed(fn, x, *weight_matrices(model, params), repeats=repeats)


def host_matmul_chain(model, params, rows: int, library: str):
  """`matmul_chain` as an eager numpy or PyTorch call (float32, all cores)."""
  mats, heads = jax.tree.map(lambda w: np.array(w, np.float32),
                             weight_matrices(model, params))
  x = np.full((rows, model.dim), 0.01, np.float32)
  if library == "torch":
    import torch  # optional: launch/setup.sh installs it for FID and LPIPS
    torch.set_num_threads(os.cpu_count() or 1)
    mats, heads, x = jax.tree.map(torch.from_numpy, (mats, heads, x))
    silu = torch.nn.functional.silu
  else:
    silu = lambda h: h / (1.0 + np.exp(-h))  # noqa: E731
  return lambda: matmul_chain(x, mats, heads, silu)


def host_matmuls_seconds(model, params, rows: int, repeats: int,
                         library: str) -> float:
  chain = host_matmul_chain(model, params, rows, library)
  chain()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    chain()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def non_embedding_params(params) -> int:
  return sum(int(np.prod(x.shape)) for k, v in params.items()
             if not k.startswith(("tok_embed", "class_embed"))
             for x in jax.tree.leaves(v))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tables",
                 default="batch,baseline,length,roofline,cpu_dots")
  p.add_argument("--sizes", default="tiny,B")
  p.add_argument("--batches", default="1,8,64")
  p.add_argument("--baseline_size", default="S")
  p.add_argument("--length_size", default="B")
  p.add_argument("--dot_rows", default="2,4,8,16,32,64")
  p.add_argument("--dots_size", default="B")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default="")
  a = p.parse_args()
  tables = a.tables.split(",")
  plain = SamplerSettings(cfg_scale=1.0, top_k=0)
  rows = []
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}")

  def emit(**row):
    rows.append(row)
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in row.items()), flush=True)

  if "batch" in tables:
    for size in a.sizes.split(","):
      model, params = build(size, 16)
      for batch in map(int, a.batches.split(",")):
        sec = cached_seconds(model, params, batch, plain, a.repeats)
        emit(table="batch", size=size, batch=batch, tokens=256, seconds=sec,
             images_per_s=batch / sec, tokens_per_s=batch * 256 / sec)
  if "baseline" in tables:
    model, params = build(a.baseline_size, 16)
    cached = cached_seconds(model, params, 8, plain, a.repeats)
    recompute = prefix_recompute_seconds(model, params, 8, max(1, a.repeats - 2))
    emit(table="baseline", size=a.baseline_size, batch=8, tokens=256,
         cached_s=cached, prefix_recompute_s=recompute, speedup=recompute / cached)
  if "length" in tables:
    for grid in (8, 16, 32):
      model, params = build(a.length_size, grid)
      sec = cached_seconds(model, params, 8, plain, a.repeats)
      emit(table="length", size=a.length_size, batch=8, tokens=grid * grid,
           seconds=sec, tokens_per_s=8 * grid * grid / sec,
           ms_per_token_step=1e3 * sec / (grid * grid))
  if "roofline" in tables:
    model, params = build("B", 16)
    guided = SamplerSettings(cfg_scale=4.0, cfg_schedule="linear", top_k=0)
    sec = cached_seconds(model, params, 8, guided, a.repeats) / 256
    bandwidth, peak = memory_bandwidth(), matmul_peak()
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    flops = 2 * non_embedding_params(params) * 16  # 16 sequences, one token
    flops += 4 * model.num_layers * model.dim * 256 * 16  # attention, full cache
    bound = weight_bytes / bandwidth + flops / peak
    matmuls = matmuls_only_seconds(model, params, 16, max(a.repeats, 5))
    emit(table="roofline", size="B", batch=8, guided=True, step_ms=1e3 * sec,
         matmuls_only_ms=1e3 * matmuls,
         weights_mb=weight_bytes / 1e6, bandwidth_gbs=bandwidth / 1e9,
         read_weights_ms=1e3 * weight_bytes / bandwidth, step_gflop=flops / 1e9,
         peak_gflops=peak / 1e9, flops_at_peak_ms=1e3 * flops / peak,
         bound_ms=1e3 * bound, within_bound=bool(sec <= bound))
  if "cpu_dots" in tables and jax.default_backend() == "cpu":
    model, params = build(a.dots_size, 16)
    eigen = platform.decode_compiler_options(platform.EIGEN_DOT_ROWS[0], "cpu")
    libraries = ["numpy"] + (["torch"] if torch_available() else [])
    for n in map(int, a.dot_rows.split(",")):
      ynn_s = matmuls_only_seconds(model, params, n, max(a.repeats, 5), {})
      eigen_s = matmuls_only_seconds(model, params, n, max(a.repeats, 5), eigen)
      chosen = platform.decode_compiler_options(n, "cpu")
      host = {f"{lib}_ms": 1e3 * host_matmuls_seconds(
          model, params, n, max(a.repeats, 5), lib) for lib in libraries}
      emit(table="cpu_dots", size=a.dots_size, rows=n, ynnpack_ms=1e3 * ynn_s,
           eigen_ms=1e3 * eigen_s, **host,
           sampler_uses="eigen" if chosen else "ynnpack")
  if a.json:
    with open(a.json, "w") as f:
      json.dump(dict(jax=jax.__version__, device=jax.devices()[0].device_kind,
                     rows=rows), f, indent=1)


if __name__ == "__main__":
  main()
