"""Map a LlamaGen VQ tokenizer state dict (tokenizer_image/vq_model.py) onto
`models.bae.Autoencoder(style="llamagen", quantizer="vq")` params.

LlamaGen names its blocks by level: `encoder.conv_blocks.{l}.res.{j}`,
`.attn.{j}` and `.downsample` for level l (resolution / 2**l), then
`encoder.mid.{0,1,2}` (ResBlock, AttnBlock, ResBlock). The decoder lists its
levels lowest resolution first, so `decoder.conv_blocks.{i}` is level
L - 1 - i with `.upsample` on every level but 0. The mapping:

  encoder.conv_blocks.{l}.res.{j}       -> encoder/down{l}_res{j}
  encoder.conv_blocks.{l}.attn.{j}      -> encoder/down{l}_attn{j}
  encoder.conv_blocks.{l}.downsample    -> encoder/down{l}_downsample
  decoder.conv_blocks.{L-1-l}.res.{j}   -> decoder/up{l}_res{j}  (likewise attn)
  decoder.conv_blocks.{L-1-l}.upsample  -> decoder/up{l}_upsample
  {encoder,decoder}.mid.{0,1,2}         -> mid_res0, mid_attn, mid_res1
  *.nin_shortcut (1x1 conv)             -> *.shortcut
  quant_conv, post_quant_conv (1x1)     -> quantize/quant_proj,
                                           quantize/post_quant_proj (Dense)
  quantize.embedding.weight             -> quantize/embedding

Conv kernels go OIHW -> HWIO, 1x1 convs that are Dense layers here
[out, in, 1, 1] -> [in, out], GroupNorm weight -> scale. The training-only
usage buffer `quantize.codebook_used` is dropped; any other key that is
missing or left unused raises with its name. LlamaGen's network works on
[-1, 1] pixels: build the Autoencoder with pixel_range="symmetric" to keep
the [0, 1] interface.
"""

import re
from typing import Mapping, Sequence

import numpy as np

from elm_jax.weights import torch_conv
from elm_jax.weights.torch_conv import attn, conv, dense_from_1x1, norm

# The only PyTorch keys that are allowed to stay unused.
_DEAD_KEYS = ("quantize.codebook_used",)


def _shape(sd: Mapping[str, np.ndarray], key: str, what: str) -> tuple:
  if key not in sd:
    raise KeyError(f"PyTorch state dict lacks {key!r} (needed to read {what}); "
                   "not a LlamaGen VQ tokenizer?")
  return tuple(np.shape(sd[key]))


def _count(sd: Mapping[str, np.ndarray], pattern: str) -> int:
  """How many distinct values the group of `pattern` (a regex) takes in sd."""
  return len({m.group(1) for k in sd if (m := re.match(pattern, k))})


def infer_architecture(sd: Mapping[str, np.ndarray]) -> dict:
  """nf, ch_mult, num_res_blocks, emb_dim, codebook_size, code_dim of the file.

  Reads the encoder and checks that the decoder, quant_conv and
  post_quant_conv agree; an inconsistency raises ValueError naming the key
  and both shapes. resolution and attn_resolutions are not in the file:
  LlamaGen attends at the lowest resolution, attn_resolutions=(latent size,).
  """
  conv_in = _shape(sd, "encoder.conv_in.weight", "nf")  # [nf, 3, 3, 3]
  nf = conv_in[0]
  levels = _count(sd, r"encoder\.conv_blocks\.(\d+)\.")
  if levels == 0:
    raise KeyError("PyTorch state dict has no encoder.conv_blocks.*; not a "
                   "LlamaGen VQ tokenizer?")
  num_res_blocks = _count(sd, r"encoder\.conv_blocks\.0\.res\.(\d+)\.")

  def mult_of(key: str) -> int:
    out = _shape(sd, key, "ch_mult")[0]  # [nf * mult, cin, 3, 3]
    if out % nf:
      raise ValueError(f"{key} {list(np.shape(sd[key]))}: {out} output channels "
                       f"are not a multiple of nf={nf} "
                       f"(encoder.conv_in.weight {list(conv_in)}).")
    return out // nf

  dec_levels = _count(sd, r"decoder\.conv_blocks\.(\d+)\.")
  if dec_levels != levels:
    raise ValueError(f"decoder.conv_blocks.*: {dec_levels} levels, "
                     f"encoder.conv_blocks.* {levels}; the decoder must mirror "
                     "the encoder.")
  ch_mult = tuple(mult_of(f"encoder.conv_blocks.{level}.res.0.conv1.weight")
                  for level in range(levels))
  for level in range(levels):
    enc = f"encoder.conv_blocks.{level}"
    dec = f"decoder.conv_blocks.{levels - 1 - level}"
    n = _count(sd, rf"{re.escape(enc)}\.res\.(\d+)\.")
    if n != num_res_blocks:
      raise ValueError(
          f"{enc}.res.*: {n} ResBlocks, but encoder.conv_blocks.0.res.* has "
          f"{num_res_blocks}; LlamaGen uses the same number at every level.")
    n = _count(sd, rf"{re.escape(dec)}\.res\.(\d+)\.")
    if n != num_res_blocks + 1:
      raise ValueError(
          f"{dec}.res.*: {n} ResBlocks, expected num_res_blocks + 1 = "
          f"{num_res_blocks + 1} (encoder.conv_blocks.0.res.* has "
          f"{num_res_blocks}).")
    key, enc_key = f"{dec}.res.0.conv1.weight", f"{enc}.res.0.conv1.weight"
    if mult_of(key) != ch_mult[level]:
      raise ValueError(f"{key} {list(np.shape(sd[key]))} disagrees with "
                       f"{enc_key} {list(np.shape(sd[enc_key]))}: the decoder's "
                       "ch_mult must equal the encoder's.")

  conv_out = _shape(sd, "encoder.conv_out.weight", "emb_dim")  # [emb, C, 3, 3]
  emb_dim = conv_out[0]
  embedding = _shape(sd, "quantize.embedding.weight",
                     "codebook_size and code_dim")  # [codebook_size, code_dim]
  codebook_size, code_dim = embedding
  expected = {
      "quant_conv.weight": (code_dim, emb_dim, 1, 1),
      "post_quant_conv.weight": (emb_dim, code_dim, 1, 1),
      "decoder.conv_in.weight": (nf * ch_mult[-1], emb_dim, 3, 3),
  }
  for key, want in expected.items():
    got = _shape(sd, key, "the quantizer and decoder widths")
    if got != want:
      raise ValueError(
          f"{key} {list(got)}: expected {list(want)} from "
          f"encoder.conv_out.weight {list(conv_out)} and "
          f"quantize.embedding.weight {list(embedding)}.")
  return dict(nf=nf, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
              emb_dim=emb_dim, codebook_size=codebook_size, code_dim=code_dim)


