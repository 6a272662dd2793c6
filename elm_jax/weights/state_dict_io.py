"""Read a released PyTorch checkpoint, or an .npz of one, as {key: ndarray}.

`.npz` files are read with NumPy alone (no pickle). Anything else
(.pt/.pth/.th/.bin/.ckpt) goes through `torch.load(map_location="cpu",
weights_only=True)`; `allow_pickle=True` falls back to a full unpickle (runs
code from the file: only for files you trust).

Release files wrap the state dict: {"model": sd, "ema": sd, "optimizer": ...,
"args": Namespace} (LlamaGen / ELM training checkpoints), {"state_dict": sd},
{"module": sd} (DeepSpeed). `unwrap` descends into the EMA copy when there is
one and `prefer_ema`, else into the model. `strip_prefixes` then removes what
every key shares: `module.` (DDP), `_orig_mod.` (torch.compile), `model.`,
`ae.`, and the EMA wrappers' bookkeeping (ema_pytorch's `ema_model.` /
`online_model.` copies, `n_averaged`, `initted`, `step`).
"""

import argparse
import os
import zipfile
from typing import Any, Mapping

import numpy as np

# Where a wrapped state dict sits, tried in this order.
_EMA_KEYS = ("ema", "model_ema", "ema_state_dict")
_MODEL_KEYS = ("state_dict", "model", "module", "net", "ae", "params")
# Prefixes that, when every key carries them, are wrappers, not modules.
_PREFIXES = ("module.", "_orig_mod.", "model.", "ae.")
# Scalars EMA wrappers keep beside the weights (AveragedModel, ema_pytorch).
_BOOKKEEPING = ("n_averaged", "initted", "step", "num_updates", "decay")


def _is_array(v: Any) -> bool:
  return hasattr(v, "shape") and hasattr(v, "dtype")


def _is_state_dict(obj: Any) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0
          and all(isinstance(k, str) for k in obj)
          and all(_is_array(v) for v in obj.values()))


def _to_numpy(v: Any) -> np.ndarray:
  if isinstance(v, np.ndarray):
    return v
  t = v.detach().cpu()
  if t.is_floating_point():  # bf16 / fp16 have no exact NumPy twin here.
    t = t.float()
  return t.numpy()


def unwrap(obj: Any, prefer_ema: bool = True, source: str = "state dict"
           ) -> tuple[Mapping[str, Any], list[str]]:
  """(the state dict inside `obj`, the wrapper keys descended through)."""
  path: list[str] = []
  order = _EMA_KEYS + _MODEL_KEYS if prefer_ema else _MODEL_KEYS + _EMA_KEYS
  while not _is_state_dict(obj):
    if not isinstance(obj, Mapping):
      raise ValueError(f"{source}{''.join(f'[{p!r}]' for p in path)} is a "
                       f"{type(obj).__name__}, not a state dict.")
    inner = next((k for k in order if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      arrays = {k: v for k, v in obj.items() if _is_array(v)}
      if arrays and len(arrays) >= len(obj) // 2:  # a state dict with extras
        extras = sorted(str(k) for k in obj if k not in arrays)
        raise ValueError(f"{source}: entries that are not tensors: {extras[:8]}.")
      raise ValueError(
          f"{source}{''.join(f'[{p!r}]' for p in path)}: no state dict found; "
          f"top-level keys are {sorted(map(str, obj))[:12]} (looked for "
          f"{list(order)}).")
    path.append(inner)
    obj = obj[inner]
  return obj, path


def strip_prefixes(sd: Mapping[str, np.ndarray], prefer_ema: bool = True
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
  """(keys without wrapper prefixes, notes on what was removed)."""
  sd, notes = dict(sd), []
  copies = ("ema_model.", "online_model.")
  if any(k.startswith(copies) for k in sd):  # ema_pytorch.EMA
    keep = copies[0] if prefer_ema else copies[1]
    sd = {k: v for k, v in sd.items() if k.startswith(keep)}
    notes.append(f"kept the {keep!r} copy")
  changed = True
  while changed and sd:
    changed = False
    dropped = sorted(k for k, v in sd.items()
                     if k in _BOOKKEEPING and np.size(v) <= 1)
    for k in dropped:
      del sd[k]
    if dropped:
      notes.append(f"dropped EMA bookkeeping {dropped}")
    for p in _PREFIXES + copies:
      if sd and all(k.startswith(p) for k in sd):
        sd = {k[len(p):]: v for k, v in sd.items()}
        notes.append(f"stripped prefix {p!r}")
        changed = True
  return sd, notes


def take_submodule(sd: Mapping[str, np.ndarray], prefix: str
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
  """The keys under `prefix` (stripped) when the file holds more than that
  module, e.g. a whole BinaryGAN (`ae.`, `disc.`, `perceptual.`)."""
  if not any(k.startswith(prefix) for k in sd):
    return dict(sd), []
  others = sorted({k.split(".")[0] for k in sd if not k.startswith(prefix)})
  kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  return kept, [f"kept {prefix}*, dropped {others}"] if others else []


def _load_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise ValueError(f"--src={path}: cannot read it as an .npz state dict "
                     f"({type(e).__name__}: {e}); the file is corrupt or "
                     "incomplete.") from e


def _load_torch(path: str, allow_pickle: bool) -> Any:
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        f"--src={path}: reading PyTorch files needs torch. Install the CPU "
        "build (`pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu`), or save the state dict as "
        ".npz where torch is installed: `np.savez(OUT, **{k: v.float().numpy() "
        "for k, v in sd.items()})`.") from e
  with open(path, "rb") as f:
    magic = f.read(4)
  if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
    # torch files are zip archives or pickles (protocol >= 2).
    raise ValueError(f"--src={path} is not a PyTorch checkpoint (it starts with {magic!r}, "
                     "neither a zip archive nor a pickle); pass the .pt/.pth/.th file "
                     "torch.save wrote, or an .npz of the state dict.")
  torch.serialization.add_safe_globals([argparse.Namespace])
  try:
    return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except Exception as e:  # torch raises many types for bad files.
    msg = str(e)
    if not allow_pickle and ("weights_only" in msg or "Unsupported global" in msg):
      raise ValueError(
          f"--src={path}: the file holds Python objects besides tensors and "
          f"torch refused to unpickle them safely ({msg.splitlines()[0]}). "
          "Pass --allow_pickle only if you trust the file.") from e
    raise ValueError(f"--src={path}: torch cannot read it ({type(e).__name__}: "
                     f"{msg.splitlines()[0] if msg else ''}); the file is "
                     "corrupt, incomplete or not a PyTorch checkpoint.") from e


def read_state_dict(path: str, prefer_ema: bool = True,
                    allow_pickle: bool = False
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
  """(state dict with float32 / integer NumPy values, notes on unwrapping)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--src={path}: no such file.")
  if path.endswith(".npz"):
    raw: Any = _load_npz(path)
  else:
    raw = _load_torch(path, allow_pickle)
  sd, where = unwrap(raw, prefer_ema, f"--src={path}")
  notes = [f"state dict under {'/'.join(where)}"] if where else []
  sd, more = strip_prefixes({k: _to_numpy(v) for k, v in sd.items()}, prefer_ema)
  return sd, notes + more
