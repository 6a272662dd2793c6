"""AR / MLM stages: masking schedule, sharded steps, smoke runs via elm_jax.main."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from config_loading import get_config
from elm_jax import sharding
from elm_jax.metrics import read_jsonl
from elm_jax.train import loop, mlm
from elm_jax.train.ar import ARStage
from main_command import run


def test_mlm_masking_schedule():
  counts = [int(mlm.masked_count(s, 256, 10)) for s in range(10)]
  assert counts[0] == 256
  assert counts == sorted(counts, reverse=True) and counts[-1] >= 1
  assert counts[5] == int(np.floor(256 * np.cos(np.pi / 2 * 0.5)))
  assert int(mlm.masked_count(9999, 256, 10000)) == 1  # at least one
  mask = mlm.random_mask(jax.random.key(0), 4, 64, 8)
  per_row = np.asarray(mask.sum(-1))
  assert (per_row == per_row[0]).all() and 1 <= per_row[0] <= 64
  assert not (np.asarray(mask)[0] == np.asarray(mask)[1]).all()


def ar_config(tokenizer_dir, **mesh):
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tokenizer_dir
  config.mesh = dict(data=1, fsdp=1, tensor=1, **mesh) if mesh else config.mesh
  return config


def test_split_must_match_tokenizer_bits(tiny_tokenizer_dir):
  config = get_config("ar", "tiny,split=2-8")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  with pytest.raises(ValueError, match="needs 2 x 8 = 16 bits.*makes 8-bit"):
    ARStage(config)


@pytest.mark.slow
def test_patch_makes_one_position_of_each_block_of_cells(tiny_tokenizer_dir):
  """patch=2 over the tiny tokenizer's 16x16 grid of 8-bit codes: 8x8
  positions of 4 sub-codes (one per cell), trained from and decoded to the
  same images as one position per cell."""
  from elm_jax.sampling.images import decode_tokens
  config = get_config("ar", "tiny,split=4-8")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.patch = 2
  stage = ARStage(config)
  assert (stage.model.grid_size, stage.model.bits, stage.length) == (8, 32, 64)
  per_cell = get_config("ar", "tiny,split=1-8")
  per_cell.tokenizer.checkpoint = tiny_tokenizer_dir
  cells = ARStage(per_cell)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
           "label": np.array([1, 7], np.int32)}
  ids = stage.tokenize(stage.frozen(), batch, None)
  assert ids.shape == (2, 64, 4)
  cell_ids = np.asarray(cells.tokenize(cells.frozen(), batch, None))
  assert cell_ids.shape == (2, 256, 1)
  # Position (0, 0) holds cells (0, 0), (0, 1), (1, 0), (1, 1) of the 16x16 grid.
  np.testing.assert_array_equal(ids[:, 0], cell_ids[:, [0, 1, 16, 17], 0])
  tok = stage.tokenizer
  np.testing.assert_array_equal(decode_tokens(tok.model, tok.params, ids, patch=2),
                                decode_tokens(tok.model, tok.params, cell_ids))
  state = sharding.unbox(jax.jit(stage.init)(jax.random.PRNGKey(0)))
  _, m = jax.jit(stage.train_step)(state, batch, stage.frozen())
  # Zero-initialised heads: the first loss is log V exactly (V = 256).
  np.testing.assert_allclose(float(m["loss"]), np.log(256), rtol=1e-5)


def test_patch_must_fit_the_grid_and_the_split(tiny_tokenizer_dir):
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.patch = 2
  with pytest.raises(ValueError, match=r"needs 2 x 4 = 8 bits.*8-bit codes, 2x2 "
                     r"of them \(32 bits\) per position at patch=2.*4-8"):
    ARStage(config)
  config.patch, config.split = 3, "9-8"
  with pytest.raises(ValueError, match="patch=3 does not divide the tokenizer's 16x16"):
    ARStage(config)


@pytest.mark.parametrize("mesh_axes,qkv_spec,qkv_shard", [
    ({"data": 2, "tensor": 4}, P(None, "tensor"), (128, 96)),
    ({"fsdp": 8}, P("fsdp", None), (16, 384)),
])
@pytest.mark.slow
def test_sharded_ar_step(tiny_tokenizer_dir, mesh_axes, qkv_spec, qkv_shard):
  axes = {"data": 1, "fsdp": 1, "tensor": 1, **mesh_axes}
  mesh = sharding.make_mesh(axes)
  stage = ARStage(ar_config(tiny_tokenizer_dir))
  rules = sharding.DEFAULT_RULES
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
           "label": rng.integers(0, 10, (8,), dtype=np.int32)}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, state_sharding, init = loop.sharded_state(stage, mesh, rules,
                                                 jax.random.PRNGKey(0))
    state = init(jax.random.PRNGKey(0))
    step = loop.jit_train_step(stage, state_sharding)
    frozen = jax.device_put(stage.frozen(), sharding.replicated(mesh))
    state, m = step(state, sharding.global_batch(batch, mesh), frozen)
  qkv = state.params["layers_0"]["attention"]["qkv"]["kernel"]
  spec = tuple(a if mesh.shape.get(a, 1) > 1 else None for a in qkv.sharding.spec)
  assert P(*spec) == qkv_spec
  assert qkv.addressable_shards[0].data.shape == qkv_shard
  assert np.isfinite(float(m["loss"]))
  # Zero-initialised heads: the first loss is log V exactly (V = 16).
  np.testing.assert_allclose(float(m["loss"]), np.log(16), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ar", "mlm"])
def test_smoke_run_through_main(tmp_path, tiny_tokenizer_dir, stage):
  workdir = str(tmp_path / stage)
  run(workdir, f"--config.tokenizer.checkpoint={tiny_tokenizer_dir}",
      config=f"configs/{stage}.py:tiny,split=2-4")
  rows = read_jsonl(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  assert all(np.isfinite(r["train/loss"]) for r in train)
  assert any("train/tokens_per_sec" in r for r in rows)
  assert any("eval/loss" in r for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("stage_class", [ARStage, mlm.MLMStage])
def test_evaluation_samples_a_grid_for_tensorboard(tiny_tokenizer_dir, stage_class):
  """eval.sample_grid: rows of classes, a fixed seed (the same grid from
  the same weights), on a sharded (fsdp 8) state."""
  config = ar_config(tiny_tokenizer_dir)
  if stage_class is mlm.MLMStage:
    config = get_config("mlm", "tiny,split=2-4")
    config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.eval.sample_grid.update(classes=3, per_class=2)
  stage = stage_class(config)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    _, _, init = loop.sharded_state(stage, mesh, sharding.DEFAULT_RULES,
                                    jax.random.PRNGKey(0))
    state = init(jax.random.PRNGKey(0))
    frozen = jax.device_put(stage.frozen(), sharding.replicated(mesh))
    scalars, images = stage.evaluate(state, frozen, stage.eval_batches(False), mesh)
    again = stage.sample_grid(state.ema_params, frozen["tokenizer"], mesh)
  assert np.isfinite(scalars["loss"])
  grid = images["samples"]
  assert grid.shape == (1, 3 * 34 + 2, 2 * 34 + 2, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid, again)
  assert grid[0, 2:34, 2:34].std() > 0
