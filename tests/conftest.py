"""Pytest setup: 8 simulated CPU devices and cheap compiles, configured before jax is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)
