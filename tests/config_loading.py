"""Loads configs/*.py the way config_flags does, for tests."""

import importlib.util
import pathlib

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load(name: str):
  """The module configs/<name>.py (its get_config, ARGS, ...)."""
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name: str, arg: str | None = None):
  return load(name).get_config(arg)
