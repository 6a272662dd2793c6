"""PyTorch conv-net tensors -> Flax leaves, shared by the autoencoder imports.

Conv kernels OIHW -> HWIO, GroupNorm weight -> scale, a 1x1 conv that is a
Dense layer here [out, in, 1, 1] -> [in, out]. `Tracker` records which keys
a mapping read, so that the caller can refuse the ones left over, and
`torch_sources` names the PyTorch key behind every leaf of a mapping.
"""

from typing import Callable, Mapping

import jax
import numpy as np


class Tracker(dict):
  """A state-dict view that records which keys were read; `arguments` names
  the architecture arguments a missing key contradicts."""

  def __init__(self, sd: Mapping[str, np.ndarray], arguments: str):
    super().__init__(sd)
    self.used = set()
    self.arguments = arguments

  def __getitem__(self, key):
    if key not in self:
      raise KeyError(f"PyTorch state dict lacks {key!r}: the architecture "
                     f"arguments ({self.arguments}) do not match the file.")
    self.used.add(key)
    return np.asarray(super().__getitem__(key), dtype=np.float32)


def conv(sd, key):  # OIHW -> HWIO
  return {"kernel": np.transpose(sd[key + ".weight"], (2, 3, 1, 0)),
          "bias": sd[key + ".bias"]}


def dense_from_1x1(sd, key):  # [out, in, 1, 1] -> [in, out]
  return {"kernel": sd[key + ".weight"][:, :, 0, 0].T, "bias": sd[key + ".bias"]}


def norm(sd, key):
  return {"scale": sd[key + ".weight"], "bias": sd[key + ".bias"]}


def attn(sd, key):
  return {"norm": norm(sd, key + ".norm"),
          **{n: conv(sd, f"{key}.{n}") for n in ("q", "k", "v", "proj_out")}}


def torch_sources(mapping: Callable[..., dict], state_dict: Mapping[str, np.ndarray],
                  **arch) -> dict:
  """{flax leaf path (jax keystr): the PyTorch key it is read from}.

  Runs `mapping(state_dict, **arch)` on zero-copy stand-ins whose every
  element is the key's index, so the answer follows the mapping itself (no
  second table to keep in step); used to name the PyTorch key of a
  mis-shaped leaf.
  """
  keys = sorted(state_dict)
  tags = {k: np.broadcast_to(np.float32(i), np.shape(state_dict[k]))
          for i, k in enumerate(keys)}
  params = mapping(tags, **arch)
  return {jax.tree_util.keystr(path): keys[int(np.asarray(leaf).flat[0])]
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
