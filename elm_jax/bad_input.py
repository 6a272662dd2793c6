"""How the command-line entry points end on bad input: one line that names
the problem and the fix (the error's message), exit status 1, no traceback.

The traceback is still logged at DEBUG (`--verbosity=1` shows it), so a
ValueError that is a bug rather than bad input can be traced.
"""

import contextlib
import sys
import traceback

from absl import logging

from elm_jax.config_error import ConfigError

# What bad flags, files or data raise here: the messages name the flag.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError,
                    IsADirectoryError, PermissionError)


@contextlib.contextmanager
def exit_on_bad_input(command: str):
  """`with exit_on_bad_input("elm_jax.evaluate"): run(...)`."""
  try:
    yield
  except BAD_INPUT_ERRORS as e:
    logging.debug("%s", traceback.format_exc())
    prefix = "Invalid config" if isinstance(e, ConfigError) else command
    sys.exit(f"{prefix}: {e}")
