"""An explicit KV cache for the AR transformer and the cached forward pass.

The cache is a tuple with one (k, v) pair per layer, each [B, T, H, D] in
the model's compute dtype, T = the full sequence length (class token + all
but the last cell). A forward over S new positions writes their keys and
values at `index` with dynamic_update_slice; inside lax.scan XLA updates the
carried buffers in place. The layers run one after another in the program
(stacked scan params are sliced once, outside the decoding loop).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from elm_jax.models.rope import rope_2d_table
from elm_jax.models.transformer import Block, Transformer

Cache = tuple  # ((k [B,T,H,D], v [B,T,H,D]), ...) one pair per layer
CACHE_AXES = ("batch", "seq", "heads", None)


def cache_length(model: Transformer) -> int:
  """Positions an AR model ever attends: the class token + grid^2 - 1 cells."""
  return model.grid_size ** 2


def init_cache(model: Transformer, batch: int) -> Cache:
  """Zeros, sharded like the activations when logical axis rules are active."""
  shape = (batch, cache_length(model), model.num_heads, model.head_dim)
  zeros = lambda: nn.with_logical_constraint(  # noqa: E731
      jnp.zeros(shape, model.dtype), CACHE_AXES)
  return tuple((zeros(), zeros()) for _ in range(model.num_layers))


def cached_forward(model: Transformer, params: Any, layer_params: list,
                   x, cache: Cache, index):
  """x [B,S,E] float32 inputs at positions index..index+S-1 -> (logits
  [B,S,N,V] float32, updated cache). layer_params: model.layer_params(params).
  """
  table = jnp.asarray(rope_2d_table(model.grid_size, model.head_dim,
                                    model.rope_base))
  rope = jax.lax.dynamic_slice_in_dim(table, index, x.shape[1])  # [S,D/2,2]
  block = Block(**model.block_kwargs())
  new_cache = []
  for p, (k, v) in zip(layer_params, cache):
    x, k, v = block.apply({"params": p}, x, rope, k, v, index,
                          method=Block.decode)
    new_cache.append((nn.with_logical_constraint(k, CACHE_AXES),
                      nn.with_logical_constraint(v, CACHE_AXES)))
  logits = model.apply({"params": params}, x, method=Transformer.head)
  return logits, tuple(new_cache)
