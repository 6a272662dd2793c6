"""Bits <-> sub-code ids: ELM's vocabulary decomposition (docs/spec.md section 4).

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

A VQ tokenizer makes one codebook id per cell instead of bits: its ids are
not decomposed; a position holds its block's p^2 ids, in raster order
(`ids_to_subcodes`).
"""

import dataclasses

import jax
import jax.numpy as jnp

from elm_jax.config_error import ConfigError


@dataclasses.dataclass(frozen=True)
class Codes:
  """What a tokenizer makes per cell of its grid_size^2 grid, as a generator
  reads it: K-bit codes (BAE, LFQ; `bits`) or ids of a codebook (VQ;
  `codebook_size`)."""
  grid_size: int
  bits: int = 0
  codebook_size: int = 0

  @property
  def are_ids(self) -> bool:
    return self.codebook_size > 0

  def describe(self) -> str:
    return (f"ids of a {self.codebook_size}-entry codebook" if self.are_ids
            else f"{self.bits}-bit codes")


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


def ids_to_subcodes(ids: jax.Array, patch: int = 1) -> jax.Array:
  """VQ ids [B, h, w] -> [B, (h/p)*(w/p), p^2]: each position's block of ids."""
  out = patchify(ids[..., None], patch)  # [B, h/p, w/p, p^2]
  b, g, w, n = out.shape
  return out.reshape(b, g * w, n).astype(jnp.int32)


def subcodes_to_ids(subcodes: jax.Array, grid: int, patch: int = 1) -> jax.Array:
  """Inverts ids_to_subcodes: [B, (grid/p)^2, p^2] -> ids [B, grid, grid]."""
  b, length, n = subcodes.shape
  g = check_patch(grid, patch)
  if length != g * g or n != patch * patch:
    raise ConfigError(f"[{b}, {length}, {n}] ids do not form a {g}x{g} grid of "
                      f"{patch}x{patch} blocks.")
  return unpatchify(subcodes.reshape(b, g, g, n), patch)[..., 0]
