"""Files that appear whole or not at all: write a temporary file, fsync, rename.

A crash, a kill or a full disk in the middle of a write leaves the previous
version (or nothing) under the final name, never a truncated file.
"""

import io
import json
import os
from typing import Any

import numpy as np


def write_bytes(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def npz_bytes(**arrays) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def write_npz(path: str, **arrays) -> None:
  write_bytes(path, npz_bytes(**arrays))
