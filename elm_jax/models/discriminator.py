"""PatchGAN discriminator and the GAN loss terms of the BAE trainer.

`PatchDiscriminator` follows the semantics of taming-transformers' NLayerDiscriminator
(pix2pix PatchGAN): 4x4 convolutions, BatchNorm, LeakyReLU(0.2). For a 256x256 input and
n_layers=3 it gives 30x30 patch logits (256 -> 128 -> 64 -> 32 -> 31 -> 30).

Images come in as float [B, H, W, 3] in [0, 1] (the project convention) and are mapped to
[-1, 1] inside the module.

Layer names: conv0 (with bias), conv{n} + bn{n} for n = 1..n_layers (no bias), conv_out
(with bias, 1 channel).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

_conv_init = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class PatchDiscriminator(nn.Module):
  """NLayerDiscriminator: `__call__(x [B, H, W, 3] in [0, 1], *, train) -> logits [B, h, w, 1]`.

  BatchNorm statistics live in the 'batch_stats' collection: pass mutable=['batch_stats'] when
  train=True; with train=False the running averages are used and nothing is updated.
  """

  n_layers: int = 3
  ndf: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _conv(self, features: int, stride: int, use_bias: bool, name: str) -> nn.Conv:
    return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
                   use_bias=use_bias, kernel_init=_conv_init,
                   bias_init=nn.initializers.zeros, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)

  def _norm(self, train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=_bn_scale_init, bias_init=nn.initializers.zeros,
                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"PatchDiscriminator: expected images [B, H, W, 3] in [0, 1], got "
                       f"shape {x.shape}.")
    if self.n_layers < 1:
      raise ValueError(f"PatchDiscriminator: n_layers must be >= 1, got {self.n_layers}.")
    x = (2.0 * x.astype(jnp.float32) - 1.0).astype(self.dtype)  # [B, H, W, 3] in [-1, 1]
    x = nn.leaky_relu(self._conv(self.ndf, 2, True, 'conv0')(x), 0.2)  # [B, H/2, W/2, ndf]
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1  # the last hidden conv keeps the resolution - 1
      features = self.ndf * min(2 ** n, 8)
      x = self._conv(features, stride, False, f'conv{n}')(x)
      x = nn.leaky_relu(self._norm(train, f'bn{n}')(x), 0.2)
    x = self._conv(1, 1, True, 'conv_out')(x)  # [B, h, w, 1]
    return x.astype(jnp.float32)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """Discriminator hinge loss: 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))."""
  loss_real = jnp.mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32)))
  loss_fake = jnp.mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32)))
  return 0.5 * (loss_real + loss_fake)


def generator_loss(logits_fake: jax.Array) -> jax.Array:
  """Generator adversarial loss: -mean(D(x_hat))."""
  return -jnp.mean(logits_fake.astype(jnp.float32))


def _global_norm(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def adaptive_weight(rec_grad: Any, gan_grad: Any, max_weight: float = 1.0) -> jax.Array:
  """VQGAN adaptive GAN weight: clip(||rec_grad|| / (||gan_grad|| + 1e-4), 0, max_weight).

  rec_grad, gan_grad: gradients (arrays or pytrees; l2 norm over all leaves) of the
  reconstruction loss and of the generator loss w.r.t. the decoder's last layer. The result
  is a stop-gradient float32 scalar.
  """
  weight = _global_norm(rec_grad) / (_global_norm(gan_grad) + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(weight, 0.0, max_weight))
