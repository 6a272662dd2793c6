"""The console shows the project's lines; the run's log file keeps everything."""

import glob
import logging as std_logging
import os

from absl import logging

from elm_jax import run_log


def _record(path, level=std_logging.INFO, name="x"):
  return std_logging.LogRecord(name, level, path, 1, "message", (), None)


def test_console_passes_project_lines_and_library_warnings_only():
  quiet = run_log.ProjectInfoOnly()
  project = "/site-packages/elm_jax/train/loop.py"
  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  progress = "/site-packages/clu/platform/local.py"
  before = logging.get_verbosity()
  try:
    logging.set_verbosity(0)
    assert quiet.filter(_record(project)) and quiet.filter(_record(progress))
    assert not quiet.filter(_record(orbax))
    assert quiet.filter(_record(orbax, std_logging.WARNING))
    logging.set_verbosity(1)
    assert quiet.filter(_record(orbax))
    logging.set_verbosity(-1)
    assert not quiet.filter(_record(project))
    assert quiet.filter(_record(orbax, std_logging.ERROR))
  finally:
    logging.set_verbosity(before)


def test_log_file_keeps_library_info_and_is_closed_after(tmp_path):
  """Records before the run makes its workdir wait for it; a run that never
  makes one leaves nothing behind."""
  library = std_logging.getLogger("some_library")
  with run_log.capture(str(tmp_path / "never"), "main"):
    logging.info("bad input")
  assert not (tmp_path / "never").exists()
  workdir = tmp_path / "run"
  with run_log.capture(str(workdir), "main") as path:
    library.info("library detail %d", 7)
    workdir.mkdir()
    logging.info("project line")
  library.info("after the run")
  assert glob.glob(str(workdir / "logs" / "main-*-p0.log")) == [path]
  text = open(path).read()
  assert "library detail 7" in text and "project line" in text
  assert "after the run" not in text
  assert os.path.basename(path).startswith("main-")
