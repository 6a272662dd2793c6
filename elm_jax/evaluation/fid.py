"""Fréchet distance (FID / sFID) in float64, and cached feature statistics.

FID(a, b) = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).
The trace of the matrix square root is computed without forming a
non-symmetric product: with R = S_a^(1/2) (symmetric, from an eigen
decomposition), (S_a S_b)^(1/2) is similar to (R S_b R)^(1/2), a symmetric
PSD matrix, so tr = sum(sqrt(eigvalsh(R S_b R))) with tiny negative
eigenvalues (round-off) clipped to zero. This stays real and finite for
singular covariances (fewer samples than dimensions), where
scipy.linalg.sqrtm of S_a S_b returns complex parts and needs ADM's
eps-offset fallback.

Statistics npz (`save_stats` / `load_stats`): mu [D], sigma [D, D] (pool_3),
mu_s, sigma_s (spatial, for sFID), optionally features [N, 2048] (pool_3,
for precision/recall) and spatial_features [N, 2023], and `source` (a string naming what was measured, e.g.
"fashion_mnist:test:10000"), all float64 except features (float32).
"""

import os
import zipfile
from typing import Mapping

import numpy as np

from elm_jax import atomic_files

STATS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """features [N, D] -> (mean [D], covariance [D, D] with the N-1 denominator), float64."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"Need a [N, D] feature matrix with N >= 2 to estimate a covariance, "
                     f"got shape {x.shape}; evaluate more images.")
  return x.mean(axis=0), np.cov(x, rowvar=False)


def _check_pair(mu1, sigma1, mu2, sigma2):
  d = mu1.shape[0]
  for name, m, s in (("first", mu1, sigma1), ("second", mu2, sigma2)):
    if m.shape != (d,) or s.shape != (d, d):
      raise ValueError(f"Fréchet distance: the {name} statistics have mu {m.shape} and sigma "
                       f"{s.shape}; expected ({d},) and ({d}, {d}) (same feature layer on "
                       "both sides).")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
      raise ValueError(f"Fréchet distance: the {name} statistics contain NaN or inf; the "
                       "features they came from were not finite.")


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped)."""
  sym = (sigma + sigma.T) / 2.0
  w, v = np.linalg.eigh(sym)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _sum_sqrt_eigvalsh(m: np.ndarray) -> float:
  eig = np.linalg.eigvalsh((m + m.T) / 2.0)
  return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray,
                       features1: np.ndarray | None = None) -> float:
  """tr((sigma1 sigma2)^(1/2)) for PSD sigma1, sigma2, via a symmetric eigenproblem.

  features1 [N, D]: the features sigma1 was estimated from (np.cov). When
  N - 1 < D, sigma1 = V diag(c^2) V^T from the thin SVD of the centred
  features, and the nonzero spectrum of sigma1^(1/2) sigma2 sigma1^(1/2) is
  that of the small matrix diag(c) V^T sigma2 V diag(c) [N, N]: exact, and
  far cheaper than two D x D eigenproblems.
  """
  sigma2 = np.asarray(sigma2, np.float64)
  if features1 is not None and features1.shape[0] - 1 < features1.shape[1]:
    x = np.asarray(features1, np.float64)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)  # vt [N, D]
    c = s / np.sqrt(x.shape[0] - 1)
    small = (c[:, None] * (vt @ sigma2 @ vt.T)) * c[None, :]  # [N, N]
    return _sum_sqrt_eigvalsh(small)
  root = sqrtm_psd(np.asarray(sigma1, np.float64))
  return _sum_sqrt_eigvalsh(root @ sigma2 @ root)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, features1: np.ndarray | None = None) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

  features1: optionally the [N, D] features behind (mu1, sigma1); see
  `trace_sqrt_product` (used only to compute the same number faster).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  _check_pair(mu1, sigma1, mu2, sigma2)
  if features1 is not None and np.shape(features1)[1:] != mu1.shape:
    raise ValueError(f"features1 {np.shape(features1)} do not match mu1 {mu1.shape}.")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt_product(sigma1, sigma2, features1))


def stats_from_features(pool: np.ndarray, spatial: np.ndarray, source: str,
                        keep_features: bool = True) -> dict[str, np.ndarray]:
  """pool [N, 2048], spatial [N, 2023] -> the statistics dict `save_stats` writes."""
  mu, sigma = moments(pool)
  mu_s, sigma_s = moments(spatial)
  stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s,
           "source": np.asarray(source)}
  if keep_features:
    stats["features"] = np.asarray(pool, np.float32)
    stats["spatial_features"] = np.asarray(spatial, np.float32)
  return stats


def save_stats(path: str, stats: Mapping[str, np.ndarray]) -> None:
  """Writes the statistics npz atomically (elm_jax.atomic_files)."""
  if not path.endswith(".npz"):
    raise ValueError(f"Statistics path {path!r} must end in .npz.")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_files.write_npz(path, **stats)


def open_npz(path: str, what: str = "") -> "np.lib.npyio.NpzFile":
  """np.load of an .npz, with a missing or unreadable file named (`what`: the
  option that gave it, e.g. "--samples")."""
  label = f"{what}={path}" if what else path
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{label} does not exist.")
  try:
    data = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    detail = ("not a zip archive" if "pickled" in str(e)
              else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ValueError(f"{label} is not a readable .npz file ({detail}); it is truncated, "
                     "corrupt or of another format: replace it (np.savez writes one).") from e
  if not hasattr(data, "files"):
    raise ValueError(f"{label} holds a single .npy array, not an .npz; save it with "
                     "np.savez(path, images).")
  return data


def read_npz_array(data, key: str, label: str) -> np.ndarray:
  """data[key], with an unreadable member (object array, truncation) named."""
  try:
    return data[key]
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise ValueError(f"{label}: {key} cannot be read ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); save plain numeric "
                     "arrays with np.savez.") from e


def is_stats_file(path: str, what: str = "") -> bool:
  with open_npz(path, what) as data:
    return all(k in data.files for k in STATS_KEYS)


def load_stats(path: str) -> dict[str, np.ndarray]:
  """Reads a statistics npz, checking that every key is there and the shapes agree."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Statistics file {path!r} does not exist.")
  with open_npz(path) as data:
    missing = [k for k in STATS_KEYS if k not in data.files]
    if missing:
      raise ValueError(f"{path} is not a statistics npz: keys {missing} are missing (found "
                       f"{sorted(data.files)}). Write one with `python -m elm_jax.evaluate "
                       "--reference=... --reference_stats=PATH`.")
    stats = {k: np.asarray(read_npz_array(data, k, path)) for k in data.files}
  for m, s in (("mu", "sigma"), ("mu_s", "sigma_s")):
    d = stats[m].shape[0]
    if stats[m].ndim != 1 or stats[s].shape != (d, d):
      raise ValueError(f"{path}: {m} has shape {stats[m].shape} but {s} {stats[s].shape}.")
  if "features" in stats and stats["features"].shape[1:] != stats["mu"].shape:
    raise ValueError(f"{path}: features {stats['features'].shape} do not match mu "
                     f"{stats['mu'].shape}.")
  return stats
