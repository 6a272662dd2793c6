"""Classifier-free guidance schedules and the MaskGIT masking schedule (docs/spec.md section 7).

Guidance at step t of N (0-based) uses r = (t + 1) / N and
  s_t = 1 + (s - 1) * f(r),  f: constant 1, linear r, cosine sin(pi r / 2)
  (= cos(-pi/2 + r pi/2)), log ln(1 + (e - 1) r), square r^2,
  square_root sqrt(r);
so every schedule except constant rises from near 1 to s at the last step.
"""

import math

import jax.numpy as jnp

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine", "log", "square",
                      "square_root")


def check_schedule(schedule: str) -> None:
  if schedule not in GUIDANCE_SCHEDULES:
    raise ValueError(f"guidance schedule {schedule!r}: expected one of "
                     f"{GUIDANCE_SCHEDULES}.")


def guidance_scale(scale: float, schedule: str, step, num_steps: int):
  """s_t for step (int or int array, 0-based) of num_steps; float32."""
  check_schedule(schedule)
  r = (jnp.asarray(step, jnp.float32) + 1.0) / num_steps
  ramp = {
      "constant": lambda: jnp.ones_like(r),
      "linear": lambda: r,
      "cosine": lambda: jnp.sin(0.5 * jnp.pi * r),
      "log": lambda: jnp.log1p((math.e - 1.0) * r),
      "square": lambda: r * r,
      "square_root": lambda: jnp.sqrt(r),
  }[schedule]()
  return 1.0 + (scale - 1.0) * ramp


def masked_after(step, num_steps: int, length: int):
  """MaskGIT: positions still masked after iteration step (0-based) of T.

  floor(length * cos(pi/2 * (step + 1) / T)); 0 after the last iteration.
  """
  r = (jnp.asarray(step, jnp.float32) + 1.0) / num_steps
  count = jnp.floor(length * jnp.cos(0.5 * jnp.pi * r) + 1e-4).astype(jnp.int32)
  return jnp.where(r >= 1.0, 0, jnp.clip(count, 0, length))
