"""Tests for elm_jax.data: Fashion-MNIST, image folders, tfds sources, sharding and resume."""

import gc
import gzip
import io
import logging
import os
import struct
import sys
import types
import zlib

from absl import flags
import grain
import numpy as np
from PIL import Image
import pytest

from elm_jax.data import pipeline
from elm_jax.data import sources
from elm_jax.data import transforms

FMNIST = sources.FASHION_MNIST_DIR
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST),
                                  reason="apt-get install dataset-fashion-mnist")


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_resumes(make):
  """3 batches, save the state, 2 more; a new iterator from the state repeats them."""
  it = iter(make())
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 2)
  it2 = iter(make())
  it2.set_state(state)
  _assert_batches_equal(_take(it2, 2), expected)
  return it, it2


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST.


@needs_fmnist
def test_fashion_mnist_counts():
  assert pipeline.num_examples("fashion_mnist", "", "", "train") == 60000
  assert pipeline.num_examples("fashion_mnist", "", "", "test") == 10000
  images, labels = sources.load_fashion_mnist("", "train")
  assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
  assert sorted(np.unique(labels)) == list(range(10))


@needs_fmnist
def test_fashion_mnist_train_batch():
  loader = pipeline.make_loader("fashion_mnist", "", "", "train", 32, 64, True, 0, 10)
  batch = next(iter(loader))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (64, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
  assert batch["label"].min() >= 0 and batch["label"].max() < 10
  img = batch["image"]
  assert img.max() > 100  # Real content, values span the uint8 range.
  for border in (img[:, :2], img[:, -2:], img[:, :, :2], img[:, :, -2:]):
    assert not border.any()  # 28 -> 32 zero padding, 2 px each side.
  assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()


@needs_fmnist
def test_fashion_mnist_eval_pass_covers_split():
  images, labels = sources.load_fashion_mnist("", "test")
  loader = pipeline.make_loader("fashion_mnist", "", "", "test", 32, 512, False, 0, 10)
  batches = list(iter(loader))
  assert len(batches) == 20  # ceil(10000 / 512)
  assert all(b["image"].shape == (512, 32, 32, 3) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.dtype == np.float32 and mask.sum() == 10000 and (mask[:10000] == 1).all()
  got = np.concatenate([b["label"] for b in batches])[:10000]
  np.testing.assert_array_equal(got, labels)  # One pass, in order.
  np.testing.assert_array_equal(batches[0]["image"][:, 2:30, 2:30, 0], images[:512])


def test_fashion_mnist_other_sizes():
  img = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
  assert transforms.gray_to_rgb_sized(img, 28).shape == (28, 28, 3)
  np.testing.assert_array_equal(transforms.gray_to_rgb_sized(img, 36)[4:32, 4:32, 1], img)
  assert transforms.gray_to_rgb_sized(img, 16).shape == (16, 16, 3)


def _write_idx(path, array, magic):
  header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_custom_dir_and_corrupt_files(tmp_path):
  rng = np.random.default_rng(0)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (6, 28, 28)), 0x803)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(6) % 3, 0x801)
  loader = pipeline.make_loader("fashion_mnist", str(tmp_path), "", "test", 32, 4, False, 0, 3)
  batches = list(iter(loader))
  assert [b["mask"].sum() for b in batches] == [4, 2]
  with pytest.raises(ValueError, match="outside"):
    pipeline.make_loader("fashion_mnist", str(tmp_path), "", "test", 32, 4, False, 0, 2)

  bad = tmp_path / "bad"
  bad.mkdir()
  _write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.arange(6), 0x801)
  data = struct.pack(">IIII", 0x803, 6, 28, 28) + bytes(100)  # Header promises 6 images.
  with gzip.open(bad / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(data)
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*truncated"):
    pipeline.make_loader("fashion_mnist", str(bad), "", "test", 32, 4, False, 0, 10)
  raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
  (bad / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])  # Truncated gzip.
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
    pipeline.make_loader("fashion_mnist", str(bad), "", "test", 32, 4, False, 0, 10)
  _write_idx(bad / "t10k-images-idx3-ubyte.gz", np.zeros((6, 28, 28)), 0x801)  # Wrong magic.
  with pytest.raises(ValueError, match="magic"):
    pipeline.make_loader("fashion_mnist", str(bad), "", "test", 32, 4, False, 0, 10)
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    pipeline.make_loader("fashion_mnist", str(tmp_path / "nope"), "", "test", 32, 4, False, 0, 10)


# ---------------------------------------------------------------------------------------------
# Resume and sharding.


@needs_fmnist
def test_exact_resume_fashion_mnist_with_orbax(tmp_path):
  import orbax.checkpoint as ocp

  def make():
    return pipeline.make_loader("fashion_mnist", "", "", "train", 32, 16, True, 7, 10)

  it = iter(make())
  _take(it, 3)
  state = it.get_state()
  mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
  mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = _take(it, 2)

  it2 = iter(make())
  it2.set_state(state)
  _assert_batches_equal(_take(it2, 2), expected)

  it3 = iter(make())
  mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it3)))
  _assert_batches_equal(_take(it3, 2), expected)
  mngr.close()


