"""What a command prints, and the per-run log file that keeps everything.

Console: the project's own lines (start-up summary, progress with ETA,
metrics, evaluations, checkpoints), and every library's warnings and
errors. Libraries' INFO lines (orbax's checkpoint-manager chatter, absl,
jax) reach the console only at --verbosity=1.

File: WORKDIR/logs/COMMAND-<UTC time>-p<process>.log receives every record
of INFO and above (DEBUG too at --verbosity=1), whatever the console shows,
from the moment the run has created WORKDIR (earlier records are kept until
then; a run that stops before leaves no file).
"""

import contextlib
import datetime
import logging as std_logging
import os

from absl import logging

# Library modules whose INFO lines are the command's own report: clu's
# metric lines and its progress/ETA line.
_REPORTING = ("/clu/metric_writers/logging_writer.py", "/clu/platform/local.py")
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"


class ProjectInfoOnly(std_logging.Filter):
  """Below WARNING, passes the project's records (and clu's reports) only;
  all of them at --verbosity >= 1, none at --verbosity < 0."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    verbosity = logging.get_verbosity()
    if record.levelno >= std_logging.WARNING or verbosity >= 1:
      return True
    if verbosity < 0:
      return False
    path = record.pathname.replace(os.sep, "/")
    return "/elm_jax/" in path or path.endswith(_REPORTING)


class _WorkdirFileHandler(std_logging.FileHandler):
  """A FileHandler that opens its file only once the run has made its
  workdir: records before that wait in memory, so a command that stops on
  bad input leaves no directory behind."""

  def __init__(self, path: str, workdir: str):
    super().__init__(path, delay=True)
    self._workdir, self._pending = workdir, []

  def emit(self, record: std_logging.LogRecord) -> None:
    if self.stream is None:
      if not os.path.isdir(self._workdir):
        self._pending.append(record)
        return
      os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
      pending, self._pending = self._pending, []
      for early in pending:
        super().emit(early)
    super().emit(record)

  def handleError(self, record: std_logging.LogRecord) -> None:
    """A log file that cannot be written (a full disk) costs its lines, not
    the run: the console and the run's own error handling say the rest."""


def log_path(workdir: str, command: str, process: int = 0) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  return os.path.join(workdir, "logs", f"{command}-{stamp}-p{process}.log")


@contextlib.contextmanager
def capture(workdir: str, command: str):
  """Within: the quiet console and the log file of one run of `command`
  (after jax.distributed is initialised: the file is per process)."""
  console = logging.get_absl_handler()
  quiet = ProjectInfoOnly()
  console.addFilter(quiet)  # first: the backend's start-up lines are INFO
  import jax  # deferred: jax-heavy; only run commands get here
  path = log_path(workdir, command, jax.process_index())
  file_handler = _WorkdirFileHandler(path, workdir)
  file_handler.setLevel(std_logging.DEBUG if logging.get_verbosity() >= 1
                        else std_logging.INFO)
  file_handler.setFormatter(std_logging.Formatter(_FORMAT))
  root = std_logging.getLogger()
  root.addHandler(file_handler)
  # --verbosity sets absl's logger level, the root logger's is every other
  # library's: the file needs INFO from both even when the console is quieter.
  loggers = (logging.get_absl_logger(), root)
  levels = [lg.level for lg in loggers]
  for lg, level in zip(loggers, levels):
    lg.setLevel(min(level or std_logging.INFO, std_logging.INFO))
  logging.info("Logging everything to %s", path)
  try:
    yield path
  finally:
    root.removeHandler(file_handler)
    file_handler.close()
    console.removeFilter(quiet)
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)
