"""A trained tokenizer, frozen, turning images into sub-code ids inside jit.

Loaded from a tokenizer workdir (its latest checkpoint's config and EMA
weights), of any quantizer: a BAE's bits are sampled from the encoder's
Bernoulli probabilities each time (ELM's augmentation) or thresholded
(evaluation); LFQ's bits are the signs of its projection; VQ gives codebook
ids (elm_jax.tokens.Codes says which a generator reads).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from elm_jax import checkpointing, tokens
from elm_jax.models.bae import Autoencoder, build_autoencoder


@dataclasses.dataclass
class FrozenTokenizer:
  model: Autoencoder
  params: Any  # host arrays: the EMA autoencoder weights
  config: ml_collections.ConfigDict  # the tokenizer run's config
  step: int

  @property
  def bits(self) -> int:
    """K bits per cell; 0 for a VQ tokenizer (ids)."""
    return self.codes.bits

  @property
  def grid_size(self) -> int:
    return self.model.latent_size

  @property
  def codes(self) -> tokens.Codes:
    return codes_of(self.model)


def codes_of(model: Autoencoder) -> tokens.Codes:
  if model.quantizer == "vq":
    return tokens.Codes(model.latent_size, codebook_size=model.codebook_size)
  return tokens.Codes(model.latent_size, bits=model.bits)


def load(workdir: str, flag: str = "config.tokenizer.checkpoint"
         ) -> FrozenTokenizer:
  """The latest checkpoint of a `configs/bae.py` run in `workdir` (named by
  the option `flag`, for error messages)."""
  run = checkpointing.load_run(workdir, "tokenizer", flag)
  return FrozenTokenizer(build_autoencoder(run.config.model),
                         run.state["ema_params"], run.config, run.step)


def require_binary(tok: FrozenTokenizer, workdir: str, what: str) -> None:
  """ValueError unless `tok` is a BAE: `what` needs its bit probabilities."""
  if tok.model.quantizer != "binary":
    raise ValueError(
        f"{workdir}: {what} needs a BAE's bit probabilities, but this tokenizer "
        f"has model.quantizer={tok.model.quantizer!r}. Pass a configs/bae.py "
        "run with quantizer=binary.")


def probabilities(model: Autoencoder, params: Any, images: jax.Array) -> jax.Array:
  """uint8 images [B, H, W, 3] -> a BAE's bit probabilities [B, h, w, K] (float32)."""
  if model.quantizer != "binary":
    raise ValueError(f"bit probabilities are a BAE's; this tokenizer has "
                     f"model.quantizer={model.quantizer!r}.")
  x = images.astype(jnp.float32) / 255.0
  return model.apply({"params": params}, x, method=model.encode).probs


def encode_subcodes(model: Autoencoder, params: Any, images: jax.Array,
                    num_subcodes: int, rng: jax.Array | None, patch: int = 1
                    ) -> jax.Array:
  """uint8 images [B, H, W, 3] -> generator ids [B, (h/p)*(w/p), n].

  BAE: Bernoulli bits (thresholded when rng is None); LFQ: its sign bits;
  VQ: codebook ids, p^2 per position (num_subcodes must be p^2).
  """
  if model.quantizer == "binary":
    return sample_subcodes(probabilities(model, params, images), num_subcodes,
                           rng, patch)
  x = images.astype(jnp.float32) / 255.0
  q = model.apply({"params": params}, x, method=model.encode)
  if model.quantizer == "vq":
    return tokens.ids_to_subcodes(q.ids, patch)
  return tokens.bits_to_subcodes(q.bits, num_subcodes, patch)


def sample_subcodes(probs: jax.Array, num_subcodes: int, rng: jax.Array | None,
                    patch: int = 1) -> jax.Array:
  """Bernoulli bits (threshold when rng is None) -> ids [B, (h/p)*(w/p), n]."""
  bits = (probs > 0.5) if rng is None else jax.random.bernoulli(rng, probs)
  return tokens.bits_to_subcodes(bits, num_subcodes, patch)
