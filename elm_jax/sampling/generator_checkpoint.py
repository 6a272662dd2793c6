"""Loads a trained (or converted) generator workdir and its tokenizer."""

import dataclasses
from typing import Any

import ml_collections

from elm_jax import checkpointing, generator_config
from elm_jax.models.transformer import Transformer
from elm_jax.train import frozen_tokenizer


@dataclasses.dataclass
class Generator:
  model: Transformer
  params: Any  # host arrays
  config: ml_collections.ConfigDict  # the generator run's config
  tokenizer: frozen_tokenizer.FrozenTokenizer
  step: int

  @property
  def stage(self) -> str:
    return self.config.stage

  @property
  def patch(self) -> int:
    """Tokenizer cells per position along each side (elm_jax.tokens)."""
    return generator_config.patch_of(self.config)


def load(workdir: str, use_ema: bool = True, tokenizer_dir: str = "",
         dtype: str = "") -> Generator:
  """The latest checkpoint of an AR/MLM run in `workdir`.

  tokenizer_dir overrides the tokenizer path stored in the run's config (a
  relative path there is relative to where training was launched); dtype,
  when given, the compute dtype (config.model.dtype).
  """
  run = checkpointing.load_run(workdir, "generator",
                               "config.generator.checkpoint")
  config = run.config
  if dtype:
    with config.unlocked():
      config.model.dtype = dtype
  path = tokenizer_dir or config.tokenizer.checkpoint
  try:
    tokenizer = frozen_tokenizer.load(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"{e} (the tokenizer of generator {workdir}; if it moved, pass "
        "--config.tokenizer.checkpoint=DIR)") from e
  model = generator_config.build_transformer(config, tokenizer.codes,
                                             f"the tokenizer in {path}")
  params = run.state["ema_params"] if use_ema else run.state["params"]
  return Generator(model, params, config, tokenizer, run.step)
