"""Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds, in JAX.

A set of feature vectors defines a manifold: the union of balls around each
point with radius = distance to its k-th nearest neighbour in the set (the
point itself excluded; k = 3 as in the paper and ADM's evaluator).
precision = fraction of generated samples inside the real manifold;
recall    = fraction of real samples inside the generated manifold.

Distances are squared Euclidean, computed block by block (`block` query rows
at a time against the whole set) as |a|^2 - 2 a.b + |b|^2 in float32 with
full-precision matmuls, under jit. With a mesh, each block's query rows are
split over the mesh's devices and the set is replicated.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DEFAULT_K = 3


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """a [M, D], b [N, D] -> squared distances [M, N] (clipped at 0)."""
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  d = jnp.sum(a * a, 1)[:, None] - 2.0 * ab + jnp.sum(b * b, 1)[None, :]
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_block(queries, points, k: int):  # [M, D], [N, D] -> [M]
  neg_smallest, _ = jax.lax.top_k(-_sq_dists(queries, points), k + 1)  # [M, k+1], self first
  return -neg_smallest[:, k]


@jax.jit
def _inside_block(queries, points, radii):  # [M, D], [N, D], [N] -> bool [M]
  return jnp.any(_sq_dists(queries, points) <= radii[None, :], axis=1)


def _blocks(fn, queries: np.ndarray, block: int, mesh: Mesh | None, *args) -> np.ndarray:
  """fn(query_block, *args) over row blocks of one shape (the last padded), concatenated."""
  n = queries.shape[0]
  unit = mesh.devices.size if mesh is not None else 1
  block = -(-min(block, n) // unit) * unit
  if mesh is not None:
    rows = NamedSharding(mesh, P(mesh.axis_names))
    args = jax.device_put(args, NamedSharding(mesh, P()))
  out = []
  for start in range(0, n, block):
    chunk = queries[start:start + block]
    real = chunk.shape[0]
    if real < block:
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], block - real, axis=0)])
    q = jax.device_put(chunk, rows) if mesh is not None else chunk
    out.append(np.asarray(fn(q, *args))[:real])
  return np.concatenate(out)


def knn_radii(features: np.ndarray, k: int = DEFAULT_K, block: int = 1024,
              mesh: Mesh | None = None) -> np.ndarray:
  """features [N, D] -> squared distance of each point to its k-th nearest other point [N]."""
  x = np.asarray(features, np.float32)
  if x.ndim != 2 or x.shape[0] <= k:
    raise ValueError(f"k-NN radii with k={k} need a [N, D] set with N > {k}, got {x.shape}.")
  return _blocks(lambda q, pts: _kth_block(q, pts, k), x, block, mesh, x)


def inside(queries: np.ndarray, points: np.ndarray, radii: np.ndarray, block: int = 1024,
           mesh: Mesh | None = None) -> np.ndarray:
  """bool [M]: query m lies within some ball (points[j], sqrt(radii[j]))."""
  q = np.asarray(queries, np.float32)
  p = np.asarray(points, np.float32)
  if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
    raise ValueError(f"Feature sets must be [M, D] and [N, D] with the same D, got {q.shape} "
                     f"and {p.shape}.")
  return _blocks(_inside_block, q, block, mesh, p, np.asarray(radii, np.float32))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K,
                     block: int = 1024, mesh: Mesh | None = None) -> dict[str, float]:
  """{"precision", "recall"} of generated features `fake` [M, D] against `real` [N, D]."""
  real_radii = knn_radii(real, k, block, mesh)
  fake_radii = knn_radii(fake, k, block, mesh)
  return {"precision": float(np.mean(inside(fake, real, real_radii, block, mesh))),
          "recall": float(np.mean(inside(real, fake, fake_radii, block, mesh)))}
