"""The binary autoencoder (BAE) and its VQ / LFQ siblings.

A taming-VQGAN-style encoder maps images [B, H, W, 3] in [0, 1] to a latent
[B, H/f, W/f, emb_dim] with f = 2 ** (len(ch_mult) - 1); a quantizer turns it
into codes (K bits per position for the BAE and LFQ, a codebook index for VQ)
and back into the decoder's input; the decoder maps that back to images. The
decoder output is not squashed: it lives in [0, 1] up to reconstruction error.

`style` picks the layout of the encoder and decoder:
- "elm": ELM's BAE. No activation after the encoder's norm_out; the
  "norm-first" decoder (GroupNorm before conv_in, num_res_blocks ResBlocks
  per level, no activation after norm_out).
- "llamagen": LlamaGen's VQ tokenizer (tokenizer_image/vq_model.py). SiLU
  after norm_out in both; the decoder has no input norm and num_res_blocks + 1
  ResBlocks per level. Attention follows `attn_resolutions` in both styles;
  LlamaGen's layout is attn_resolutions=(latent size,).
`pixel_range="symmetric"` runs the network on [-1, 1] pixels (LlamaGen's
convention) while the Autoencoder still takes and returns [0, 1].
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from elm_jax.models import quantizers, resolve_dtypes
from elm_jax.models.conv_blocks import (AttnBlock, Downsample, ResBlock,
                                        Upsample, conv, group_norm)

Dtype = Any

STYLES = ("elm", "llamagen")
PIXEL_RANGES = ("unit", "symmetric")


def _check_choice(field: str, value: str, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f"{field}={value!r}: expected one of "
                     f"{', '.join(map(repr, allowed))}.")


class Encoder(nn.Module):
  """conv_in, levels of ResBlocks (+attention) and Downsample, middle, out."""
  nf: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  emb_dim: int = 256
  style: str = "elm"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, 3] -> [B, H/f, W/f, emb_dim]
    _check_choice("Encoder.style", self.style, STYLES)
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
    h = group_norm("norm_out", self.param_dtype)(h)
    if self.style == "llamagen":
      h = nn.silu(h)
    return conv(self.emb_dim, 3, "conv_out", **kw)(h.astype(self.dtype))


class Decoder(nn.Module):
  """conv_in, middle, levels reversed (ResBlocks, attention, Upsample), out.

  "elm": GN, conv_in, ..., GN, conv_out (the norm-first generator), with
  num_res_blocks ResBlocks per level. "llamagen": conv_in, ..., GN, SiLU,
  conv_out, with num_res_blocks + 1 ResBlocks per level.

  The input of the final conv is sown as intermediates/conv_out_input: the
  adaptive GAN weight needs gradients with respect to that layer's kernel.
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  out_channels: int = 3
  style: str = "elm"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z):  # [B, h, w, emb_dim] -> [B, H, W, out_channels]
    _check_choice("Decoder.style", self.style, STYLES)
    llamagen = self.style == "llamagen"
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = self.resolution // 2 ** (len(self.ch_mult) - 1)
    if llamagen:
      h = z.astype(self.dtype)
    else:
      h = group_norm("norm_in", self.param_dtype)(z).astype(self.dtype)
    h = conv(self.nf * self.ch_mult[-1], 3, "conv_in", **kw)(h)
    h = ResBlock(h.shape[-1], name="mid_res0", **kw)(h)
    h = AttnBlock(name="mid_attn", **kw)(h)
    h = ResBlock(h.shape[-1], name="mid_res1", **kw)(h)
    blocks = self.num_res_blocks + 1 if llamagen else self.num_res_blocks
    for level in reversed(range(len(self.ch_mult))):
      for j in range(blocks):
        h = ResBlock(self.nf * self.ch_mult[level], name=f"up{level}_res{j}",
                     **kw)(h)
        if res in self.attn_resolutions:
          h = AttnBlock(name=f"up{level}_attn{j}", **kw)(h)
      if level != 0:
        h = Upsample(name=f"up{level}_upsample", **kw)(h)
        res *= 2
    h = group_norm("norm_out", self.param_dtype)(h)
    if llamagen:
      h = nn.silu(h)
    h = h.astype(self.dtype)
    self.sow("intermediates", "conv_out_input", h)
    out = conv(self.out_channels, 3, "conv_out", **kw)(h)
    return out.astype(jnp.float32)


class Autoencoder(nn.Module):
  """Encoder, quantizer, decoder.

  quantizer: "binary" (ELM's BAE), "vq" (LlamaGen-style codebook) or "lfq"
  (MAGVIT-v2 lookup-free). `bits` is K for binary and LFQ; `codebook_size`
  and `code_dim` configure VQ. `style` ("elm" | "llamagen") is the encoder
  and decoder layout; `pixel_range` ("unit" | "symmetric") the pixel range
  the network works in: images in and out of the Autoencoder are [0, 1]
  either way.
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
  style: str = "elm"
  pixel_range: str = "unit"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    _check_choice("model.style", self.style, STYLES)
    _check_choice("model.pixel_range", self.pixel_range, PIXEL_RANGES)
    arch = dict(nf=self.nf, ch_mult=tuple(self.ch_mult),
                num_res_blocks=self.num_res_blocks,
                attn_resolutions=tuple(self.attn_resolutions),
                resolution=self.resolution, style=self.style,
                dtype=self.dtype, param_dtype=self.param_dtype)
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
    return self._from_net(self.decoder(q.z_q)), q

  def encode(self, images, *, train: bool = False) -> "quantizers.QuantizerOutput":
    return self.quantize(self.encoder(self._to_net(images)), train=train)

  def decode(self, codes):
    """codes: bits [B, h, w, K] (binary, LFQ) or ids [B, h, w] (VQ)."""
    return self._from_net(self.decoder(self.quantize.dequantize(codes)))

  def _to_net(self, images):  # [B, H, W, 3] in [0, 1] -> the network's range
    return 2.0 * images - 1.0 if self.pixel_range == "symmetric" else images

  def _from_net(self, out):  # [B, H, W, 3] the network's range -> [0, 1]
    return (out + 1.0) / 2.0 if self.pixel_range == "symmetric" else out

  @property
  def latent_size(self) -> int:
    return self.resolution // 2 ** (len(self.ch_mult) - 1)


def build_autoencoder(model_config: Mapping[str, Any]) -> Autoencoder:
  """An Autoencoder from the `model` block of a config (dtype given by name)."""
  kw = resolve_dtypes(dict(model_config))
  kw["ch_mult"] = tuple(kw["ch_mult"])
  kw["attn_resolutions"] = tuple(kw["attn_resolutions"])
  return Autoencoder(**kw)
