"""Tokenizer train-step throughput: images/s and step time per config.

  python benchmarks/bae_train_step.py                       # CPU defaults
  python benchmarks/bae_train_step.py --variants=imagenet --batch=8 --json=out.json

Prints one row per (variant, LPIPS on/off): compile time, seconds per step
(median of --steps after one warm-up), images/s and the XLA cost-analysis
FLOPs per step, from which achieved GFLOP/s follows.
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

from elm_jax import sharding  # noqa: E402
from elm_jax.train.bae import TokenizerStage  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs")


def load_config(arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location("bae_config",
                                                os.path.join(CONFIGS, "bae.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def measure(variant, batch, lpips, gan, steps):
  config = load_config(variant)
  config.batch_size = batch
  config.loss.perceptual_weight = 1.0 if lpips else 0.0
  config.loss.gan_weight = 0.8 if gan else 0.0
  config.loss.disc_start = 0
  stage = TokenizerStage(config)
  state = sharding.unbox(jax.jit(stage.init)(jax.random.PRNGKey(0)))
  frozen = stage.frozen() if lpips else {}
  size = config.data.image_size
  rng = np.random.default_rng(0)
  batch_arrays = {"image": jnp.asarray(rng.integers(0, 256, (batch, size, size, 3),
                                                    dtype=np.uint8)),
                  "label": jnp.zeros((batch,), jnp.int32)}
  step = jax.jit(stage.train_step, donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch_arrays, frozen).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  state, m = compiled(state, batch_arrays, frozen)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = compiled(state, batch_arrays, frozen)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  sec = statistics.median(times)
  return dict(variant=variant, batch=batch, lpips=lpips, gan=gan,
              compile_s=compile_s, step_s=sec, images_per_s=batch / sec,
              gflop_per_step=flops / 1e9, gflops=flops / sec / 1e9,
              device=jax.devices()[0].device_kind)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="fmnist,tiny")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--json", default="")
  args = p.parse_args()
  rows = []
  header = (f"{'variant':<12}{'batch':>6}{'lpips':>6}{'gan':>5}{'compile s':>10}"
            f"{'step s':>9}{'img/s':>9}{'GFLOP/step':>11}{'GFLOP/s':>9}")
  print(header)
  for variant in args.variants.split(","):
    for lpips, gan in ((False, False), (True, False), (True, True)):
      r = measure(variant, args.batch, lpips, gan, args.steps)
      rows.append(r)
      print(f"{variant:<12}{r['batch']:>6}{str(lpips):>6}{str(gan):>5}"
            f"{r['compile_s']:>10.1f}{r['step_s']:>9.3f}{r['images_per_s']:>9.1f}"
            f"{r['gflop_per_step']:>11.1f}{r['gflops']:>9.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