def _res(sd, key, cin, cout):
  p = {"norm1": norm(sd, key + ".norm1"), "conv1": conv(sd, key + ".conv1"),
       "norm2": norm(sd, key + ".norm2"), "conv2": conv(sd, key + ".conv2")}
  if cin != cout:
    p["shortcut"] = conv(sd, key + ".nin_shortcut")
  return p


def _mid(sd, prefix, ch):
  return {"mid_res0": _res(sd, prefix + ".mid.0", ch, ch),
          "mid_attn": attn(sd, prefix + ".mid.1"),
          "mid_res1": _res(sd, prefix + ".mid.2", ch, ch)}


def vq_params_from_torch(state_dict: Mapping[str, np.ndarray], *, nf: int,
                         ch_mult: Sequence[int], num_res_blocks: int,
                         attn_resolutions: Sequence[int], resolution: int,
                         **unused) -> dict:
  """The `params` tree of Autoencoder(style="llamagen", quantizer="vq") with
  these args (the other Autoencoder args may be passed and are ignored)."""
  del unused
  sd = torch_conv.Tracker(
      state_dict, "nf, ch_mult, num_res_blocks, attn_resolutions, resolution")
  levels = len(ch_mult)

  enc = {"conv_in": conv(sd, "encoder.conv_in")}
  res, ch = resolution, nf
  for level, mult in enumerate(ch_mult):
    block = f"encoder.conv_blocks.{level}"
    for j in range(num_res_blocks):
      enc[f"down{level}_res{j}"] = _res(sd, f"{block}.res.{j}", ch, nf * mult)
      ch = nf * mult
      if res in attn_resolutions:
        enc[f"down{level}_attn{j}"] = attn(sd, f"{block}.attn.{j}")
    if level != levels - 1:
      enc[f"down{level}_downsample"] = {
          "conv": conv(sd, f"{block}.downsample.conv")}
      res //= 2
  enc.update(_mid(sd, "encoder", ch))
  enc["norm_out"] = norm(sd, "encoder.norm_out")
  enc["conv_out"] = conv(sd, "encoder.conv_out")

  dec = {"conv_in": conv(sd, "decoder.conv_in")}
  ch = nf * ch_mult[-1]
  dec.update(_mid(sd, "decoder", ch))
  for level in reversed(range(levels)):
    block = f"decoder.conv_blocks.{levels - 1 - level}"
    for j in range(num_res_blocks + 1):
      dec[f"up{level}_res{j}"] = _res(sd, f"{block}.res.{j}", ch,
                                      nf * ch_mult[level])
      ch = nf * ch_mult[level]
      if res in attn_resolutions:
        dec[f"up{level}_attn{j}"] = attn(sd, f"{block}.attn.{j}")
    if level != 0:
      dec[f"up{level}_upsample"] = {"conv": conv(sd, f"{block}.upsample.conv")}
      res *= 2
  dec["norm_out"] = norm(sd, "decoder.norm_out")
  dec["conv_out"] = conv(sd, "decoder.conv_out")

  quantize = {"quant_proj": dense_from_1x1(sd, "quant_conv"),
              "post_quant_proj": dense_from_1x1(sd, "post_quant_conv"),
              "embedding": sd["quantize.embedding.weight"]}  # [codebook, code_dim]

  unexpected = sorted(k for k in state_dict
                      if k not in sd.used and k not in _DEAD_KEYS)
  if unexpected:
    raise ValueError(f"PyTorch state dict has keys the architecture does not "
                     f"use: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
                     " (check nf, ch_mult, num_res_blocks, attn_resolutions, "
                     "resolution).")
  return {"encoder": enc, "decoder": dec, "quantize": quantize}


def torch_sources(state_dict: Mapping[str, np.ndarray], **arch) -> dict:
  """{flax leaf path: the PyTorch key it is read from} (torch_conv.torch_sources)."""
  return torch_conv.torch_sources(vq_params_from_torch, state_dict, **arch)
