"""The paper's analyses (ELM section 7): token randomness and attention locality.

Token randomness: KL divergence (nats) of the empirical unigram distribution
of a token stream from the uniform distribution over its V entries,
log V - H(p), and the same for bigrams (consecutive pairs within a sequence,
uniform over V^2): 2 log V - H(p_ab). Plug-in estimates: with few tokens per
cell (V^2 bigram cells) they are biased upwards, so counts are reported too.

Attention locality: the softmax attention weights of every layer of a
trained generator, recomputed from each layer's own q/k projections
(`Attention.project_qkv`) by intercepting `Attention.__call__` (the model is
not changed), and the average distance, in grid cells, between a query's
cell and the cells it attends to (the class token's weight excluded and the
rest renormalised). Einsum letters: B batch, H heads, S queries, T keys,
D head_dim.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elm_jax.models.attention import Attention
from elm_jax.models.transformer import Transformer


# ---------------------------------------------------------------- token randomness


def _entropy(counts: np.ndarray) -> float:
  p = counts[counts > 0].astype(np.float64) / counts.sum()
  return float(-np.sum(p * np.log(p)))


def token_kl(sequences: np.ndarray, vocab_size: int) -> dict[str, float]:
  """int tokens [N, L] in [0, V) -> unigram/bigram KL from uniform (nats) and counts."""
  seq = np.asarray(sequences)
  if seq.ndim != 2 or seq.shape[1] < 2:
    raise ValueError(f"Token sequences must be [N, L] with L >= 2, got {seq.shape}.")
  if seq.min() < 0 or seq.max() >= vocab_size:
    raise ValueError(f"Tokens must lie in [0, {vocab_size}), found [{seq.min()}, "
                     f"{seq.max()}].")
  seq = seq.astype(np.int64)
  unigram = np.bincount(seq.ravel(), minlength=vocab_size)
  pairs = (seq[:, :-1] * vocab_size + seq[:, 1:]).ravel()
  bigram = np.bincount(pairs, minlength=vocab_size * vocab_size)
  log_v = math.log(vocab_size)
  return {"unigram_kl": log_v - _entropy(unigram), "bigram_kl": 2 * log_v - _entropy(bigram),
          "vocab_size": float(vocab_size), "tokens": float(unigram.sum()),
          "bigrams": float(bigram.sum())}


def text_bytes(text: str, length: int) -> np.ndarray:
  """UTF-8 bytes of `text` (a V = 256 tokenizer) cut into sequences [N, length]."""
  data = np.frombuffer(text.encode("utf-8"), np.uint8)
  n = len(data) // length
  if n == 0:
    raise ValueError(f"The text has {len(data)} bytes, fewer than one sequence of {length}.")
  return data[:n * length].reshape(n, length).astype(np.int64)


def stdlib_corpus() -> tuple[str, str]:
  """English prose that ships with Python: the help topics of `pydoc_data` (~0.7 MB)."""
  from pydoc_data import topics  # noqa: PLC0415 (stdlib, only needed here)
  return "pydoc_data.topics (Python's help texts)", "\n".join(topics.topics.values())


# ---------------------------------------------------------------- attention locality


def attention_weights(model: Transformer, params: Any, tokens: jax.Array,
                      labels: jax.Array) -> jax.Array:
  """Per-layer attention weights [layers, B, H, S, T] (float32) of `model` on tokens.

  Unscanned layers only (model.scan_layers=False): each layer's `Attention`
  sows its weights, recomputed from its own q, k with the causal mask when
  the model is causal.
  """
  if model.scan_layers:
    raise ValueError("Attention maps need the unscanned layer layout: load the generator "
                     "with model.scan_layers=False (the parameters of a scanned model can be "
                     "unstacked along their leading 'layers' axis).")

  def capture(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, Attention) and context.method_name == "__call__":
      x, rope = args[0], args[1]
      q, k, _ = module.project_qkv(x, rope)  # [B, S, H, D]
      logits = jnp.einsum("bshd,bthd->bhst", q, k, preferred_element_type=jnp.float32)
      logits = logits * q.shape[-1] ** -0.5
      if module.causal:
        s = x.shape[1]
        logits = jnp.where(jnp.tril(jnp.ones((s, s), bool)), logits,
                           jnp.finfo(jnp.float32).min)
      module.sow("intermediates", "attention_weights", jax.nn.softmax(logits, axis=-1))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    _, state = model.apply({"params": params}, tokens, labels, train=False,
                           mutable=["intermediates"])
  inter = state["intermediates"]
  return jnp.stack([inter[f"layers_{i}"]["attention"]["attention_weights"][0]
                    for i in range(model.num_layers)])


def grid_positions(model: Transformer, seq_len: int) -> np.ndarray:
  """[S, 2] (row, col) of each sequence position's grid cell; NaN for class positions."""
  n = 1 if model.causal else model.num_subcodes
  pos = np.full((seq_len, 2), np.nan)
  for s in range(seq_len):
    cell = s // n - 1  # AR: position s holds cell s - 1; MLM: slot s holds cell s // n - 1
    if cell >= 0:
      pos[s] = divmod(cell, model.grid_size)
  return pos


def mean_attention_distance(weights: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """weights [L, B, H, S, T], positions [S, 2] -> average distance per layer [L] (cells).

  For each query on the grid, its attention over key cells (class positions
  dropped, the rest renormalised) weights the Euclidean distance between the
  cells; queries that put no weight on any cell are left out.
  """
  on_grid = ~np.isnan(positions[:, 0])
  p = positions[on_grid]                                               # [G, 2]
  dist = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))       # [G, G]
  w = np.asarray(weights, np.float64)[..., on_grid, :][..., on_grid]   # [L, B, H, G, G]
  mass = w.sum(-1)                                                     # [L, B, H, G]
  valid = mass > 1e-9
  per_query = np.where(valid, (w * dist).sum(-1) / np.where(valid, mass, 1.0), 0.0)
  return (per_query * valid).sum((1, 2, 3)) / np.maximum(valid.sum((1, 2, 3)), 1)


def attention_map(weights: np.ndarray, positions: np.ndarray, query_cell: tuple[int, int],
                  grid: int) -> np.ndarray:
  """[L, grid, grid]: mean over batch and heads of the query cell's attention on each cell."""
  match = np.where((positions[:, 0] == query_cell[0]) & (positions[:, 1] == query_cell[1]))[0]
  if not len(match):
    raise ValueError(f"Query cell {query_cell} is not on the {grid}x{grid} grid of this input.")
  w = np.asarray(weights, np.float64)[:, :, :, match, :].mean(axis=(1, 2, 3))  # [L, T]
  maps = np.zeros((w.shape[0], grid, grid))
  for t, (r, c) in enumerate(positions):
    if not np.isnan(r):
      maps[:, int(r), int(c)] += w[:, t]
  return maps