@needs_fmnist
def test_train_sharding_and_batch_division():
  images, _ = sources.load_fashion_mnist("", "test")
  index_of = {}
  for i, img in enumerate(images):
    padded = transforms.gray_to_rgb_sized(img, 32)
    index_of.setdefault(padded.tobytes(), set()).add(i)
    index_of.setdefault(padded[:, ::-1].tobytes(), set()).add(i)
  whole = next(iter(pipeline.make_loader("fashion_mnist", "", "", "test", 32, 16, True, 0, 10)))
  for shard_index in (0, 1):
    opts = grain.sharding.ShardOptions(shard_index, 2)
    loader = pipeline.make_loader("fashion_mnist", "", "", "test", 32, 16, True, 0, 10,
                                  shard_options=opts)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 32, 32, 3)  # 16 / 2 processes.
    # Each process holds its slice of the one-process global batch (global_batches.py).
    rows = slice(8 * shard_index, 8 * (shard_index + 1))
    np.testing.assert_array_equal(batch["image"], whole["image"][rows])
    for img in batch["image"]:
      assert index_of[img.tobytes()]
  with pytest.raises(ValueError, match="process_count"):
    pipeline.make_loader("fashion_mnist", "", "", "test", 32, 10, True, 0, 10,
                         shard_options=grain.sharding.ShardOptions(0, 4))


def test_eval_sharding_pads_to_equal_batches(tmp_path):
  labels = np.arange(10) % 5
  images = np.arange(10 * 28 * 28).reshape(10, 28, 28).astype(np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x803)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 0x801)
  per_shard = []
  for shard_index in range(3):
    loader = pipeline.make_loader("fashion_mnist", str(tmp_path), "", "test", 32, 6, False, 0, 5,
                                  shard_options=grain.sharding.ShardOptions(shard_index, 3))
    per_shard.append(list(iter(loader)))
  assert [len(b) for b in per_shard] == [2, 2, 2]  # 10 -> 12 records, 4 per process.
  assert all(b["image"].shape == (2, 32, 32, 3) for bs in per_shard for b in bs)
  flat = [b for bs in per_shard for b in bs]
  mask = np.concatenate([b["mask"] for b in flat])
  assert mask.sum() == 10
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in flat])[mask == 1], labels)


# ---------------------------------------------------------------------------------------------
# Image folders.


def _png16(arr):
  """16-bit RGB PNG bytes (PIL cannot write them). arr: uint16 [H, W, 3]."""
  h, w, _ = arr.shape
  raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _encode(img, fmt, **kw):
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def _make_folder(root):
  """root/train/{a,b,c}/...: 8 usable images (several need conversion) and 2 broken ones."""
  rng = np.random.default_rng(0)
  rgb = lambda h, w: Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
  files = {
      "a/good.jpg": _encode(rgb(40, 48), "JPEG"),
      "a/good.png": _encode(rgb(50, 36), "PNG"),
      "b/gray.png": _encode(rgb(40, 40).convert("L"), "PNG"),
      "b/cmyk.jpg": _encode(rgb(40, 40).convert("CMYK"), "JPEG"),
      "b/rgba.png": _encode(rgb(40, 40).convert("RGBA"), "PNG"),
      "c/gray16.png": _encode(Image.fromarray(
          rng.integers(0, 65535, (40, 40), dtype=np.uint16)), "PNG"),
      "c/rgb16.PNG": _png16(rng.integers(0, 65535, (40, 40, 3), dtype=np.uint16)),
      "c/tiny.png": _encode(rgb(4, 4), "PNG"),
      "c/truncated.jpg": _encode(rgb(64, 64), "JPEG", quality=95)[:1500],
      "c/garbage.jpg": rng.bytes(3000),
      "c/notes.txt": b"ignored",
  }
  for rel, data in files.items():
    path = root / "train" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return root


def test_decode_conversions(tmp_path):
  root = _make_folder(tmp_path)
  assert Image.open(root / "train/b/cmyk.jpg").mode == "CMYK"
  assert Image.open(root / "train/c/gray16.png").mode.startswith("I")
  for rel in ("a/good.jpg", "b/gray.png", "b/cmyk.jpg", "b/rgba.png", "c/gray16.png",
              "c/rgb16.PNG", "c/tiny.png"):
    img = transforms.decode_image((root / "train" / rel).read_bytes())
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3, rel
  gray16 = np.asarray(Image.open(root / "train/c/gray16.png")).astype(np.int64)
  img = transforms.decode_image((root / "train/c/gray16.png").read_bytes())
  np.testing.assert_array_equal(img[..., 1], gray16 >> 8)
  for rel in ("c/truncated.jpg", "c/garbage.jpg"):
    with pytest.raises(transforms.ImageDecodeError):
      transforms.decode_image((root / "train" / rel).read_bytes())


