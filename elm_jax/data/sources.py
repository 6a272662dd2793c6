"""Random-access data sources: Fashion-MNIST (idx files), tfds array_record datasets, image folders.

Every source is a grain `RandomAccessDataSource` (`__len__`, `__getitem__`) returning a fresh dict
  {"image": uint8 [28, 28] (Fashion-MNIST) | uint8 [H, W, C] (tfds) | encoded bytes (folder),
   "label": int, "name": str (folder and tfds, for skip logs)}
and carries `num_labels` (an upper bound on label + 1) for the start-up label-range check.
`repr` names the kind, split and size but not the path, so a moved dataset still restores a
saved iterator (grain compares reprs on `set_state`).

Image-folder layout: `root/<split>/<class_name>/**/*.{jpg,jpeg,png}` (extensions case-insensitive,
hidden files ignored); class folders sorted by name give label ids 0, 1, ...; split "" reads
class folders directly under `root`. A missing `root/<split>` is an error (no fallback that could
silently read the wrong split).
"""

import functools
import gzip
import os

from absl import logging
import numpy as np

FASHION_MNIST_DIR: str = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_SPLITS: dict[str, str] = {"train": "train", "test": "t10k"}
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_IDX_MAGIC: dict[int, int] = {1: 0x801, 3: 0x803}  # ndim -> magic for unsigned-byte idx files.


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian package dataset-fashion-mnist).


def read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads a gzip'd unsigned-byte idx file with `ndim` dimensions, validating header and size."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; truncation is EOFError.
    raise ValueError(f"Fashion-MNIST file {path} is corrupt or truncated ({e}); reinstall it "
                     "with `apt-get install --reinstall dataset-fashion-mnist`.") from e
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"Fashion-MNIST file {path} is truncated: {len(data)} bytes, header needs "
                     f"{header}.")
  magic = int.from_bytes(data[:4], "big")
  if magic != _IDX_MAGIC[ndim]:
    raise ValueError(f"Fashion-MNIST file {path} has idx magic {magic:#x}, expected "
                     f"{_IDX_MAGIC[ndim]:#x} (unsigned bytes, {ndim} dims).")
  dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(dims))
  if len(data) != expected:
    raise ValueError(f"Fashion-MNIST file {path} holds {len(data)} bytes but its header {dims} "
                     f"needs {expected}: the file is truncated or corrupt.")
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _fashion_mnist_files(path: str, split: str) -> tuple[str, str]:
  root = path or FASHION_MNIST_DIR
  if split not in FASHION_MNIST_SPLITS:
    raise ValueError(f"Fashion-MNIST split {split!r} is unknown; use one of "
                     f"{sorted(FASHION_MNIST_SPLITS)}.")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Fashion-MNIST directory {root} does not exist; install it with "
                            "`apt-get install dataset-fashion-mnist` or pass its path.")
  prefix = os.path.join(root, FASHION_MNIST_SPLITS[split])
  files = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
  for f in files:
    if not os.path.isfile(f):
      raise FileNotFoundError(f"Fashion-MNIST file {f} is missing; reinstall it with "
                              "`apt-get install --reinstall dataset-fashion-mnist`.")
  return files


