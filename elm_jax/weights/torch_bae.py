"""Map an ELM PyTorch BAE state dict (bae/binaryae.py) onto elm_jax params.

ELM numbers its blocks in an nn.ModuleList (`encoder.blocks.{i}`,
`generator.blocks.{i}`); the order follows from the architecture, so the
mapping is derived from the same arguments that build `models.bae.Autoencoder`
and works for every size. Keys the PyTorch model owns but never uses
(`generator.logsigma.*`, identity-path `conv_out` of ResBlocks) are dropped;
anything else missing, unexpected or mis-shaped raises with its name.
"""

from typing import Mapping, Sequence

import numpy as np

from elm_jax.weights import torch_conv
from elm_jax.weights.torch_conv import attn, conv, norm

# The only PyTorch keys that are allowed to stay unused.
_DEAD_PREFIXES = ("generator.logsigma.",)


def _res(sd, key, cin, cout, used):
  p = {"norm1": norm(sd, key + ".norm1"), "conv1": conv(sd, key + ".conv1"),
       "norm2": norm(sd, key + ".norm2"), "conv2": conv(sd, key + ".conv2")}
  if cin != cout:
    p["shortcut"] = conv(sd, key + ".conv_out")
  else:  # ELM creates conv_out in every ResBlock but applies it only here.
    used.update({key + ".conv_out.weight", key + ".conv_out.bias"})
  return p


def bae_params_from_torch(state_dict: Mapping[str, np.ndarray], *, nf: int,
                          ch_mult: Sequence[int], num_res_blocks: int,
                          attn_resolutions: Sequence[int], resolution: int,
                          **unused) -> dict:
  """Returns the `params` tree of a binary `Autoencoder` with these args."""
  del unused
  sd = torch_conv.Tracker(
      state_dict, "nf, ch_mult, num_res_blocks, attn_resolutions, resolution, bits")
  enc, dec = {}, {}
  i = 0

  def nxt(prefix):
    nonlocal i
    i += 1
    return f"{prefix}.blocks.{i - 1}"

  # Encoder.
  enc["conv_in"] = conv(sd, nxt("encoder"))
  res, ch = resolution, nf
  for level, mult in enumerate(ch_mult):
    for j in range(num_res_blocks):
      enc[f"down{level}_res{j}"] = _res(sd, nxt("encoder"), ch, nf * mult,
                                        sd.used)
      ch = nf * mult
      if res in attn_resolutions:
        enc[f"down{level}_attn{j}"] = attn(sd, nxt("encoder"))
    if level != len(ch_mult) - 1:
      enc[f"down{level}_downsample"] = {"conv": conv(sd, nxt("encoder") + ".conv")}
      res //= 2
  enc["mid_res0"] = _res(sd, nxt("encoder"), ch, ch, sd.used)
  enc["mid_attn"] = attn(sd, nxt("encoder"))
  enc["mid_res1"] = _res(sd, nxt("encoder"), ch, ch, sd.used)
  enc["norm_out"] = norm(sd, nxt("encoder"))
  enc["conv_out"] = conv(sd, nxt("encoder"))

  # Generator (norm-first decoder).
  i = 0
  dec["norm_in"] = norm(sd, nxt("generator"))
  dec["conv_in"] = conv(sd, nxt("generator"))
  ch = nf * ch_mult[-1]
  dec["mid_res0"] = _res(sd, nxt("generator"), ch, ch, sd.used)
  dec["mid_attn"] = attn(sd, nxt("generator"))
  dec["mid_res1"] = _res(sd, nxt("generator"), ch, ch, sd.used)
  for level in reversed(range(len(ch_mult))):
    for j in range(num_res_blocks):
      dec[f"up{level}_res{j}"] = _res(sd, nxt("generator"), ch,
                                      nf * ch_mult[level], sd.used)
      ch = nf * ch_mult[level]
      if res in attn_resolutions:
        dec[f"up{level}_attn{j}"] = attn(sd, nxt("generator"))
    if level != 0:
      dec[f"up{level}_upsample"] = {"conv": conv(sd, nxt("generator") + ".conv")}
      res *= 2
  dec["norm_out"] = norm(sd, nxt("generator"))
  dec["conv_out"] = conv(sd, nxt("generator"))

  proj = sd["quantize.proj.0.weight"]  # [K, emb, 1, 1]
  quantize = {"proj": {"kernel": proj[:, :, 0, 0].T,
                       "bias": sd["quantize.proj.0.bias"]},
              "embed": sd["quantize.embed.weight"]}  # [K, emb]

  unexpected = sorted(k for k in state_dict
                      if k not in sd.used and not k.startswith(_DEAD_PREFIXES))
  if unexpected:
    raise ValueError(f"PyTorch state dict has keys the architecture does not "
                     f"use: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
                     " (check nf, ch_mult, num_res_blocks, attn_resolutions).")
  return {"encoder": enc, "decoder": dec, "quantize": quantize}


def torch_sources(state_dict: Mapping[str, np.ndarray], **arch) -> dict:
  """{flax leaf path: the PyTorch key it is read from} (torch_conv.torch_sources)."""
  return torch_conv.torch_sources(bae_params_from_torch, state_dict, **arch)
