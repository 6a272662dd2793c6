"""The train state every stage uses: a plain pytree."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """step, trainable params, optimizer state, EMA params, other collections.

  model_state holds non-trainable variables (BatchNorm statistics). rng is a
  raw uint32 key; step s draws its randomness from fold_in(rng, s), so a
  resumed run repeats the draws of an uninterrupted one.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  model_state: Any
  rng: jax.Array

  def step_rng(self) -> jax.Array:
    return jax.random.fold_in(self.rng, self.step)
