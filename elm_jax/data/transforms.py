"""Image decoding, conversion, cropping and flipping, and the grain ops built on them.

Every image leaving this module is uint8 [H, W, 3] (RGB). Conversions applied on decode:
  grayscale / palette / CMYK / YCbCr -> RGB (PIL conversion);
  RGBA / LA / palette with transparency -> RGB with the alpha channel dropped
    (what `tf.io.decode_image(channels=3)` does);
  16-bit (PIL modes "I;16*", "I") -> 8-bit by keeping the high byte (v >> 8); 16-bit RGB PNGs
    are already reduced to 8 bits by PIL;
  images smaller than the crop -> upscaled by the resize below.
Files that cannot be decoded (truncated, not an image, unsupported mode) raise
`ImageDecodeError`; `DecodeImage` turns that into a logged skip.

Crops follow ELM:
  train: resize the shorter side to round(1.05 * S), random S x S crop, random horizontal flip;
  eval:  resize the shorter side to S, centre S x S crop.
The resize and crop run as one PIL resize of the crop's source box (bicubic, antialiased), so a
very elongated image never materialises at full resized size.
"""

import io
import threading
import warnings

from absl import logging
import grain
import numpy as np
from PIL import Image

TRAIN_RESIZE_FACTOR: float = 1.05
_RESAMPLE: int = Image.Resampling.BICUBIC
_16BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageDecodeError(ValueError):
  """An image that cannot be decoded or converted to RGB uint8."""


