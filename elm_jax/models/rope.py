"""2D rotary position embedding (RoPE) over a square grid, LlamaGen style.

The table has one row per sequence slot: `num_prefix` class-token rows of
zeros first (cos = sin = 0, so a class token's q and k become zero, a
LlamaGen quirk that released weights depend on), then the grid cells in
raster order (row r = num_prefix + y * grid + x). Each row holds head_dim/2
(cos, sin) pairs: the first head_dim/4 rotate by the row index y, the next
head_dim/4 by the column index x, pair k of each half with angle
coordinate * base^(-2k / (head_dim/2)). The rotation acts on adjacent
elements (x[2j], x[2j+1]) of every head (the complex-number layout, not
rotate_half).
"""

import jax
import jax.numpy as jnp
import numpy as np


def rope_2d_table(grid_size: int, head_dim: int, base: float = 10000.0,
                  num_prefix: int = 1) -> np.ndarray:
  """float32 [num_prefix + grid_size**2, head_dim // 2, 2]; last axis (cos, sin)."""
  if head_dim % 4:
    raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}.")
  quarter = head_dim // 4
  theta = base ** (-2.0 * np.arange(quarter, dtype=np.float64) / (head_dim // 2))
  ys, xs = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
  angles = np.concatenate([ys.reshape(-1, 1) * theta, xs.reshape(-1, 1) * theta],
                          axis=1)  # [grid**2, head_dim/2]
  grid = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
  prefix = np.zeros((num_prefix, head_dim // 2, 2))
  return np.concatenate([prefix, grid], axis=0).astype(np.float32)


def apply_rope(x: jax.Array, table: jax.Array) -> jax.Array:
  """Rotates adjacent pairs of x [B, S, H, D] by table [S, D/2, 2]; in float32."""
  b, s, h, d = x.shape
  pairs = x.astype(jnp.float32).reshape(b, s, h, d // 2, 2)
  a, c = pairs[..., 0], pairs[..., 1]
  cos = table[None, :, None, :, 0]  # [1, S, 1, D/2]
  sin = table[None, :, None, :, 1]
  out = jnp.stack([a * cos - c * sin, c * cos + a * sin], axis=-1)
  return out.reshape(b, s, h, d).astype(x.dtype)
