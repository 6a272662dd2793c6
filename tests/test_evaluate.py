"""`elm_jax.evaluate` end to end on a few Fashion-MNIST images with a random-weight Inception.

Random weights keep the test independent of torch (the real weights are
checked in test_inception.py); what is tested here is the command: sample and
dataset batches, the device split, statistics caching, the scores, the files.
"""

import json
import os
import types

import jax
import numpy as np
import pytest

from elm_jax import metrics, sharding
from elm_jax.evaluation import run as evaluate
from elm_jax.data import sources, transforms
from elm_jax.evaluation import fid, inception
from elm_jax.train import frozen_tokenizer
from elm_jax.train.bae import TokenizerStage

N = 8


@pytest.fixture(scope="module")
def optimised():  # Inception runs twice as fast optimised and compiles about as fast.
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def _fmnist(n):
  images, _ = sources.load_fashion_mnist("", "test")
  return np.stack([transforms.GrayToRGB(32).map({"image": images[i], "label": 0})["image"]
                   for i in range(n)])


@pytest.mark.slow
def test_scores_cache_outputs_and_reconstructions(tmp_path, random_inception, optimised,
                                                  tiny_tokenizer_dir):
  images = _fmnist(N)
  same = str(tmp_path / "same.npz")
  np.savez(same, images)
  cache = str(tmp_path / "stats" / "fmnist_test_8.npz")
  out = str(tmp_path / "eval_same")
  common = dict(reference="fashion_mnist:test", inception_path=random_inception,
                reference_cache=cache, num_reference=N, batch_size=N)
  got = evaluate.evaluate(same, out_dir=out, **common)["metrics"]
  # The samples are the reference images themselves.
  assert abs(got["fid"]) < 1e-3 and abs(got["sfid"]) < 1e-3
  assert got["precision"] == 1.0 and got["recall"] == 1.0
  assert got["num_samples"] == N and got["num_reference"] == N
  stats = fid.load_stats(cache)
  assert str(stats["source"]) == "fashion_mnist:test:n=8:size=32"
  assert stats["features"].shape == (N, 2048) and stats["sigma_s"].shape == (2023, 2023)
  saved = json.load(open(os.path.join(out, evaluate.RESULT_FILE)))
  assert saved["metrics"] == got
  assert metrics.read_jsonl(out)[0]["eval/fid"] == pytest.approx(got["fid"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))

  # rFID of a (random) tokenizer, reusing the cached reference ...
  mtime = os.path.getmtime(cache)
  got = evaluate.evaluate("", reconstruct=tiny_tokenizer_dir,
                          out_dir=str(tmp_path / "rfid"), **common)["metrics"]
  assert got["fid"] > 1.0 and got["num_samples"] == N
  assert os.path.getmtime(cache) == mtime
  # ... equals the tokenizer stage's own evaluation with config.eval.inception_params set.
  tok = frozen_tokenizer.load(tiny_tokenizer_dir)
  config = tok.config
  config.eval.update(batch_size=N, max_batches=1, inception_params=random_inception,
                     lpips=False)
  stage = TokenizerStage(config)
  mesh = sharding.make_mesh(config.mesh)
  frozen = jax.device_put(stage.frozen(), sharding.replicated(mesh))
  params = jax.device_put(tok.params, sharding.replicated(mesh))
  scalars, _ = stage.evaluate(types.SimpleNamespace(ema_params=params), frozen,
                              stage.eval_batches(full=False), mesh)
  assert scalars["examples"] == N
  assert scalars["rfid"] == pytest.approx(got["fid"], rel=1e-4)

  # A cache made from a different reference is refused, not silently used.
  with pytest.raises(ValueError, match="n=4"):
    evaluate.evaluate(same, out_dir=out, **{**common, "num_reference": 4})


def test_array_batches_pad_the_last_batch_and_mask_it():
  images = np.arange(5)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  batches = list(evaluate.array_batches(images.astype(np.uint8), 4))
  assert [b.shape[0] for b, _ in batches] == [4, 4]
  np.testing.assert_array_equal(batches[1][1], [1, 0, 0, 0])
  np.testing.assert_array_equal(batches[1][0][0], images[4])


def test_bad_inputs_fail_with_clear_messages(tmp_path, random_inception):
  floats = str(tmp_path / "floats.npz")
  np.savez(floats, np.zeros((4, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
    evaluate.load_images(floats)
  np.savez(str(tmp_path / "nokey.npz"), images=np.zeros((4, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="no arr_0"):
    evaluate.load_images(str(tmp_path / "nokey.npz"))
  with pytest.raises(ValueError, match="SOURCE:SPLIT"):
    evaluate.parse_dataset("imagenet")
  with pytest.raises(ValueError, match="exactly one"):
    evaluate.evaluate("", "fashion_mnist:test", random_inception, str(tmp_path))
  with pytest.raises(ValueError, match="convert_inception"):
    evaluate.evaluate(floats, "fashion_mnist:test", "", str(tmp_path))


def test_unreadable_npz_files_are_named(tmp_path):
  garbage, truncated, objects = (str(tmp_path / n) for n in ("g.npz", "t.npz", "o.npz"))
  with open(garbage, "wb") as f:
    f.write(b"garbage")
  np.savez(truncated, np.zeros((4, 8, 8, 3), np.uint8))
  with open(truncated, "r+b") as f:
    f.truncate(os.path.getsize(truncated) // 2)
  np.savez(objects, np.array([np.zeros(2), np.zeros(3)], dtype=object))
  for path in (garbage, truncated):
    with pytest.raises(ValueError, match=f"--samples={path} is not a readable .npz"):
      evaluate.load_images(path, what="--samples")
    with pytest.raises(ValueError, match="not a readable .npz"):
      fid.load_stats(path)
    with pytest.raises(ValueError, match="not a readable .npz"):
      inception.load_params(path)
  with pytest.raises(ValueError, match="arr_0 cannot be read"):
    evaluate.load_images(objects)
  with pytest.raises(FileNotFoundError, match="--samples=.*missing.npz does not exist"):
    fid.is_stats_file(str(tmp_path / "missing.npz"), "--samples")


def test_reference_stats_path_is_checked_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="--reference_stats=.*stats.json must end in .npz"):
    evaluate.evaluate(str(tmp_path / "s.npz"), "fashion_mnist:test",
                      str(tmp_path / "no_inception.npz"), str(tmp_path / "out"),
                      reference_cache=str(tmp_path / "stats.json"))
