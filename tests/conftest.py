"""Pytest setup: 8 simulated CPU devices and cheap compiles, configured before jax is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)


import pytest  # noqa: E402

from config_loading import get_config  # noqa: E402
from random_runs import save_random_run, save_tiny_generator  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
  """A configs/bae.py:tiny checkpoint (random weights, 8-bit codes, 16x16 grid)."""
  config = get_config("bae", "tiny")
  config.loss.gan_weight = 0.0
  return save_random_run(config, str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="session")
def tiny_ar_dir(tiny_tokenizer_dir, tmp_path_factory):
  """A configs/ar.py:tiny checkpoint (random weights) over tiny_tokenizer_dir."""
  return save_tiny_generator("ar", tiny_tokenizer_dir,
                             str(tmp_path_factory.mktemp("ar")))


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
  """He-initialised kernels, unit batch-norm statistics: a random but non-degenerate network."""
  import numpy as np
  from elm_jax.evaluation import convert_inception, inception
  rng = np.random.default_rng(0)

  def leaf(path, shape):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      fan_in = np.prod(shape.shape[:3])
      return rng.normal(0, np.sqrt(2.0 / fan_in), shape.shape).astype(np.float32)
    if "var" in name:
      return np.ones(shape.shape, np.float32)
    return np.zeros(shape.shape, np.float32)
  params = jax.tree_util.tree_map_with_path(leaf, inception.expected_params())
  path = str(tmp_path_factory.mktemp("inception") / "random.npz")
  convert_inception.write_npz(params, path)
  return path
