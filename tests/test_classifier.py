"""The class-accuracy CNN: it learns Fashion-MNIST, is cached, and is reused."""

import os

import numpy as np
import pytest

from elm_jax.data import sources, transforms
from elm_jax.evaluation import classifier


def _fmnist(split, n):
  images, labels = sources.load_fashion_mnist("", split)
  rgb = np.stack([transforms.GrayToRGB(32).map({"image": images[i], "label": 0})["image"]
                  for i in range(n)])
  return rgb, labels[:n].astype(np.int32)


@pytest.fixture(scope="module")
def data():
  return {"train": _fmnist("train", 2048), "test": _fmnist("test", 500)}


SETTINGS = classifier.TrainSettings(epochs=2, batch_size=64, learning_rate=2e-3)


@pytest.mark.slow
def test_learns_fashion_mnist_and_is_trained_once(tmp_path, data):
  path = str(tmp_path / "cache" / "clf.npz")
  clf, trained = classifier.load_or_train(path, data, 10, SETTINGS)
  assert trained and os.path.isfile(path)
  # 64 steps on 2,048 images: far from its full-data accuracy, far above chance.
  assert clf.info["test_accuracy"] > 0.6
  assert clf.info["steps"] == 2 * (2048 // 64)
  test_images, test_labels = data["test"]
  assert clf.accuracy(test_images, test_labels) == clf.info["test_accuracy"]

  again, trained = classifier.load_or_train(path, data, 10, SETTINGS)
  assert not trained
  np.testing.assert_array_equal(again.predict(test_images), clf.predict(test_images))
  assert again.info == clf.info

  # Other settings: trained again and the cache replaced.
  other = classifier.TrainSettings(epochs=1, batch_size=64, max_steps=3)
  third, trained = classifier.load_or_train(path, data, 10, other)
  assert trained and third.info["steps"] == 3
  assert classifier.load(path).info["steps"] == 3


def test_a_broken_cache_file_is_named(tmp_path):
  path = tmp_path / "clf.npz"
  path.write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="clf.npz is not a classifier file"):
    classifier.load(str(path))


def test_fid_caches_are_named_by_the_inception_file(tmp_path):
  import ml_collections
  from elm_jax.evaluation import sample_scores
  data = ml_collections.ConfigDict(dict(source="fashion_mnist", name="", path="",
                                        eval_split="test", image_size=32))
  a, b = tmp_path / "a.npz", tmp_path / "b.npz"
  a.write_bytes(b"one network")
  b.write_bytes(b"another network")
  paths = lambda f, n=1000: sample_scores.fid_cache_paths(str(tmp_path), data, n, str(f))
  assert paths(a) == paths(a)
  assert not set(paths(a)) & set(paths(b))
  assert not set(paths(a)) & set(paths(a, n=500))
  assert all(p.startswith(str(tmp_path)) for p in paths(a))
