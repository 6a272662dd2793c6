"""eval_means: masked sums inside jit, means over the real examples."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from elm_jax.train import eval_means

DATA = ml_collections.ConfigDict(dict(eval_split="test", source="folder", path="/x"))


def test_means_leave_out_padding_across_batches():
  step = jax.jit(eval_means.masked_sums)
  totals = eval_means.Totals()
  totals.add(step({"loss": jnp.array([1.0, 2.0, 100.0])}, jnp.array([1, 1, 0])))
  totals.add(step({"loss": jnp.array([3.0, 50.0])}, jnp.array([1.0, 0.0])))
  out = totals.means(DATA)
  assert out == {"loss": pytest.approx(2.0), "examples": 3.0}


@pytest.mark.parametrize("batches", [0, 1])
def test_a_pass_without_real_examples_is_refused(batches):
  totals = eval_means.Totals()
  for _ in range(batches):
    totals.add(eval_means.masked_sums({"psnr": jnp.ones(2)}, jnp.zeros(2)))
  with pytest.raises(ValueError, match="counted no example"):
    totals.means(DATA)
