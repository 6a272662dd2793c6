"""Inception features of image batches, jitted and split over every device of a mesh.

`FeatureExtractor(params, mesh)` compiles `inception.features` once per input
shape with the weights replicated and the batch split over the mesh's batch
axes; `add(images, mask)` runs one batch and keeps the features of the
examples with mask > 0 on the host; `stats(source)` turns everything kept
into the statistics `fid.save_stats` writes. Host numpy batches whose size is
not a multiple of the device count are padded (and the padding dropped).
"""

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from elm_jax import sharding
from elm_jax.evaluation import fid, inception


# One jitted function for every extractor, so equal shapes and shardings compile once.
_features = jax.jit(inception.features)


def default_mesh() -> Mesh:
  """The training layout with every device on "data" (so compiled features are shared)."""
  return sharding.make_mesh({"data": -1})


def _batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes a batch is split over: data/fsdp of a training mesh, else all."""
  axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  return axes or tuple(mesh.axis_names)


class FeatureExtractor:
  """Accumulates pool_3 and spatial Inception features of image batches."""

  def __init__(self, params: Any, mesh: Mesh | None = None):
    self.mesh = mesh or default_mesh()
    axes = _batch_axes(self.mesh)
    self.parallelism = math.prod(self.mesh.shape[a] for a in axes)
    self._rows = NamedSharding(self.mesh, P(axes))
    self.params = jax.device_put(params, NamedSharding(self.mesh, P()))
    self.pool: list[np.ndarray] = []
    self.spatial: list[np.ndarray] = []

  @property
  def count(self) -> int:
    return sum(len(p) for p in self.pool)

  def __call__(self, images) -> dict[str, np.ndarray]:
    """uint8/float [B, H, W, 3] in [0, 255] (numpy or sharded jax) -> host features."""
    n = images.shape[0]
    if isinstance(images, np.ndarray):
      pad = -n % self.parallelism
      if pad:
        images = np.concatenate([images, np.repeat(images[:1], pad, axis=0)])
      images = jax.device_put(images, self._rows)
    out = jax.device_get(_features(self.params, images))
    return {k: v[:n] for k, v in out.items()}

  def add(self, images, mask=None) -> None:
    """Runs a batch and keeps the features of the examples where mask > 0 (all if None)."""
    out = self(images)
    keep = slice(None) if mask is None else np.asarray(jax.device_get(mask)) > 0
    self.pool.append(out["pool"][keep])
    self.spatial.append(out["spatial"][keep])

  def stats(self, source: str, keep_features: bool = True) -> dict[str, np.ndarray]:
    if self.count < 2:
      raise ValueError(f"{source}: {self.count} image(s) evaluated; FID needs at least 2 "
                       "(thousands for a meaningful number).")
    return fid.stats_from_features(np.concatenate(self.pool), np.concatenate(self.spatial),
                                   source, keep_features)
