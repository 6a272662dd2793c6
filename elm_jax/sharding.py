"""Device mesh, logical axis rules, and shardings for pytrees of parameters.

Mesh axes: data (pure data parallel), fsdp (data parallel with parameters
and optimizer state sharded), tensor (heads / MLP / channels split). Models
name their parameter axes logically (`nn.with_logical_partitioning`); the
rules below map those names onto mesh axes. A parameter dimension that the
chosen mesh axes do not divide is left replicated instead of failing: a
3-channel image conv or a 16-bit quantizer head cannot be split 8 ways, and
that costs nothing worth fighting for.
"""

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from elm_jax.config_error import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axes. Shared by every stage; configs may override.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    # Convolutional autoencoders: shard output channels over fsdp.
    ("conv_in", None),
    ("conv_out", "fsdp"),
    # Transformers.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("seq", None),
)


def rules_from_config(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
  """config.sharding_rules ([name, mesh axes] pairs) if set, else DEFAULT_RULES."""
  return tuple(tuple(r) for r in config.get("sharding_rules", None)
               or DEFAULT_RULES)


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves the sizes of (data, fsdp, tensor); one of them may be -1."""
  unknown = [a for a in MESH_AXES if axes.get(a, 1) == -1]
  sizes = [int(axes.get(a, 1)) for a in MESH_AXES]
  if len(unknown) > 1:
    raise ConfigError(f"config.mesh: at most one axis may be -1, got {unknown}.")
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"config.mesh: sizes must be positive or -1, got {dict(axes)}.")
  if unknown:
    if num_devices % known:
      raise ConfigError(
          f"config.mesh={dict(axes)}: the fixed axes ({known} devices) do not "
          f"divide the {num_devices} available devices.")
    sizes[MESH_AXES.index(unknown[0])] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(
        f"config.mesh={dict(axes)} needs {math.prod(sizes)} devices but "
        f"{num_devices} are available; set one axis to -1 to absorb the rest.")
  return tuple(sizes)


def make_mesh(axes: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(axes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def batch_parallelism(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch(global_batch: int, mesh: Mesh, field: str = "batch_size") -> None:
  n = batch_parallelism(mesh)
  if global_batch % n:
    raise ConfigError(
        f"config.{field}={global_batch} is not divisible by the data-parallel "
        f"size {n} (mesh data x fsdp = {dict(mesh.shape)}); choose a multiple "
        f"of {n}.")


def _spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
              rules) -> P:
  axes = nn.logical_to_mesh_axes(tuple(names), rules)
  fitted = []
  for dim, ax in zip(shape, axes):
    group = (ax,) if isinstance(ax, str) else tuple(ax or ())
    size = math.prod(mesh.shape[a] for a in group)
    fitted.append(ax if group and dim % size == 0 else None)
  return P(*fitted)


def tree_shardings(abstract: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """NamedShardings for a (possibly boxed) tree from jax.eval_shape.

  Boxed leaves (nn.Partitioned) get their logical names mapped by `rules`;
  everything else is replicated. The result has the structure of the
  unboxed tree.
  """
  def one(leaf):
    if isinstance(leaf, nn.Partitioned):
      return NamedSharding(mesh, _spec_for(leaf.names, leaf.value.shape, mesh,
                                           rules))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def place_from_host(tree: Any, shardings: Any) -> Any:
  """Places a tree that every process holds in full (restored weights) on
  `shardings`, through host memory: a process cannot send its own device
  arrays to another process's devices."""
  return jax.device_put(jax.device_get(tree), shardings)


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Assembles per-process numpy batches into global arrays split on batch."""
  return {k: jax.make_array_from_process_local_data(
      batch_sharding(mesh, np.ndim(v)), np.asarray(v)) for k, v in local.items()}


def unbox(tree: Any) -> Any:
  """Drops the logical-axis boxes (placement comes from explicit shardings)."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x,
                      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
