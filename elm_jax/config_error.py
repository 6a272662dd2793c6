"""The error of a config that cannot run: entry points print its message
(which names the field and the fix) instead of a traceback."""


class ConfigError(ValueError):
  pass
