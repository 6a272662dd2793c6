"""`python -m elm_jax.pipeline` on configs/pipeline.py:tiny: every stage, the
report, resume after a kill -9 in the generator stage, refused changes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from processes import ROOT, kill_9_when, subprocess_env

# Every test here runs commands in subprocesses: the `slow` tier.
pytestmark = pytest.mark.slow

REPORT_KEYS = ("class_accuracy", "classifier_test_accuracy", "real_class_accuracy", "fid",
               "fid_real_floor", "precision", "recall", "psnr", "minutes", "samples", "grid")
FIGURES = ("class_accuracy", "classifier_test_accuracy", "real_class_accuracy", "fid",
           "fid_real_floor", "sfid", "precision", "recall", "psnr", "ssim",
           "generator_eval_loss")


def pipeline_cmd(workdir, inception, *overrides):
  return [sys.executable, "-m", "elm_jax.pipeline", "--config=configs/pipeline.py:tiny",
          f"--workdir={workdir}", f"--config.evaluation.inception={inception}", *overrides]


def run_pipeline(workdir, inception, *overrides, cache=None, check=True):
  proc = subprocess.run(pipeline_cmd(workdir, inception, *overrides), cwd=ROOT,
                        env=subprocess_env(cache), capture_output=True, text=True,
                        timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def read_report(workdir):
  with open(os.path.join(workdir, "report.json")) as f:
    return json.load(f)


def samples(workdir):
  with np.load(os.path.join(workdir, "samples", "samples.npz")) as f:
    return f["arr_0"], f["arr_1"]


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  """Shared by this module's runs: the same programs compile once."""
  return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, random_inception, xla_cache):
  workdir = str(tmp_path_factory.mktemp("pipeline") / "straight")
  proc = run_pipeline(workdir, random_inception, cache=xla_cache)
  return workdir, proc


def test_tiny_pipeline_writes_every_stage_and_the_report(straight_run):
  workdir, proc = straight_run
  report = read_report(workdir)
  for key in REPORT_KEYS:
    assert key in report, key
  for key in FIGURES:
    assert np.isfinite(report[key]), key
  assert set(report["minutes"]) == {"tokenizer", "generator", "samples", "evaluation",
                                    "total"}
  assert report["minutes"]["total"] == pytest.approx(
      sum(v for k, v in report["minutes"].items() if k != "total"), abs=0.02)
  assert 0 <= report["class_accuracy"] <= 1 and report["fid_real_floor"] > 0
  images, labels = samples(workdir)
  assert report["samples"] == os.path.join(workdir, "samples", "samples.npz")
  assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
  assert np.bincount(labels, minlength=10).tolist() == [2] * 10  # class-balanced
  assert os.path.isfile(report["grid"])
  for stage in ("tokenizer", "generator", "samples", "evaluation"):
    with open(os.path.join(workdir, stage, "stage.json")) as f:
      assert json.load(f)["minutes"] >= 0
  with open(os.path.join(workdir, "tokenizer", "stage.json")) as f:
    assert json.load(f)["config"]["stage"] == "bae"
  # Each training stage is an ordinary training workdir.
  for stage in ("tokenizer", "generator"):
    assert os.path.isdir(os.path.join(workdir, stage, "checkpoints", "4"))
  md = open(os.path.join(workdir, "report.md")).read()
  assert "](samples/grid.png)" in md and f"{report['fid']:.2f}" in md
  # The report's scalars and the grid are in the parent workdir's TensorBoard events.
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any(r.get("report/class_accuracy") == report["class_accuracy"] for r in rows)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert '"class_accuracy"' in proc.stdout


def test_rerun_skips_finished_stages_and_refuses_a_changed_one(straight_run, tmp_path,
                                                               random_inception, xla_cache):
  workdir, _ = straight_run
  before = read_report(workdir)
  proc = run_pipeline(workdir, random_inception, cache=xla_cache)
  assert proc.stderr.count("finished before") == 4
  assert "Classifier from" not in proc.stderr  # the evaluation did not run again
  assert read_report(workdir)["fid"] == before["fid"]

  changed = run_pipeline(workdir, random_inception, "--config.generator.optim.lr=0.5",
                         cache=xla_cache, check=False)
  assert changed.returncode == 1
  last = changed.stderr.strip().splitlines()[-1]
  assert "stage 'generator'" in last and "optim.lr" in last and "Traceback" not in changed.stderr
  assert read_report(workdir) == before  # nothing rewritten


def test_kill_9_in_the_generator_stage_then_rerun_gives_the_same_report(
    straight_run, tmp_path, random_inception, xla_cache):
  straight, _ = straight_run
  workdir = str(tmp_path / "killed")
  proc = subprocess.Popen(pipeline_cmd(workdir, random_inception), cwd=ROOT,
                          env=subprocess_env(xla_cache), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  kill_9_when(proc, os.path.join(workdir, "generator", "checkpoints", "2",
                                 "commit_success.txt"), 400)
  assert not os.path.exists(os.path.join(workdir, "generator", "stage.json"))
  assert os.path.exists(os.path.join(workdir, "tokenizer", "stage.json"))

  rerun = run_pipeline(workdir, random_inception, cache=xla_cache)
  assert "Stage tokenizer: finished before" in rerun.stderr
  assert "Stage generator: resuming" in rerun.stderr
  a, b = read_report(straight), read_report(workdir)
  for key in FIGURES:
    assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
  assert b["class_accuracy_per_class"] == a["class_accuracy_per_class"]
  assert b["stages_resumed"] == ["generator"]
  for x, y in zip(samples(straight), samples(workdir)):
    np.testing.assert_array_equal(x, y)


def test_bad_config_fails_before_any_work(tmp_path, random_inception):
  workdir = str(tmp_path / "bad")
  proc = run_pipeline(workdir, random_inception, "--config.generator.model.remat=sometimes",
                      check=False)
  assert proc.returncode == 1
  assert "model.remat" in proc.stderr.strip().splitlines()[-1]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, "tokenizer"))
