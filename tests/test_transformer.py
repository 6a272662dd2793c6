"""ELM transformer: causality, RoPE, sub-code plumbing, sizes, scan, MLM."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import sharding, tokens
from elm_jax.models.attention import causal_attention, single_query_attention
from elm_jax.models.rope import apply_rope, rope_2d_table
from elm_jax.models.transformer import Transformer, cross_entropy

TINY = dict(num_layers=2, dim=64, num_heads=2, head_dim=32, num_classes=10,
            bits=8, num_subcodes=2, grid_size=4)


def init(model, rng=0, heads_std=0.5):
  """Unboxed params; the zero-initialised heads get random weights."""
  t = model.grid_size ** 2 - int(model.causal)
  toks = jnp.zeros((2, t, model.num_subcodes), jnp.int32)
  params = sharding.unbox(model.init(jax.random.key(rng), toks,
                                     jnp.zeros((2,), jnp.int32))["params"])
  for i in range(model.num_subcodes):
    if f"head_{i}" in params:
      params[f"head_{i}"]["kernel"] = heads_std * jax.random.normal(
          jax.random.key(100 + i), params[f"head_{i}"]["kernel"].shape)
  return params


def random_tokens(model, t, seed=1, batch=2):
  return jax.random.randint(jax.random.key(seed), (batch, t, model.num_subcodes),
                            0, model.vocab_size)


@pytest.mark.slow
def test_ar_is_causal():
  model = Transformer(**TINY)
  params = init(model)
  toks = random_tokens(model, 15)
  labels = jnp.array([3, 7])
  base, _ = model.apply({"params": params}, toks, labels)
  assert base.shape == (2, 16, 2, 16)
  for t in (0, 6, 14):
    changed = toks.at[:, t].set((toks[:, t] + 5) % model.vocab_size)
    out, _ = model.apply({"params": params}, changed, labels)
    # Input cell t sits at position t + 1: positions <= t cannot see it.
    np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1])
    assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max(axis=(2, 3)).min() > 0


@pytest.mark.slow
def test_mlm_is_bidirectional():
  model = Transformer(**TINY, causal=False)
  params = init(model)
  toks = random_tokens(model, 16)
  labels = jnp.array([3, 7])
  base, _ = model.apply({"params": params}, toks, labels)
  assert base.shape == (2, 16, 2, 16)
  out, _ = model.apply({"params": params}, toks.at[:, 15, 1].set(model.mask_id),
                       labels)
  assert np.abs(out[:, :15] - base[:, :15]).max() > 1e-4  # earlier cells see it
  # A boolean mask is the same as writing mask_id into the slots.
  mask = jnp.zeros(toks.shape, bool).at[:, 3:5].set(True)
  np.testing.assert_array_equal(
      model.apply({"params": params}, toks, labels, mask=mask)[0],
      model.apply({"params": params}, jnp.where(mask, model.mask_id, toks),
                  labels)[0])


def test_rope_table_is_the_formula():
  grid, head_dim, base = 5, 16, 10000.0
  table = rope_2d_table(grid, head_dim, base)
  assert table.shape == (1 + grid * grid, head_dim // 2, 2)
  assert not table[0].any()  # the class row: cos = sin = 0
  quarter = head_dim // 4
  for y in range(grid):
    for x in range(grid):
      for j in range(head_dim // 2):
        pos, k = (y, j) if j < quarter else (x, j - quarter)
        angle = pos * base ** (-2 * k / (head_dim / 2))
        np.testing.assert_allclose(table[1 + y * grid + x, j],
                                   [math.cos(angle), math.sin(angle)],
                                   atol=1e-6)


def test_apply_rope_rotates_adjacent_pairs():
  table = rope_2d_table(3, 8)
  x = np.random.default_rng(0).normal(size=(2, 10, 3, 8)).astype(np.float32)
  z = x[..., 0::2] + 1j * x[..., 1::2]  # pairs as complex numbers
  rot = z * (table[None, :, None, :, 0] + 1j * table[None, :, None, :, 1])
  want = np.stack([rot.real, rot.imag], -1).reshape(x.shape)
  np.testing.assert_allclose(apply_rope(jnp.asarray(x), jnp.asarray(table)),
                             want, atol=1e-5)


def test_subcodes_feed_the_model():
  model = Transformer(**TINY)  # K = 8 bits as 2 sub-codes of 4 bits
  bits = jax.random.bernoulli(jax.random.key(2), 0.5, (2, 4, 4, 8))
  ids = tokens.bits_to_subcodes(bits, model.num_subcodes)  # [B, 16, 2]
  params = sharding.unbox(model.init(jax.random.key(0), ids[:, :-1],
                                     jnp.zeros((2,), jnp.int32))["params"])
  logits, _ = model.apply({"params": params}, ids[:, :-1], jnp.array([1, 2]))
  assert logits.shape == (2, 16, 2, 2 ** 4)
  # Zero-initialised heads: uniform predictions, loss log V for any target.
  np.testing.assert_allclose(cross_entropy(logits, ids), math.log(16), rtol=1e-6)
  back = tokens.subcodes_to_bits(jnp.argmax(logits, -1), 8, 4)
  assert back.shape == bits.shape
  # Sub-code i of a cell reads table tok_embed_i: changing only sub-code 1's
  # table changes the model's input.
  params2 = jax.tree.map(lambda x: x, params)
  params2["tok_embed_1"] = {"embedding": params["tok_embed_1"]["embedding"] + 1}
  x1 = model.apply({"params": params}, ids[:, :-1], jnp.array([1, 2]),
                   method=lambda m, t, l: m.embed(t, l)[0])
  x2 = model.apply({"params": params2}, ids[:, :-1], jnp.array([1, 2]),
                   method=lambda m, t, l: m.embed(t, l)[0])
  np.testing.assert_array_equal(x1[:, 0], x2[:, 0])  # the class token
  assert np.abs(x1[:, 1:] - x2[:, 1:]).max(axis=-1).min() > 0


# docs/spec.md section 5: (layers, width, heads, params 2-10, params 2-12).
SIZES = {"B": (12, 768, 12, 90e6, 99.5e6), "L": (24, 1024, 16, 315.6e6, 328e6),
         "XL": (36, 1280, 20, 741e6, 757e6),
         "XXL": (48, 1536, 24, 1.372e9, 1.39e9),
         "2B": (48, 1792, 28, 1.887e9, 1.91e9)}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_param_counts_match_spec(size):
  layers, dim, heads, p210, p212 = SIZES[size]
  for bits, want in ((20, p210), (24, p212)):
    model = Transformer(num_layers=layers, dim=dim, num_heads=heads, bits=bits,
                        num_subcodes=2, scan_layers=True)
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 255, 2), jnp.int32),
                              jax.ShapeDtypeStruct((1,), jnp.int32))
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))
    assert abs(count - want) / want < 0.005, (size, bits, count, want)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [True, False])
def test_scan_and_remat_match_unrolled(causal):
  plain = Transformer(**TINY, causal=causal)
  params = init(plain)
  stacked = dict(params)
  stacked["layers"] = jax.tree.map(
      lambda *xs: jnp.stack(xs),
      *[stacked.pop(f"layers_{i}") for i in range(plain.num_layers)])
  scanned = Transformer(**TINY, causal=causal, scan_layers=True, remat="full")
  # The scanned model's own init has the stacked structure.
  own = init(scanned)
  assert (jax.tree.structure(own) == jax.tree.structure(stacked)
          and jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, stacked))
  t = 15 if causal else 16
  toks, labels = random_tokens(plain, t), jnp.array([0, 10])
  want, _ = plain.apply({"params": params}, toks, labels)
  got, _ = scanned.apply({"params": stacked}, toks, labels)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_train_mode_dropout_and_null_labels():
  model = Transformer(**TINY, class_dropout=1.0, token_dropout=0.0,
                      resid_dropout=0.0, mlp_dropout=0.0)
  params = init(model)
  toks = random_tokens(model, 15)
  train, _ = model.apply({"params": params}, toks, jnp.array([1, 2]), train=True,
                         rngs={"dropout": jax.random.key(0)})
  null, _ = model.apply({"params": params}, toks, jnp.array([10, 10]))
  np.testing.assert_allclose(train, null, atol=1e-6)
  noisy = Transformer(**TINY)
  a, b = (noisy.apply({"params": params}, toks, jnp.array([1, 2]), train=True,
                      rngs={"dropout": jax.random.key(s)})[0] for s in (0, 1))
  assert np.abs(a - b).max() > 0


@pytest.mark.slow
def test_every_param_has_logical_axes_and_runs_sharded():
  model = Transformer(**TINY, scan_layers=True)
  toks, labels = random_tokens(model, 15, batch=8), jnp.arange(8) % 10
  abstract = jax.eval_shape(model.init, jax.random.key(0), toks, labels)
  leaves = jax.tree.leaves(abstract["params"],
                           is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) for x in leaves)
  assert all(x.names[0] == "layers" for x in
             jax.tree.leaves(abstract["params"]["layers"],
                             is_leaf=lambda x: isinstance(x, nn.Partitioned)))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = sharding.tree_shardings(abstract, mesh)
  variables = jax.jit(lambda r: sharding.unbox(model.init(r, toks, labels)),
                      out_shardings=shardings)(jax.random.key(0))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    out, _ = jax.jit(model.apply)(variables, toks, labels)
  np.testing.assert_allclose(out, model.apply(variables, toks, labels)[0],
                             atol=1e-5)


@pytest.mark.parametrize("block", [3, 4, 5, 10, 128])
def test_single_query_attention_reads_the_prefix_in_blocks(block):
  """Blocked online softmax == a dense softmax over keys 0..last, for every
  last, with blocks that divide T (5), do not (3, 4: the shifted final
  block) and cover it (10, 128); keys past `last` hold garbage."""
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=s).astype(np.float32)
             for s in [(2, 1, 3, 4), (2, 10, 3, 4), (2, 10, 3, 4)])
  fn = jax.jit(lambda last: single_query_attention(q, k, v, last,
                                                   block=block))
  for last in range(10):
    logits = np.einsum("bhd,bthd->bht", q[:, 0], k[:, :last + 1]) / 2.0
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bht,bthd->bhd", w, v[:, :last + 1])[:, None]
    np.testing.assert_allclose(fn(last), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blocks,length", [(1, 9), (2, 9), (4, 9), (4, 3),
                                           (9, 9), (12, 9)])
def test_causal_attention_in_query_blocks_is_masked_attention(blocks, length):
  """Query blocks reading keys up to their own end: the same outputs and
  gradients as one causal softmax per query over keys 0..s (numpy), for
  block counts that divide the length, do not, and exceed it."""
  rng = np.random.default_rng(1)
  q, k, v, g = (rng.normal(size=(2, length, 3, 4)).astype(np.float32)
                for _ in range(4))
  mask = np.tril(np.ones((length, length), bool))
  logits = np.where(mask, np.einsum("bshd,bthd->bhst", q, k) / 2.0, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  want = np.einsum("bhst,bthd->bshd", w, v)
  fn = jax.jit(lambda q, k, v: causal_attention(q, k, v, query_blocks=blocks))
  np.testing.assert_allclose(fn(q, k, v), want, rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda *a: jnp.sum(fn(*a) * g), argnums=(0, 1, 2))(q, k, v)
  one = jax.grad(lambda *a: jnp.sum(causal_attention(*a) * g),
                 argnums=(0, 1, 2))(q, k, v)
  for got, ref in zip(grads, one):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.slow
def test_jax_attention_impl_matches_einsum(causal):
  """attention_impl="jax" (jax.nn.dot_product_attention; XLA's on CPU) gives
  the same logits and gradients as the einsum path, in train mode too."""
  einsum = Transformer(**TINY, causal=causal)
  fused = Transformer(**TINY, causal=causal, attention_impl="jax")
  params = init(einsum)
  t = 15 if causal else 16
  toks, labels = random_tokens(einsum, t), jnp.array([0, 10])

  def loss(model, p):
    out, _ = model.apply({"params": p}, toks, labels, train=True,
                         rngs={"dropout": jax.random.key(3)})
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out

  (_, want), want_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(einsum, p), has_aux=True))(params)
  (_, got), got_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(fused, p), has_aux=True))(params)
  np.testing.assert_allclose(got, want, atol=1e-5)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4),
               got_grads, want_grads)


def test_cross_entropy_weights():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 2, 5))
  targets = jnp.zeros((2, 3, 2), jnp.int32)
  per = -jax.nn.log_softmax(logits)[..., 0]
  w = jnp.zeros(targets.shape).at[0, 1].set(1.0)
  np.testing.assert_allclose(cross_entropy(logits, targets), per.mean((1, 2)),
                             rtol=1e-6)  # [B]: each example's mean
  np.testing.assert_allclose(cross_entropy(logits, targets, w),
                             [per[0, 1].mean(), 0.0], rtol=1e-6)
