"""Layer building blocks of the ELM transformer (models/transformer.py) and
its attention (models/attention.py): logically partitioned initialisers,
dense and embedding layers, activation and KV-cache sharding axes, RMSNorm
and the SwiGLU feed-forward.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from elm_jax import platform

Dtype = Any
ACTIVATION_AXES = ("batch", "seq", "embed")
CACHE_AXES = ("batch", "seq", "heads", None)  # k, v [B, T, H, D]


def init(axes, std: float | None = 0.02):
  base = (nn.initializers.normal(std) if std is not None
          else nn.initializers.zeros_init())
  return nn.with_logical_partitioning(base, axes)


class TokenDense(nn.Dense):
  """nn.Dense over x [..., E] as one 2D matmul, one row per token: the same
  parameters and numbers, used where `platform.token_rows_dense` says so."""

  @nn.compact
  def __call__(self, x):
    y = super().__call__(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


def dense(features: int, axes, name: str, dtype: Dtype, param_dtype: Dtype,
          std: float | None = 0.02, use_bias: bool = False) -> nn.Dense:
  dense = TokenDense if platform.token_rows_dense() else nn.Dense
  return dense(features, use_bias=use_bias, kernel_init=init(axes, std),
               bias_init=init((axes[-1],), None), dtype=dtype,
               param_dtype=param_dtype, name=name)


def embed(rows: int, dim: int, name: str, dtype: Dtype,
          param_dtype: Dtype) -> nn.Embed:
  return nn.Embed(rows, dim, embedding_init=init(("vocab", "embed")),
                  dtype=dtype, param_dtype=param_dtype, name=name)


def constrain(x):  # no-op unless logical axis rules are active
  return nn.with_logical_constraint(x, ACTIVATION_AXES)


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, statistics in float32."""
  eps: float = 1e-5
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(
        nn.initializers.ones_init(), ("embed",)), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return y.astype(x.dtype) * scale


class FeedForward(nn.Module):
  """SwiGLU: w2(silu(w1 x) * w3 x), no biases."""
  dim: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B,S,E] -> [B,S,E]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gate = dense(self.mlp_dim, ("embed", "mlp"), "w1", **kw)(x)
    up = dense(self.mlp_dim, ("embed", "mlp"), "w3", **kw)(x)
    h = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "seq", "mlp"))
    return dense(self.dim, ("mlp", "embed"), "w2", **kw)(h)
