"""Temperature, top-k and top-p (nucleus) filtering of logits, then sampling.

Every function acts on the last axis [..., V], so with logits [B, N, V] the
filters apply per sub-code head and all N sub-codes are drawn at once.
"""

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def top_k_filter(logits, k: int):
  """Keeps the k largest entries (ties with the k-th kept); k <= 0: no-op."""
  v = logits.shape[-1]
  if k <= 0 or k >= v:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [..., 1]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_filter(logits, p: float):
  """Keeps the smallest set of largest entries whose probability reaches p."""
  if p >= 1.0:
    return logits
  sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each entry
  keep = before < p  # the first entry is always kept
  cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1,
                   keepdims=True)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def filter_logits(logits, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0):
  """logits [..., V] float32 -> temperature-scaled, top-k then top-p filtered."""
  if temperature <= 0.0:
    raise ValueError(f"temperature={temperature} must be > 0 (use top_k=1 "
                     "for greedy decoding).")
  logits = logits.astype(jnp.float32) / temperature
  return top_p_filter(top_k_filter(logits, top_k), top_p)


def sample_logits(rng, logits):
  """One categorical draw per row: logits [..., V] -> int32 [...]."""
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
