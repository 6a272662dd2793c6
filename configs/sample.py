"""Sampling configs: `python -m elm_jax.sample`.

  python -m elm_jax.sample --config=configs/sample.py \
      --config.generator.checkpoint=workdirs/ar_fmnist --workdir=workdirs/samples
  python -m elm_jax.sample --config=configs/sample.py:imagenet \
      --config.generator.checkpoint=ELM_L_WORKDIR --workdir=...

Variants: (default) Fashion-MNIST; `tiny` (seconds, for tests); `imagenet`
(ELM-L 2-10 FID setting: CFG 4.0 linear, top-k 1000, 50 per class);
`demo` (ELM-XXL 2-12 demo: CFG 2.0 constant, top-k 400); `mlm` (MaskGIT:
CFG 3.0 linear, tau 9, 10 iterations). `tiny`, `imagenet` and `demo`
exclude each other and `mlm` combines only with `tiny`: the others set the
same fields their own way. The generator's own config says whether it is AR
or MLM.
"""

import ml_collections

from elm_jax.configs_lib import parse_arg


# The variants above (flags), with their defaults.
ARGS = dict(tiny=False, imagenet=False, demo=False, mlm=False)


def get_config(arg=None):
  a = parse_arg(arg, **ARGS)
  a.exclusive("tiny", "imagenet", "demo")
  a.exclusive("imagenet", "demo", "mlm")
  c = ml_collections.ConfigDict()
  c.stage = "sample"
  c.seed = 0
  # dtype: the generator's compute dtype ("": its own config's); float32
  # reproduces a converted PyTorch model's float32 tokens exactly.
  c.generator = dict(checkpoint="", use_ema=True, dtype="")
  # Empty: the tokenizer named in the generator's config.
  c.tokenizer = dict(checkpoint="")
  c.sampler = dict(cfg_scale=2.0, cfg_schedule="linear", temperature=1.0,
                   top_k=0, top_p=1.0, iterations=10, gumbel_scale=9.0)
  c.num_samples = 10_000  # class-balanced; a multiple of the class count
  c.batch_size = 100  # global images per sampler call
  c.grid = dict(per_class=10, classes=10)  # grid.png: classes x per_class
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.jax_disable_most_optimizations = False
  if a.tiny:
    # One batch shape for the grid and the npz: a single compile.
    c.num_samples, c.batch_size = 20, 10
    c.grid = dict(per_class=2, classes=5)
  if a.imagenet:
    c.sampler.update(cfg_scale=4.0, cfg_schedule="linear", top_k=1000)
    c.num_samples, c.batch_size = 50_000, 256
    c.grid = dict(per_class=8, classes=8)
  if a.demo:
    c.sampler.update(cfg_scale=2.0, cfg_schedule="constant", top_k=400)
    c.num_samples, c.batch_size = 0, 64
    c.grid = dict(per_class=8, classes=8)
  if a.mlm:
    c.sampler.update(cfg_scale=3.0, cfg_schedule="linear", gumbel_scale=9.0,
                     iterations=10)
  return c
