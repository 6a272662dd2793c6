"""pyproject.toml: the package installs and imports from outside the repository."""

import os
import shutil
import subprocess
import sys

import pytest

from processes import ROOT


@pytest.mark.slow
def test_installs_and_imports_outside_the_repository(tmp_path):
  # A copy of what the package is made of: setuptools builds inside the
  # source tree, and the checkout must stay as it is.
  src = tmp_path / "src"
  shutil.copytree(os.path.join(ROOT, "elm_jax"), src / "elm_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  target = tmp_path / "site"
  build = subprocess.run(
      [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
       "--target", str(target), str(src)], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PIP_NO_INDEX="1"))
  assert build.returncode == 0, build.stderr[-3000:]
  assert (target / "elm_jax" / "models" / "transformer.py").is_file()
  assert not (target / "tests").exists() and not (target / "configs").exists()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = str(target)
  probe = subprocess.run(
      [sys.executable, "-c", "import elm_jax, elm_jax.tokens; print(elm_jax.__file__)"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
  assert probe.returncode == 0, probe.stderr[-3000:]
  assert probe.stdout.strip().startswith(str(target))
