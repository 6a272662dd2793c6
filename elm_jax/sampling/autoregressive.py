"""The AR sampler: one XLA program that decodes a whole grid with a KV cache.

`sample(model, params, labels, rng, settings)` is pure: the class token and
then every cell are fed one position at a time through `lax.scan` over the
grid^2 positions, carrying the KV cache and the last sampled cell. Step t
feeds position t (t = 0: the class token; else cell t-1) and draws all N
sub-codes of cell t at once from guided, temperature-scaled, top-k/top-p
filtered logits. With guidance the conditional and the unconditional (null
class) sequences form one batch of 2B.
"""

from typing import Any

import jax
import jax.numpy as jnp

from elm_jax.models.transformer import Transformer
from elm_jax.sampling import guidance, kv_cache
from elm_jax.sampling.logits_filter import filter_logits, sample_logits
from elm_jax.sampling.settings import SamplerSettings


def sample(model: Transformer, params: Any, labels, rng,
           settings: SamplerSettings, return_logits: bool = False):
  """labels [B] int -> tokens [B, grid^2, N] int32.

  return_logits: also return the model's raw logits at every step, [B', L,
  N, V] (B' = 2B with guidance: conditional rows first), for testing.
  Jit with `model` and `settings` static (see `jit_sampler`).
  """
  if not model.causal:
    raise ValueError("sampling.autoregressive needs a causal (AR) model; use "
                     "sampling.masked for MLM.")
  b = labels.shape[0]
  n, length = model.num_subcodes, kv_cache.cache_length(model)
  guided = settings.guided
  batch_labels = guidance.with_null_labels(labels, model.num_classes, guided)
  cls = model.apply({"params": params}, batch_labels,
                    method=Transformer.embed_class)  # [B',1,E]
  layer_params = model.layer_params(params)
  cache = kv_cache.init_cache(model, batch_labels.shape[0])

  def step(carry, t):
    cache, prev = carry  # prev [B,1,N]: the cell sampled at step t-1
    cells = model.apply({"params": params}, guidance.double(prev, guided),
                        method=Transformer.embed_cells)  # [B',1,E]
    x = jnp.where(t == 0, cls, cells)
    logits, cache = kv_cache.cached_forward(model, params, layer_params, x,
                                            cache, t)
    raw = logits[:, 0]  # [B',N,V]
    guided_logits = guidance.guide(raw, settings, t, length)
    filtered = filter_logits(guided_logits, settings.temperature,
                             settings.top_k, settings.top_p)
    cell = sample_logits(jax.random.fold_in(rng, t), filtered)  # [B,N]
    out = (cell, raw) if return_logits else cell
    return (cache, cell[:, None]), out

  init = (cache, jnp.zeros((b, 1, n), jnp.int32))
  _, out = jax.lax.scan(step, init, jnp.arange(length))
  if return_logits:
    cells, logits = out
    return cells.transpose(1, 0, 2), logits.transpose(1, 0, 2, 3)
  return out.transpose(1, 0, 2)  # [L,B,N] -> [B,L,N]


# XLA:CPU hands dots to YNNPACK by default. At the few rows of a decoding step
# its kernels ran slower than XLA's Eigen dots on our 2-core CPU: the B-size
# weight matmuls alone (benchmarks/sampler.py, table `cpu_dots`, recorded in
# benchmarks/results/sampler_cpu.json) took 53.7 vs 38.5 ms at 16 rows, 38.1
# vs 27.5 at 8, 82.9 vs 64.6 at 32; YNNPACK was ahead at 2 rows and from 64
# rows on, as on the large matmuls of training.
EIGEN_DOT_ROWS = (4, 32)
EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # YNNPACK off


def compiler_options(rows_per_device: int, platform: str) -> dict:
  """XLA options for the decoding program: Eigen dots on CPU when each
  device decodes EIGEN_DOT_ROWS rows (batch, doubled with guidance)."""
  low, high = EIGEN_DOT_ROWS
  if platform == "cpu" and low <= rows_per_device <= high:
    return dict(EIGEN_DOTS)
  return {}


def jit_sampler(model: Transformer, settings: SamplerSettings,
                batch: int | None = None, **jit_kwargs):
  """jax.jit(sample) for one model and setting: fn(params, labels, rng).

  batch: the global batch it will run, if known; on CPU it selects the dot
  kernels for that many rows per device (`compiler_options`).
  """
  def fn(params, labels, rng):
    return sample(model, params, labels, rng, settings)
  if batch is not None and "compiler_options" not in jit_kwargs:
    rows = batch * (2 if settings.guided else 1) // jax.device_count()
    jit_kwargs["compiler_options"] = compiler_options(
        rows, jax.default_backend())
  return jax.jit(fn, **jit_kwargs)
