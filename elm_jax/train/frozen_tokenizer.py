"""A trained tokenizer, frozen, turning images into sub-code ids inside jit.

Loaded from a tokenizer workdir (its latest checkpoint's config and EMA
weights). Bits are sampled from the encoder's Bernoulli probabilities each
time (ELM's augmentation) or thresholded (evaluation).
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
    return self.model.bits

  @property
  def grid_size(self) -> int:
    return self.model.latent_size


def load(workdir: str, flag: str = "config.tokenizer.checkpoint"
         ) -> FrozenTokenizer:
  """The latest checkpoint of a `configs/bae.py` run in `workdir` (named by
  the option `flag`, for error messages)."""
  run = checkpointing.load_run(workdir, "tokenizer", flag)
  if run.config.model.quantizer != "binary":
    raise ValueError(f"{workdir}: the generators model binary codes; this "
                     "tokenizer uses "
                     f"model.quantizer={run.config.model.quantizer!r}.")
  return FrozenTokenizer(build_autoencoder(run.config.model),
                         run.state["ema_params"], run.config, run.step)


def probabilities(model: Autoencoder, params: Any, images: jax.Array) -> jax.Array:
  """uint8 images [B, H, W, 3] -> bit probabilities [B, h, w, K] (float32)."""
  x = images.astype(jnp.float32) / 255.0
  return model.apply({"params": params}, x, method=model.encode).probs


def sample_subcodes(probs: jax.Array, num_subcodes: int, rng: jax.Array | None,
                    patch: int = 1) -> jax.Array:
  """Bernoulli bits (threshold when rng is None) -> ids [B, (h/p)*(w/p), n]."""
  bits = (probs > 0.5) if rng is None else jax.random.bernoulli(rng, probs)
  return tokens.bits_to_subcodes(bits, num_subcodes, patch)
