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
    """ids [B, L, n] -> (mean loss over masked sub-tokens, {"accuracy", "masked"})."""
    r_mask, r_drop = jax.random.split(rng)
    b, length, n = ids.shape
    mask = random_mask(r_mask, b, length, self.config.mlm.schedule_steps)
    mask = jnp.broadcast_to(mask[..., None], ids.shape)  # [B, L, n]
    logits = self.model.apply({"params": params}, ids, labels, train=train,
                              mask=mask, rngs={"dropout": r_drop})  # [B, L, n, V]
    loss = cross_entropy(logits, ids, weights=mask,
                         label_smoothing=self.config.mlm.label_smoothing)
    hits = (jnp.argmax(logits, -1) == ids) & mask
    accuracy = hits.sum() / jnp.maximum(mask.sum(), 1)
    return loss, {"accuracy": accuracy, "masked": mask.mean()}
