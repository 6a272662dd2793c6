"""Map ELM PyTorch AR / MLM state dicts (llama/ar_model.py, mlm_model.py) onto
elm_jax `Transformer` params.

The mapping follows from the same arguments that build the model, so it works
for every size and sub-code split; the expected shapes come from
`jax.eval_shape` of that model (nothing is allocated). PyTorch Linear weights
[out, in] become Flax kernels [in, out]; wqkv keeps its [q | k | v] layout.
Keys ELM's MLM owns but never uses (`pos_embed.*`, `output.*`, `proj.*`) are
dropped; anything else missing, unexpected or mis-shaped raises with the
PyTorch key in the message.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from elm_jax.models.transformer import Transformer
from elm_jax.weights.tree_check import check_against

# Keys the MLM reference creates but its forward never reads.
_MLM_DEAD_PREFIXES = ("pos_embed.", "output.", "proj.")


def _t(w):  # torch Linear [out, in] -> flax kernel [in, out]
  return np.transpose(w)


def _same(w):
  return w


def expected_params(model: Transformer) -> Any:
  """The model's params as ShapeDtypeStructs, logical boxes removed."""
  t = model.grid_size ** 2 - 1 if model.causal else model.grid_size ** 2
  tokens = jax.ShapeDtypeStruct((1, t, model.num_subcodes), jnp.int32)
  labels = jax.ShapeDtypeStruct((1,), jnp.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens, labels)
  return jax.tree.map(lambda x: getattr(x, "value", x), abstract["params"],
                      is_leaf=lambda x: hasattr(x, "names"))


def _mapping(model: Transformer) -> list[tuple[str, tuple[str, ...], Callable]]:
  """(PyTorch key, Flax path, transform); Flax layer paths use 'layers_{i}'."""
  n = model.num_subcodes
  m = [("cls_embedding.embedding_table.weight", ("class_embed", "embedding"),
        _same)]
  for i in range(model.num_layers):
    pre, dst = f"layers.{i}.", (f"layers_{i}",)
    m += [
        (pre + "attention.wqkv.weight", dst + ("attention", "qkv", "kernel"), _t),
        (pre + "attention.wo.weight", dst + ("attention", "out", "kernel"), _t),
        (pre + "attention_norm.weight", dst + ("attention_norm", "scale"), _same),
        (pre + "ffn_norm.weight", dst + ("ffn_norm", "scale"), _same),
    ] + [(pre + f"feed_forward.{w}.weight", dst + ("feed_forward", w, "kernel"),
          _t) for w in ("w1", "w2", "w3")]
  m.append(("norm.weight", ("norm", "scale"), _same))
  if model.causal:
    if n == 1:
      m += [("tok_embedder.weight", ("tok_embed_0", "embedding"), _same),
            ("output.weight", ("head_0", "kernel"), _t)]
    else:
      m += [(f"tok_embedder.{i}.weight", (f"tok_embed_{i}", "embedding"), _same)
            for i in range(n)]
      m += [(f"output.{i}.weight", (f"head_{i}", "kernel"), _t)
            for i in range(n)]
      m.append(("proj.weight", ("proj", "kernel"), _t))
  else:
    m += [("tok_embedder.weight", ("tok_embed", "embedding"), _same),
          ("mlm_layer.fc.weight", ("mlm_head", "fc", "kernel"), _t),
          ("mlm_layer.fc.bias", ("mlm_head", "fc", "bias"), _same),
          ("mlm_layer.ln.weight", ("mlm_head", "ln", "scale"), _same),
          ("mlm_layer.ln.bias", ("mlm_head", "ln", "bias"), _same),
          ("mlm_layer.bias", ("mlm_head", "bias"), lambda w: w.reshape(-1))]
  return m


def _leaf_shape(expected, path, scanned):
  if scanned and path[0].startswith("layers_"):
    return tuple(_get(expected, ("layers",) + path[1:]).shape[1:])
  return tuple(_get(expected, path).shape)


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _put(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _torch_shape(fn, want: tuple) -> tuple:
  """The PyTorch shape that `fn` maps onto the model's `want` (Linear
  weights are stored [out, in], the model's kernels [in, out])."""
  for shape in (tuple(want), tuple(reversed(want))):
    try:
      if fn(np.zeros(shape, np.float32)).shape == tuple(want):
        return shape
    except ValueError:
      pass
  return tuple(want)


def transformer_params_from_torch(state_dict: Mapping[str, np.ndarray],
                                  **model_kwargs) -> dict:
  """The `params` tree of `Transformer(**model_kwargs)` from a PyTorch state dict.

  With scan_layers=True the per-layer tensors are stacked on a leading
  'layers' axis. Raises KeyError for a missing key, ValueError for an
  unexpected or mis-shaped one, each naming the PyTorch key.
  """
  model = Transformer(**model_kwargs)
  expected = expected_params(model)
  params: dict = {}
  used = set()
  for key, path, fn in _mapping(model):
    if key not in state_dict:
      raise KeyError(f"PyTorch state dict lacks {key!r}: the model arguments "
                     "(num_layers, num_subcodes, causal, ...) do not match "
                     "the file.")
    raw = np.asarray(state_dict[key], dtype=np.float32)
    value = fn(raw)
    want = _leaf_shape(expected, path, model.scan_layers)
    if value.shape != want:
      raise ValueError(
          f"PyTorch {key!r} has shape {raw.shape}, expected "
          f"{_torch_shape(fn, want)} (for the model's {'/'.join(path)}, "
          f"{want}): check dim, num_heads, head_dim, mlp_dim, num_classes, "
          "bits, num_subcodes.")
    used.add(key)
    _put(params, path, value)

  dead = _MLM_DEAD_PREFIXES if not model.causal else ()
  unexpected = sorted(k for k in state_dict
                      if k not in used and not k.startswith(dead))
  if unexpected:
    raise ValueError(
        f"PyTorch state dict has keys the model does not use: "
        f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} (check "
        "num_layers, num_subcodes, causal).")

  if model.scan_layers:
    per_layer = [params.pop(f"layers_{i}") for i in range(model.num_layers)]
    params["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *per_layer)
  check_against(expected, params, "PyTorch state dict")
  return params
