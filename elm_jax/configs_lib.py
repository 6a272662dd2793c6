"""Config arguments ("tiny,bits=20") and validation with errors that name the fix."""

from typing import Any, Callable

import ml_collections

from elm_jax.config_error import ConfigError
from elm_jax.models.transformer import SIZES as GENERATOR_SIZES


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


# The arguments of configs/ar.py and configs/mlm.py, with their defaults.
GENERATOR_ARGS = dict(tiny=False, imagenet=False, size="XS", split="2-8")


def generator_config(stage: str, arg: str | None) -> ml_collections.ConfigDict:
  """The AR / MLM config: `size=L,split=2-10`, `tiny`, `imagenet`."""
  a = parse_arg(arg, **GENERATOR_ARGS)
  a.exclusive("tiny", "imagenet")
  if a.tiny:
    a.variant(size="tiny")
  if a.imagenet:
    a.variant(size="S")
  require(a.size in GENERATOR_SIZES, "model (size)",
          f"{a.size!r} unknown; expected one of {list(GENERATOR_SIZES)}.")
  n, _, width = a.split.partition("-")
  if not (n.isdigit() and width.isdigit() and int(n) > 0 and int(width) > 0):
    raise ConfigError(f"split={a.split!r}: expected n-k, n sub-codes of k bits "
                      "each (e.g. split=2-8 for 16-bit codes).")
  layers, dim, heads = GENERATOR_SIZES[a.size]
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = 0
  # A tokenizer workdir (configs/bae.py run); bits and grid come from it.
  c.tokenizer = dict(checkpoint="", bernoulli=True)
  # data.tokens: a directory written by `python -m elm_jax.tokenize` (then
  # the images are not read and the encoder does not run).
  c.data = dict(source="fashion_mnist", path="", name="", train_split="train",
                eval_split="test", image_size=32, num_classes=10, worker_count=0,
                tokens="")
  if a.imagenet:
    c.data.update(source="tfds", name="imagenet2012", eval_split="validation",
                  image_size=256, num_classes=1000, worker_count=8)
  c.split = a.split
  c.model = dict(num_layers=layers, dim=dim, num_heads=heads, head_dim=64,
                 mlp_dim=0, num_classes=c.data.get_ref("num_classes"),
                 num_subcodes=int(n), token_dropout=0.1, resid_dropout=0.1,
                 mlp_dropout=0.1, attn_dropout=0.0, class_dropout=0.1,
                 dtype="float32", param_dtype="float32", scan_layers=False,
                 remat="none", attention_query_blocks=4, attention_impl="einsum")
  c.subcode_bits = int(width)
  c.optim = dict(name="adamw", lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.05,
                 grad_clip=1.0, warmup_steps=0, decay="constant")
  c.ema = dict(decay=0.9999, every=1)
  c.mlm = dict(schedule_steps=256, label_smoothing=0.0)
  c.batch_size, c.total_steps = 256, 2_000_000
  c.log_every, c.eval_every, c.checkpoint_every = 100, 50_000, 10_000
  c.keep_checkpoints = 3
  c.eval = dict(batch_size=256, max_batches=20, full_at_end=False, use_ema=True)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.jax_disable_most_optimizations = bool(a.tiny)  # tiny: compile time dominates
  if a.imagenet:
    c.model.update(dtype="bfloat16", scan_layers=True)
  elif a.tiny:
    c.optim.update(lr=1e-3)
    c.ema.decay = 0.9
    c.batch_size, c.total_steps = 8, 4
    c.log_every, c.eval_every, c.checkpoint_every = 1, 4, 2
    c.eval = dict(batch_size=16, max_batches=1, full_at_end=False, use_ema=True)
  else:  # Fashion-MNIST default, the generator of configs/pipeline.py.
    # Sized for about half an hour of a 2-core CPU (benchmarks/pipeline.md):
    # size XS (2.0M parameters) sees one epoch (64k images) in the time S
    # (3.8M) sees 40k. No dropout:
    # one epoch does not overfit. The fast cosine schedule and EMA 0.995 let
    # the last few hundred steps count.
    c.model.update(token_dropout=0.0, resid_dropout=0.0, mlp_dropout=0.0)
    c.optim.update(lr=2e-3, warmup_steps=100, decay="cosine")
    c.ema.decay = 0.995
    c.batch_size, c.total_steps = 64, 1000
    c.log_every, c.eval_every, c.checkpoint_every = 50, 1000, 200
    c.eval = dict(batch_size=250, max_batches=2, full_at_end=False, use_ema=True)
  return c


def _validate_generator(config: ml_collections.ConfigDict) -> None:
  m = config.model
  require(bool(config.tokenizer.checkpoint), "tokenizer.checkpoint",
          "empty; pass the workdir of a configs/bae.py run "
          "(--config.tokenizer.checkpoint=DIR).")
  require(m.num_subcodes >= 1, "model.num_subcodes", "must be >= 1.")
  require(m.dim == m.num_heads * m.head_dim, "model.dim",
          f"{m.dim} != num_heads * head_dim = {m.num_heads} * {m.head_dim}.")
  require(m.head_dim % 4 == 0, "model.head_dim", "must be divisible by 4 (2D RoPE).")
  require(m.remat in ("none", "full", "dots", "dots_no_batch"), "model.remat",
          f"{m.remat!r}: expected none, full, dots or dots_no_batch.")
  require(config.optim.decay in ("constant", "cosine"), "optim.decay",
          f"{config.optim.decay!r}: expected 'constant' or 'cosine'.")


VALIDATORS["ar"] = _validate_generator
VALIDATORS["mlm"] = _validate_generator
