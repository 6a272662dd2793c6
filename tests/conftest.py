"""Pytest setup: 8 simulated CPU devices and cheap compiles, configured before jax is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
  """A configs/bae.py:tiny checkpoint (random weights, 8-bit codes, 16x16 grid)."""
  import json
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  from config_loading import get_config
  from elm_jax import checkpointing, sharding
  from elm_jax.train.bae import TokenizerStage

  config = get_config("bae", "tiny")
  config.loss.gan_weight = 0.0
  state = sharding.unbox(jax.jit(TokenizerStage(config).init)(jax.random.PRNGKey(0)))
  workdir = str(tmp_path_factory.mktemp("tokenizer"))
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(1, state, None, json.loads(config.to_json_best_effort()))
  ckpt.close()
  return workdir
