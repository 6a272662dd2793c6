"""Fréchet distance against scipy and closed forms; statistics npz caching."""

import os

import numpy as np
import pytest
import scipy.linalg

from elm_jax.evaluation import fid


def _random_cov(rng, d, n=None):
  """A random covariance: from n samples (rank min(n - 1, d)) or a full-rank Wishart."""
  x = rng.normal(size=(n or 3 * d, d)) @ rng.normal(size=(d, d))
  return np.cov(x, rowvar=False), x.mean(0)


def _scipy_fid(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("d", [2, 16, 64])
def test_matches_scipy_sqrtm_on_random_covariances(d):
  rng = np.random.default_rng(d)
  for _ in range(3):
    s1, mu1 = _random_cov(rng, d)
    s2, mu2 = _random_cov(rng, d)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    assert ours > 0


def test_diagonal_closed_form():
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  expected = 5.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_singular_covariances_stay_real_and_zero_on_self():
  rng = np.random.default_rng(0)
  s, mu = _random_cov(rng, 32, n=10)  # rank 9 of 32
  assert np.linalg.matrix_rank(s) == 9
  # sqrt of round-off-sized eigenvalues: zero up to ~1e-7 of the trace.
  assert fid.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-7 * np.trace(s))
  s2, mu2 = _random_cov(rng, 32, n=12)
  value = fid.frechet_distance(mu, s, mu2, s2)
  assert np.isfinite(value) and value > 0


def test_moments_match_numpy_and_need_two_samples():
  x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
  mu, sigma = fid.moments(x)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
  with pytest.raises(ValueError, match="N >= 2"):
    fid.moments(x[:1])


def test_mismatched_or_nonfinite_statistics_are_rejected():
  with pytest.raises(ValueError, match="same feature layer"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  bad = np.eye(3)
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    fid.frechet_distance(np.zeros(3), bad, np.zeros(3), np.eye(3))


def test_stats_round_trip_and_atomic_write(tmp_path):
  rng = np.random.default_rng(2)
  pool, spatial = rng.normal(size=(20, 6)), rng.normal(size=(20, 5))
  stats = fid.stats_from_features(pool, spatial, "unit:test:20")
  path = str(tmp_path / "ref.npz")
  fid.save_stats(path, stats)
  back = fid.load_stats(path)
  assert str(back["source"]) == "unit:test:20"
  np.testing.assert_array_equal(back["sigma_s"], stats["sigma_s"])
  np.testing.assert_array_equal(back["features"], pool.astype(np.float32))
  assert fid.is_stats_file(path)

  class Exploding:
    def __array__(self, *a, **k):
      raise RuntimeError("disk full")

  before = open(path, "rb").read()
  with pytest.raises(RuntimeError, match="disk full"):
    fid.save_stats(path, {**stats, "mu": Exploding()})
  assert open(path, "rb").read() == before  # the earlier file survives
  assert os.listdir(tmp_path) == ["ref.npz"]  # no temp file left behind


def test_load_stats_names_missing_keys(tmp_path):
  path = str(tmp_path / "samples.npz")
  np.savez(path, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
  assert not fid.is_stats_file(path)
  with pytest.raises(ValueError, match=r"mu.*missing"):
    fid.load_stats(path)
  with pytest.raises(FileNotFoundError):
    fid.load_stats(str(tmp_path / "nope.npz"))


@pytest.mark.parametrize("n", [5, 40])
def test_low_rank_path_from_features_equals_the_full_computation(n):
  rng = np.random.default_rng(n)
  d = 24
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
  y = rng.normal(size=(3 * d, d)) @ rng.normal(size=(d, d))
  (mu1, s1), (mu2, s2) = fid.moments(x), fid.moments(y)
  # Independent exact value: tr((S1 S2)^(1/2)) is the nuclear norm of A B^T / sqrt((n1-1)(n2-1))
  # for centred feature matrices A, B (the nonzero spectra of S1 S2 and A B^T B A^T agree).
  a, b = x - x.mean(0), y - y.mean(0)
  nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n - 1) * (3 * d - 1))
  exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * nuclear
  assert fid.frechet_distance(mu1, s1, mu2, s2, features1=x) == pytest.approx(exact, rel=1e-10)
  # The D x D path loses ~1e-8 relative to square roots of round-off when S1 is singular.
  full = fid.frechet_distance(mu1, s1, mu2, s2)
  assert full == pytest.approx(exact, rel=1e-10 if n > d else 1e-7)
  if n > d:  # full rank: scipy's sqrtm is well defined too
    assert full == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-9)