# ---------------------------------------------------------------------------------------------
# Pure numpy / PIL functions.


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
  """Any PIL image -> uint8 [H, W, 3]."""
  if img.mode in _16BIT_MODES:
    gray = np.asarray(img).astype(np.int64)  # [H, W], 0..65535
    gray = (np.clip(gray, 0, 65535) >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if img.mode == "P" and "transparency" in img.info:
    img = img.convert("RGBA")  # Avoids PIL's palette-transparency warning.
  if img.mode != "RGB":
    img = img.convert("RGB")  # Drops alpha; converts L, 1, P, CMYK, YCbCr.
  return np.asarray(img, dtype=np.uint8)


def array_to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8/uint16 [H, W], [H, W, 1|3|4] -> uint8 [H, W, 3] (alpha dropped, 16-bit >> 8)."""
  if image.dtype == np.uint16:
    image = (image >> 8).astype(np.uint8)
  if image.dtype != np.uint8:
    raise ImageDecodeError(f"unsupported image dtype {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
    raise ImageDecodeError(f"unsupported image shape {image.shape}")
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
  """Encoded JPEG/PNG bytes (or an already decoded array) -> uint8 [H, W, 3].

  Raises ImageDecodeError for anything that cannot be fully decoded (truncated files included).
  """
  if isinstance(data, np.ndarray) and data.dtype != np.object_:
    return array_to_rgb(data)
  if isinstance(data, np.ndarray):  # A 0-d object array holding bytes.
    data = data.item()
  if not isinstance(data, (bytes, bytearray)) or not data:
    raise ImageDecodeError("empty or non-bytes image data")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      with Image.open(io.BytesIO(data)) as img:
        img.load()  # Forces the full decode: truncated files fail here.
        rgb = _pil_to_rgb(img)
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
    raise ImageDecodeError(f"{type(e).__name__}: {e}") from e
  if rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 1:
    raise ImageDecodeError(f"decoded to unexpected shape {rgb.shape}")
  return rgb


def resized_crop(image: np.ndarray, size: int, short_side: int, top: int, left: int) -> np.ndarray:
  """Crop [top:top+size, left:left+size] of `image` resized to shorter side `short_side`.

  image: uint8 [H, W, 3]; returns uint8 [size, size, 3]. Only the crop's source box is resampled.
  """
  h, w = image.shape[:2]
  scale = short_side / min(h, w)
  box = (left / scale, top / scale, min(w, (left + size) / scale), min(h, (top + size) / scale))
  out = Image.fromarray(image).resize((size, size), _RESAMPLE, box=box)
  return np.asarray(out, dtype=np.uint8)


def _resized_shape(image: np.ndarray, short_side: int) -> tuple[int, int]:
  h, w = image.shape[:2]
  scale = short_side / min(h, w)
  return max(short_side, round(h * scale)), max(short_side, round(w * scale))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Eval view: shorter side -> size, centre crop. uint8 [H, W, 3] -> [size, size, 3]."""
  rh, rw = _resized_shape(image, size)
  return resized_crop(image, size, size, (rh - size) // 2, (rw - size) // 2)


def train_short_side(size: int) -> int:
  return max(size, round(TRAIN_RESIZE_FACTOR * size))


def random_crop_flip(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Train view: shorter side -> round(1.05 size), random crop, random flip. -> [size, size, 3]."""
  short = train_short_side(size)
  rh, rw = _resized_shape(image, short)
  top = int(rng.integers(0, rh - size + 1))
  left = int(rng.integers(0, rw - size + 1))
  out = resized_crop(image, size, short, top, left)
  return random_flip(out, rng)


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Horizontal flip with probability 1/2. [H, W, C] -> [H, W, C]."""
  if rng.random() < 0.5:
    return np.ascontiguousarray(image[:, ::-1])
  return image


def gray_to_rgb_sized(image: np.ndarray, size: int) -> np.ndarray:
  """Fashion-MNIST view: uint8 [h, w] -> [size, size, 3].

  size >= h, w: centred zero padding (28 -> 32 pads 2 px each side); otherwise a bicubic resize.
  """
  h, w = image.shape
  if size >= h and size >= w:
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size), np.uint8)
    out[top:top + h, left:left + w] = image
  else:
    out = np.asarray(Image.fromarray(image).resize((size, size), _RESAMPLE), dtype=np.uint8)
  return np.repeat(out[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------
# grain operations. Records are dicts: "image", "label", optional "name" (for logs) and "mask".


class DecodeImage(grain.transforms.Map):
  """record["image"] bytes/array -> uint8 [H, W, 3], or None (logged with its name) if bad.

  num_records > 0 (training, an endless stream): once that many distinct records have failed
  and none has decoded, every image of the split is broken and the stream would never yield a
  batch, so this raises `UnreadableDatasetError` instead of skipping forever.
  """

  def __init__(self, num_records: int = 0):
    self.num_records = num_records
    self._skipped = 0
    self._decoded = 0
    self._failed_names: set = set()
    self._lock = threading.Lock()

  def __getstate__(self):  # Locks do not pickle; each worker process counts its own skips.
    return {"num_records": self.num_records, "_skipped": self._skipped,
            "_decoded": self._decoded, "_failed_names": self._failed_names}

  def __setstate__(self, state):
    self.num_records = state.get("num_records", 0)
    self._skipped = state["_skipped"]
    self._decoded = state.get("_decoded", 0)
    self._failed_names = state.get("_failed_names", set())
    self._lock = threading.Lock()

  def map(self, element: dict) -> dict:
    if element.get("mask", 1.0) == 0.0:  # Eval padding record: never used, not decoded.
      element["image"] = None
      return element
    name = element.get("name", "<unnamed>")
    try:
      element["image"] = decode_image(element["image"])
    except ImageDecodeError as e:
      with self._lock:
        self._skipped += 1
        count = self._skipped
        if self.num_records and not self._decoded:
          self._failed_names.add(name)
          all_bad = len(self._failed_names) >= self.num_records
        else:
          all_bad = False
      if all_bad:
        raise UnreadableDatasetError(
            f"None of the {self.num_records} images of this split can be decoded (last: "
            f"{name}: {e}); check data.path and data.train_split, or replace the files.")
      logging.warning(
          "Skipping undecodable image %s (%s); %d image(s) skipped so far in this process.",
          name, e, count)
      element["image"] = None
      return element
    if not self._decoded:
      with self._lock:
        self._decoded += 1
        self._failed_names.clear()
    return element


class UnreadableDatasetError(ValueError):
  """Every image of a training split failed to decode."""


class DropUndecodable(grain.transforms.Filter):
  """Training: drops records whose image failed to decode."""

  def filter(self, element: dict) -> bool:
    return element["image"] is not None


class TrainCrop(grain.transforms.RandomMap):
  """Random resized crop + flip; the rng is grain's per-record rng (seed + sampler index)."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    element["image"] = random_crop_flip(element["image"], self.image_size, rng)
    return element


class EvalCrop(grain.transforms.Map):
  """Centre crop; an undecodable image becomes zeros with mask 0 so batch counts stay fixed."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def map(self, element: dict) -> dict:
    if element["image"] is None:
      element["image"] = np.zeros((self.image_size, self.image_size, 3), np.uint8)
      element["mask"] = np.float32(0.0)
    else:
      element["image"] = center_crop(element["image"], self.image_size)
    return element


class GrayToRGB(grain.transforms.Map):
  """Fashion-MNIST: [28, 28] -> zero-padded (or resized) [S, S, 3]."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def map(self, element: dict) -> dict:
    element["image"] = gray_to_rgb_sized(element["image"], self.image_size)
    return element


class RandomFlip(grain.transforms.RandomMap):
  """Fashion-MNIST training augmentation: horizontal flip only."""

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    element["image"] = random_flip(element["image"], rng)
    return element


class FinalizeRecord(grain.transforms.Map):
  """Keeps the batchable keys: image uint8 [S, S, 3], label int32 [], mask float32 [] (eval)."""

  def map(self, element: dict) -> dict:
    out = {"image": element["image"], "label": np.int32(element["label"])}
    if "mask" in element:
      out["mask"] = np.float32(element["mask"])
    return out
