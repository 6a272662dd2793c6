"""AR train-step throughput and model FLOP utilisation (MFU).

  python benchmarks/ar_train_step.py                     # tiny and B, float32
  python benchmarks/ar_train_step.py --sizes=L --dtype=bfloat16 --json=out.json

The step is the real one (ELM AR loss, AdamW with clipping) on random
sub-code ids, batch x 256 positions (2-10 split). MFU = model FLOPs per step
(6 x non-embedding params x tokens + 12 x layers x width x sequence^2 x batch
for attention) / step time / peak, where peak is a large jnp.dot with the same
dtype measured just before each timed step (a shared or throttled machine
drifts between minutes; each step is set against the rate of its moment),
and MFU is the median over the timed steps.
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
import optax  # noqa: E402

from benchmarks.device_rates import matmul_peak  # noqa: E402
from elm_jax.models import DTYPES  # noqa: E402
from elm_jax.models.attention import ATTENTION_IMPLS  # noqa: E402
from elm_jax.models.transformer import (SIZES, Transformer,  # noqa: E402
                                        next_token_loss)
from elm_jax.train import optim  # noqa: E402


def model_flops(model: Transformer, params, batch: int, seq: int) -> float:
  embed = sum(int(np.prod(x.shape)) for k, v in params.items()
              if k.startswith(("tok_embed", "class_embed"))
              for x in jax.tree.leaves(v))
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  dense = 6 * (total - embed) * batch * seq
  attention = 12 * model.num_layers * model.dim * seq * seq * batch
  return dense + attention


def measure(size, batch, dtype, steps, split=(2, 10), grid=16, scan_layers=None,
            query_blocks=Transformer.attention_query_blocks,
            attention_impl=Transformer.attention_impl):
  layers, dim, heads = SIZES[size]
  n, k = split
  model = Transformer(num_layers=layers, dim=dim, num_heads=heads, bits=n * k,
                      num_subcodes=n, grid_size=grid, dtype=DTYPES[dtype],
                      attention_query_blocks=query_blocks,
                      attention_impl=attention_impl,
                      scan_layers=layers > 4 if scan_layers is None else scan_layers)
  seq = grid * grid
  rng = jax.random.PRNGKey(0)
  ids = jax.random.randint(rng, (batch, seq, n), 0, 2 ** k)
  labels = jnp.zeros((batch,), jnp.int32)
  params = jax.jit(lambda r: jax.tree.map(
      lambda x: getattr(x, "value", x),
      model.init(r, ids[:, :-1], labels)["params"],
      is_leaf=lambda x: hasattr(x, "value")))(rng)
  tx = optim.make_optimizer(name="adamw", lr=1e-4, b1=0.9, b2=0.95,
                            weight_decay=0.05, grad_clip=1.0)
  state = (params, tx.init(params))

  def step(state, ids, labels, rng):
    params, opt = state
    (loss, _), grads = jax.value_and_grad(
        lambda p: jax.tree.map(jnp.mean, next_token_loss(model, p, ids, labels, rng, True)),
        has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), loss

  f = jax.jit(step, donate_argnums=0)
  t0 = time.perf_counter()
  compiled = f.lower(state, ids, labels, rng).compile()
  compile_s = time.perf_counter() - t0
  state, loss = compiled(state, ids, labels, rng)
  loss.block_until_ready()
  times, peaks = [], []
  for _ in range(steps):
    peaks.append(matmul_peak(DTYPES[dtype], repeats=3))
    t = time.perf_counter()
    state, loss = compiled(state, ids, labels, rng)
    loss.block_until_ready()
    times.append(time.perf_counter() - t)
  sec = statistics.median(times)
  flops = model_flops(model, params, batch, seq)
  mfus = [flops / t / p for t, p in zip(times, peaks)]
  return dict(size=size, batch=batch, dtype=dtype, seq=seq, compile_s=compile_s,
              step_s=sec, step_s_all=times, tokens_per_s=batch * seq / sec,
              model_tflop_per_step=flops / 1e12, achieved_tflops=flops / sec / 1e12,
              peak_tflops=statistics.median(peaks) / 1e12,
              peak_tflops_all=[p / 1e12 for p in peaks],
              mfu=statistics.median(mfus), mfu_all=mfus,
              attention_query_blocks=query_blocks, attention_impl=attention_impl,
              scan_layers=model.scan_layers,
              device=jax.devices()[0].device_kind)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="tiny,B")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--scan_layers", default="auto", choices=["auto", "true", "false"],
                 help="auto: scan the layers above 4 (the configs' choice)")
  p.add_argument("--attention_query_blocks", type=int,
                 default=Transformer.attention_query_blocks,
                 help="causal attention in this many query blocks (1: the "
                 "full score matrix; default: the model's)")
  p.add_argument("--attention_impl", default=Transformer.attention_impl,
                 choices=ATTENTION_IMPLS, help="jax: jax.nn.dot_product_attention "
                 "(cuDNN's fused kernel on NVIDIA GPUs in bf16)")
  p.add_argument("--json", default="")
  args = p.parse_args()
  scan = None if args.scan_layers == "auto" else args.scan_layers == "true"
  print(f"device {jax.devices()[0].device_kind}; {args.dtype}")
  print(f"{'size':<6}{'batch':>6}{'compile s':>10}{'step s':>9}{'tokens/s':>11}"
        f"{'TFLOP/step':>11}{'TFLOP/s':>9}{'peak':>8}{'MFU':>7}  MFU per step")
  rows = []
  for size in args.sizes.split(","):
    r = measure(size, args.batch, args.dtype, args.steps, scan_layers=scan,
                query_blocks=args.attention_query_blocks,
                attention_impl=args.attention_impl)
    rows.append(r)
    print(f"{size:<6}{args.batch:>6}{r['compile_s']:>10.1f}{r['step_s']:>9.3f}"
          f"{r['tokens_per_s']:>11.0f}{r['model_tflop_per_step']:>11.3f}"
          f"{r['achieved_tflops']:>9.3f}{r['peak_tflops']:>8.3f}{r['mfu']:>7.1%}  "
          + " ".join(f"{m:.1%}" for m in r["mfu_all"]), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
