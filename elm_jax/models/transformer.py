"""ELM's class-conditional transformers over sub-code tokens (docs/spec.md sections 4-5).

One Llama-style pre-norm module serves both generators:
- AR (`causal=True`): sequence [class, cell 0, ..., cell T-1], one position
  per grid cell; the n sub-code embeddings of a cell (n tables of 2^(K/n)
  rows) are concatenated and projected to `dim` by `proj` (n = 1: one table,
  no `proj`). Position s predicts cell s with n independent zero-initialised
  heads: logits [B, T+1, n, V].
- MLM (`causal=False`): bidirectional; every sub-code is its own position,
  all drawn from one table of V+1 rows (the last is [MASK]); the sequence is n
  copies of the class token followed by the L*n sub-tokens, the sub-tokens of
  a cell share the cell's RoPE rotation. The head is dense -> GELU ->
  LayerNorm -> product with the (stop-gradient) input table + bias: logits
  [B, L, n, V] over the V real entries.

Einsum letters: B batch, S query positions, T key positions, H heads,
D head_dim, E model width (dim), F MLP hidden, V entries per sub-code, N
sub-codes per cell. V = 2^(K/n).

The residual stream is float32 (as under PyTorch autocast); matmuls run in
`dtype`; norms, RoPE, softmax, heads and losses in float32. Dropout and the
class-label dropout (replace by the null class `num_classes`) draw from the
'dropout' rng stream when `train=True`.

Decoding (AR only) goes through the same modules with a KV cache that the
model owns: `init_cache(batch)`, then `__call__(tokens, labels, cache=cache)`
feeds the next positions and returns the updated cache (see `__call__`).
With `scan_layers` the cache is scanned with the layers, one stacked
[L, B, T, H, D] buffer per k and v.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from elm_jax.models.attention import Attention
from elm_jax.models.layers import (CACHE_AXES, Dtype, FeedForward, RMSNorm,
                                   constrain, dense, embed, init)
from elm_jax.models.rope import rope_2d_table
from elm_jax.tokens import check_split

REMAT_POLICIES = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# Sizes: (layers, width, heads); head_dim is 64 everywhere (docs/spec.md section 5).
SIZES = {
    "tiny": (2, 128, 2),
    "XS": (4, 192, 3),  # the Fashion-MNIST default (configs/common.py)
    "S": (4, 256, 4),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (36, 1280, 20),
    "XXL": (48, 1536, 24),
    "2B": (48, 1792, 28),
}


def default_mlp_dim(dim: int, multiple_of: int = 256) -> int:
  """SwiGLU hidden size: round_up(int(2 * 4 * dim / 3), multiple_of)."""
  hidden = int(2 * 4 * dim / 3)
  return multiple_of * -(-hidden // multiple_of)


class Block(nn.Module):
  """Pre-norm block: x += drop(attn(norm x)); x += drop(ffn(norm x))."""
  dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  causal: bool = True
  attn_dropout: float = 0.0
  resid_dropout: float = 0.1
  mlp_dropout: float = 0.1
  norm_eps: float = 1e-5
  attention_query_blocks: int = 1
  attention_impl: str = "einsum"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.attention_norm = RMSNorm(self.norm_eps, self.param_dtype)
    self.attention = Attention(self.dim, self.num_heads, self.head_dim,
                               self.causal, self.attn_dropout,
                               self.attention_query_blocks,
                               self.attention_impl, **kw)
    self.ffn_norm = RMSNorm(self.norm_eps, self.param_dtype)
    self.feed_forward = FeedForward(self.dim, self.mlp_dim, **kw)
    self.resid_drop = nn.Dropout(self.resid_dropout)
    self.mlp_drop = nn.Dropout(self.mlp_dropout)

  def __call__(self, x, rope, deterministic: bool = True, cache=None,
               index=None):
    """x [B,S,E] float32 residual, rope [S,D/2,2] -> (x, cache) (scan form).

    cache: this layer's {"k", "v"} for decoding at `index` (Attention).
    """
    x = constrain(x)
    h, cache = self.attention(self.attention_norm(x), rope, deterministic,
                              cache, index)
    x = x + self.resid_drop(h, deterministic=deterministic)
    h = self.feed_forward(self.ffn_norm(x))
    x = x + self.mlp_drop(h, deterministic=deterministic)
    return constrain(x), cache


class MlmHead(nn.Module):
  """LayerNorm(GELU_erf(fc h)) @ stop_gradient(table).T + bias, float32."""
  dim: int
  norm_eps: float = 1e-5
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, table):  # h [B,S,E], table [V+1,E] -> [B,S,V+1]
    h = dense(self.dim, ("embed", "mlp"), "fc", jnp.float32, self.param_dtype,
               use_bias=True)(h.astype(jnp.float32))
    h = nn.gelu(h, approximate=False)
    h = nn.LayerNorm(self.norm_eps, dtype=jnp.float32, use_fast_variance=False,
                     param_dtype=self.param_dtype, name="ln",
                     scale_init=nn.with_logical_partitioning(
                         nn.initializers.ones_init(), ("embed",)),
                     bias_init=init(("embed",), None))(h)
    bias = self.param("bias", init(("vocab",), None), (table.shape[0],),
                      self.param_dtype)
    table = jax.lax.stop_gradient(table).astype(jnp.float32)
    return jnp.einsum("bse,ve->bsv", h, table) + bias


class Transformer(nn.Module):
  """ELM's AR (causal) or MLM (bidirectional) transformer; see module doc.

  A config builds one with `generator_config.build_transformer`, after
  configs_lib has checked its fields (remat, head_dim, attention_*). Call
  `model.apply(variables, tokens, labels, train=..., mask=..., cache=...)`
  -> (logits, cache).
  """
  num_layers: int = 12
  dim: int = 768
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int | None = None  # None: round_up(int(2 * 4 * dim / 3), 256)
  num_classes: int = 1000  # the table has num_classes + 1 rows (last: null)
  bits: int = 20  # K bits per grid cell
  num_subcodes: int = 2  # n; V = 2^(K/n) entries per sub-code
  codebook_size: int = 0  # > 0: each sub-code is a VQ id, V = codebook_size
  grid_size: int = 16
  causal: bool = True
  token_dropout: float = 0.1
  resid_dropout: float = 0.1
  mlp_dropout: float = 0.1
  attn_dropout: float = 0.0
  class_dropout: float = 0.1
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = False
  remat: str = "none"
  # AR training attention in this many query blocks, each reading keys up to
  # its own end: the same result from (n + 1) / 2n of the score products.
  attention_query_blocks: int = 4
  attention_impl: str = "einsum"  # see ATTENTION_IMPLS

  @property
  def vocab_size(self) -> int:
    """V: entries of one sub-code (the MLM table has one more, [MASK])."""
    if self.codebook_size:
      return self.codebook_size
    return 2 ** check_split(self.bits, self.num_subcodes)

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  @property
  def hidden_dim(self) -> int:
    return self.mlp_dim or default_mlp_dim(self.dim)

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n, v = self.num_subcodes, self.vocab_size
    self.class_embed = embed(self.num_classes + 1, self.dim, "class_embed", **kw)
    if self.causal:
      self.tok_embed = [embed(v, self.dim, f"tok_embed_{i}", **kw)
                        for i in range(n)]
      if n > 1:
        self.proj = dense(self.dim, (None, "embed"), "proj", **kw)
      self.heads = [dense(v, ("embed", "vocab"), f"head_{i}", jnp.float32,
                           self.param_dtype, std=None) for i in range(n)]
    else:
      self.tok_embed = embed(v + 1, self.dim, "tok_embed", **kw)
      self.mlm_head = MlmHead(self.dim, self.norm_eps, self.param_dtype)

    block = Block
    if self.remat != "none":
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat],
                       prevent_cse=not self.scan_layers, static_argnums=(3,))
    block_kw = dict(dim=self.dim, num_heads=self.num_heads,
                    head_dim=self.head_dim, mlp_dim=self.hidden_dim,
                    causal=self.causal, attn_dropout=self.attn_dropout,
                    resid_dropout=self.resid_dropout,
                    mlp_dropout=self.mlp_dropout, norm_eps=self.norm_eps,
                    attention_query_blocks=self.attention_query_blocks,
                    attention_impl=self.attention_impl, **kw)
    if self.scan_layers:
      self.layers = nn.scan(
          block, variable_axes={"params": 0},
          split_rngs={"params": True, "dropout": True},
          # rope, deterministic, the layer's cache (stacked), index
          in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
          length=self.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(**block_kw,
                                                         name="layers")
    else:
      self.layers = [block(**block_kw, name=f"layers_{i}")
                     for i in range(self.num_layers)]
    self.norm = RMSNorm(self.norm_eps, self.param_dtype)
    self.token_drop = nn.Dropout(self.token_dropout)

  def layer_params(self, params) -> list:
    """Per-layer Block params, whether stored stacked (scan) or one per layer."""
    if self.scan_layers:
      return [jax.tree.map(lambda a, i=i: a[i], params["layers"])
              for i in range(self.num_layers)]
    return [params[f"layers_{i}"] for i in range(self.num_layers)]

  def init_cache(self, batch: int) -> dict:
    """An empty KV cache for decoding `batch` rows (AR; no params needed).

    {"index": int32 [] (positions written), "layers": one {"k", "v"} per
    layer, each [B, T, H, D] zeros in `dtype`, T = grid^2 (the class token
    and all but the last cell); with scan_layers a single {"k", "v"} of
    stacked [L, B, T, H, D] buffers}. Sharded like the activations when
    logical axis rules are active.
    """
    shape = (batch, self.grid_size ** 2, self.num_heads, self.head_dim)

    def zeros(lead=(), lead_axes=()):
      return nn.with_logical_constraint(jnp.zeros(lead + shape, self.dtype),
                                        lead_axes + CACHE_AXES)
    if self.scan_layers:
      layers = {"k": zeros((self.num_layers,), ("layers",)),
                "v": zeros((self.num_layers,), ("layers",))}
    else:
      layers = tuple({"k": zeros(), "v": zeros()}
                     for _ in range(self.num_layers))
    return {"index": jnp.zeros((), jnp.int32), "layers": layers}

  def embed_cells(self, tokens):
    """AR cell inputs: tokens [B,T,N] -> [B,T,E] float32 (no class token)."""
    n = self.num_subcodes
    emb = [self.tok_embed[i](tokens[..., i]) for i in range(n)]  # N x [B,T,E]
    x = self.proj(jnp.concatenate(emb, -1)) if n > 1 else emb[0]
    return x.astype(jnp.float32)

  def _rope(self, cells: int):
    """[cells + 1, D/2, 2]: the zero class row, then the first cells cells."""
    table = rope_2d_table(self.grid_size, self.head_dim, self.rope_base)
    return jnp.asarray(table[:cells + 1])

  def embed(self, tokens, labels, deterministic: bool = True):
    """tokens [B,T,N] int, labels [B] -> (x [B,S,E] float32, rope [S,D/2,2])."""
    b, t, n = tokens.shape
    if n != self.num_subcodes:
      raise ValueError(f"tokens have {n} sub-codes per cell, the model "
                       f"num_subcodes={self.num_subcodes}.")
    most = self.grid_size ** 2 - int(self.causal)  # AR inputs stop one short
    if t > most:
      raise ValueError(f"{t} input cells: at most {most} fit the "
                       f"{self.grid_size}x{self.grid_size} grid.")
    cls = self.class_embed(labels)[:, None]  # [B,1,E]
    rope = self._rope(t)
    if self.causal:
      x = self.embed_cells(tokens)
      x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)  # [B,1+T,E]
    else:
      x = self.tok_embed(tokens)  # [B,T,N,E]
      x = jnp.concatenate([jnp.repeat(cls[:, None], n, axis=2), x], axis=1)
      x = x.reshape(b, (1 + t) * n, self.dim)  # position p*N + j
      rope = jnp.repeat(rope, n, axis=0)
    x = self.token_drop(x, deterministic=deterministic)
    return x.astype(jnp.float32), rope

  def backbone(self, x, rope, deterministic: bool = True, cache=None,
               index=None):
    """The blocks and the final RMSNorm: [B,S,E] -> ([B,S,E] float32, the
    layers' updated caches or None)."""
    if self.scan_layers:
      x, cache = self.layers(x, rope, deterministic, cache, index)
    else:
      new = []
      for i, layer in enumerate(self.layers):
        x, layer_cache = layer(x, rope, deterministic,
                               None if cache is None else cache[i], index)
        new.append(layer_cache)
      cache = None if cache is None else tuple(new)
    return self.norm(x).astype(jnp.float32), cache

  def logits(self, h):
    """h [B,S,E] -> AR [B,S,N,V]; MLM [B,S/N - 1,N,V] (class slots dropped)."""
    n, v = self.num_subcodes, self.vocab_size
    if self.causal:
      return jnp.stack([head(h) for head in self.heads], axis=2)
    full = self.mlm_head(h, self.tok_embed.embedding)  # [B,S,V+1]
    return full[:, n:, :v].reshape(h.shape[0], -1, n, v)

  def __call__(self, tokens, labels, *, train: bool = False, mask=None,
               cache=None):
    """-> (logits float32 [B, L, N, V], cache).

    Without a cache (training, full forwards; the returned cache is None):
    AR: tokens [B, T, N] are cells 0..T-1 (T <= grid^2 - 1; training feeds
    all but the last cell), logits [B, T+1, N, V], position s predicting cell
    s. MLM: tokens [B, L, N] with mask_id at masked slots, or `mask` [B, L, N]
    bool marking slots to replace by mask_id; logits [B, L, N, V].

    With a cache (AR decoding, from `init_cache`): the new positions follow
    the cache's. `labels` given: the sequence starts here (empty cache), the
    class token first, then tokens [B, T, N] (T may be 0, or tokens None).
    `labels` None: tokens [B, S, N] continue it. Logits [B, S', N, V] for the
    S' new positions (each predicting the next cell); the returned cache
    holds them too.
    """
    if cache is not None:
      return self._decode(tokens, labels, cache)
    if mask is not None:
      tokens = jnp.where(mask, self.mask_id, tokens)
    if train and self.class_dropout > 0.0:
      drop = jax.random.bernoulli(self.make_rng("dropout"), self.class_dropout,
                                  labels.shape)
      labels = jnp.where(drop, self.num_classes, labels)
    x, rope = self.embed(tokens, labels, deterministic=not train)
    h, _ = self.backbone(x, rope, deterministic=not train)
    return self.logits(h), None

  def _decode(self, tokens, labels, cache):
    """The cached forward of `__call__`."""
    if not self.causal:
      raise ValueError("An MLM (causal=False) model has no KV cache; decode "
                       "it with sampling.masked.")
    parts = []
    if labels is not None:
      parts.append(self.class_embed(labels)[:, None].astype(jnp.float32))
    if tokens is not None and tokens.shape[1]:
      parts.append(self.embed_cells(tokens))
    x = jnp.concatenate(parts, axis=1)  # [B,S,E]
    index = cache["index"]
    rope = jax.lax.dynamic_slice_in_dim(self._rope(self.grid_size ** 2 - 1),
                                        index, x.shape[1])  # [S,D/2,2]
    h, layers = self.backbone(x, rope, True, cache["layers"], index)
    return self.logits(h), {"index": index + x.shape[1], "layers": layers}


def cross_entropy(logits, targets, weights=None, label_smoothing: float = 0.0):
  """Each example's mean cross-entropy over its sub-tokens.

  logits [B, ..., V], int targets [B, ...] -> [B]. weights (shaped like
  targets, e.g. the MLM mask) restrict each example's mean to the weighted
  sub-tokens.
  """
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    v = logits.shape[-1]
    soft = optax.smooth_labels(jax.nn.one_hot(targets, v), label_smoothing)
    losses = optax.softmax_cross_entropy(logits, soft)
  else:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  axes = tuple(range(1, losses.ndim))
  if weights is None:
    return losses.mean(axes)
  weights = weights.astype(jnp.float32)
  return (losses * weights).sum(axes) / jnp.maximum(weights.sum(axes), 1.0)


def next_token_loss(model: "Transformer", params, ids, labels, rng,
                    train: bool):
  """AR objective. ids [B, L, n] -> (loss [B], {"accuracy": [B]}), each
  example's mean over its L * n sub-tokens.

  Input [cls, t0 .. t_{L-2}] predicts t0 .. t_{L-1}; the sub-codes of a
  position are predicted independently from the same context.
  """
  logits, _ = model.apply({"params": params}, ids[:, :-1], labels, train=train,
                          rngs={"dropout": rng})  # [B, L, n, V]
  loss = cross_entropy(logits, ids)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == ids, axis=(1, 2))
  return loss, {"accuracy": accuracy}

