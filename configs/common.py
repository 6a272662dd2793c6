"""What configs/ar.py and configs/mlm.py share: the generator config.

Loaded by path beside them (configs_lib.sibling), as config_flags loads
config files.
"""

import ml_collections

from elm_jax.configs_lib import parse_arg, require
from elm_jax.generator_config import parse_split
from elm_jax.models.transformer import SIZES

# The arguments of configs/ar.py and configs/mlm.py, with their defaults.
GENERATOR_ARGS = dict(tiny=False, imagenet=False, size="XS", split="auto")


def generator_config(stage: str, arg: str | None) -> ml_collections.ConfigDict:
  """The AR / MLM config: `size=L,split=2-10`, `tiny`, `imagenet`."""
  a = parse_arg(arg, **GENERATOR_ARGS)
  a.exclusive("tiny", "imagenet")
  if a.tiny:
    a.variant(size="tiny")
  if a.imagenet:
    a.variant(size="S")
  require(a.size in SIZES, "model (size)",
          f"{a.size!r} unknown; expected one of {list(SIZES)}.")
  parse_split(a.split)
  layers, dim, heads = SIZES[a.size]
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
  # n-k: n sub-codes of k bits per grid cell; auto: two of K/2 bits for
  # K-bit codes, a VQ tokenizer's ids whole (elm_jax.generator_config
  # derives the model's sub-code count and vocabulary from it).
  c.split = a.split
  # Tokenizer cells per generator position along each side (elm_jax.tokens):
  # patch=2 reads a 16x16 grid of K-bit codes as 8x8 positions of 4K bits,
  # 4x fewer positions; split 4-K then gives one sub-code per cell.
  c.patch = 1
  c.model = dict(num_layers=layers, dim=dim, num_heads=heads, head_dim=64,
                 mlp_dim=0, num_classes=c.data.get_ref("num_classes"),
                 token_dropout=0.1, resid_dropout=0.1,
                 mlp_dropout=0.1, attn_dropout=0.0, class_dropout=0.1,
                 dtype="float32", param_dtype="float32", scan_layers=False,
                 remat="none", attention_query_blocks=4, attention_impl="einsum")
  c.optim = dict(name="adamw", lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.05,
                 grad_clip=1.0, warmup_steps=0, decay="constant")
  c.ema = dict(decay=0.9999, every=1)
  c.mlm = dict(schedule_steps=256, label_smoothing=0.0)
  c.batch_size, c.total_steps = 256, 2_000_000
  c.log_every, c.eval_every, c.checkpoint_every = 100, 50_000, 10_000
  c.keep_checkpoints = 3
  # sample_grid: the TensorBoard grid of every evaluation (classes 0: none).
  c.eval = dict(batch_size=256, max_batches=20, full_at_end=False, use_ema=True,
                sample_grid=dict(classes=10, per_class=8, cfg_scale=2.0, seed=0))
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.jax_disable_most_optimizations = bool(a.tiny)  # tiny: compile time dominates
  if a.imagenet:
    c.model.update(dtype="bfloat16", scan_layers=True)
  elif a.tiny:
    c.optim.update(lr=1e-3)
    c.ema.decay = 0.9
    c.batch_size, c.total_steps = 8, 4
    c.log_every, c.eval_every, c.checkpoint_every = 1, 4, 2
    # No TensorBoard grid: its sampler's compile would double a tiny run.
    c.eval = dict(batch_size=16, max_batches=1, full_at_end=False, use_ema=True,
                  sample_grid=dict(classes=0, per_class=0, cfg_scale=2.0, seed=0))
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
    c.eval.update(batch_size=250, max_batches=2)
  return c
