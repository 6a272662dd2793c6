"""`python -m elm_jax.main` as the tests run it: in a subprocess, one CPU device."""

import subprocess
import sys

from processes import ROOT, subprocess_env as env


def main_cmd(workdir, *overrides, config="configs/bae.py:tiny"):
  return [sys.executable, "-m", "elm_jax.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def run(workdir, *overrides, timeout=300, config="configs/bae.py:tiny",
        compilation_cache=None):
  proc = subprocess.run(main_cmd(workdir, *overrides, config=config), cwd=ROOT,
                        env=env(compilation_cache),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc
