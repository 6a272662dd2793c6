"""Check an imported parameter tree against the model's own shapes."""

from typing import Any

import jax
import numpy as np


def check_against(expected: Any, params: Any, source: str) -> None:
  """Raises ValueError naming every missing, unexpected or mis-shaped leaf.

  expected: a tree of arrays or ShapeDtypeStructs (e.g. from jax.eval_shape).
  """
  want = {jax.tree_util.keystr(k): v.shape for k, v in
          jax.tree_util.tree_leaves_with_path(expected)}
  got = {jax.tree_util.keystr(k): np.shape(v) for k, v in
         jax.tree_util.tree_leaves_with_path(params)}
  problems = [f"missing {k} {s}" for k, s in want.items() if k not in got]
  problems += [f"unexpected {k} {s}" for k, s in got.items() if k not in want]
  problems += [f"shape of {k}: {source} has {got[k]}, model expects {s}"
               for k, s in want.items() if k in got and tuple(got[k]) != tuple(s)]
  if problems:
    raise ValueError(f"{source} does not fit the model ({len(problems)} "
                     "problems): " + "; ".join(problems[:10]))
