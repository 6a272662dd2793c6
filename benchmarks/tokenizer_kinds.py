"""BAE, VQ and LFQ at matched bits on the embedded default: the ELM paper's
tokenizer comparison at Fashion-MNIST scale.

  python benchmarks/tokenizer_kinds.py --root=workdirs/kinds      # ~25 min a kind
  python benchmarks/tokenizer_kinds.py --root=... --kinds=vq,lfq --json=out.json

Each kind is one `python -m elm_jax.pipeline --config=configs/pipeline.py`
run in ROOT/<kind> with 8 bits per cell (BAE 8 bits, LFQ 8 bits, VQ 256
codes), the default tokenizer (1,200 steps) and generator (size S, patch 2,
four sub-codes or ids per position) trained `--generator_steps` steps, and
the pipeline's sampler and scores (1,000 samples: class accuracy, FID
against the real-image floor, precision/recall). One evaluation cache
(classifier, Inception, reference statistics) serves every kind. A kind
whose workdir already holds report.json is not run again, so the table can
be rebuilt from finished runs. Columns: code usage (the share of the 2^8
codes, or of the VQ codebook, used on the held-out images), PSNR, and the
pipeline's report figures.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = {
    "bae": [],
    "vq": ["--config.tokenizer.model.quantizer=vq",
           "--config.tokenizer.model.codebook_size=256",
           "--config.generator.split=auto"],
    "lfq": ["--config.tokenizer.model.quantizer=lfq",
            "--config.tokenizer.model.entropy_weight=0.1"],
}
COLUMNS = ("kind", "code_usage", "psnr", "class_accuracy", "fid", "fid_real_floor",
           "precision", "recall", "minutes")


def pipeline_command(workdir: str, kind: str, generator_steps: int, cache: str):
  return [sys.executable, "-m", "elm_jax.pipeline", "--config=configs/pipeline.py",
          f"--workdir={workdir}", f"--config.generator.total_steps={generator_steps}",
          f"--config.generator.eval_every={generator_steps}",
          f"--config.generator.checkpoint_every={max(generator_steps // 2, 1)}",
          f"--config.evaluation.cache_dir={cache}", *KINDS[kind]]


def last_value(metrics_file: str, key: str) -> float | None:
  value = None
  with open(metrics_file) as f:
    for line in f:
      row = json.loads(line)
      if key in row:
        value = row[key]
  return value


def row(workdir: str, kind: str) -> dict:
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  usage = last_value(os.path.join(workdir, "tokenizer", "metrics.jsonl"),
                     "eval/code_usage")
  out = {"kind": kind, "code_usage": usage}
  out.update({k: report[k] for k in COLUMNS if k in report and k != "minutes"})
  out["minutes"] = report["minutes"]["total"]
  return out


def table(rows: list[dict]) -> str:
  def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(fmt(r.get(c, "-")) for c in COLUMNS) + " |"
            for r in rows]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", required=True, help="One workdir per kind goes here.")
  p.add_argument("--kinds", default=",".join(KINDS))
  p.add_argument("--generator_steps", type=int, default=800)
  p.add_argument("--json", default="")
  a = p.parse_args()
  rows = []
  for kind in a.kinds.split(","):
    workdir = os.path.join(a.root, kind)
    if not os.path.exists(os.path.join(workdir, "report.json")):
      cmd = pipeline_command(workdir, kind, a.generator_steps,
                             os.path.join(a.root, "cache"))
      subprocess.run(cmd, cwd=ROOT, check=True)
    rows.append(row(workdir, kind))
  print(table(rows))
  if a.json:
    with open(a.json, "w") as f:
      json.dump(dict(generator_steps=a.generator_steps, rows=rows), f, indent=1)


if __name__ == "__main__":
  main()
