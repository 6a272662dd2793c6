"""Per-platform choices, in one place; the model and sampler code stay neutral.

Each choice below is a speed choice only (the same numbers on every
platform); benchmarks/README.md ("Platform tuning") has the measurements
behind it.

- `split_cpu(n)`: XLA:CPU exposes n devices, so the mesh's "data" axis splits
  every batch over them (XLA:CPU runs one program's convolutions on little
  more than one core). Must run before JAX starts its backends; creates CPU
  devices only.
- `token_rows_dense(backend)`: compute a dense over [B, S, E] tokens as one
  [B*S, E] matmul (XLA:CPU otherwise copies activations for the weight
  gradient).
- `small_conv_as_matmul(backend)`: 3x3 convolutions over maps of side <= 2 as
  im2col + matmul (XLA:CPU's convolution is slow there).
- `decode_compiler_options(rows, backend)`: XLA options for an AR decoding
  program (on CPU, XLA's Eigen dots instead of YNNPACK at 4-32 rows per
  device).
"""

import os

_FLAG = "--xla_force_host_platform_device_count"


def split_cpu(num_devices: int) -> None:
  """Exposes `num_devices` CPU devices (0: leave XLA's default). Call it before
  the first JAX computation (XLA reads the flag when its backends start); a
  device count already in XLA_FLAGS is kept."""
  if num_devices <= 0:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if _FLAG in flags:
    return
  os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={num_devices}".strip()


def _backend(backend: str | None) -> str:
  if backend is None:
    import jax  # noqa: PLC0415 (deferred: split_cpu must run before JAX starts)
    return jax.default_backend()
  return backend


def token_rows_dense(backend: str | None = None) -> bool:
  """Whether token denses run as one 2D matmul (backend None: JAX's default)."""
  return _backend(backend) == "cpu"


def small_conv_as_matmul(backend: str | None = None) -> bool:
  """Whether 3x3 convolutions over 1x1 and 2x2 maps run as im2col + matmul."""
  return _backend(backend) == "cpu"


# Rows per device (batch, doubled with guidance) at which XLA:CPU's Eigen dots
# beat YNNPACK's in a decoding step.
EIGEN_DOT_ROWS = (4, 32)
_EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # YNNPACK off


def decode_compiler_options(rows_per_device: int,
                            backend: str | None = None) -> dict:
  """XLA compiler options for an AR decoding program ({}: XLA's defaults)."""
  low, high = EIGEN_DOT_ROWS
  if _backend(backend) == "cpu" and low <= rows_per_device <= high:
    return dict(_EIGEN_DOTS)
  return {}
