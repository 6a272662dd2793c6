"""Bits <-> sub-code ids: ELM's vocabulary decomposition (SPEC section 3).

A K-bit code per grid position is split into n sub-codes of K/n bits: the
grid is read in raster order (row-major), chunk i of a position takes bits
[i*K/n, (i+1)*K/n), and its id is read most-significant-bit first. n = 1
gives one 2^K-way token per position. Shared by the tokenizer (which makes
bits) and the generators (which model the ids).
"""

import jax
import jax.numpy as jnp

from elm_jax.config_error import ConfigError


def check_split(bits: int, num_subcodes: int) -> int:
  """Bits per sub-code; a clear error when n does not divide K."""
  if num_subcodes < 1 or bits % num_subcodes:
    raise ConfigError(
        f"{bits}-bit codes cannot be split into {num_subcodes} equal sub-codes; "
        f"choose n among the divisors of {bits}: "
        f"{[d for d in range(1, bits + 1) if bits % d == 0]}.")
  width = bits // num_subcodes
  if width > 24:
    raise ConfigError(f"sub-codes of {width} bits mean a {2 ** width}-way "
                     "vocabulary; split into more sub-codes.")
  return width


def bits_to_subcodes(bits: jax.Array, num_subcodes: int) -> jax.Array:
  """bits [B, h, w, K] in {0, 1} -> int32 ids [B, h*w, n]."""
  b, h, w, k = bits.shape
  width = check_split(k, num_subcodes)
  chunks = bits.reshape(b, h * w, num_subcodes, width).astype(jnp.int32)
  weights = 2 ** jnp.arange(width - 1, -1, -1, dtype=jnp.int32)  # MSB first
  return jnp.sum(chunks * weights, axis=-1)


def subcodes_to_bits(ids: jax.Array, bits_per_code: int, grid: int,
                     dtype=jnp.float32) -> jax.Array:
  """int ids [B, grid*grid, n] -> bits [B, grid, grid, K]; inverts the above."""
  b, length, n = ids.shape
  width = check_split(bits_per_code, n)
  if length != grid * grid:
    raise ConfigError(f"{length} positions do not form a {grid}x{grid} grid.")
  shifts = jnp.arange(width - 1, -1, -1, dtype=jnp.int32)
  out = (ids[..., None].astype(jnp.int32) >> shifts) & 1  # [B, L, n, width]
  return out.reshape(b, grid, grid, bits_per_code).astype(dtype)
