"""The trainer of each config.stage, for elm_jax.main, elm_jax.aot and the
commands that rebuild a run's stage."""

import ml_collections

from elm_jax.config_error import ConfigError
from elm_jax.train.ar import ARStage
from elm_jax.train.bae import TokenizerStage
from elm_jax.train.frozen_tokenizer import FrozenTokenizer
from elm_jax.train.mlm import MLMStage

GENERATORS = {"ar": ARStage, "mlm": MLMStage}


def make_stage(config: ml_collections.ConfigDict,
               tokenizer: FrozenTokenizer | None = None):
  """The Stage object for config.stage. tokenizer (ar, mlm): used instead of
  loading config.tokenizer.checkpoint (elm_jax.aot's abstract one)."""
  if config.stage == "bae":
    return TokenizerStage(config)
  if config.stage in GENERATORS:
    return GENERATORS[config.stage](config, tokenizer)
  raise ConfigError(f"config.stage: {config.stage!r} has no trainer.")
