"""Attention of the ELM transformer (models/transformer.py): the head-major
dot-product, causal (in query blocks) and single-query cached attention
functions, ATTENTION_IMPLS and the `Attention` module (fused qkv, 2D RoPE,
KV-cache decoding).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from elm_jax.models.layers import CACHE_AXES, Dtype, dense
from elm_jax.models.rope import apply_rope


def _attend(q, k, v, mask, dropout_rate, dropout_rng, dtype):
  """Head-major attention: q [B,H,S,D], k, v [B,H,T,D] -> [B,H,S,D]."""
  logits = jnp.einsum("bhsd,bhtd->bhst", q, k,
                      preferred_element_type=jnp.float32)
  logits = logits * q.shape[-1] ** -0.5
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhst,bhtd->bhsd", weights.astype(dtype), v.astype(dtype))


def dot_product_attention(q, k, v, mask=None, *, dropout_rate: float = 0.0,
                          dropout_rng=None, dtype: Dtype = jnp.float32):
  """q [B,S,H,D], k, v [B,T,H,D], mask bool broadcastable to [B,H,S,T].

  The products run head-major ([B,H,S,D]; benchmarks/README.md, "Platform
  tuning", has the timings behind the layouts of this module).
  """
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B,H,S,D]
  out = _attend(q, k, v, mask, dropout_rate, dropout_rng, dtype)
  return out.transpose(0, 2, 1, 3)  # [B,S,H,D]


def causal_attention(q, k, v, *, query_blocks: int = 1,
                     dropout_rate: float = 0.0, dropout_rng=None,
                     dtype: Dtype = jnp.float32):
  """Causal self-attention, q, k, v [B,S,H,D] -> [B,S,H,D].

  The queries are cut into `query_blocks` contiguous blocks and block i reads
  the keys up to its own last position only, skipping the all-masked upper
  right of the score matrix: (n + 1) / 2n of the products for n blocks. Every
  query still sees all its keys in one block, so no running softmax. With
  dropout, block i draws from fold_in(dropout_rng, i).
  """
  s = q.shape[1]
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B,H,S,D]
  edges = sorted({round(s * i / query_blocks) for i in range(query_blocks + 1)})
  outs = []
  for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
    mask = jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :]  # [S_i,T_i]
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, i)
    outs.append(_attend(q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi], mask,
                        dropout_rate, rng, dtype))
  return jnp.concatenate(outs, axis=2).transpose(0, 2, 1, 3)  # [B,S,H,D]


def single_query_attention(q, cache_k, cache_v, last, *, block: int = 32,
                           dtype: Dtype = jnp.float32):
  """One query per row over the written cache prefix, keys 0..last.

  q [B,1,H,D], cache_k, cache_v [B,T,H,D], last: traced int -> [B,1,H,D].
  The cache is read in blocks of `block` positions up to `last` only, with an
  online softmax (running max, normaliser and weighted sum), so a decoding
  step costs in proportion to the prefix, not to T. The reductions are
  multiply-reduce, not B*H tiny batched matmuls.
  """
  b, t, h, d = cache_k.shape
  block = min(block, t)
  q32 = q[:, 0].astype(jnp.float32) * d ** -0.5  # [B,H,D]
  lowest = jnp.finfo(jnp.float32).min

  def read_block(j, state):
    top, norm, acc = state  # [B,H], [B,H], [B,H,D]
    # The last block is shifted back to fit in T; `fresh` drops the
    # positions an earlier block already counted.
    start = jnp.minimum(j * block, t - block)
    k = jax.lax.dynamic_slice_in_dim(cache_k, start, block, axis=1)
    v = jax.lax.dynamic_slice_in_dim(cache_v, start, block, axis=1)
    pos = start + jnp.arange(block)
    fresh = (pos >= j * block) & (pos <= last)  # [blk]
    logits = jnp.sum(q32[:, None] * k.astype(jnp.float32), -1)  # [B,blk,H]
    logits = jnp.where(fresh[None, :, None], logits, lowest)
    new_top = jnp.maximum(top, logits.max(1))
    weights = jnp.exp(logits - new_top[:, None])  # [B,blk,H]
    rescale = jnp.exp(top - new_top)
    norm = norm * rescale + weights.sum(1)
    acc = acc * rescale[..., None] + jnp.sum(
        weights[..., None] * v.astype(jnp.float32), axis=1)
    return new_top, norm, acc

  init = (jnp.full((b, h), lowest), jnp.zeros((b, h)),
          jnp.zeros((b, h, d)))
  _, norm, acc = jax.lax.fori_loop(0, last // block + 1, read_block, init)
  return (acc / norm[..., None]).astype(dtype)[:, None]


# How training / full-sequence attention is computed (decoding always uses the
# cache paths): "einsum" is this module's head-major products (causal in query
# blocks), the CPU choice; "jax" is jax.nn.dot_product_attention, which runs
# cuDNN's fused kernel on NVIDIA GPUs where dtype and shapes allow (bf16/fp16)
# and XLA's otherwise. Same results; no dropout on the attention weights.
ATTENTION_IMPLS = ("einsum", "jax")


class Attention(nn.Module):
  """Fused bias-free qkv [q | k | v], 2D RoPE on q and k, bias-free output."""
  dim: int
  num_heads: int
  head_dim: int = 64
  causal: bool = True
  dropout: float = 0.0  # on the attention weights
  query_blocks: int = 1  # causal training attention, see causal_attention
  impl: str = "einsum"  # one of ATTENTION_IMPLS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    inner = self.num_heads * self.head_dim
    self.qkv = dense(3 * inner, ("embed", "heads"), "qkv", **kw)
    self.out = dense(self.dim, ("heads", "embed"), "out", **kw)

  def project_qkv(self, x, rope):
    """x [B,S,E], rope [S,D/2,2] -> q, k, v [B,S,H,D] (q, k rotated)."""
    b, s, _ = x.shape
    qkv = self.qkv(x).reshape(b, s, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    return apply_rope(q, rope), apply_rope(k, rope), v

  def project_out(self, o):  # [B,S,H,D] -> [B,S,E]
    return self.out(o.reshape(*o.shape[:2], -1))

  def decode(self, q, k, v, cache, index):
    """The new positions index..index+S-1 through this layer's cache.

    q, k, v [B,S,H,D]; cache {"k", "v"} [B,T,H,D] holding positions
    0..index-1 -> (attention output [B,S,H,D], cache with k, v written at
    `index`, in place inside a scan).
    """
    cache_k, cache_v = (nn.with_logical_constraint(
        jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), index, axis=1),
        CACHE_AXES) for c, new in ((cache["k"], k), (cache["v"], v)))
    s = q.shape[1]
    if s == 1:  # one query: keys 0..index either way
      o = single_query_attention(q, cache_k, cache_v, index, dtype=self.dtype)
    else:
      # Query index+i sees keys 0..index+i (causal) or all written keys.
      last = index + (jnp.arange(s)[:, None] if self.causal else s - 1)
      mask = jnp.arange(cache_k.shape[1])[None, :] <= last  # [S, T]
      o = dot_product_attention(q, cache_k, cache_v, mask, dtype=self.dtype)
    return o, {"k": cache_k, "v": cache_v}

  def __call__(self, x, rope, deterministic: bool = True, cache=None,
               index=None):
    """x [B,S,E], rope [S,D/2,2] -> (out [B,S,E], cache).

    cache None: attention over the S positions themselves (training, full
    forwards), returned cache None. Else see `decode` (inference, no dropout).
    """
    q, k, v = self.project_qkv(x, rope)
    if cache is not None:
      o, cache = self.decode(q, k, v, cache, index)
      return self.project_out(o), cache
    if self.impl == "jax":  # [B,S,H,D]; the Transformer refuses dropout here
      o = jax.nn.dot_product_attention(q.astype(self.dtype), k.astype(self.dtype),
                                       v.astype(self.dtype), is_causal=self.causal)
      return self.project_out(o), None
    use_dropout = self.dropout > 0.0 and not deterministic
    drop = dict(dropout_rate=self.dropout if use_dropout else 0.0,
                dropout_rng=self.make_rng("dropout") if use_dropout else None,
                dtype=self.dtype)
    if self.causal:
      o = causal_attention(q, k, v, query_blocks=self.query_blocks, **drop)
    else:
      o = dot_product_attention(q, k, v, **drop)
    return self.project_out(o), None
