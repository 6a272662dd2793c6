"""Bits <-> sub-code ids: ELM's vocabulary decomposition (SPEC section 3).

A K-bit code per grid position is split into n sub-codes of K/n bits: the
grid is read in raster order (row-major), chunk i of a position takes bits
[i*K/n, (i+1)*K/n), and its id is read most-significant-bit first. n = 1
gives one 2^K-way token per position. Shared by the tokenizer (which makes
bits) and the generators (which model the ids).

A patch p > 1 makes one generator position of each p x p block of grid
cells, as DiT patchifies its latent: the position's code is the block's
cells' K-bit codes concatenated in raster order (p^2 K bits), on a grid p
times smaller, so the generator runs over p^2 times fewer positions. With
split p^2-K each sub-code is one cell's code.
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


def check_patch(grid: int, patch: int) -> int:
  """The generator's grid side for `patch`; a clear error when p does not divide it."""
  if patch < 1 or grid % patch:
    raise ConfigError(
        f"patch={patch} does not divide the tokenizer's {grid}x{grid} grid; "
        f"choose one of {[d for d in range(1, grid + 1) if grid % d == 0]}.")
  return grid // patch


def patchify(bits: jax.Array, patch: int) -> jax.Array:
  """[B, h, w, K] -> [B, h/p, w/p, p*p*K]: each p x p block's codes, raster order."""
  if patch == 1:
    return bits
  b, h, w, k = bits.shape
  g = check_patch(h, patch)
  x = bits.reshape(b, g, patch, w // patch, patch, k)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, g, w // patch, patch * patch * k)


def unpatchify(bits: jax.Array, patch: int) -> jax.Array:
  """Inverts patchify: [B, g, g, p*p*K] -> [B, g*p, g*p, K]."""
  if patch == 1:
    return bits
  b, g, w, pk = bits.shape
  k = pk // (patch * patch)
  x = bits.reshape(b, g, w, patch, patch, k).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * patch, w * patch, k)


def bits_to_subcodes(bits: jax.Array, num_subcodes: int, patch: int = 1
                     ) -> jax.Array:
  """bits [B, h, w, K] in {0, 1} -> int32 ids [B, (h/p)*(w/p), n]."""
  bits = patchify(bits, patch)
  b, h, w, k = bits.shape
  width = check_split(k, num_subcodes)
  chunks = bits.reshape(b, h * w, num_subcodes, width).astype(jnp.int32)
  weights = 2 ** jnp.arange(width - 1, -1, -1, dtype=jnp.int32)  # MSB first
  return jnp.sum(chunks * weights, axis=-1)


def subcodes_to_bits(ids: jax.Array, bits_per_code: int, grid: int,
                     dtype=jnp.float32, patch: int = 1) -> jax.Array:
  """int ids [B, (grid/p)^2, n] -> bits [B, grid, grid, K]; inverts the above.

  bits_per_code and grid are the tokenizer's (K and its grid side).
  """
  b, length, n = ids.shape
  g = check_patch(grid, patch)
  width = check_split(bits_per_code * patch * patch, n)
  if length != g * g:
    raise ConfigError(f"{length} positions do not form a {g}x{g} grid.")
  shifts = jnp.arange(width - 1, -1, -1, dtype=jnp.int32)
  out = (ids[..., None].astype(jnp.int32) >> shifts) & 1  # [B, L, n, width]
  out = out.reshape(b, g, g, n * width).astype(dtype)
  return unpatchify(out, patch)
