"""Convolutional building blocks of the taming-VQGAN autoencoder family.

Layout NHWC. Every conv kernel carries the logical axes
(None, None, "conv_in", "conv_out") so that the mesh rules can shard it; biases
and norm scales stay replicated. GroupNorm (32 groups, eps 1e-6) and the
attention softmax run in float32 whatever the compute dtype.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

CONV_AXES = (None, None, "conv_in", "conv_out")


def conv(features: int, kernel: int, name: str, dtype: Dtype, param_dtype: Dtype,
         stride: int = 1, padding: Any = "SAME") -> nn.Conv:
  """A 2-D conv whose kernel is annotated with logical axes."""
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride), padding=padding,
      dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), CONV_AXES))


def group_norm(name: str, param_dtype: Dtype) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=32, epsilon=1e-6, dtype=jnp.float32,
                      param_dtype=param_dtype, use_fast_variance=False,
                      name=name)


class ResBlock(nn.Module):
  """GN, SiLU, conv3x3, GN, SiLU, conv3x3 plus a 1x1 shortcut if C changes."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, Cin] -> [B, H, W, features]
    h = nn.silu(group_norm("norm1", self.param_dtype)(x)).astype(self.dtype)
    h = conv(self.features, 3, "conv1", self.dtype, self.param_dtype)(h)
    h = nn.silu(group_norm("norm2", self.param_dtype)(h)).astype(self.dtype)
    h = conv(self.features, 3, "conv2", self.dtype, self.param_dtype)(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, "shortcut", self.dtype, self.param_dtype)(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over the H*W positions, residual."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    b, height, width, c = x.shape
    h = group_norm("norm", self.param_dtype)(x).astype(self.dtype)
    q, k, v = (conv(c, 1, n, self.dtype, self.param_dtype)(h).reshape(b, -1, c)
               for n in ("q", "k", "v"))  # [B, N, C] each
    logits = jnp.einsum("bic,bjc->bij", q, k).astype(jnp.float32) * c**-0.5
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # [B, N, N]
    out = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, height, width, c)
    return x + conv(c, 1, "proj_out", self.dtype, self.param_dtype)(out)


class Downsample(nn.Module):
  """Zero-pad right and bottom by one, then conv3x3 with stride 2, no padding.

  The asymmetric padding is what the released weights were trained with.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C] -> [B, H/2, W/2, C]
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return conv(x.shape[-1], 3, "conv", self.dtype, self.param_dtype,
                stride=2, padding="VALID")(x)


class Upsample(nn.Module):
  """Nearest-neighbour x2, then conv3x3."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C] -> [B, 2H, 2W, C]
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(x.shape[-1], 3, "conv", self.dtype, self.param_dtype)(x)
