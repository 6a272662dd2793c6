"""The AR sampler: one XLA program that decodes a whole grid with a KV cache.

`sample(model, params, labels, rng, settings)` is pure. The class token goes
through the model first (filling position 0 of the model's cache and giving
the logits of cell 0); then `lax.scan` over steps 1..grid^2-1 feeds the cell
sampled last and draws cell t, carrying the cache. Every step draws all N
sub-codes of its cell at once from guided, temperature-scaled, top-k/top-p
filtered logits, with fold_in(rng, t). With guidance the conditional and the
unconditional (null class) sequences form one batch of 2B.
"""

from typing import Any

import jax
import jax.numpy as jnp

from elm_jax import platform
from elm_jax.models.transformer import Transformer
from elm_jax.sampling import guidance
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
  length, guided = model.grid_size ** 2, settings.guided
  batch_labels = guidance.with_null_labels(labels, model.num_classes, guided)

  def draw(raw, t):  # raw [B',N,V] -> cell t [B,N]
    logits = guidance.guide(raw, settings, t, length)
    logits = filter_logits(logits, settings.temperature, settings.top_k,
                           settings.top_p)
    return sample_logits(jax.random.fold_in(rng, t), logits)

  logits, cache = model.apply({"params": params}, None, batch_labels,
                              cache=model.init_cache(batch_labels.shape[0]))
  first_raw = logits[:, 0]  # [B',N,V]
  first = draw(first_raw, 0)

  def step(carry, t):
    cache, prev = carry  # prev [B,N]: cell t-1
    logits, cache = model.apply({"params": params},
                                guidance.double(prev[:, None], guided), None,
                                cache=cache)
    raw = logits[:, 0]  # [B',N,V]
    cell = draw(raw, t)
    return (cache, cell), ((cell, raw) if return_logits else cell)

  _, out = jax.lax.scan(step, (cache, first), jnp.arange(1, length))
  if return_logits:
    cells, raws = out  # [L-1,B,N], [L-1,B',N,V]
    cells = jnp.concatenate([first[None], cells])
    raws = jnp.concatenate([first_raw[None], raws])
    return cells.transpose(1, 0, 2), raws.transpose(1, 0, 2, 3)
  return jnp.concatenate([first[None], out]).transpose(1, 0, 2)  # [B,L,N]


def jit_sampler(model: Transformer, settings: SamplerSettings,
                batch: int | None = None, **jit_kwargs):
  """jax.jit(sample) for one model and setting: fn(params, labels, rng).

  batch: the global batch it will run, if known; it selects the compiler
  options for that many rows per device (`platform.decode_compiler_options`).
  """
  def fn(params, labels, rng):
    return sample(model, params, labels, rng, settings)
  if batch is not None and "compiler_options" not in jit_kwargs:
    rows = batch * (2 if settings.guided else 1) // jax.device_count()
    jit_kwargs["compiler_options"] = platform.decode_compiler_options(rows)
  return jax.jit(fn, **jit_kwargs)
