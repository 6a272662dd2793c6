"""Start-up cost of every entry point: `python -m elm_jax.X --help` wall time.

  python benchmarks/startup.py                 # the table; ~1 minute
  python benchmarks/startup.py --json=out.json --repeats=5

Each command runs in a fresh process (the import cost a user pays before any
work starts); the table gives the median and the fastest of `--repeats`
runs, and whether TensorFlow or torch were imported on the way (`-X
importtime`). Run it on an idle machine: other load inflates every figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("main", "sample", "evaluate", "analyze", "convert", "tokenize",
                "pipeline", "aot", "evaluation.convert_inception")
HEAVY = ("tensorflow", "torch")


def help_seconds(module: str) -> float:
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", f"elm_jax.{module}", "--help"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  seconds = time.perf_counter() - start
  # absl's --help exits 1 after printing; what matters is that it printed.
  if "--" not in proc.stdout + proc.stderr or "Traceback" in proc.stderr:
    raise RuntimeError(f"elm_jax.{module} --help printed no flags: "
                       f"{proc.stderr[-500:]}")
  return seconds


def heavy_imports(module: str) -> list[str]:
  """The HEAVY top-level packages that `--help` imports."""
  proc = subprocess.run([sys.executable, "-X", "importtime", "-m",
                         f"elm_jax.{module}", "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
           if line.startswith("import time:")}
  return [h for h in HEAVY if h in names]


def measure(modules=ENTRY_POINTS, repeats: int = 3) -> list[dict]:
  rows = []
  for module in modules:
    times = [help_seconds(module) for _ in range(repeats)]
    rows.append(dict(entry_point=f"elm_jax.{module}",
                     median_s=round(statistics.median(times), 2),
                     fastest_s=round(min(times), 2),
                     heavy_imports=",".join(heavy_imports(module)) or "-"))
  return rows


def table(rows: list[dict]) -> str:
  cols = ("entry_point", "median_s", "fastest_s", "heavy_imports")
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default="", help="Also write the rows here.")
  p.add_argument("--modules", default=",".join(ENTRY_POINTS))
  a = p.parse_args()
  rows = measure(a.modules.split(","), a.repeats)
  print(table(rows))
  if a.json:
    with open(a.json, "w") as f:
      json.dump(dict(cpu_count=os.cpu_count(), rows=rows), f, indent=1)


if __name__ == "__main__":
  main()
