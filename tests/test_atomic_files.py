"""elm_jax.atomic_files and the commands' writes through it: a write that fails
part-way (the writer, fsync or the rename) leaves the old file as it was and
no temporary file beside it."""

import errno
import json
import os

import matplotlib
import numpy as np
import pytest

from elm_jax import atomic_files

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _disk_full(*args):
  raise OSError(errno.ENOSPC, "No space left on device")


def _only(directory, name):
  assert sorted(os.listdir(directory)) == [name]


HELPERS = {
    "write_with": lambda p: atomic_files.write_with(p, lambda f: f.write(b"new")),
    "write_bytes": lambda p: atomic_files.write_bytes(p, b"new"),
    "write_text": lambda p: atomic_files.write_text(p, "new"),
    "write_json": lambda p: atomic_files.write_json(p, {"new": 1}),
    "write_npz": lambda p: atomic_files.write_npz(p, a=np.arange(3)),
}


@pytest.mark.parametrize("helper", sorted(HELPERS))
@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch, helper, fails):
  path = tmp_path / "f"
  path.write_bytes(b"old")
  monkeypatch.setattr(os, fails, _disk_full)
  with pytest.raises(OSError, match="No space left"):
    HELPERS[helper](str(path))
  assert path.read_bytes() == b"old"
  _only(tmp_path, "f")


def test_a_writer_that_raises_part_way_keeps_the_old_file(tmp_path):
  path = tmp_path / "f"
  path.write_bytes(b"old")

  def half(f):
    f.write(b"half of it")
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    atomic_files.write_with(str(path), half)
  assert path.read_bytes() == b"old"
  _only(tmp_path, "f")


def test_writes_replace_the_file(tmp_path):
  path = str(tmp_path / "f")
  atomic_files.write_with(path, lambda f: np.save(f, np.arange(4)))
  np.testing.assert_array_equal(np.load(path), np.arange(4))
  atomic_files.write_npz(path, a=np.eye(2), b=np.asarray("text"))
  with np.load(path) as data:
    np.testing.assert_array_equal(data["a"], np.eye(2))
    assert str(data["b"]) == "text"
  assert open(path, "rb").read() == atomic_files.npz_bytes(a=np.eye(2), b=np.asarray("text"))
  _only(tmp_path, "f")


# ------------------------------------------------------- the commands' writes


def _fid_stats(path):
  from elm_jax.evaluation import fid
  fid.save_stats(path, {"mu": np.zeros(2), "sigma": np.eye(2), "mu_s": np.zeros(2),
                        "sigma_s": np.eye(2), "source": np.asarray("x")})


def _inception_npz(path):
  from elm_jax.evaluation import convert_inception
  convert_inception.write_npz({"conv": {"kernel": np.ones((1, 1, 3, 2))}}, path)


def _aot_report(path):
  from elm_jax import aot_compile
  aot_compile.write_json(path, {"fits": True})


def _tokenize_meta(path):
  from elm_jax.data import tokenizing
  tokenizing._write_meta(os.path.dirname(path), {"bits": 8})


def _evaluation_json(path):
  from elm_jax.evaluation import run as evaluate
  evaluate.write_results(os.path.dirname(path), {"metrics": {"fid": 1.0}}, 0)


def _analysis_json(path):
  from elm_jax.evaluation import analyses
  analyses._write_json(path, {"unigram_kl": 0.5})


def _analysis_png(path):
  from elm_jax.evaluation import analyses
  fig, ax = plt.subplots()
  ax.plot([0, 1])
  analyses._save_figure(fig, path)


SITES = {"fid.save_stats": (_fid_stats, "stats.npz"),
         "convert_inception.write_npz": (_inception_npz, "inception.npz"),
         "aot.write_json": (_aot_report, "report.json"),
         "tokenize meta.json": (_tokenize_meta, "meta.json"),
         "evaluate evaluation.json": (_evaluation_json, "evaluation.json"),
         "analyze json": (_analysis_json, "token_randomness.json"),
         "analyze png": (_analysis_png, "attention.png")}


@pytest.mark.parametrize("site", sorted(SITES))
def test_command_writes_are_atomic(tmp_path, monkeypatch, site):
  write, name = SITES[site]
  path = str(tmp_path / name)
  write(path)  # a whole file the first time
  first = open(path, "rb").read()
  if name.endswith(".json"):
    json.loads(first)
  elif name.endswith(".png"):
    assert first.startswith(b"\x89PNG")
  else:
    np.load(path).close()
  with monkeypatch.context() as m:
    m.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
      write(path)
  assert open(path, "rb").read() == first
  assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
