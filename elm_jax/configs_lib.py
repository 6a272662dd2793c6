"""Config arguments ("tiny,bits=20") and validation with errors that name the fix."""

from typing import Any, Callable

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """"tiny,bits=20" -> {tiny: True, bits: 20}, typed like `defaults`.

  A bare word sets a boolean flag; key=value pairs are cast to the type of
  the default. Unknown keys fail with the list of known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r} in {arg!r}; known: "
                       f"{sorted(defaults)}.")
    if not sep:
      out[key] = True
      continue
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = kind(value)
  return out


class ConfigError(ValueError):
  pass


def require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}: {message}")


VALIDATORS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {}


def validator(stage: str):
  def register(fn):
    VALIDATORS[stage] = fn
    return fn
  return register


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks fields shared by every stage, then the stage's own."""
  require("stage" in config, "stage", "missing; which stage does this train?")
  require(config.stage in VALIDATORS, "stage",
          f"{config.stage!r} unknown; expected one of {sorted(VALIDATORS)}.")
  for field in ("total_steps", "batch_size", "log_every", "eval_every",
                "checkpoint_every", "keep_checkpoints"):
    require(int(config[field]) > 0, field,
            f"must be a positive integer, got {config[field]}.")
  VALIDATORS[config.stage](config)


@validator("bae")
def _validate_bae(config: ml_collections.ConfigDict) -> None:
  m, d = config.model, config.data
  require(m.quantizer in ("binary", "vq", "lfq"), "model.quantizer",
          f"{m.quantizer!r}: expected 'binary', 'vq' or 'lfq'.")
  require(m.resolution == d.image_size, "model.resolution",
          f"{m.resolution} differs from data.image_size={d.image_size}.")
  factor = 2 ** (len(m.ch_mult) - 1)
  require(d.image_size % factor == 0, "data.image_size",
          f"{d.image_size} is not divisible by the downsampling factor "
          f"{factor} of ch_mult={tuple(m.ch_mult)}.")
  require(d.image_size >= 16 or config.loss.perceptual_weight == 0,
          "data.image_size", "LPIPS needs images of at least 16x16.")
  for mult in m.ch_mult:
    require(m.nf * mult % 32 == 0, "model.nf",
            f"nf * ch_mult = {m.nf * mult} channels is not divisible by the 32 "
            "GroupNorm groups; use a multiple of 32.")
  require(m.emb_dim % 32 == 0, "model.emb_dim",
          f"{m.emb_dim} is not divisible by the 32 GroupNorm groups.")
  if m.quantizer in ("binary", "lfq"):
    require(1 <= m.bits <= 31, "model.bits",
            f"{m.bits}: codes of 1..31 bits are supported.")
  require(config.loss.pixel in ("l1", "l2"), "loss.pixel",
          f"{config.loss.pixel!r}: expected 'l1' or 'l2'.")
  require(d.source in ("fashion_mnist", "tfds", "folder"), "data.source",
          f"{d.source!r}: expected 'fashion_mnist', 'tfds' or 'folder'.")
  require(config.eval.batch_size > 0, "eval.batch_size", "must be positive.")
