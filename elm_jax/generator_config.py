"""What a generator (AR / MLM) config derives: its split and its Transformer.

`config.split` ("n-k": n sub-codes of k bits per grid cell) is the one
stored source of the sub-code count and width; `config.patch` (p: one
position per p x p block of the tokenizer's cells, elm_jax.tokens) sets
the generator's grid and code width; `config.stage` gives
causal (ar) or bidirectional (mlm). Training, sampling, conversion and
elm_jax.aot build the model through `build_transformer`.
"""

import ml_collections

from elm_jax.config_error import ConfigError
from elm_jax.models import resolve_dtypes
from elm_jax.models.transformer import Transformer
from elm_jax.tokens import check_patch


def parse_split(split: str) -> tuple[int, int]:
  """"2-8" -> (2, 8): n sub-codes of k bits."""
  n, _, k = str(split).partition("-")
  if not (n.isdigit() and k.isdigit() and int(n) > 0 and int(k) > 0):
    raise ConfigError(f"split={split!r}: expected n-k, n sub-codes of k bits "
                      "each (e.g. split=2-8 for 16-bit codes).")
  return int(n), int(k)


def split_of(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(num_subcodes, subcode_bits) of a generator config, from config.split.

  A config saved in a workdir may also hold model.num_subcodes and
  subcode_bits; they must agree with the split.
  """
  n, k = parse_split(config.split)
  stored = (config.model.get("num_subcodes", n), config.get("subcode_bits", k))
  if stored != (n, k):
    raise ConfigError(
        f"config.split={config.split!r} disagrees with model.num_subcodes="
        f"{stored[0]} and subcode_bits={stored[1]} in the same config: the "
        "split alone sets both; correct or remove the two fields.")
  return n, k


def patch_of(config: ml_collections.ConfigDict) -> int:
  """Tokenizer cells per generator position along each side (1 in configs
  saved before the field existed)."""
  return int(config.get("patch", 1))


def transformer_kwargs(config: ml_collections.ConfigDict, bits: int,
                       grid_size: int) -> dict:
  """Transformer keyword arguments for a tokenizer's `bits`-bit codes on its
  grid_size^2 grid (the model sees p^2 bits-bit codes per position on a
  grid p times smaller)."""
  n, _ = split_of(config)
  p = patch_of(config)
  kw = {k: v for k, v in config.model.items() if k != "num_subcodes"}
  kw.update(bits=bits * p * p, grid_size=check_patch(grid_size, p),
            num_subcodes=n, causal=config.stage == "ar")
  return resolve_dtypes(kw)


def build_transformer(config: ml_collections.ConfigDict, bits: int,
                      grid_size: int, tokenizer: str = "the tokenizer"
                      ) -> Transformer:
  """The generator's Transformer over a tokenizer's `bits`-bit codes on its
  grid_size^2 grid; `tokenizer` names it in the error when the split does
  not fit."""
  n, k = split_of(config)
  p = patch_of(config)
  per_position = bits * p * p
  if n * k != per_position:
    fits = [f"{d}-{per_position // d}" for d in range(1, per_position + 1)
            if per_position % d == 0]
    made = (f"{bits}-bit codes" if p == 1 else
            f"{bits}-bit codes, {p}x{p} of them ({per_position} bits) per "
            f"position at patch={p}")
    raise ConfigError(
        f"config.split={config.split!r} needs {n} x {k} = {n * k} bits per "
        f"position, but {tokenizer} makes {made}; choose n-k with "
        f"n*k = {per_position} (one of {', '.join(fits)}).")
  return Transformer(**transformer_kwargs(config, bits, grid_size))
