"""Sample files: resumable per-batch shards, the ADM-layout npz and the grid PNG.

A large run writes OUT/batches/<index>.npz per global batch (atomically:
temp file, then rename), so a killed run resumes without redoing finished
batches; OUT/sample_config.json pins the settings, so a resume cannot mix
samples of different settings. The final OUT/samples.npz holds arr_0 (uint8
[N, H, W, 3]) and arr_1 (int labels [N]): the ADM evaluator's layout.
"""

import io
import json
import os

import numpy as np
from absl import logging
from PIL import Image

from elm_jax.atomic_files import npz_bytes, write_bytes as atomic_write

BATCH_DIR = "batches"
SAMPLES = "samples.npz"
GRID = "grid.png"
SETTINGS = "sample_config.json"


def write_png(path: str, image: np.ndarray) -> None:
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
      buf, format="PNG")
  atomic_write(path, buf.getvalue())


class SampleStore:
  """The files of one sampling run in `workdir`."""

  def __init__(self, workdir: str, settings: dict):
    self.workdir = workdir
    self.batch_dir = os.path.join(workdir, BATCH_DIR)
    os.makedirs(self.batch_dir, exist_ok=True)
    path = os.path.join(workdir, SETTINGS)
    pinned = json.dumps(settings, sort_keys=True, indent=1)
    if os.path.exists(path):
      with open(path) as f:
        before = json.load(f)
      if before != json.loads(pinned):
        diff = sorted(k for k in set(before) | set(settings)
                      if before.get(k) != settings.get(k))
        raise ValueError(
            f"{workdir} holds samples made with other settings ({diff} differ; "
            f"see {path}). Use a new --workdir, or the same settings to resume.")
    else:
      atomic_write(path, pinned.encode())

  def batch_path(self, index: int) -> str:
    return os.path.join(self.batch_dir, f"{index:06d}.npz")

  def load_batch(self, index: int) -> dict | None:
    """The arrays of a finished batch, or None (missing or unreadable)."""
    path = self.batch_path(index)
    if not os.path.exists(path):
      return None
    try:
      with np.load(path) as f:
        return {"images": f["images"], "labels": f["labels"]}
    except Exception as e:  # a damaged file is redone, not trusted.
      logging.warning("Redoing batch %d: %s is unreadable (%r).", index, path, e)
      return None

  def write_batch(self, index: int, images: np.ndarray, labels: np.ndarray):
    atomic_write(self.batch_path(index), npz_bytes(images=images, labels=labels))

  def assemble(self, num_batches: int, num_samples: int) -> str:
    """Concatenates the batches into OUT/samples.npz (first num_samples)."""
    parts = [self.load_batch(i) for i in range(num_batches)]
    missing = [i for i, p in enumerate(parts) if p is None]
    if missing:
      raise RuntimeError(f"Batches {missing} are missing from {self.batch_dir}.")
    images = np.concatenate([p["images"] for p in parts])[:num_samples]
    labels = np.concatenate([p["labels"] for p in parts])[:num_samples]
    path = os.path.join(self.workdir, SAMPLES)
    atomic_write(path, npz_bytes(arr_0=images, arr_1=labels))
    return path
