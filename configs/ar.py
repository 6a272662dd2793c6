"""Autoregressive generator configs (ELM AR), over a trained tokenizer's codes.

  python -m elm_jax.main --config=configs/ar.py --workdir=/tmp/ar \
      --config.tokenizer.checkpoint=workdirs/bae_fmnist
  python -m elm_jax.main --config=configs/ar.py:imagenet,size=L,split=2-10 \
      --config.tokenizer.checkpoint=BAE20_WORKDIR --workdir=...

Arguments: size=tiny|XS|S|B|L|XL|XXL|2B (default XS, S with `imagenet`,
tiny with `tiny`), split=n-k (n sub-codes of k bits; the tokenizer's K must
equal n*k) or split=auto (the default: two sub-codes of K/2 bits; a VQ
tokenizer's codebook ids whole), `tiny` or `imagenet`. A size or split given here wins over the
variant's.
"""

from elm_jax.configs_lib import sibling

common = sibling(__file__, "common")
ARGS = common.GENERATOR_ARGS  # the arguments above, with their defaults


def get_config(arg=None):
  return common.generator_config("ar", arg)
