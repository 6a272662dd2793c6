"""How the command-line entry points end on bad input: one line that names
the problem and the fix (the error's message), exit status 1, no traceback.

The traceback is still logged at DEBUG (`--verbosity=1` shows it), so a
ValueError that is a bug rather than bad input can be traced.
"""

import contextlib
import errno
import logging as std_logging
import os
import re
import sys
import traceback

from absl import flags, logging

from elm_jax import config_variants
from elm_jax.config_error import ConfigError

# What bad flags, files or data raise here: the messages name the flag.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError,
                    IsADirectoryError, PermissionError)


# Storage faults: what the OS says, and how tensorstore and orbax word it.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
STORAGE_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                 "Permission denied")


def storage_error(error: BaseException) -> str | None:
  """'PATH: cause' when `error` (or one behind it) is a storage fault, else None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
      where = error.filename or "a file"
      return f"{where}: {error.strerror}"
    text = str(error)
    for cause in STORAGE_TEXTS:
      if cause in text:
        path = re.search(r'(?:local file |file |path |at )"?(/[^\s"\']+)', text)
        return f"{path.group(1) if path else 'a file'}: {cause}"
    error = error.__cause__ or error.__context__
  return None


class _OneLineLibraryErrors(std_logging.Filter):
  """Orbax logs a failed background save with three tracebacks before the
  command reports it; below --verbosity=1 each becomes one line."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if "/orbax/" in record.pathname and record.exc_info and logging.get_verbosity() < 1:
      record.msg, record.args = str(record.getMessage()).splitlines()[0][:300], ()
      record.exc_info = record.exc_text = None
    return True


def _unraisable_hook(default):
  """Tensorstore answers reads and writes on an event loop that a failed save
  has already closed; Python prints each such ignored error as a traceback."""
  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and "Event loop is closed" in str(unraisable.exc_value)
        and logging.get_verbosity() < 1):
      return
    default(unraisable)
  return hook


@contextlib.contextmanager
def exit_on_bad_input(command: str):
  """`with exit_on_bad_input("elm_jax.evaluate"): run(...)`."""
  quiet = _OneLineLibraryErrors()
  logger = logging.get_absl_logger()
  logger.addFilter(quiet)
  previous_hook = sys.unraisablehook
  sys.unraisablehook = _unraisable_hook(previous_hook)
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    logging.debug("%s", traceback.format_exc())
    fault = storage_error(e)
    if fault is not None:
      sys.exit(f"{command}: storage error at {fault}. Files written before are intact; "
               "free space or fix the permissions, then run the same command again.")
    if not isinstance(e, BAD_INPUT_ERRORS):
      raise
    prefix = "Invalid config" if isinstance(e, ConfigError) else command
    sys.exit(f"{prefix}: {e}")
  finally:
    logger.removeFilter(quiet)
    sys.unraisablehook = previous_hook


def local_path(flag: str, path: str) -> None:
  """Refuses a URL (gs://, s3://) or a file where a directory belongs.

  Checkpoints, metrics and samples are written with local file operations
  (os, flock, atomic renames), so a workdir is a path of this machine; on a
  cluster, one that every host mounts (NFS, Filestore).
  """
  if "://" in path:
    raise ValueError(f"{flag}={path!r} is a URL; elm_jax reads and writes local paths "
                     "only: pass a local disk or one that every host mounts (NFS, Filestore).")
  if os.path.isfile(path):
    raise NotADirectoryError(f"{flag}={path!r} is a file, not a directory; pass a "
                             "directory (a new one to start a run).")


def _config_error_behind(error: BaseException) -> ConfigError | None:
  """The first ConfigError raised on the way to `error`, if any (the config
  loader re-raises it as a copy whose message holds the traceback)."""
  found = None
  while error is not None:
    if isinstance(error, ConfigError):
      found = error
    error = error.__cause__ or error.__context__
  return found


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for commands with a --config file flag (`app.run(...,
  flags_parser=parse_flags)`). Exits with one line, not a traceback, when a
  --config.x=y override names a field the config does not have (with a
  suggestion), when the config file's arguments are refused, or when the
  file cannot be loaded. Adds --print_config (print the resolved config and
  exit) and lists the config files' variants in --config's help."""
  if "config" in flags.FLAGS and "print_config" not in flags.FLAGS:
    flags.DEFINE_boolean("print_config", False, "Print the resolved --config "
                         "(its file, arguments and --config.x=y overrides) "
                         "and exit.")
    config_variants.add_to_help(flags.FLAGS["config"])
  if ("--print_config" in argv and "workdir" in flags.FLAGS
      and not any(a.startswith("--workdir") for a in argv)):
    argv = [*argv, "--workdir=-"]  # required, but unused: the command exits
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      # A file that failed to load is a stand-in that raises OSError on
      # attribute access; a ConfigDict has `keys`.
      flags.FLAGS["config"].value.keys  # pylint: disable=pointless-statement
      if flags.FLAGS.print_config:
        print(flags.FLAGS["config"].value)
        sys.exit(0)
    return rest
  except OSError as e:  # a --config file that is missing or fails to import
    sys.exit(f"--config: {e.__cause__ or e}")
  except (AttributeError, KeyError) as e:
    text = str(e).replace("\\n", "\n")
    found = re.search(r"'(\w+)", text)
    key = found.group(1) if found else "?"
    arg = next((a for a in argv[1:] if a.startswith("--config.")
                and key in a.partition("=")[0].split(".")), None)
    if arg is None:  # not an override's typo: e.g. a bug in the config file
      raise
    hint = re.search(r'Did you mean "(\w+)"', text)
    sys.exit(f"{arg.partition('=')[0]}: the config has no field {key!r}"
             + (f"; did you mean {hint.group(1)!r}?" if hint else ".")
             + " Check the spelling against the --config file.")
  except flags.Error as e:
    config_error = _config_error_behind(e)
    if config_error is not None:  # raised by the config file's get_config
      sys.exit(f"Invalid config: {config_error}")
    sys.exit(f"{e}\nPass --helpshort or --helpfull to see help on flags.")