def test_image_folder_full_epoch_skips_bad_images(tmp_path, caplog):
  root = str(_make_folder(tmp_path))
  assert pipeline.num_examples("folder", root, "", "train") == 10
  caplog.set_level(logging.WARNING)
  loader = pipeline.make_loader("folder", root, "", "train", 16, 4, False, 0, 3)
  batches = list(iter(loader))  # One eval epoch over all 10 files.
  assert len(batches) == 3
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 8  # 2 undecodable images come out masked.
  for b in batches:
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.uint8
  labels = np.concatenate([b["label"] for b in batches])[:10]
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
  skipped = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
  assert len(skipped) == 2
  assert any("garbage.jpg" in m for m in skipped) and any("truncated.jpg" in m for m in skipped)
  assert "2 image(s) skipped" in skipped[-1]

  caplog.clear()
  train = pipeline.make_loader("folder", root, "", "train", 16, 4, True, 0, 3)
  it = iter(train)
  for b in _take(it, 4):  # Two epochs of 8 usable images; bad ones are filtered out.
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.uint8
    assert set(b) == {"image", "label"}
  skipped = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
  assert skipped and all("garbage.jpg" in m or "truncated.jpg" in m for m in skipped)


def test_training_on_only_undecodable_images_fails_instead_of_spinning(tmp_path):
  for i in range(3):
    path = tmp_path / "train" / "x" / f"{i}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a png")
  train = pipeline.make_loader("folder", str(tmp_path), "", "train", 16, 2, True, 0, 1)
  with pytest.raises(transforms.UnreadableDatasetError, match="None of the 3 images"):
    next(iter(train))
  # One decodable image among them is enough to train on.
  (tmp_path / "train" / "x" / "ok.png").write_bytes(
      _encode(Image.fromarray(np.zeros((20, 20, 3), np.uint8)), "PNG"))
  train = pipeline.make_loader("folder", str(tmp_path), "", "train", 16, 2, True, 0, 1)
  for b in _take(iter(train), 3):
    assert b["image"].shape == (2, 16, 16, 3)


def test_an_evaluation_that_counted_nothing_is_named():
  data = types.SimpleNamespace(eval_split="val", source="folder", get=lambda k, d="": "/d")
  with pytest.raises(ValueError, match="eval_split='val' of folder '/d' counted no example"):
    pipeline.check_eval_count(0.0, data)
  pipeline.check_eval_count(1.0, data)


def test_image_folder_exact_resume(tmp_path):
  root = str(_make_folder(tmp_path))
  _assert_resumes(lambda: pipeline.make_loader("folder", root, "", "train", 16, 2, True, 3, 3))


def test_image_folder_start_up_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    pipeline.make_loader("folder", str(tmp_path / "nope"), "", "train", 16, 2, True, 0, 3)
  (tmp_path / "train" / "a").mkdir(parents=True)
  (tmp_path / "train" / "a" / "readme.txt").write_text("x")
  with pytest.raises(ValueError, match="contains no images"):
    pipeline.make_loader("folder", str(tmp_path), "", "train", 16, 2, True, 0, 3)
  with pytest.raises(FileNotFoundError, match="validation"):
    pipeline.make_loader("folder", str(tmp_path), "", "validation", 16, 2, False, 0, 3)
  root = _make_folder(tmp_path / "full")
  with pytest.raises(ValueError, match="3 class folders.*num_classes=2"):
    pipeline.make_loader("folder", str(root), "", "train", 16, 2, True, 0, 2)


# ---------------------------------------------------------------------------------------------
# tfds.


def test_tfds_mock_imagenet():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=10):
    assert pipeline.num_examples("tfds", "", "imagenet2012", "validation") == 10
    train = pipeline.make_loader("tfds", "", "imagenet2012", "train", 24, 4, True, 0, 1000)
    for b in _take(iter(train), 3):
      assert b["image"].shape == (4, 24, 24, 3) and b["image"].dtype == np.uint8
      assert b["label"].dtype == np.int32 and (b["label"] < 1000).all()
    evl = pipeline.make_loader("tfds", "", "imagenet2012", "validation", 24, 4, False, 0, 1000)
    batches = list(iter(evl))
    assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == 10
    with pytest.raises(ValueError, match="1000 label classes"):
      pipeline.make_loader("tfds", "", "imagenet2012", "train", 24, 4, True, 0, 10)


def test_tfds_missing_dataset_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare_tfds"):
    pipeline.make_loader("tfds", str(tmp_path), "imagenet2012", "train", 24, 4, True, 0, 1000)


# ---------------------------------------------------------------------------------------------
# Worker processes (slow to start: one test).


@pytest.mark.slow
@needs_fmnist
def test_exact_resume_with_workers():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1])
  it, it2 = _assert_resumes(lambda: pipeline.make_loader(
      "fashion_mnist", "", "", "test", 32, 8, True, 1, 10, worker_count=2))
  del it, it2  # Stop the worker processes while their queues are still open.
  gc.collect()
