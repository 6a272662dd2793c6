"""What the device can do, measured in the same run as a benchmark: the
peak matmul rate and the memory bandwidth that MFU and rooflines divide by,
and warm timing of a jitted call."""

import time

import jax
import jax.numpy as jnp

_MATMUL = jax.jit(jnp.matmul)
_SUM = jax.jit(jnp.sum)


def call_seconds(fn, *args, repeats: int = 3) -> list:
  """Wall seconds of `repeats` calls after one warm-up (compile) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return times


def matmul_peak(dtype=jnp.float32, repeats: int = 10) -> float:
  """FLOP/s of a large square jnp.dot: the fastest of `repeats` (a peak; a
  median would let a slow moment of the machine inflate an MFU)."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  return 2 * n ** 3 / min(call_seconds(_MATMUL, a, a, repeats=repeats))


def memory_bandwidth(repeats: int = 5) -> float:
  """Bytes/s of reading a 1 GiB float32 array (a jitted sum), fastest call."""
  x = jnp.ones((2 ** 28,), jnp.float32)
  return x.nbytes / min(call_seconds(_SUM, x, repeats=repeats))
