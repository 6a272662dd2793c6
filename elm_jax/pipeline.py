"""The whole ELM pipeline in one command: tokenizer, generator, samples, scores, report.

  python -m elm_jax.pipeline --config=configs/pipeline.py --workdir=workdirs/fmnist
  python -m elm_jax.pipeline --config=configs/pipeline.py:tiny --workdir=/tmp/p

Each stage is an ordinary workdir inside WORKDIR, run by the same code as the
stand-alone commands: `tokenizer/` and `generator/` by the training loop of
`elm_jax.main`, `samples/` by `elm_jax.sample`, `evaluation/` by
`elm_jax.evaluate` (plus the class accuracy of `evaluation.classifier`). A
finished stage leaves `stage.json` (its config, the ids of the stages it was
made from, and its minutes) in its directory. Running the command again skips
finished stages, resumes the unfinished one from its own checkpoints or
sample batches, and refuses, naming the fields, a config that changes a
finished stage, or a finished stage made from an earlier stage's older run.
WORKDIR/report.json and report.md hold the figures; WORKDIR's TensorBoard
events hold them too, with the grid.
"""

import json
import os
import time
import uuid

from absl import app, flags, logging
from ml_collections import config_flags

from elm_jax.bad_input import exit_on_bad_input, local_path, parse_flags

STAGES = ("tokenizer", "generator", "samples", "evaluation")
STAGE_FILE = "stage.json"


def stage_configs(config, workdir: str) -> dict:
  """The stage configs with the paths that connect them (absolute, so a
  stage's own config names its inputs wherever the command was started)."""
  root = os.path.abspath(workdir)
  out = {name: config[name].copy_and_resolve_references() for name in
         ("tokenizer", "generator", "sample", "evaluation")}
  out["generator"].tokenizer.checkpoint = os.path.join(root, "tokenizer")
  out["sample"].generator.checkpoint = os.path.join(root, "generator")
  cache = config.evaluation.cache_dir or os.path.join(root, "cache")
  out["evaluation"].cache_dir = os.path.abspath(cache)
  return out


def _as_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def finished(stage_dir: str) -> dict | None:
  path = os.path.join(stage_dir, STAGE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_unchanged(name: str, stage_dir: str, record: dict, config: dict) -> None:
  """A finished stage's saved config must equal this run's."""
  from elm_jax.train.loop import changed_fields
  changed = changed_fields(record["config"], config)
  if changed:
    raise ValueError(
        f"stage {name!r} finished in {stage_dir} with other settings "
        f"({'; '.join(changed[:8])}); rerun with the saved values, or delete "
        f"{stage_dir} (and the stages after it) to redo it, or use a new --workdir.")


def check_inputs(name: str, stage_dir: str, record: dict, inputs: dict) -> None:
  """A finished stage must have been made from the earlier stages as they are
  now (not from a tokenizer or generator that was trained again since)."""
  stale = sorted(k for k in set(record["inputs"]) | set(inputs)
                 if record["inputs"].get(k) != inputs.get(k))
  if stale:
    raise ValueError(
        f"stage {name!r} in {stage_dir} was made from an earlier run of "
        f"{', '.join(stale)}; delete {stage_dir} (and the stages after it) to redo it "
        "from the current one.")


def _mark_finished(stage_dir: str, config: dict, inputs: dict, minutes: float,
                   resumed: bool, result: dict) -> dict:
  from elm_jax import atomic_files
  record = dict(config=config, inputs=inputs, id=uuid.uuid4().hex, minutes=minutes,
                resumed=resumed, result=result)
  os.makedirs(stage_dir, exist_ok=True)
  atomic_files.write_json(os.path.join(stage_dir, STAGE_FILE), record)
  return record


def _train(config, stage_dir: str) -> None:
  """elm_jax.main's work for one training config."""
  from elm_jax.train import loop
  from elm_jax.train.stages import make_stage
  loop.train_and_evaluate(config, stage_dir, make_stage(config))


def _sample(config, stage_dir: str) -> dict:
  from elm_jax import sample
  return sample.run(config, stage_dir)


def validate(configs: dict) -> None:
  """Checks every stage's config (from stage_configs); raises ConfigError."""
  from elm_jax import configs_lib, sample
  from elm_jax.evaluation import sample_scores
  configs_lib.validate(configs["tokenizer"])
  configs_lib.validate(configs["generator"])
  sample.validate(configs["sample"])
  sample_scores.validate(configs["evaluation"])


def run(config, workdir: str) -> dict:
  """Runs (or resumes) every stage; returns the report."""
  from elm_jax import workdir_lock
  workdir = os.path.abspath(workdir)
  configs = stage_configs(config, workdir)
  # Every config is checked before any work: a typo in the generator's
  # settings must not wait for the tokenizer's training.
  validate(configs)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir):  # one pipeline per workdir
    return _run_stages(configs, workdir)


def _run_stages(configs: dict, workdir: str) -> dict:
  from elm_jax import report
  from elm_jax.evaluation import sample_scores
  dirs = {name: os.path.join(workdir, name) for name in STAGES}
  records = {}
  plan = (("tokenizer", configs["tokenizer"], _train),
          ("generator", configs["generator"], _train),
          ("samples", configs["sample"], _sample),
          ("evaluation", configs["evaluation"],
           lambda c, d: sample_scores.evaluate(c, d, configs["generator"].data,
                                               records["samples"]["result"]["samples"])))
  for name, stage_config, fn in plan:
    as_dict = _as_dict(stage_config)
    inputs = {earlier: records[earlier]["id"] for earlier in records}
    record = finished(dirs[name])
    if record is not None:
      check_unchanged(name, dirs[name], record, as_dict)
      check_inputs(name, dirs[name], record, inputs)
      logging.info("Stage %s: finished before (%.1f min), skipped.", name,
                   record["minutes"])
      records[name] = record
      continue
    resumed = os.path.isdir(dirs[name])
    logging.info("Stage %s: %s in %s", name, "resuming" if resumed else "starting",
                 dirs[name])
    start = time.perf_counter()
    result = fn(stage_config, dirs[name]) or {}
    records[name] = _mark_finished(dirs[name], as_dict, inputs,
                                   (time.perf_counter() - start) / 60, resumed, result)
  return report.write(workdir, configs, dirs, records)


def main(config, workdir: str) -> None:
  from elm_jax import platform
  platform.split_cpu(config.cpu_devices)
  from elm_jax import run_log
  from elm_jax.train import preemption
  with preemption.exit_when_stopped(), exit_on_bad_input("elm_jax.pipeline"):
    local_path("--workdir", workdir)
    import jax
    if config.get("jax_disable_most_optimizations", False):
      # tiny: compile time dominates a few-step run.
      jax.config.update("jax_disable_most_optimizations", True)
    with run_log.capture(workdir, "pipeline"):
      report = run(config, workdir)
  print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)},
                   indent=1))


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/pipeline.py:tiny.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage's directory goes.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(_CONFIG.value, _WORKDIR.value), flags_parser=parse_flags)
