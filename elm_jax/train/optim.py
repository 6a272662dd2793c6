"""Optimizers, learning-rate schedules and the EMA of parameters."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from elm_jax.config_error import ConfigError


# After the warmup: (lr, steps, final_fraction) -> schedule. configs_lib
# checks config.optim.decay against these names.
DECAYS = {
    "constant": lambda lr, steps, final: optax.constant_schedule(lr),
    "cosine": lambda lr, steps, final: optax.cosine_decay_schedule(
        lr, steps, alpha=final),
}


def schedule(lr: float, warmup_steps: int = 0, decay: str = "constant",
             total_steps: int = 0, final_fraction: float = 0.0):
  """Linear warmup, then `decay` (a DECAYS name) to lr * final_fraction."""
  after = DECAYS[decay](lr, max(total_steps - warmup_steps, 1), final_fraction)
  if warmup_steps <= 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup_steps), after], [warmup_steps])


def decay_mask(params: Any) -> Any:
  """Weight decay applies to tensors of rank >= 2 only (not norms, biases)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(*, name: str = "adam", lr: float, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 0.0,
                   warmup_steps: int = 0, decay: str = "constant",
                   total_steps: int = 0, final_fraction: float = 0.0
                   ) -> optax.GradientTransformation:
  if not lr > 0:  # also catches NaN
    raise ConfigError(f"optim.lr={lr} must be positive (e.g. --config.optim.lr=1e-4).")
  if warmup_steps < 0:
    raise ConfigError(f"optim.warmup_steps={warmup_steps} must be >= 0.")
  sched = schedule(lr, warmup_steps, decay, total_steps, final_fraction)
  if name == "adam":
    opt = optax.adam(sched, b1=b1, b2=b2, eps=eps)
  elif name == "adamw":
    opt = optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                      mask=decay_mask)
  else:
    raise ConfigError(f"optim.name={name!r}: expected 'adam' or 'adamw'.")
  if grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
  return opt


def ema_update(ema: Any, params: Any, step: jax.Array, decay: float,
               every: int = 1) -> Any:
  """ema <- decay * ema + (1 - decay) * params on steps divisible by `every`
  (optax.incremental_update; the `every` gate is this project's)."""
  updated = optax.incremental_update(params, ema, 1.0 - decay)
  apply = (step % every) == 0
  return jax.tree.map(lambda u, e: jnp.where(apply, u, e), updated, ema)
