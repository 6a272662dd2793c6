"""Reconstruction metrics and code statistics for tokenizer evaluation.

Images are float [B, H, W, C] in [0, 1] (NHWC, data range 1). All functions are pure jnp and
jit-friendly. Code statistics are mergeable accumulators (flax.struct dataclasses holding
int32 counts): build one per batch with `from_bits` / `from_ids`, combine with `merge`
(counts add), read `usage` / `entropy` at the end. An optional per-example `mask` [B] in
{0, 1} drops the padded examples of the last eval batch.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_images(x: jax.Array, y: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"{name}: expected two images batches of the same shape [B, H, W, C], "
                     f"got {x.shape} and {y.shape}.")
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB, data range 1: 10 log10(1 / mse) -> [B] (inf when identical)."""
  x, y = _as_images(x, y, 'psnr')
  mse = jnp.mean(jnp.square(x - y), axis=(1, 2, 3))  # [B]
  return -10.0 * jnp.log10(mse)


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  w = np.exp(-0.5 * (r / sigma) ** 2)
  return (w / w.sum()).astype(np.float32)  # [size], sums to 1


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
  """Separable 'valid' Gaussian filtering of every channel: [B, H, W, C] -> [B, H-s+1, W-s+1, C]."""
  c = x.shape[-1]
  size = window.shape[0]
  dn = ('NHWC', 'HWIO', 'NHWC')
  k_h = jnp.broadcast_to(jnp.asarray(window).reshape(size, 1, 1, 1), (size, 1, 1, c))
  k_w = jnp.broadcast_to(jnp.asarray(window).reshape(1, size, 1, 1), (1, size, 1, c))
  for kernel in (k_h, k_w):  # depthwise convolutions
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=dn,
                                     feature_group_count=c,
                                     precision=jax.lax.Precision.HIGHEST)
  return x


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image SSIM (Wang et al. 2004) -> [B].

  Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (biased)
  local variances, 'valid' filtering; the SSIM map is averaged over positions and channels.
  Matches skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1).
  """
  x, y = _as_images(x, y, 'ssim')
  if min(x.shape[1], x.shape[2]) < SSIM_WINDOW:
    raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got "
                     f"{x.shape[1]}x{x.shape[2]}.")
  c = x.shape[-1]
  stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)  # [B, H, W, 5C]
  f = _filter_valid(stacked, _gaussian_window())                   # [B, H', W', 5C]
  mu_x, mu_y, xx, yy, xy = (f[..., i * c:(i + 1) * c] for i in range(5))
  var_x = xx - mu_x ** 2
  var_y = yy - mu_y ** 2
  cov = xy - mu_x * mu_y
  c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
              / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3))


def _example_weights(mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
  """int32 weights broadcastable to `shape` ([B, ...]) from a per-example mask [B]."""
  if mask is None:
    return jnp.ones((shape[0],) + (1,) * (len(shape) - 1), jnp.int32)
  mask = jnp.asarray(mask)
  if mask.shape != (shape[0],):
    raise ValueError(f"mask: expected shape ({shape[0]},) (one entry per example), "
                     f"got {mask.shape}.")
  return (mask > 0).astype(jnp.int32).reshape((shape[0],) + (1,) * (len(shape) - 1))


def _entropy_bits(p: jax.Array) -> jax.Array:
  """Entropy in bits of a probability vector along the last axis (0 log 0 = 0)."""
  safe = jnp.where(p > 0, p, 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log2(safe), 0.0), axis=-1)


@flax.struct.dataclass
class BitStats:
  """Per-bit counts over an eval set: ones [K] int32, total [] int32 (positions seen)."""

  ones: jax.Array
  total: jax.Array

  @classmethod
  def empty(cls, num_bits: int) -> 'BitStats':
    return cls(ones=jnp.zeros((num_bits,), jnp.int32), total=jnp.zeros((), jnp.int32))

  @classmethod
  def from_bits(cls, bits: jax.Array, mask: jax.Array | None = None) -> 'BitStats':
    """bits [B, ..., K] in {0, 1}; mask [B] optional. Every position counts once."""
    w = _example_weights(mask, bits.shape[:-1])                       # [B, 1, ...]
    ones = jnp.asarray(bits > 0.5, jnp.int32) * w[..., None]          # [B, ..., K]
    positions = jnp.broadcast_to(w, bits.shape[:-1])                  # [B, ...]
    k = bits.shape[-1]
    return cls(ones=ones.reshape(-1, k).sum(0, dtype=jnp.int32),
               total=positions.sum(dtype=jnp.int32))

  def merge(self, other: 'BitStats') -> 'BitStats':
    return BitStats(ones=self.ones + other.ones, total=self.total + other.total)

  def probs(self) -> jax.Array:
    """[K] frequency of ones per bit (0 when nothing was seen)."""
    return self.ones / jnp.maximum(self.total, 1).astype(jnp.float32)

  def used(self) -> jax.Array:
    """[K] bool: the bit took both values over the set."""
    return (self.ones > 0) & (self.ones < self.total)

  def usage(self) -> jax.Array:
    """Fraction of bit channels that are not constant over the set (the paper's usage)."""
    return jnp.mean(self.used().astype(jnp.float32))

  def entropy(self) -> jax.Array:
    """[K] binary entropy in bits of each bit channel's marginal."""
    p = self.probs()
    return _entropy_bits(jnp.stack([p, 1.0 - p], axis=-1))

  def mean_entropy(self) -> jax.Array:
    return jnp.mean(self.entropy())


@flax.struct.dataclass
class CodeStats:
  """Code-id histogram over an eval set: counts [codebook_size] int32."""

  counts: jax.Array

  @classmethod
  def empty(cls, codebook_size: int) -> 'CodeStats':
    return cls(counts=jnp.zeros((codebook_size,), jnp.int32))

  @classmethod
  def from_ids(cls, ids: jax.Array, codebook_size: int,
               mask: jax.Array | None = None) -> 'CodeStats':
    """ids int [B, ...] in [0, codebook_size); mask [B] optional."""
    w = jnp.broadcast_to(_example_weights(mask, ids.shape), ids.shape)
    counts = jnp.zeros((codebook_size,), jnp.int32).at[ids.reshape(-1)].add(w.reshape(-1))
    return cls(counts=counts)

  def merge(self, other: 'CodeStats') -> 'CodeStats':
    return CodeStats(counts=self.counts + other.counts)

  def usage(self) -> jax.Array:
    """Fraction of codebook entries used at least once."""
    return jnp.mean((self.counts > 0).astype(jnp.float32))

  def entropy(self) -> jax.Array:
    """Entropy in bits of the empirical code distribution (log2(size) when uniform)."""
    p = self.counts / jnp.maximum(self.counts.sum(), 1).astype(jnp.float32)
    return _entropy_bits(p)


def codebook_usage(ids: jax.Array, codebook_size: int,
                   mask: jax.Array | None = None) -> jax.Array:
  """Fraction of the codebook's entries that occur in `ids` (one batch)."""
  return CodeStats.from_ids(ids, codebook_size, mask).usage()
