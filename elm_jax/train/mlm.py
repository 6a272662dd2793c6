"""The masked (MaskGIT-style) generator stage.

One step s ~ U{0..T-1} per batch; a cos(pi/2 * s / T) fraction of the L
positions (at least one) is masked, all sub-codes of a position together, and
the cross-entropy is taken on masked sub-tokens only.
"""

import math

import jax
import jax.numpy as jnp

from elm_jax.models.transformer import cross_entropy
from elm_jax.train.generator import GeneratorStage


def masked_count(step: jax.Array, length: int, num_steps: int) -> jax.Array:
  """How many of `length` positions are masked at schedule step s."""
  ratio = jnp.cos(math.pi / 2 * step / num_steps)
  return jnp.maximum(1, jnp.floor(length * ratio)).astype(jnp.int32)


def random_mask(rng: jax.Array, batch: int, length: int, num_steps: int
                ) -> jax.Array:
  """bool [B, L]: the same count for the whole batch, random positions each."""
  r_step, r_pos = jax.random.split(rng)
  step = jax.random.randint(r_step, (), 0, num_steps)
  count = masked_count(step, length, num_steps)
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(r_pos, (batch, length)), -1), -1)
  return ranks < count


class MLMStage(GeneratorStage):
  causal = False

  def loss(self, params, ids, labels, rng, train: bool):
    """ids [B, L, n] -> (loss [B], {"accuracy": [B], "masked": [B]}): each
    example's mean over its masked sub-tokens.

    Training masks the batch at one schedule step; evaluation draws a step
    for every example from its own key, so one pass covers the schedule.
    """
    b, length, n = ids.shape
    steps = self.config.mlm.schedule_steps
    if train:
      r_mask, r_drop = jax.random.split(rng)
      mask = random_mask(r_mask, b, length, steps)  # [B, L]
    else:
      r_drop = rng  # no dropout at evaluation
      mask = jax.vmap(lambda r: random_mask(jax.random.split(r)[0], 1, length,
                                            steps)[0])(jax.random.split(rng, b))
    mask = jnp.broadcast_to(mask[..., None], ids.shape)  # [B, L, n]
    logits, _ = self.model.apply({"params": params}, ids, labels, train=train,
                                 mask=mask, rngs={"dropout": r_drop})  # [B, L, n, V]
    loss = cross_entropy(logits, ids, weights=mask,
                         label_smoothing=self.config.mlm.label_smoothing)
    hits = (jnp.argmax(logits, -1) == ids) & mask
    accuracy = hits.sum((1, 2)) / jnp.maximum(mask.sum((1, 2)), 1)
    return loss, {"accuracy": accuracy, "masked": mask.mean((1, 2))}
