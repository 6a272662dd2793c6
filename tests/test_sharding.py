"""Logical-axis shardings and the sharded tokenizer train step on 2x4 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from config_loading import get_config
from elm_jax import sharding
from elm_jax.train import loop
from elm_jax.train.bae import TokenizerStage


def test_logical_names_map_to_mesh_axes_and_fall_back_when_indivisible():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  tree = {"a": nn.Partitioned(jax.ShapeDtypeStruct((3, 3, 32, 64), jnp.float32),
                              (None, None, "conv_in", "conv_out")),
          "b": nn.Partitioned(jax.ShapeDtypeStruct((3, 3, 64, 3), jnp.float32),
                              (None, None, "conv_in", "conv_out")),
          "c": jax.ShapeDtypeStruct((7,), jnp.float32)}
  out = sharding.tree_shardings(tree, mesh)
  assert out["a"].spec == P(None, None, None, "fsdp")
  assert out["b"].spec == P(None, None, None, None)  # 3 channels: replicated
  assert out["c"].spec == P()


def _tiny_stage():
  config = get_config("bae", "tiny")
  config.loss.perceptual_weight = 0.0  # keep the compile small
  config.batch_size = 8
  return TokenizerStage(config)


def _run_steps(mesh, stage, batch, n=2):
  rules = sharding.DEFAULT_RULES
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, state_sharding, init = loop.sharded_state(stage, mesh, rules,
                                                 jax.random.PRNGKey(0))
    state = init(jax.random.PRNGKey(0))
    step = loop.jit_train_step(stage, state_sharding)
    losses = []
    for _ in range(n):
      state, m = step(state, sharding.global_batch(batch, mesh), {})
      losses.append(float(m["loss/total"]))
  return state, state_sharding, losses


@pytest.mark.slow
def test_sharded_train_step_on_2x4_mesh_matches_one_device():
  stage = _tiny_stage()
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
           "label": rng.integers(0, 10, (8,), dtype=np.int32)}
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  state, state_sharding, losses = _run_steps(mesh, stage, batch)

  kernel = state.params["ae"]["encoder"]["down1_res0"]["conv1"]["kernel"]
  assert kernel.shape == (3, 3, 32, 64)
  assert kernel.sharding.spec == P(None, None, None, "fsdp")
  assert kernel.addressable_shards[0].data.shape == (3, 3, 32, 16)
  # Adam moments follow their parameters; the output state keeps its layout.
  for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sharding)):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
  conv_in = state.params["ae"]["encoder"]["conv_in"]["kernel"]
  assert conv_in.sharding.spec == P(None, None, None, "fsdp")  # 32 outputs

  single = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1},
                              devices=jax.devices()[:1])
  _, _, single_losses = _run_steps(single, stage, batch)
  np.testing.assert_allclose(losses, single_losses, rtol=2e-4)
  assert losses[1] != losses[0]
