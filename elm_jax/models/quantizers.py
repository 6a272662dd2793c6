"""The three tokenizer bottlenecks of the design space, behind one interface.

- `BinaryQuantizer`: ELM's binary autoencoder (BAE) bottleneck. K Bernoulli bits per position,
  straight-through gradient to the probabilities, decoder input `bits @ E`.
- `VectorQuantizer`: LlamaGen-style VQ with l2-normalised codes (cosine nearest neighbour).
- `LookupFreeQuantizer`: MAGVIT-v2's LFQ, `sign(z)` per channel plus an entropy penalty.

Every module maps `h` [B, h, w, emb_dim] (NHWC) to a `QuantizerOutput` with
`__call__(h, *, train)` and maps codes back to the decoder input with `dequantize(codes)`.
Quantisation maths runs in float32 whatever `dtype` is; `dtype` is the compute dtype of the
projections and of `z_q`.

Straight-through estimators are written `sg(hard) + (soft - sg(soft))`: the forward value is
exactly `hard` (so `dequantize(codes)` reproduces `z_q` bit for bit) and the gradient w.r.t.
`soft` is exactly the identity.

Bit order: bit 0 is the most significant bit of the token id (`bits_to_ids`, `ids_to_bits`).
"""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Dtype = Any
sg = jax.lax.stop_gradient

MAX_ID_BITS = 31  # ids are int32


class QuantizerOutput(flax.struct.PyTreeNode):
  """What every quantizer returns (see the module docstring for the conventions)."""

  z_q: jax.Array            # [B, h, w, emb_dim] decoder input
  ids: jax.Array | None     # int32 [B, h, w]; None for binary/LFQ codes wider than 31 bits
  bits: jax.Array | None    # float32 [B, h, w, K] in {0, 1}; None for VQ
  probs: jax.Array | None   # float32 [B, h, w, K] p(bit = 1); None for VQ
  loss: jax.Array           # float32 [] weighted auxiliary loss (0 for binary)
  metrics: dict[str, jax.Array]  # float32 scalars


# ----------------------------------------------------------------------------- pure functions


def bits_to_ids(bits: jax.Array) -> jax.Array:
  """[..., K] bits in {0, 1} -> int32 [...] ids, bit 0 = most significant. K <= 31."""
  num_bits = bits.shape[-1]
  if not 1 <= num_bits <= MAX_ID_BITS:
    raise ValueError(
        f"bits_to_ids: got {num_bits} bits per code; int32 ids hold 1..{MAX_ID_BITS} bits. "
        "Split wider codes into sub-codes first.")
  shifts = jnp.arange(num_bits - 1, -1, -1, dtype=jnp.int32)  # [K]: K-1, ..., 0
  weights = jnp.left_shift(jnp.int32(1), shifts)                # [K]
  return jnp.sum(jnp.asarray(bits).astype(jnp.int32) * weights, axis=-1, dtype=jnp.int32)


def ids_to_bits(ids: jax.Array, num_bits: int, dtype: Dtype = jnp.float32) -> jax.Array:
  """int [...] ids -> [..., K] bits in {0, 1} (bit 0 = most significant). K <= 31."""
  if not 1 <= num_bits <= MAX_ID_BITS:
    raise ValueError(
        f"ids_to_bits: num_bits={num_bits}; int32 ids hold 1..{MAX_ID_BITS} bits.")
  shifts = jnp.arange(num_bits - 1, -1, -1, dtype=jnp.int32)  # [K]
  ids = jnp.asarray(ids).astype(jnp.int32)
  return (jnp.right_shift(ids[..., None], shifts) & 1).astype(dtype)


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """Forward value exactly `hard`; gradient w.r.t. `soft` exactly the identity, none to `hard`."""
  return sg(hard) + (soft - sg(soft))


def bernoulli_bits(key: jax.Array, probs: jax.Array) -> jax.Array:
  """Samples b ~ Bernoulli(p) as float32 {0, 1}: b = (u < p), u ~ U[0, 1)."""
  u = jax.random.uniform(key, probs.shape, dtype=jnp.float32)
  return (u < probs).astype(jnp.float32)


