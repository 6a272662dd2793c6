"""Config arguments ("tiny,bits=20") and validation with errors that name the fix."""

import importlib.util
import os
import types
from typing import Any, Callable

import ml_collections

from elm_jax import generator_config
from elm_jax.config_error import ConfigError
from elm_jax.models.attention import ATTENTION_IMPLS
from elm_jax.models.bae import PIXEL_RANGES, STYLES
from elm_jax.models.transformer import REMAT_POLICIES
from elm_jax.train.optim import DECAYS


class Args(ml_collections.ConfigDict):
  """parse_arg's result: each argument's value, and which ones were given."""

  def __init__(self, defaults: dict[str, Any]):
    super().__init__(defaults)
    object.__setattr__(self, "_given", set())

  def given(self, key: str) -> bool:
    """Whether the argument string named `key` (as a flag or key=value)."""
    return key in self._given

  def variant(self, **values: Any) -> None:
    """A variant's values, set only for the keys the argument did not name:
    an explicit `bits=16` outlives `tiny`'s 8."""
    for key, value in values.items():
      if not self.given(key):
        self[key] = value

  def exclusive(self, *flags: str) -> None:
    """Refuses two of `flags` together: each sets the same fields its own way."""
    on = [f for f in flags if self[f]]
    if len(on) > 1:
      raise ConfigError(f"Config arguments {' and '.join(map(repr, on))} cannot "
                        "be combined: each sets the same fields its own way; "
                        "keep one and change single fields with "
                        "--config.FIELD=VALUE.")


def parse_arg(arg: str | None, **defaults: Any) -> Args:
  """"tiny,bits=20" -> {tiny: True, bits: 20}, typed like `defaults`.

  A bare word sets a boolean flag; key=value pairs are cast to the type of
  the default. Unknown keys fail with the list of known ones. The result
  remembers the keys given (`Args.given`), so a variant's values
  (`Args.variant`) never replace them.
  """
  out = Args(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"Unknown config argument {key!r} in {arg!r}; known: "
                       f"{sorted(defaults)}.")
    out._given.add(key)
    if not sep:
      out[key] = True
      continue
    kind = type(defaults[key])
    if kind is bool:
      if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"Config argument {item!r} in {arg!r}: expected "
                          "true or false.")
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ConfigError(f"Config argument {item!r} in {arg!r}: {value!r} is "
                          f"not a {kind.__name__} (default {defaults[key]!r})."
                          ) from None
  return out


# The repository's configs/ directory.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "configs")


def load_module(path: str) -> types.ModuleType:
  """The config file at `path`, loaded by path as config_flags loads it."""
  name = "elm_jax_configs_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str) -> types.ModuleType:
  """configs/<name>.py beside `config_file` (its __file__), from any directory."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)),
                                  f"{name}.py"))


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
  decay = config.optim.get("decay", "constant")
  require(decay in DECAYS, "optim.decay",
          f"{decay!r}: expected one of {', '.join(map(repr, DECAYS))}.")
  VALIDATORS[config.stage](config)


@validator("bae")
def _validate_bae(config: ml_collections.ConfigDict) -> None:
  m, d = config.model, config.data
  require(m.quantizer in ("binary", "vq", "lfq"), "model.quantizer",
          f"{m.quantizer!r}: expected 'binary', 'vq' or 'lfq'.")
  # Saved configs from before these fields existed build the defaults.
  style, pixel_range = m.get("style", "elm"), m.get("pixel_range", "unit")
  require(style in STYLES, "model.style",
          f"{style!r}: expected one of {', '.join(map(repr, STYLES))}.")
  require(pixel_range in PIXEL_RANGES, "model.pixel_range",
          f"{pixel_range!r}: expected one of "
          f"{', '.join(map(repr, PIXEL_RANGES))}.")
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


def _validate_generator(config: ml_collections.ConfigDict) -> None:
  m = config.model
  require(bool(config.tokenizer.checkpoint), "tokenizer.checkpoint",
          "empty; pass the workdir of a configs/bae.py run "
          "(--config.tokenizer.checkpoint=DIR).")
  generator_config.split_of(config)
  patch = config.get("patch", 1)
  require(isinstance(patch, int) and patch >= 1, "patch",
          f"{patch!r}: must be a whole number >= 1 (tokenizer cells per "
          "generator position along each side; 1: one cell each).")
  require(m.dim == m.num_heads * m.head_dim, "model.dim",
          f"{m.dim} != num_heads * head_dim = {m.num_heads} * {m.head_dim}.")
  require(m.head_dim % 4 == 0, "model.head_dim", "must be divisible by 4 (2D RoPE).")
  require(m.remat in REMAT_POLICIES, "model.remat",
          f"{m.remat!r}: expected one of {', '.join(REMAT_POLICIES)}.")
  grid = config.eval.get("sample_grid", {})
  require(not grid or (grid.get("classes", 0) >= 0 and grid.get("per_class", 0) >= 0),
          "eval.sample_grid", "classes and per_class must be >= 0 (0: no grid).")
  require(m.attention_query_blocks >= 1, "model.attention_query_blocks",
          f"{m.attention_query_blocks} must be >= 1 (1: one block, the full "
          "causal score matrix).")
  require(m.attention_impl in ATTENTION_IMPLS, "model.attention_impl",
          f"{m.attention_impl!r}: expected one of {list(ATTENTION_IMPLS)}.")
  require(m.attention_impl == "einsum" or m.attn_dropout == 0.0, "model.attn_dropout",
          f"{m.attn_dropout} needs model.attention_impl='einsum' "
          "(jax.nn.dot_product_attention has no dropout); set one of them.")


VALIDATORS["ar"] = _validate_generator
VALIDATORS["mlm"] = _validate_generator
