"""LlamaGen's class-conditional GPT (c2i, autoregressive/models/gpt.py) as an ELM AR model.

LlamaGen's GPT is the model ELM's AR transformer derives from: the same
pre-norm blocks (RMSNorm eps 1e-5, fused [q | k | v], SwiGLU with hidden
round_up(int(2 * 4d / 3), 256)), the same 2D RoPE with a zero-rotated class
token, a class table of num_classes + 1 rows and one bias-free output head.
So it is our `Transformer(causal=True, num_subcodes=1, bits=log2(V))`; the
only renamed key is `tok_embeddings.weight` (ELM: `tok_embedder.weight`).
`freqs_cis` (the RoPE table, in some files) and KV-cache buffers are dropped;
the RoPE table is checked against ours first when present.
LlamaGen's tokens are its VQGAN's codebook ids, not BAE bits: decoding them
to images needs LlamaGen's VQ tokenizer.
"""

import math
from typing import Mapping

import numpy as np

from elm_jax.models.rope import rope_2d_table

# name: (layers, dim, heads) from LlamaGen's GPT_models (gpt.py).
LLAMAGEN_SIZES = {
    "GPT-B": (12, 768, 12),
    "GPT-L": (24, 1024, 16),
    "GPT-XL": (36, 1280, 20),
    "GPT-XXL": (48, 1536, 24),
    "GPT-XXXL": (48, 2560, 40),
    "GPT-1B": (22, 2048, 32),
    "GPT-3B": (24, 3200, 32),
    "GPT-7B": (32, 4096, 32),
}

_DROPPED_SUFFIXES = (".kv_cache.k_cache", ".kv_cache.v_cache")


def to_elm_keys(sd: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                         list[str]]:
  """LlamaGen GPT keys -> ELM AR (n = 1) keys; (state dict, notes)."""
  if "tok_embeddings.weight" not in sd:
    hint = (" (it has tok_embedder.*: an ELM model, use --from=elm-ar)"
            if any(k.startswith("tok_embedder") for k in sd) else "")
    raise KeyError("PyTorch state dict lacks 'tok_embeddings.weight': not a "
                   f"LlamaGen GPT{hint}.")
  if "tok_embedder.weight" in sd:
    raise ValueError("PyTorch state dict has both 'tok_embeddings.weight' and "
                     "'tok_embedder.weight'; not a LlamaGen GPT.")
  out, notes = {}, []
  dropped = sorted(k for k in sd if k.endswith(_DROPPED_SUFFIXES))
  for k, v in sd.items():
    if k in dropped:
      continue
    out["tok_embedder.weight" if k == "tok_embeddings.weight" else k] = v
  if dropped:
    notes.append(f"dropped {len(dropped)} KV-cache buffers")
  return out, notes


def check_freqs_cis(freqs_cis: np.ndarray, head_dim: int,
                    base: float = 10000.0) -> int:
  """Checks a stored LlamaGen RoPE table against ours; returns the grid size.

  freqs_cis: [1 + grid^2, head_dim / 2, 2] (cos, sin), class row first.
  """
  rows = np.shape(freqs_cis)[0] - 1
  grid = math.isqrt(max(rows, 0))
  if grid * grid != rows or np.shape(freqs_cis)[1:] != (head_dim // 2, 2):
    raise ValueError(f"freqs_cis has shape {np.shape(freqs_cis)}; expected "
                     f"[1 + grid^2, {head_dim // 2}, 2] for head_dim={head_dim} "
                     "(check --config.model.head_dim / num_heads).")
  ours = rope_2d_table(grid, head_dim, base)
  err = float(np.max(np.abs(ours - np.asarray(freqs_cis, np.float32))))
  if err > 1e-4:
    raise ValueError(f"freqs_cis differs from our 2D RoPE table by {err:.3g} "
                     "(max abs): the file uses another rotary layout.")
  return grid
