"""Classifier-free guidance: conditional and unconditional halves in one batch."""

import jax.numpy as jnp

from elm_jax.sampling.schedules import guidance_scale
from elm_jax.sampling.settings import SamplerSettings


def with_null_labels(labels, null_class: int, guided: bool):
  """labels [B] -> [2B] = [labels | null] when guided, else unchanged."""
  if not guided:
    return labels
  return jnp.concatenate([labels, jnp.full_like(labels, null_class)])


def double(x, guided: bool):
  """Repeats a per-sample array [B, ...] for both halves: [2B, ...]."""
  return jnp.concatenate([x, x]) if guided else x


def guide(logits, settings: SamplerSettings, step, num_steps: int):
  """logits [2B, ...] (cond | uncond) -> l_u + s_t (l_c - l_u), [B, ...]."""
  if not settings.guided:
    return logits
  cond, uncond = jnp.split(logits, 2)
  scale = guidance_scale(settings.cfg_scale, settings.cfg_schedule, step,
                         num_steps)
  return uncond + scale * (cond - uncond)
