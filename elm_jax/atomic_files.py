"""Files that appear whole or not at all: write a temporary file, fsync, rename.

A crash, a kill or a full disk in the middle of a write leaves the previous
version (or nothing) under the final name, never a truncated file. The
temporary file sits beside the final one (`PATH.tmp.PID`) and is removed when
the write fails.
"""

import io
import json
import os
from typing import Any, BinaryIO, Callable

import numpy as np


def write_with(path: str, write: Callable[[BinaryIO], Any]) -> None:
  """Atomically replaces `path` with what `write(f)` writes to the binary file
  `f`, for writers that stream to a file object (np.save, np.savez,
  matplotlib's savefig) without the whole file in memory."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  write_with(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def npz_bytes(**arrays) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def write_npz(path: str, **arrays) -> None:
  """np.savez(path, **arrays), atomically (streamed to the temporary file)."""
  write_with(path, lambda f: np.savez(f, **arrays))
