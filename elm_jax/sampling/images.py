"""Sampled tokens -> uint8 images through the tokenizer's decoder; image grids."""

import jax
import jax.numpy as jnp
import numpy as np

from elm_jax import tokens as tokens_lib
from elm_jax.models.bae import Autoencoder


def decode_tokens(model: Autoencoder, params, ids, patch: int = 1):
  """ids [B, (grid/patch)^2, N] -> uint8 images [B, H, W, 3] (jit-friendly).

  N sub-codes of bits (BAE, LFQ) or p^2 codebook ids (VQ) per position.
  """
  if model.quantizer == "vq":
    codes = tokens_lib.subcodes_to_ids(ids, model.latent_size, patch)
  else:
    codes = tokens_lib.subcodes_to_bits(ids, model.bits, model.latent_size,
                                        patch=patch)
  x = model.apply({"params": params}, codes, method=Autoencoder.decode)
  return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)


def tile(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
  """images [rows * cols, H, W, C] uint8 -> one [rows*(H+pad)+pad, ..., C] grid."""
  n, h, w, c = images.shape
  if n % rows:
    raise ValueError(f"{n} images do not fill {rows} rows.")
  cols = n // rows
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255,
                 np.uint8)
  for i, img in enumerate(images):
    r, col = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = img
  return grid


def jit_decoder(model: Autoencoder, patch: int = 1, **jit_kwargs):
  return jax.jit(lambda params, ids: decode_tokens(model, params, ids, patch),
                 **jit_kwargs)
