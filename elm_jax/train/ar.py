"""The autoregressive generator stage: next-token loss over sub-codes.

Input [cls, t0, ..., t_{L-2}] -> targets t0 ... t_{L-1}; every sub-code of a
position is predicted from the same context (factorised softmax) and the loss
is the mean cross-entropy over all L * n sub-tokens (models/transformer.py:
next_token_loss).
"""

from elm_jax.models.transformer import next_token_loss
from elm_jax.train.generator import GeneratorStage


class ARStage(GeneratorStage):
  causal = True

  def loss(self, params, ids, labels, rng, train: bool):
    return next_token_loss(self.model, params, ids, labels, rng, train)
