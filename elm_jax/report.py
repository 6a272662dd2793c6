"""The pipeline's report: report.json, report.md (grid and figures) and TensorBoard.

report.json holds the scores of the evaluation stage, the tokenizer's
held-out PSNR (its last evaluation), minutes per stage and in total, and the
paths of samples.npz and grid.png; report.md shows the grid beside a table
of the same figures and the settings that produced them.
"""

import os

import numpy as np
from PIL import Image

from elm_jax import atomic_files, metrics

SCORE_KEYS = ("class_accuracy", "classifier_test_accuracy", "real_class_accuracy", "fid",
              "fid_real_floor", "sfid", "precision", "recall")


def last_eval(stage_dir: str, key: str) -> float | None:
  """The last logged eval/<key> of a training run (metrics.jsonl)."""
  value = None
  for row in metrics.read_jsonl(stage_dir):
    if f"eval/{key}" in row:
      value = float(row[f"eval/{key}"])
  return value


def build(configs: dict, dirs: dict, records: dict) -> dict:
  scores = records["evaluation"]["result"]
  minutes = {name: round(records[name]["minutes"], 2) for name in dirs}
  minutes["total"] = round(sum(minutes.values()), 2)
  tok, gen = configs["tokenizer"], configs["generator"]
  grid_size = tok.data.image_size // 2 ** (len(tok.model.ch_mult) - 1)
  report = {k: scores[k] for k in SCORE_KEYS}
  report.update(
      fid_over_floor=scores["fid"] / scores["fid_real_floor"],
      psnr=last_eval(dirs["tokenizer"], "psnr"),
      ssim=last_eval(dirs["tokenizer"], "ssim"),
      generator_eval_loss=last_eval(dirs["generator"], "loss"),
      minutes=minutes,
      samples=records["samples"]["result"]["samples"],
      grid=records["samples"]["result"]["grid"],
      class_accuracy_per_class=scores["class_accuracy_per_class"],
      num_samples=scores["num_samples"], num_reference=scores["num_reference"],
      setup=dict(grid=f"{grid_size}x{grid_size}", quantizer=tok.model.quantizer,
                 codes=(f"ids of a {tok.model.codebook_size}-entry codebook"
                        if tok.model.quantizer == "vq"
                        else f"{tok.model.bits}-bit codes"),
                 bernoulli_codes=bool(gen.tokenizer.bernoulli), split=gen.split,
                 generator=gen.stage, layers=gen.model.num_layers, width=gen.model.dim,
                 generator_steps=gen.total_steps, generator_batch=gen.batch_size,
                 tokenizer_steps=tok.total_steps, tokenizer_batch=tok.batch_size,
                 sampler=dict(configs["sample"].sampler)),
      stages_resumed=[name for name in dirs if records[name].get("resumed")])
  return report


def markdown(report: dict, workdir: str) -> str:
  grid = os.path.relpath(report["grid"], os.path.abspath(workdir))
  m, s = report["minutes"], report["setup"]
  rows = [
      ("class accuracy (samples, by the CNN classifier)", f"{report['class_accuracy']:.3f}"),
      ("classifier's accuracy on real images (ceiling)", f"{report['real_class_accuracy']:.3f}"),
      ("classifier's test accuracy", f"{report['classifier_test_accuracy']:.3f}"),
      ("FID of the samples", f"{report['fid']:.2f}"),
      ("FID of other real images (floor)", f"{report['fid_real_floor']:.2f}"),
      ("FID / floor", f"{report['fid_over_floor']:.2f}"),
      ("sFID", f"{report['sfid']:.2f}"),
      ("precision / recall", f"{report['precision']:.3f} / {report['recall']:.3f}"),
      ("tokenizer held-out PSNR (dB)",
       "-" if report["psnr"] is None else f"{report['psnr']:.2f}"),
      ("minutes: tokenizer / generator / samples / evaluation",
       f"{m['tokenizer']:.1f} / {m['generator']:.1f} / {m['samples']:.1f} / "
       f"{m['evaluation']:.1f}"),
      ("minutes in total", f"{m['total']:.1f}"),
  ]
  per_class = ", ".join(f"{c}: {a:.2f}" for c, a in report["class_accuracy_per_class"].items())
  lines = [
      "# Pipeline report", "",
      f"![samples, one row per class]({grid})", "",
      f"{report['num_samples']} class-balanced samples against {report['num_reference']} "
      "held-out images.", "",
      "| figure | value |", "|---|---|",
      *[f"| {name} | {value} |" for name, value in rows], "",
      f"Class accuracy per class: {per_class}.", "",
      f"Setup: {s['grid']} grid of {s['codes']} ({s['quantizer']}"
      + (f", {'Bernoulli' if s['bernoulli_codes'] else 'thresholded'} bits for the "
         "generator" if s['quantizer'] == "binary" else "") + "), "
      f"{s['generator'].upper()} generator, split {s['split']}, {s['layers']} layers of width "
      f"{s['width']}, {s['generator_steps']} steps at batch {s['generator_batch']}; "
      f"tokenizer {s['tokenizer_steps']} steps at batch {s['tokenizer_batch']}; sampler "
      f"{s['sampler']}.",
  ]
  if report["stages_resumed"]:
    lines += ["", "Resumed stages (minutes count the run that finished them): "
              + ", ".join(report["stages_resumed"]) + "."]
  return "\n".join(lines) + "\n"


def write(workdir: str, configs: dict, dirs: dict, records: dict) -> dict:
  report = build(configs, dirs, records)
  atomic_files.write_json(os.path.join(workdir, "report.json"), report)
  atomic_files.write_text(os.path.join(workdir, "report.md"), markdown(report, workdir))
  writer = metrics.create_writer(workdir)
  step = int(configs["generator"].total_steps)
  writer.write_scalars(step, {f"report/{k}": float(report[k]) for k in
                              SCORE_KEYS + ("fid_over_floor", "psnr")
                              if report[k] is not None})
  writer.write_scalars(step, {f"report/minutes/{k}": v for k, v in report["minutes"].items()})
  writer.write_images(step, {"report/grid": np.asarray(Image.open(report["grid"]))[None]})
  writer.flush()
  writer.close()
  return report
