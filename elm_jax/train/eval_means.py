"""Means of per-example values over an evaluation pass, padding excluded.

Every stage's evaluation step returns `masked_sums` of its per-example values
(inside jit); `Totals` adds them up over the pass and turns them into means
over the real examples (mask 1), refusing a pass that counted none.
"""

import jax
import jax.numpy as jnp

from elm_jax.data import pipeline


def masked_sums(values: dict, mask: jax.Array) -> dict:
  """{name: [B]} and mask [B] (1 real, 0 padding) -> {name: sum of the real
  examples' values, "count": how many are real}."""
  mask = mask.astype(jnp.float32)
  sums = {name: jnp.sum(mask * value) for name, value in values.items()}
  sums["count"] = jnp.sum(mask)
  return sums


class Totals:
  """Running `masked_sums` over the batches of one evaluation pass."""

  def __init__(self):
    self._total = None

  def add(self, sums: dict) -> None:
    self._total = sums if self._total is None else jax.tree.map(
        jnp.add, self._total, sums)

  def means(self, data) -> dict[str, float]:
    """Each value's mean over the real examples, plus "examples" (their
    count). `data`: the stage's data config, named if nothing was counted."""
    total = jax.device_get(self._total) if self._total is not None else {}
    count = float(total.pop("count", 0.0))
    pipeline.check_eval_count(count, data)
    out = {name: float(value) / count for name, value in total.items()}
    out["examples"] = count
    return out
