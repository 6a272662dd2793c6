"""What a generator (AR / MLM) config derives: its split and its Transformer.

`config.split` ("n-k": n sub-codes of k bits per grid cell, or "auto") is
the one stored source of the sub-code count and width. "auto" follows the
tokenizer (`split_for`): two sub-codes of K/2 bits per cell for K-bit codes
(ELM's best split), and for a VQ tokenizer its ids, undivided, one
vocabulary of the codebook's size. `config.patch` (p: one
position per p x p block of the tokenizer's cells, elm_jax.tokens) sets
the generator's grid and code width; `config.stage` gives
causal (ar) or bidirectional (mlm). Training, sampling, conversion and
elm_jax.aot build the model through `build_transformer`.
"""

import ml_collections

from elm_jax.config_error import ConfigError
from elm_jax.models import resolve_dtypes
from elm_jax.models.transformer import Transformer
from elm_jax.tokens import Codes, check_patch, check_split

AUTO = "auto"


def parse_split(split: str) -> tuple[int, int] | None:
  """"2-8" -> (2, 8): n sub-codes of k bits; "auto" -> None."""
  if str(split) == AUTO:
    return None
  n, _, k = str(split).partition("-")
  if not (n.isdigit() and k.isdigit() and int(n) > 0 and int(k) > 0):
    raise ConfigError(f"split={split!r}: expected n-k, n sub-codes of k bits "
                      "each (e.g. split=2-8 for 16-bit codes), or auto (two "
                      "sub-codes of K/2 bits; a VQ tokenizer's ids whole).")
  return int(n), int(k)


def split_of(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """(num_subcodes, subcode_bits) of a generator config, from config.split;
  None for split=auto (the tokenizer decides: `split_for`).

  A config saved in a workdir may also hold model.num_subcodes and
  subcode_bits; they must agree with the split.
  """
  split = parse_split(config.split)
  if split is None:
    return None
  n, k = split
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


def split_for(config: ml_collections.ConfigDict, codes: Codes,
              tokenizer: str = "the tokenizer") -> int:
  """The generator's sub-codes per position over `codes`; `tokenizer` names
  it in the error when the split does not fit."""
  p = patch_of(config)
  split = split_of(config)
  if codes.are_ids:
    if split is not None:
      raise ConfigError(
          f"config.split={config.split!r} splits bits, but {tokenizer} makes "
          f"{codes.describe()}, which are not split: each position is {p * p} "
          f"id(s). Pass split={AUTO}.")
    return p * p
  per_position = codes.bits * p * p
  if split is None:  # two sub-codes of K/2 bits per cell (one if K is odd)
    n = per_position // (codes.bits // 2) if codes.bits % 2 == 0 else p * p
    check_split(per_position, n)
    return n
  n, k = split
  if n * k != per_position:
    fits = [f"{d}-{per_position // d}" for d in range(1, per_position + 1)
            if per_position % d == 0]
    made = (f"{codes.bits}-bit codes" if p == 1 else
            f"{codes.bits}-bit codes, {p}x{p} of them ({per_position} bits) "
            f"per position at patch={p}")
    raise ConfigError(
        f"config.split={config.split!r} needs {n} x {k} = {n * k} bits per "
        f"position, but {tokenizer} makes {made}; choose n-k with "
        f"n*k = {per_position} (one of {', '.join(fits)}), or {AUTO}.")
  check_split(per_position, n)
  return n


def transformer_kwargs(config: ml_collections.ConfigDict, codes: Codes,
                       tokenizer: str = "the tokenizer") -> dict:
  """Transformer keyword arguments over a tokenizer's `codes` (at patch p
  the model sees p^2 cells' codes per position on a grid p times smaller)."""
  n = split_for(config, codes, tokenizer)
  p = patch_of(config)
  kw = {k: v for k, v in config.model.items() if k != "num_subcodes"}
  kw.update(bits=codes.bits * p * p, codebook_size=codes.codebook_size,
            grid_size=check_patch(codes.grid_size, p), num_subcodes=n,
            causal=config.stage == "ar")
  return resolve_dtypes(kw)


def build_transformer(config: ml_collections.ConfigDict, codes: Codes,
                      tokenizer: str = "the tokenizer") -> Transformer:
  """The generator's Transformer over a tokenizer's `codes`; `tokenizer`
  names it in the error when the split does not fit."""
  return Transformer(**transformer_kwargs(config, codes, tokenizer))
