"""What `--help` says about the config files: each file's arguments.

Every configs/<name>.py declares its arguments as `ARGS = dict(...)` (or a
name for such a dict in a sibling file, as configs/ar.py does with
common.GENERATOR_ARGS). They are read here with `ast`, without importing
the files: importing them imports jax, and `--help` should not wait for it.
"""

import ast
import os

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "configs")


def _assignments(path: str) -> dict[str, ast.expr]:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  return {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
          for t in node.targets if isinstance(t, ast.Name)}


def _arguments(value: ast.expr, configs_dir: str) -> dict | None:
  """The {name: default} of an ARGS value: dict(...), or sibling.NAME."""
  if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
    sibling = os.path.join(configs_dir, value.value.id + ".py")
    if not os.path.isfile(sibling):
      return None
    value = _assignments(sibling).get(value.attr)
  if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
      and value.func.id == "dict"):
    return {k.arg: ast.literal_eval(k.value) for k in value.keywords}
  return None


def file_arguments(configs_dir: str = CONFIGS_DIR) -> dict[str, dict]:
  """{"bae.py": {"fmnist": False, ..., "bits": 16}, ...} for files with ARGS."""
  out = {}
  for name in sorted(os.listdir(configs_dir)):
    if not name.endswith(".py"):
      continue
    value = _assignments(os.path.join(configs_dir, name)).get("ARGS")
    args = None if value is None else _arguments(value, configs_dir)
    if args is not None:
      out[name] = args
  return out


def describe(configs_dir: str = CONFIGS_DIR) -> str:
  """One line per file: its variants (flags) and key=default arguments."""
  lines = []
  for name, args in file_arguments(configs_dir).items():
    variants = [k for k, v in args.items() if v is False]
    values = [f"{k}={v}" for k, v in args.items() if v is not False]
    lines.append(f"configs/{name}: variants {'|'.join(variants) or '-'}"
                 + (f"; arguments {', '.join(values)}" if values else ""))
  return "\n".join(lines)


def add_to_help(flag) -> None:
  """Appends `describe()` to an absl flag's help (the --config flag)."""
  try:
    text = describe()
  except (OSError, SyntaxError, ValueError):  # a file being edited: no list
    return
  flag.help = f"{flag.help}\nThe config files and their arguments:\n{text}"
