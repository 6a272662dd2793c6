"""PSNR / SSIM and the code-statistics accumulators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax.evaluation import recon


def _images(shape=(2, 24, 24, 3), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def test_psnr_known_mse():
  x = jnp.full((2, 8, 8, 3), 0.3)
  out = recon.psnr(x, x + 0.1)  # mse 0.01 -> 20 dB
  assert out.shape == (2,)
  np.testing.assert_allclose(np.asarray(out), 20.0, atol=1e-4)
  y = x.at[1].add(0.01)         # per-image: 40 dB for the second image
  np.testing.assert_allclose(float(recon.psnr(x, y)[1]), 40.0, atol=1e-3)
  assert np.isinf(float(recon.psnr(x, x)[0]))


def test_ssim_properties():
  x = _images()
  np.testing.assert_allclose(np.asarray(recon.ssim(x, x)), 1.0, atol=1e-5)
  noise = jax.random.normal(jax.random.key(1), x.shape)
  s_small = recon.ssim(x, jnp.clip(x + 0.05 * noise, 0, 1))
  s_large = recon.ssim(x, jnp.clip(x + 0.3 * noise, 0, 1))
  assert s_small.shape == (2,)
  assert np.all(np.asarray(s_small) < 1.0)
  assert np.all(np.asarray(s_large) < np.asarray(s_small))
  # symmetric: ssim(a, b) == ssim(b, a) per image
  np.testing.assert_allclose(np.asarray(recon.ssim(x, x[::-1])),
                             np.asarray(recon.ssim(x[::-1], x)), rtol=1e-6)
  assert recon.ssim(jax.jit(lambda a: a)(x), x).shape == (2,)
  with pytest.raises(ValueError, match='11x11'):
    recon.ssim(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match='same shape'):
    recon.ssim(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 1)))


def test_ssim_matches_skimage():
  metrics = pytest.importorskip('skimage.metrics')
  x = np.asarray(_images((2, 32, 28, 3), seed=2))
  y = np.clip(x + 0.1 * np.random.default_rng(0).normal(size=x.shape), 0, 1).astype(np.float32)
  ours = np.asarray(jax.jit(recon.ssim)(x, y))
  for i in range(2):
    ref = metrics.structural_similarity(
        x[i], y[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, channel_axis=-1)
    np.testing.assert_allclose(ours[i], ref, atol=1e-4)
    np.testing.assert_allclose(float(recon.psnr(x[i:i + 1], y[i:i + 1])[0]),
                               metrics.peak_signal_noise_ratio(x[i], y[i], data_range=1.0),
                               atol=1e-3)


def test_bit_stats_usage_and_entropy():
  # K = 3 bits: bit 0 constant 1, bit 1 balanced, bit 2 one-in-four
  bits = np.zeros((2, 2, 2, 3), np.float32)  # [B, h, w, K], 8 positions
  bits[..., 0] = 1
  bits[0, ..., 1] = 1
  bits[0, 0, 0, 2] = 1
  bits[1, 1, 1, 2] = 1
  stats = recon.BitStats.from_bits(jnp.asarray(bits))
  assert int(stats.total) == 8
  np.testing.assert_array_equal(np.asarray(stats.ones), [8, 4, 2])
  np.testing.assert_array_equal(np.asarray(stats.used()), [False, True, True])
  np.testing.assert_allclose(float(stats.usage()), 2 / 3)
  h = np.asarray(stats.entropy())
  p = 0.25
  np.testing.assert_allclose(h, [0.0, 1.0, -p * np.log2(p) - (1 - p) * np.log2(1 - p)],
                             atol=1e-6)
  np.testing.assert_allclose(float(stats.mean_entropy()), h.mean(), rtol=1e-6)


def test_bit_stats_merge_mask_and_jit():
  rng = np.random.default_rng(0)
  bits = rng.integers(0, 2, size=(6, 2, 2, 4)).astype(np.float32)
  bits[..., 3] = 0  # a dead bit
  whole = recon.BitStats.from_bits(jnp.asarray(bits))
  acc = recon.BitStats.empty(4)
  step = jax.jit(lambda s, b: s.merge(recon.BitStats.from_bits(b)))
  for i in range(0, 6, 2):
    acc = step(acc, jnp.asarray(bits[i:i + 2]))
  np.testing.assert_array_equal(np.asarray(acc.ones), np.asarray(whole.ones))
  assert int(acc.total) == int(whole.total) == 24
  assert float(acc.usage()) == 0.75 and float(acc.entropy()[3]) == 0.0
  # masked (padded) examples are not counted
  padded = np.concatenate([bits[:2], np.ones((2, 2, 2, 4), np.float32)])
  masked = recon.BitStats.from_bits(jnp.asarray(padded), mask=jnp.array([1., 1., 0., 0.]))
  ref = recon.BitStats.from_bits(jnp.asarray(bits[:2]))
  np.testing.assert_array_equal(np.asarray(masked.ones), np.asarray(ref.ones))
  assert int(masked.total) == int(ref.total) == 8
  assert float(recon.BitStats.empty(3).usage()) == 0.0
  with pytest.raises(ValueError, match='mask'):
    recon.BitStats.from_bits(jnp.asarray(bits), mask=jnp.ones((5,)))


def test_code_stats():
  ids = jnp.array([[0, 1, 1], [3, 3, 3]], jnp.int32)
  np.testing.assert_allclose(float(recon.codebook_usage(ids, 8)), 3 / 8)
  stats = recon.CodeStats.from_ids(ids, 8, mask=jnp.array([1.0, 0.0]))
  np.testing.assert_array_equal(np.asarray(stats.counts), [1, 2, 0, 0, 0, 0, 0, 0])
  merged = stats.merge(recon.CodeStats.from_ids(jnp.arange(8).reshape(2, 4), 8))
  assert float(merged.usage()) == 1.0
  uniform = recon.CodeStats.from_ids(jnp.arange(16), 16)
  np.testing.assert_allclose(float(uniform.entropy()), 4.0, rtol=1e-6)
  assert float(recon.CodeStats.from_ids(jnp.zeros(5, jnp.int32), 16).entropy()) == 0.0
