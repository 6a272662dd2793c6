"""Pre-tokenized datasets: `elm_jax.tokenize` output and its loader."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from config_loading import get_config
from elm_jax import sharding
from elm_jax.data import tokenizing
from elm_jax.data import token_pipeline
from elm_jax.train import frozen_tokenizer, loop
from elm_jax.train.ar import ARStage


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for c in ("a", "b"):
    os.makedirs(root / "train" / c)
    for i in range(3):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
          root / "train" / c / f"{i}.png")
  return str(root)


@pytest.mark.slow
def test_tokenize_split_stores_quantised_probabilities(tmp_path, image_folder,
                                                       tiny_tokenizer_dir):
  tok = frozen_tokenizer.load(tiny_tokenizer_dir)
  data = dict(source="folder", path=image_folder, name="", image_size=32,
              num_classes=2)
  n = tokenizing.tokenize_split(tok, data, "train", str(tmp_path), 4, flips=True)
  assert n == 6 and not os.path.exists(tmp_path / "train.partial")
  probs = np.load(tmp_path / "train" / "probs.npy")
  flipped = np.load(tmp_path / "train" / "probs_flipped.npy")
  labels = np.load(tmp_path / "train" / "labels.npy")
  assert probs.shape == (6, 16, 16, 8) and probs.dtype == np.uint8
  assert labels.tolist() == [0, 0, 0, 1, 1, 1]
  image = np.asarray(Image.open(os.path.join(image_folder, "train", "b", "1.png")))
  direct = frozen_tokenizer.probabilities(tok.model, tok.params, image[None])
  # jit and eager may round a probability to neighbouring uint8 levels.
  np.testing.assert_allclose(probs[4].astype(int),
                             np.asarray(tokenizing.quantize(direct)[0]).astype(int), atol=1)
  direct_flip = frozen_tokenizer.probabilities(tok.model, tok.params,
                                               image[None, :, ::-1])
  np.testing.assert_allclose(flipped[4].astype(int),
                             np.asarray(tokenizing.quantize(direct_flip)[0]).astype(int), atol=1)
  assert not np.array_equal(probs[4], flipped[4])
  with pytest.raises(FileExistsError, match="exists"):
    tokenizing.tokenize_split(tok, data, "train", str(tmp_path), 4, flips=True)


@pytest.mark.slow
def test_encoder_splits_each_batch_over_all_devices(tiny_tokenizer_dir):
  tok = frozen_tokenizer.load(tiny_tokenizer_dir)
  encode, params, batch = tokenizing.sharded_encoder(tok, 12)
  assert jax.local_device_count() == 8 and batch == 16  # rounded up to 8 devices
  images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), np.uint8)
  out = encode(params, images)
  assert {s.data.shape for s in out.addressable_shards} == {(2, 16, 16, 8)}
  assert len(out.sharding.device_set) == 8
  one = frozen_tokenizer.probabilities(tok.model, tok.params, images[:2])
  np.testing.assert_allclose(np.asarray(out[:2]).astype(int),
                             np.asarray(tokenizing.quantize(one)).astype(int), atol=1)


@pytest.mark.slow
def test_generator_trains_from_tokens(tmp_path, image_folder, tiny_tokenizer_dir):
  tok = frozen_tokenizer.load(tiny_tokenizer_dir)
  data = dict(source="folder", path=image_folder, name="", image_size=32,
              num_classes=2)
  out = str(tmp_path / "tokens")
  tokenizing.tokenize_split(tok, data, "train", out, 4, flips=True)
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump({"bits": 8, "grid_size": 16}, f)
  loader = token_pipeline.make_loader(out, "train", 4, True, seed=0)
  batch = next(iter(loader))
  assert batch["probs"].shape == (4, 16, 16, 8) and batch["probs"].dtype == np.uint8

  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.data.tokens = out
  config.data.num_classes = 2
  config.data.train_split = "train"
  config.batch_size, config.total_steps = 4, 2
  config.eval_every = 100
  config.mesh = dict(data=1, fsdp=1, tensor=1)
  stage = ARStage(config)
  assert stage.frozen() == {}
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    _, shardings, init = loop.sharded_state(stage, mesh, sharding.DEFAULT_RULES,
                                            jax.random.PRNGKey(0))
    state, m = loop.jit_train_step(stage, shardings)(
        init(jax.random.PRNGKey(0)), sharding.global_batch(batch, mesh), {})
  np.testing.assert_allclose(float(m["loss"]), np.log(16), rtol=1e-5)


def test_missing_token_split_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="elm_jax.tokenize"):
    token_pipeline.TokenSource(str(tmp_path), "train")


@pytest.mark.slow
def test_an_output_directory_fills_over_runs_without_mixing(tmp_path,
                                                             tiny_tokenizer_dir):
  """Splits added by later runs join meta.json; a split already there, or
  other settings, are refused before anything is written."""
  rng = np.random.default_rng(1)
  for split in ("train", "test"):
    for c in ("a", "b"):
      os.makedirs(tmp_path / "images" / split / c)
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
          tmp_path / "images" / split / c / "0.png")
  data = dict(source="folder", path=str(tmp_path / "images"), name="")
  out = str(tmp_path / "tokens")
  meta_path = os.path.join(out, "meta.json")

  def run(splits, flips=True):
    return tokenizing.tokenize(tiny_tokenizer_dir, out, splits, 4, flips, data)

  assert run(["train"])["splits"] == {"train": 2}
  written = open(meta_path).read()
  with pytest.raises(FileExistsError, match="tokens/train exists"):
    run(["test", "train"])
  with pytest.raises(ValueError, match="flips: True there, False now"):
    run(["test"], flips=False)
  assert sorted(os.listdir(out)) == ["meta.json", "train"]
  assert open(meta_path).read() == written
  meta = run(["test"])
  assert meta["splits"] == {"train": 2, "test": 2}
  assert token_pipeline.read_meta(out) == meta
  assert meta["tokenizer"] == os.path.abspath(tiny_tokenizer_dir)
  assert len(token_pipeline.TokenSource(out, "test")) == 2


@pytest.mark.slow
def test_tokens_from_another_tokenizer_step_are_refused(tmp_path, tiny_tokenizer_dir):
  out = tmp_path / "tokens"
  out.mkdir()
  meta = dict(tokenizer=os.path.abspath(tiny_tokenizer_dir), step=1, bits=8,
              grid_size=16)
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tiny_tokenizer_dir
  config.data.tokens = str(out)
  for changed, match in ((dict(step=7), "at step 7, but .* is at step 1"),
                         (dict(tokenizer=str(tmp_path)), "in another directory")):
    (out / "meta.json").write_text(json.dumps({**meta, **changed}))
    with pytest.raises(ValueError, match=match):
      ARStage(config)
  (out / "meta.json").write_text(json.dumps(meta))
  assert ARStage(config).tokens_dir == str(out)
  # A tokenizer directory that moved since: accepted (same step).
  (out / "meta.json").write_text(json.dumps({**meta, "tokenizer": "/gone/bae"}))
  assert ARStage(config).tokens_dir == str(out)


def test_rerun_after_a_kill_names_the_missing_splits_and_logs_progress(
    tmp_path, image_folder, tiny_tokenizer_dir, caplog):
  """A run killed after train: the same command is refused, and the message
  says how to add only what is missing instead of deleting finished work."""
  import logging
  out = str(tmp_path / "tokens")
  data = dict(source="folder", path=image_folder, name="")
  caplog.set_level(logging.INFO, logger="absl")
  tokenizing.tokenize(tiny_tokenizer_dir, out, ["train"], 4, True, data)
  # Progress while it runs; the batch of 4 is rounded up to the 8 devices.
  assert "train: 6 of 6 examples" in caplog.text
  assert "--batch_size=4 rounded up to 8" in caplog.text
  with pytest.raises(FileExistsError, match="--splits=test to add only"):
    tokenizing.tokenize(tiny_tokenizer_dir, out, ["train", "test"], 4, True, data)