def threshold_bits(probs: jax.Array) -> jax.Array:
  """Deterministic bits: 1 where p > 0.5 strictly (p = 0.5 gives 0), float32."""
  return (probs > 0.5).astype(jnp.float32)


def bit_usage(bits: jax.Array) -> jax.Array:
  """Fraction of the K bit channels that are not constant over all leading positions."""
  flat = bits.reshape(-1, bits.shape[-1])  # [N, K]
  return jnp.mean((flat.max(axis=0) != flat.min(axis=0)).astype(jnp.float32))


def _binary_entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Binary entropy (nats) of sigmoid(logits), elementwise, stable for large |logits|."""
  p = jax.nn.sigmoid(logits)
  # -log p = softplus(-l), -log(1 - p) = softplus(l)
  return p * jax.nn.softplus(-logits) + (1.0 - p) * jax.nn.softplus(logits)


def _binary_entropy(p: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Binary entropy (nats) of p in [0, 1]; eps inside the logs keeps the gradient finite."""
  return -p * jnp.log(p + eps) - (1.0 - p) * jnp.log(1.0 - p + eps)


def lfq_entropy_terms(z: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """Factorised LFQ entropies (nats): (mean per-sample entropy, batch codebook entropy).

  z: [..., K] pre-quantisation latents; every leading position is one sample.
  With codes c in {-1, +1}^K, the code distribution softmax_c(-||z - c||^2 / T) equals
  softmax_c(2 z.c / T), which factorises over bits: p(bit_k = 1) = sigmoid(4 z_k / T).
  - per-sample entropy = sum_k H(p_k): exact, no 2^K table.
  - codebook entropy = sum_k H(mean_n p_nk): the entropy of the product of the batch-average
    bit marginals. It upper-bounds the exact entropy of the batch-average code distribution
    and equals it when the bits are independent over the batch; maximising it balances
    every bit channel. Cost O(N K) instead of O(N 2^K).
  The penalty is per_sample - codebook (low per-sample entropy, high batch entropy).
  """
  z = z.astype(jnp.float32).reshape(-1, z.shape[-1])  # [N, K]
  logits = 4.0 * z / temperature                      # [N, K] log-odds of bit = 1
  per_sample = jnp.mean(jnp.sum(_binary_entropy_from_logits(logits), axis=-1))
  avg_probs = jnp.mean(jax.nn.sigmoid(logits), axis=0)  # [K]
  codebook = jnp.sum(_binary_entropy(avg_probs))
  return per_sample, codebook


def vq_entropy_terms(affinity: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """VQ entropies (nats) of softmax(affinity / T) over the codebook axis (last).

  affinity: [..., N_codes] (e.g. minus the squared distances). Returns
  (mean per-sample entropy, entropy of the batch-average distribution).
  """
  flat = affinity.astype(jnp.float32).reshape(-1, affinity.shape[-1]) / temperature
  log_probs = jax.nn.log_softmax(flat, axis=-1)  # [N, C]
  probs = jnp.exp(log_probs)
  per_sample = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
  avg_probs = jnp.mean(probs, axis=0)            # [C]
  codebook = -jnp.sum(avg_probs * jnp.log(avg_probs + 1e-5))
  return per_sample, codebook


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _check_input(h: jax.Array, emb_dim: int, name: str) -> None:
  if h.ndim != 4 or h.shape[-1] != emb_dim:
    raise ValueError(
        f"{name}: expected h of shape [B, h, w, emb_dim={emb_dim}] (NHWC), got {h.shape}.")


# ----------------------------------------------------------------------------- modules


class BinaryQuantizer(nn.Module):
  """ELM's binary bottleneck: p = sigmoid(proj(h)), b ~ Bernoulli(p) or (p > 0.5), z_q = z @ E.

  Parameters (names fixed for weight import): `proj/kernel` [emb_dim, K], `proj/bias` [K]
  (ELM's quantize.proj[0], a 1x1 conv), `embed` [K, emb_dim] (ELM's quantize.embed.weight).
  Sampling in training needs the 'quantize' rng stream unless `deterministic`.
  """

  bits: int
  emb_dim: int
  deterministic: bool = False
  embed_init_std: float = 1.0  # torch nn.Embedding default init, as in ELM
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.proj = nn.Dense(self.bits, dtype=self.dtype, param_dtype=self.param_dtype)
    self.embed = self.param('embed', nn.initializers.normal(self.embed_init_std),
                            (self.bits, self.emb_dim), self.param_dtype)

  def __call__(self, h: jax.Array, *, train: bool) -> QuantizerOutput:
    _check_input(h, self.emb_dim, 'BinaryQuantizer')
    logits = self.proj(h).astype(jnp.float32)  # [B, h, w, K]
    probs = jax.nn.sigmoid(logits)             # [B, h, w, K]
    if train and not self.deterministic:
      if not self.has_rng('quantize'):
        raise ValueError("BinaryQuantizer: Bernoulli sampling in training needs an rng; pass "
                         "rngs={'quantize': key} to apply (or set deterministic=True).")
      bits = bernoulli_bits(self.make_rng('quantize'), probs)
    else:
      bits = threshold_bits(probs)
    z = straight_through(bits, probs)          # [B, h, w, K], value == bits
    z_q = self._embed_bits(z)                  # [B, h, w, emb_dim]
    metrics = {
        'codebook_loss': jnp.mean(probs * (1.0 - probs)),  # ELM's unweighted metric
        'bit_mean': jnp.mean(bits),
        'bit_usage': bit_usage(bits),
    }
    return QuantizerOutput(
        z_q=z_q, ids=bits_to_ids(bits) if self.bits <= MAX_ID_BITS else None, bits=bits,
        probs=probs, loss=jnp.zeros((), jnp.float32), metrics=metrics)

  def _embed_bits(self, z: jax.Array) -> jax.Array:
    embed = jnp.asarray(self.embed, self.dtype)  # [K, D]
    return jnp.einsum('...k,kd->...d', z.astype(self.dtype), embed)

  def dequantize(self, bits: jax.Array) -> jax.Array:
    """bits [B, h, w, K] in {0, 1} -> z_q [B, h, w, emb_dim] = bits @ E."""
    return self._embed_bits(bits)


class VectorQuantizer(nn.Module):
  """LlamaGen-style VQ: Dense(emb_dim -> code_dim), l2-normalised nearest code, Dense back.

  loss = ||sg(z) - e||^2 + beta ||z - sg(e)||^2 (means over elements)
         + entropy_weight * (per-sample entropy - batch entropy) of softmax(-dist / T).
  Parameters: `quant_proj`, `embedding` [codebook_size, code_dim], `post_quant_proj`.
  """

  codebook_size: int
  code_dim: int
  emb_dim: int
  beta: float = 0.25
  entropy_weight: float = 0.0
  entropy_temperature: float = 0.01
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.quant_proj = nn.Dense(self.code_dim, dtype=self.dtype, param_dtype=self.param_dtype)
    self.post_quant_proj = nn.Dense(self.emb_dim, dtype=self.dtype,
                                    param_dtype=self.param_dtype)
    n = self.codebook_size

    def init_codebook(key, shape, dtype):  # uniform(-1/n, 1/n), then unit norm
      return _l2_normalize(jax.random.uniform(key, shape, dtype, -1.0 / n, 1.0 / n))

    self.embedding = self.param('embedding', init_codebook, (n, self.code_dim),
                                self.param_dtype)

  def _codebook(self) -> jax.Array:
    return _l2_normalize(jnp.asarray(self.embedding, jnp.float32))  # [C, d]

  def __call__(self, h: jax.Array, *, train: bool) -> QuantizerOutput:
    del train  # no randomness
    _check_input(h, self.emb_dim, 'VectorQuantizer')
    z = _l2_normalize(self.quant_proj(h).astype(jnp.float32))  # [B, h, w, d]
    codebook = self._codebook()                                  # [C, d]
    # squared distance between unit vectors: 2 - 2 cos
    dist = (jnp.sum(z ** 2, -1, keepdims=True) + jnp.sum(codebook ** 2, -1)
            - 2.0 * jnp.einsum('...d,cd->...c', z, codebook,
                               precision=jax.lax.Precision.HIGHEST))  # [B, h, w, C]
    ids = jnp.argmin(dist, axis=-1).astype(jnp.int32)                # [B, h, w]
    e = codebook[ids]                                                # [B, h, w, d]
    vq_loss = jnp.mean((e - sg(z)) ** 2)
    commit_loss = self.beta * jnp.mean((sg(e) - z) ** 2)
    if self.entropy_weight > 0.0:
      per_sample, batch_entropy = vq_entropy_terms(-dist, self.entropy_temperature)
      entropy_loss = self.entropy_weight * (per_sample - batch_entropy)
    else:
      entropy_loss = jnp.zeros((), jnp.float32)
    z_q = self.post_quant_proj(straight_through(e, z).astype(self.dtype))  # [B, h, w, D]
    used = jnp.zeros((self.codebook_size,), jnp.int32).at[ids.reshape(-1)].add(1) > 0
    metrics = {
        'vq_loss': vq_loss,
        'commit_loss': commit_loss,
        'entropy_loss': entropy_loss,
        'codebook_usage': jnp.mean(used.astype(jnp.float32)),
    }
    return QuantizerOutput(z_q=z_q, ids=ids, bits=None, probs=None,
                           loss=vq_loss + commit_loss + entropy_loss, metrics=metrics)

  def dequantize(self, ids: jax.Array) -> jax.Array:
    """int ids [B, h, w] -> z_q [B, h, w, emb_dim]."""
    e = self._codebook()[ids]  # [B, h, w, d]
    return self.post_quant_proj(e.astype(self.dtype))


class LookupFreeQuantizer(nn.Module):
  """MAGVIT-v2 LFQ: z = Dense(emb_dim -> K)(h), q = sign(z) in {-1, +1} (0 -> +1), Dense back.

  loss = entropy_weight * (per-sample entropy - codebook entropy)   [see lfq_entropy_terms]
         + commitment_weight * mean((z - sg(q))^2).
  bits = (q > 0), ids = bits_to_ids(bits), probs = sigmoid(4 z / T) = p(bit = 1) in the
  factorised code distribution used by the entropy penalty.
  Parameters: `proj`, `post_proj`.
  """

  bits: int
  emb_dim: int
  entropy_weight: float = 0.1
  commitment_weight: float = 0.25
  entropy_temperature: float = 0.01
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.proj = nn.Dense(self.bits, dtype=self.dtype, param_dtype=self.param_dtype)
    self.post_proj = nn.Dense(self.emb_dim, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, h: jax.Array, *, train: bool) -> QuantizerOutput:
    del train  # no randomness
    _check_input(h, self.emb_dim, 'LookupFreeQuantizer')
    z = self.proj(h).astype(jnp.float32)              # [B, h, w, K]
    q = jnp.where(z >= 0, 1.0, -1.0)                  # [B, h, w, K]
    bits = (q > 0).astype(jnp.float32)
    per_sample, codebook = lfq_entropy_terms(z, self.entropy_temperature)
    entropy_loss = self.entropy_weight * (per_sample - codebook)
    commitment = self.commitment_weight * jnp.mean((z - sg(q)) ** 2)
    z_q = self.post_proj(straight_through(q, z).astype(self.dtype))  # [B, h, w, D]
    metrics = {
        'entropy_loss': entropy_loss,
        'per_sample_entropy': per_sample,
        'codebook_entropy': codebook,
        'commitment_loss': commitment,
        'bit_usage': bit_usage(bits),
    }
    return QuantizerOutput(
        z_q=z_q, ids=bits_to_ids(bits) if self.bits <= MAX_ID_BITS else None, bits=bits,
        probs=jax.nn.sigmoid(4.0 * z / self.entropy_temperature),
        loss=entropy_loss + commitment, metrics=metrics)

  def dequantize(self, bits: jax.Array) -> jax.Array:
    """bits [B, h, w, K] in {0, 1} -> z_q [B, h, w, emb_dim] = post_proj(2 bits - 1)."""
    return self.post_proj((2.0 * bits - 1.0).astype(self.dtype))
