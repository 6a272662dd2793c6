"""MaskGIT decoding for the MLM generator (docs/spec.md section 7), as one lax.scan.

Start from a fully masked grid. Iteration t of T: run the bidirectional model
on the current grid (with guidance: conditional | null class halves), draw
every sub-code of every position from the filtered logits, and score each
still-masked position by the mean log-probability of its drawn sub-codes plus
tau * (1 - t/T) * Gumbel noise. The floor(L cos(pi/2 (t+1)/T)) lowest-scored
masked positions stay masked; the others take their draws. Positions decoded
earlier are never changed (their score is +inf), and none is masked at the end.
"""

from typing import Any

import jax
import jax.numpy as jnp

from elm_jax.models.transformer import Transformer
from elm_jax.sampling import guidance
from elm_jax.sampling.logits_filter import filter_logits, sample_logits
from elm_jax.sampling.schedules import masked_after
from elm_jax.sampling.settings import SamplerSettings


def sample(model: Transformer, params: Any, labels, rng,
           settings: SamplerSettings, return_history: bool = False):
  """labels [B] int -> tokens [B, grid^2, N] int32.

  return_history: also return the tokens after every iteration, [T, B, L, N]
  (mask_id where still masked), for testing.
  """
  if model.causal:
    raise ValueError("sampling.masked needs an MLM (causal=False) model; use "
                     "sampling.autoregressive for AR.")
  b = labels.shape[0]
  length, n = model.grid_size ** 2, model.num_subcodes
  steps, guided = settings.iterations, settings.guided
  batch_labels = guidance.with_null_labels(labels, model.num_classes, guided)

  def step(carry, t):
    tokens, masked = carry  # [B,L,N], [B,L] bool
    logits, _ = model.apply({"params": params}, guidance.double(tokens, guided),
                            batch_labels)  # [B',L,N,V]
    logits = guidance.guide(logits, settings, t, steps)
    logits = filter_logits(logits, settings.temperature, settings.top_k,
                           settings.top_p)
    draw_rng, noise_rng = jax.random.split(jax.random.fold_in(rng, t))
    drawn = sample_logits(draw_rng, logits)  # [B,L,N]
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), drawn[..., None],
                               axis=-1)[..., 0].mean(-1)  # [B,L]
    noise = jax.random.gumbel(noise_rng, (b, length))
    tau = settings.gumbel_scale * (1.0 - t / steps)
    score = jnp.where(masked, logp + tau * noise, jnp.inf)
    rank = jnp.argsort(jnp.argsort(score, axis=-1), axis=-1)  # 0 = lowest
    still = rank < masked_after(t, steps, length)  # [B,L]
    reveal = masked & ~still
    tokens = jnp.where(reveal[..., None], drawn, tokens)
    return (tokens, still), (tokens if return_history else None)

  tokens = jnp.full((b, length, n), model.mask_id, jnp.int32)
  masked = jnp.ones((b, length), bool)
  (tokens, _), history = jax.lax.scan(step, (tokens, masked),
                                      jnp.arange(steps))
  return (tokens, history) if return_history else tokens
