"""A minimal stage for the loop's tests: one counter, a loader of 0, 1, 2, ..."""

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from elm_jax.train.state import TrainState


class CountingStage:
  """w <- w + mean(x); the loss turns NaN from step `nan_at` on."""

  def __init__(self, nan_at=None, width=4, eval_error=None, eval_images=8):
    self.nan_at, self.width, self.eval_error = nan_at, width, eval_error
    self.eval_images = eval_images

  def init(self, rng):
    return TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros((self.width,))},
                      opt_state={}, ema_params={}, model_state={}, rng=rng)

  def train_step(self, state, batch, frozen):
    loss = jnp.mean(batch["x"]) + jnp.sum(state.params["w"])
    if self.nan_at is not None:
      loss = jnp.where(state.step + 1 >= self.nan_at, jnp.nan, loss)
    params = {"w": state.params["w"] + jnp.mean(batch["x"])}
    return state.replace(step=state.step + 1, params=params), {"loss": loss}

  def frozen(self):
    return {}

  def train_loader(self):
    return (grain.MapDataset.range(10_000)
            .map(lambda i: {"x": np.full((), i, np.float32)})
            .batch(8).to_iter_dataset())

  def eval_batches(self, full):
    if self.eval_images:
      yield {"x": np.ones((self.eval_images,), np.float32),
             "mask": np.ones((self.eval_images,), np.float32)}

  def evaluate(self, state, frozen, batches, mesh):
    if self.eval_error:
      raise self.eval_error
    return {"w0": float(state.params["w"][0])}, {}


def config(total_steps):
  c = ml_collections.ConfigDict(dict(
      seed=0, batch_size=8, total_steps=total_steps, log_every=1,
      eval_every=1000, checkpoint_every=2, keep_checkpoints=5,
      mesh=dict(data=-1, fsdp=1, tensor=1)))
  return c
