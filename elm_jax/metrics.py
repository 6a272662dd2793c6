"""Metric writers (the project's only clu imports) and step-metric averaging.

Process 0 writes TensorBoard event files and a `metrics.jsonl` (one JSON
object per write: {"step": s, name: value, ...}) in the workdir; the others
only log. Train steps return dicts of scalars; `MeanAccumulator` keeps them
and averages once per log period.
"""

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np

from elm_jax import atomic_files


def report_progress(**kwargs):
  """clu's ReportProgress (steps/s, ETA) with these arguments."""
  # deferred: clu's writers import TensorFlow (seconds); --help needs none of it
  from clu import periodic_actions
  return periodic_actions.ReportProgress(**kwargs)


class JsonlWriter:
  """Appends scalars as JSON lines; easy to read back in tests and notebooks.

  clu's MetricWriter interface, written out rather than subclassed: importing
  clu.metric_writers imports TensorFlow, which this module defers.
  """

  def __init__(self, path: str):
    self._path = path
    self._file = open(path, "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    row.update({k: float(v) for k, v in scalars.items()})
    try:
      self._file.write(json.dumps(row) + "\n")
      self._file.flush()
    except OSError as e:  # a full disk: name the file
      raise OSError(e.errno, e.strerror, self._path) from e

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str):
  """A clu MetricWriter: TensorBoard + JSONL on process 0, logging only elsewhere."""
  # deferred: imports TensorFlow (seconds); only commands that write need it
  from clu import metric_writers
  lead = jax.process_index() == 0
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not lead, asynchronous=True)
  if not lead:
    return writer
  return metric_writers.MultiWriter(
      [writer, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def drop_rows_after(workdir: str, step: int) -> None:
  """Removes metrics.jsonl rows of steps after `step` (a resumed run logs
  them again), so each step is listed once."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] > step:
        continue
    except (ValueError, KeyError, TypeError):
      continue  # a row cut short by a kill
    keep.append(line if line.endswith("\n") else line + "\n")
  if len(keep) != len(lines):
    atomic_files.write_text(path, "".join(keep))


def read_jsonl(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


class MeanAccumulator:
  """Keeps step metrics as device arrays; `fetch()` returns host means and resets.

  No arithmetic happens per step: an eager op on a step's output would make
  the host wait for that step (on CPU the waiting thread spins and takes a
  core from XLA), so everything is fetched at once when logging.
  """

  def __init__(self):
    self._items: list[Mapping[str, jax.Array]] = []

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._items.append(metrics)

  def fetch(self) -> dict[str, float]:
    if not self._items:
      return {}
    host = jax.device_get(self._items)
    self._items = []
    return {k: float(np.mean([np.asarray(m[k]) for m in host]))
            for k in host[0]}


def non_finite(scalars: Mapping[str, float]) -> list[str]:
  return [k for k, v in scalars.items() if not math.isfinite(v)]
