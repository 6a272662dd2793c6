"""Flax Linen models. Configs name dtypes ("bfloat16"); `resolve_dtypes` maps them."""

from typing import Any

import jax.numpy as jnp

from elm_jax.config_error import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve_dtypes(kwargs: dict[str, Any]) -> dict[str, Any]:
  """Replaces dtype names under "dtype" / "param_dtype" by jnp dtypes, in place."""
  for key in ("dtype", "param_dtype"):
    if isinstance(kwargs.get(key), str):
      if kwargs[key] not in DTYPES:
        raise ConfigError(f"config.model.{key}={kwargs[key]!r} is unknown; expected one "
                         f"of {sorted(DTYPES)}.")
      kwargs[key] = DTYPES[kwargs[key]]
  return kwargs