@functools.cache
def load_fashion_mnist(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N, 28, 28], labels uint8 [N]), read-only, cached per process."""
  image_file, label_file = _fashion_mnist_files(path, split)
  images = read_idx(image_file, 3)
  labels = read_idx(label_file, 1)
  if images.shape[0] != labels.shape[0]:
    raise ValueError(f"Fashion-MNIST {split}: {image_file} has {images.shape[0]} images but "
                     f"{label_file} has {labels.shape[0]} labels.")
  return images, labels


def fashion_mnist_size(path: str, split: str) -> int:
  """Number of examples, from the label file header only."""
  _, label_file = _fashion_mnist_files(path, split)
  with gzip.open(label_file, "rb") as f:
    return int.from_bytes(f.read(8)[4:8], "big")


class ArraySource:
  """In-memory (images [N, ...], labels [N]) source, e.g. Fashion-MNIST."""

  def __init__(self, kind: str, split: str, images: np.ndarray, labels: np.ndarray):
    self.kind, self.split = kind, split
    self.images, self.labels = images, labels
    self.num_labels: int = int(labels.max()) + 1 if len(labels) else 0

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    return {"image": self.images[index], "label": int(self.labels[index])}

  def __repr__(self) -> str:
    return f"ArraySource(kind={self.kind!r}, split={self.split!r}, len={len(self)})"


def fashion_mnist_source(path: str, split: str) -> ArraySource:
  images, labels = load_fashion_mnist(path, split)
  return ArraySource("fashion_mnist", split, images, labels)


# ---------------------------------------------------------------------------------------------
# Image folders.


def _list_images(class_dir: str) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
               if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
  return out


class ImageFolderSource:
  """`root/<split>/<class>/*.jpg|png`; records carry the encoded bytes (decoded in a grain op)."""

  def __init__(self, root: str, split: str):
    self.split = split
    split_dir = os.path.join(root, split) if split else root
    if not os.path.isdir(root):
      raise FileNotFoundError(f"Image folder dataset root {root} does not exist.")
    if not os.path.isdir(split_dir):
      found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
      raise FileNotFoundError(f"Image folder split directory {split_dir} does not exist "
                              f"(folders under {root}: {found}); expected "
                              "root/<split>/<class_name>/*.jpg|png.")
    self.root = split_dir
    self.classes: list[str] = sorted(
        d for d in os.listdir(split_dir)
        if not d.startswith(".") and os.path.isdir(os.path.join(split_dir, d)))
    self.num_labels: int = len(self.classes)
    self.files: list[str] = []
    labels = []
    for label, name in enumerate(self.classes):
      files = _list_images(os.path.join(split_dir, name))
      if not files:
        logging.warning("Image folder class %r (label %d) under %s has no images.",
                        name, label, split_dir)
      self.files.extend(files)
      labels.extend([label] * len(files))
    self.labels = np.asarray(labels, np.int32)
    if not self.files:
      raise ValueError(f"Image folder split {split_dir} contains no images "
                       f"({len(self.classes)} class folders; extensions {IMAGE_EXTENSIONS}).")
    logging.info("Image folder %s: %d images in %d classes.", split_dir, len(self.files),
                 len(self.classes))

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    path = self.files[index]
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError:
      data = b""  # Decoding then fails and the image is skipped by name.
    return {"image": data, "label": int(self.labels[index]),
            "name": os.path.relpath(path, self.root)}

  def __repr__(self) -> str:
    return (f"ImageFolderSource(split={self.split!r}, classes={len(self.classes)}, "
            f"len={len(self)})")


# ---------------------------------------------------------------------------------------------
# tfds array_record datasets.


def _open_tfds(path: str, name: str, split: str):
  import tensorflow_datasets as tfds  # Lazy: only this source needs it.

  if not name:
    raise ValueError("source='tfds' needs a dataset name (e.g. 'imagenet2012').")
  try:
    return tfds.data_source(name, split=split, data_dir=path or None, download=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"tfds has no dataset named {name!r}.") from e
  except Exception as e:  # Not prepared, wrong format, unknown split...
    raise FileNotFoundError(
        f"tfds dataset {name!r} split {split!r} cannot be opened from data_dir "
        f"{path or '<tfds default>'} as array_record ({type(e).__name__}: {e}). Build it with "
        f"`python -m elm_jax.data.prepare_tfds --name={name} --data_dir=... "
        "[--manual_dir=...]`.") from e


class TfdsSource:
  """A tfds array_record data source with features "image" (uint8 HWC or bytes) and "label"."""

  def __init__(self, path: str, name: str, split: str):
    self.name, self.split = name, split
    self._ds = _open_tfds(path, name, split)
    features = self._ds.dataset_info.features
    for key in ("image", "label"):
      if key not in features:
        raise ValueError(f"tfds dataset {name!r} has no {key!r} feature (features: "
                         f"{list(features.keys())}).")
    self.num_labels: int | None = getattr(features["label"], "num_classes", None)
    if self.num_labels is None:
      logging.warning("tfds %s 'label' is not a ClassLabel: label range is not checked.", name)

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> dict:
    record = self._ds[index]
    name = record.get("file_name", f"{self.name}/{self.split}[{index}]")
    if isinstance(name, bytes):
      name = name.decode("utf-8", "replace")
    return {"image": record["image"], "label": int(record["label"]), "name": str(name)}

  def __repr__(self) -> str:
    return f"TfdsSource(name={self.name!r}, split={self.split!r}, len={len(self)})"


def prepare_tfds(name: str, data_dir: str, manual_dir: str = "") -> None:
  """Builds tfds dataset `name` as array_record under `data_dir` (ImageNet: from `manual_dir`).

  For imagenet2012, `manual_dir` holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
  """
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir or None, file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=config)
  logging.info("Prepared %s in %s: %s", name, builder.data_dir, builder.info.splits)


# ---------------------------------------------------------------------------------------------


def open_source(source: str, path: str, name: str, split: str):
  """source in {"fashion_mnist", "tfds", "folder"} -> a grain random-access source."""
  if source == "fashion_mnist":
    return fashion_mnist_source(path, split)
  if source == "tfds":
    return TfdsSource(path, name, split)
  if source == "folder":
    if not path:
      raise ValueError("source='folder' needs path=<root of root/<split>/<class>/*.jpg>.")
    return ImageFolderSource(path, split)
  raise ValueError(f"Unknown data source {source!r}; use 'fashion_mnist', 'tfds' or 'folder'.")
