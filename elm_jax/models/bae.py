"""The binary autoencoder (BAE) and its VQ / LFQ siblings.

A taming-VQGAN-style encoder maps images [B, H, W, 3] in [0, 1] to a latent
[B, H/f, W/f, emb_dim] with f = 2 ** (len(ch_mult) - 1); a quantizer turns it
into codes (K bits per position for the BAE and LFQ, a codebook index for VQ)
and back into the decoder's input; the "norm-first" decoder maps that back to
images. The decoder output is not squashed: it lives in [0, 1] up to
reconstruction error.
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from elm_jax.models import quantizers, resolve_dtypes
from elm_jax.models.conv_blocks import (AttnBlock, Downsample, ResBlock,
                                        Upsample, conv, group_norm)

Dtype = Any


class Encoder(nn.Module):
  """conv_in, levels of ResBlocks (+attention) and Downsample, middle, out."""
  nf: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  emb_dim: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, 3] -> [B, H/f, W/f, emb_dim]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = conv(self.nf, 3, "conv_in", **kw)(x.astype(self.dtype))
    res = self.resolution
    for level, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h = ResBlock(self.nf * mult, name=f"down{level}_res{j}", **kw)(h)
        if res in self.attn_resolutions:
          h = AttnBlock(name=f"down{level}_attn{j}", **kw)(h)
      if level != len(self.ch_mult) - 1:
        h = Downsample(name=f"down{level}_downsample", **kw)(h)
        res //= 2
    h = ResBlock(h.shape[-1], name="mid_res0", **kw)(h)
    h = AttnBlock(name="mid_attn", **kw)(h)
    h = ResBlock(h.shape[-1], name="mid_res1", **kw)(h)
    h = group_norm("norm_out", self.param_dtype)(h).astype(self.dtype)
    return conv(self.emb_dim, 3, "conv_out", **kw)(h)


class Decoder(nn.Module):
  """The norm-first generator: GN, conv_in, middle, levels reversed, GN, conv.

  The input of the final conv is sown as intermediates/conv_out_input: the
  adaptive GAN weight needs gradients with respect to that layer's kernel.
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  out_channels: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z):  # [B, h, w, emb_dim] -> [B, H, W, out_channels]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = self.resolution // 2 ** (len(self.ch_mult) - 1)
    h = group_norm("norm_in", self.param_dtype)(z).astype(self.dtype)
    h = conv(self.nf * self.ch_mult[-1], 3, "conv_in", **kw)(h)
    h = ResBlock(h.shape[-1], name="mid_res0", **kw)(h)
    h = AttnBlock(name="mid_attn", **kw)(h)
    h = ResBlock(h.shape[-1], name="mid_res1", **kw)(h)
    for level in reversed(range(len(self.ch_mult))):
      for j in range(self.num_res_blocks):
        h = ResBlock(self.nf * self.ch_mult[level], name=f"up{level}_res{j}",
                     **kw)(h)
        if res in self.attn_resolutions:
          h = AttnBlock(name=f"up{level}_attn{j}", **kw)(h)
      if level != 0:
        h = Upsample(name=f"up{level}_upsample", **kw)(h)
        res *= 2
    h = group_norm("norm_out", self.param_dtype)(h).astype(self.dtype)
    self.sow("intermediates", "conv_out_input", h)
    out = conv(self.out_channels, 3, "conv_out", **kw)(h)
    return out.astype(jnp.float32)


class Autoencoder(nn.Module):
  """Encoder, quantizer, decoder.

  quantizer: "binary" (ELM's BAE), "vq" (LlamaGen-style codebook) or "lfq"
  (MAGVIT-v2 lookup-free). `bits` is K for binary and LFQ; `codebook_size`
  and `code_dim` configure VQ.
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  emb_dim: int = 256
  quantizer: str = "binary"
  bits: int = 16
  deterministic: bool = False
  codebook_size: int = 16384
  code_dim: int = 8
  commitment_weight: float = 0.25
  entropy_weight: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    arch = dict(nf=self.nf, ch_mult=tuple(self.ch_mult),
                num_res_blocks=self.num_res_blocks,
                attn_resolutions=tuple(self.attn_resolutions),
                resolution=self.resolution, dtype=self.dtype,
                param_dtype=self.param_dtype)
    self.encoder = Encoder(emb_dim=self.emb_dim, **arch)
    self.decoder = Decoder(**arch)
    kw = dict(emb_dim=self.emb_dim, dtype=self.dtype,
              param_dtype=self.param_dtype)
    if self.quantizer == "binary":
      self.quantize = quantizers.BinaryQuantizer(
          bits=self.bits, deterministic=self.deterministic, **kw)
    elif self.quantizer == "vq":
      self.quantize = quantizers.VectorQuantizer(
          codebook_size=self.codebook_size, code_dim=self.code_dim,
          beta=self.commitment_weight, entropy_weight=self.entropy_weight, **kw)
    elif self.quantizer == "lfq":
      self.quantize = quantizers.LookupFreeQuantizer(
          bits=self.bits, commitment_weight=self.commitment_weight,
          entropy_weight=self.entropy_weight, **kw)
    else:
      raise ValueError(f"model.quantizer={self.quantizer!r}: expected "
                       "'binary', 'vq' or 'lfq'.")

  def __call__(self, images, *, train: bool = False):
    """images [B, H, W, 3] in [0, 1] -> (reconstruction, QuantizerOutput)."""
    q = self.encode(images, train=train)
    return self.decoder(q.z_q), q

  def encode(self, images, *, train: bool = False) -> "quantizers.QuantizerOutput":
    return self.quantize(self.encoder(images), train=train)

  def decode(self, codes):
    """codes: bits [B, h, w, K] (binary, LFQ) or ids [B, h, w] (VQ)."""
    return self.decoder(self.quantize.dequantize(codes))

  @property
  def latent_size(self) -> int:
    return self.resolution // 2 ** (len(self.ch_mult) - 1)


def build_autoencoder(model_config: Mapping[str, Any]) -> Autoencoder:
  """An Autoencoder from the `model` block of a config (dtype given by name)."""
  kw = resolve_dtypes(dict(model_config))
  kw["ch_mult"] = tuple(kw["ch_mult"])
  kw["attn_resolutions"] = tuple(kw["attn_resolutions"])
  return Autoencoder(**kw)
