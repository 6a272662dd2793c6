"""Random state dicts in ELM's and LlamaGen's PyTorch layouts, and a NumPy
forward of their AR transformer, written from the published architectures
(tests/reference/README.md, LlamaGen's gpt.py) independently of elm_jax."""

import math

import numpy as np


def elm_bae_state_dict(seed, *, nf, ch_mult, res_blocks, attn_levels, emb_dim,
                       bits) -> dict:
  """Random weights under the keys and shapes of ELM's bae/binaryae.py."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(key, cin, cout, k):
    sd[key + "weight"] = rng.normal(0, 0.05, (cout, cin, k, k)).astype(np.float32)
    sd[key + "bias"] = rng.normal(0, 0.05, (cout,)).astype(np.float32)

  def norm(key, c):
    sd[key + "weight"] = (1 + rng.normal(0, 0.1, (c,))).astype(np.float32)
    sd[key + "bias"] = rng.normal(0, 0.1, (c,)).astype(np.float32)

  def res(key, cin, cout):  # conv_out exists even when unused (cin == cout)
    norm(key + "norm1.", cin)
    conv(key + "conv1.", cin, cout, 3)
    norm(key + "norm2.", cout)
    conv(key + "conv2.", cout, cout, 3)
    conv(key + "conv_out.", cin, cout, 1)

  def attn(key, c):
    norm(key + "norm.", c)
    for name in ("q", "k", "v", "proj_out"):
      conv(f"{key}{name}.", c, c, 1)

  def blocks(name):
    i = 0
    while True:
      yield f"{name}.blocks.{i}."
      i += 1

  enc, ch = blocks("encoder"), nf
  conv(next(enc), 3, nf, 3)
  for level, mult in enumerate(ch_mult):
    for _ in range(res_blocks):
      res(next(enc), ch, nf * mult)
      ch = nf * mult
      if level in attn_levels:
        attn(next(enc), ch)
    if level != len(ch_mult) - 1:
      conv(next(enc) + "conv.", ch, ch, 3)
  res(next(enc), ch, ch), attn(next(enc), ch), res(next(enc), ch, ch)
  norm(next(enc), ch)
  conv(next(enc), ch, emb_dim, 3)
  gen = blocks("generator")
  norm(next(gen), emb_dim)
  conv(next(gen), emb_dim, ch, 3)
  res(next(gen), ch, ch), attn(next(gen), ch), res(next(gen), ch, ch)
  for level in reversed(range(len(ch_mult))):
    for _ in range(res_blocks):
      res(next(gen), ch, nf * ch_mult[level])
      ch = nf * ch_mult[level]
      if level in attn_levels:
        attn(next(gen), ch)
    if level != 0:
      conv(next(gen) + "conv.", ch, ch, 3)
  norm(next(gen), ch)
  conv(next(gen), ch, 3, 3)
  conv("generator.logsigma.0.", ch, ch, 3)  # never used by ELM's forward
  conv("quantize.proj.0.", emb_dim, bits, 1)
  sd["quantize.embed.weight"] = rng.normal(0, 0.5, (bits, emb_dim)).astype(np.float32)
  return sd


def llamagen_freqs_cis(grid: int, head_dim: int, base: float = 10000.0):
  """LlamaGen's precompute_freqs_cis_2d (cls_token_num=1), in NumPy."""
  half = head_dim // 2
  freqs = 1.0 / base ** (np.arange(0, half, 2)[:half // 2] / half)
  f = np.outer(np.arange(grid), freqs)  # [G, half/2]
  q = f.shape[1]
  grid_f = np.concatenate([np.broadcast_to(f[:, None, :], (grid, grid, q)),
                           np.broadcast_to(f[None, :, :], (grid, grid, q))], -1)
  cache = np.stack([np.cos(grid_f), np.sin(grid_f)], -1).reshape(grid * grid, half, 2)
  return np.concatenate([np.zeros((1, half, 2)), cache])


def numpy_ar_forward(sd, idx, labels, num_heads, grid):
  """ELM AR / LlamaGen GPT forward in float64 from the published architecture.

  idx [B, T, n] -> logits [B, T+1, n, V]."""
  w = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  n = idx.shape[-1]

  def rms(x, scale):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-5) * scale

  def rope(x, f):  # x [B,S,H,D], f [S,D/2,2]: adjacent pairs
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = f[None, :, None, :, 0], f[None, :, None, :, 1]
    return np.stack([a * c - b * s, b * c + a * s], -1).reshape(x.shape)

  if n == 1:
    table = w.get("tok_embeddings.weight", w.get("tok_embedder.weight"))
    tok = table[idx[..., 0]]
  else:
    tok = np.concatenate([w[f"tok_embedder.{i}.weight"][idx[..., i]]
                          for i in range(n)], -1) @ w["proj.weight"].T
  h = np.concatenate([w["cls_embedding.embedding_table.weight"][labels][:, None],
                      tok], 1)
  b, s, d = h.shape
  hd = d // num_heads
  f = llamagen_freqs_cis(grid, hd)[:s]
  causal = np.tril(np.ones((s, s), bool))
  layer = 0
  while f"layers.{layer}.attention.wqkv.weight" in w:
    p = f"layers.{layer}."
    x = rms(h, w[p + "attention_norm.weight"])
    q, k, v = np.split(x @ w[p + "attention.wqkv.weight"].T, 3, -1)
    q, k, v = (t.reshape(b, s, num_heads, hd) for t in (q, k, v))
    q, k = rope(q, f), rope(k, f)
    att = np.einsum("bshd,bthd->bhst", q, k) / math.sqrt(hd)
    att = np.exp(np.where(causal, att, -np.inf) - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = np.einsum("bhst,bthd->bshd", att, v).reshape(b, s, d)
    h = h + o @ w[p + "attention.wo.weight"].T
    x = rms(h, w[p + "ffn_norm.weight"])
    g = x @ w[p + "feed_forward.w1.weight"].T
    h = h + (g / (1 + np.exp(-g)) * (x @ w[p + "feed_forward.w3.weight"].T)
             ) @ w[p + "feed_forward.w2.weight"].T
    layer += 1
  h = rms(h, w["norm.weight"])
  heads = [w["output.weight"]] if n == 1 else [w[f"output.{i}.weight"]
                                               for i in range(n)]
  return np.stack([h @ o.T for o in heads], 2)


def random_ar_state_dict(seed, *, layers, dim, mlp, classes, n, bits,
                         llamagen=False) -> dict:
  rng = np.random.default_rng(seed)

  def r(*shape, std=0.05):
    return rng.normal(0, std, shape).astype(np.float32)

  v = 2 ** bits
  sd = {"cls_embedding.embedding_table.weight": r(classes + 1, dim, std=0.5)}
  if llamagen:
    sd["tok_embeddings.weight"] = r(v, dim, std=0.5)
  elif n == 1:
    sd["tok_embedder.weight"] = r(v, dim, std=0.5)
  else:
    sd.update({f"tok_embedder.{i}.weight": r(v, dim, std=0.5) for i in range(n)})
    sd["proj.weight"] = r(dim, n * dim)
  for i in range(layers):
    p = f"layers.{i}."
    sd.update({p + "attention.wqkv.weight": r(3 * dim, dim),
               p + "attention.wo.weight": r(dim, dim),
               p + "feed_forward.w1.weight": r(mlp, dim),
               p + "feed_forward.w3.weight": r(mlp, dim),
               p + "feed_forward.w2.weight": r(dim, mlp),
               p + "attention_norm.weight": 1 + r(dim, std=0.1),
               p + "ffn_norm.weight": 1 + r(dim, std=0.1)})
  sd["norm.weight"] = 1 + r(dim, std=0.1)
  if n == 1:
    sd["output.weight"] = r(v, dim, std=0.2)
  else:
    sd.update({f"output.{i}.weight": r(v, dim, std=0.2) for i in range(n)})
  return sd
