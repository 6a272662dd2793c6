"""`python -m elm_jax.sample` end to end, its files, and resuming."""

import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from config_loading import get_config
from processes import ROOT, finished_logs, two_processes
from random_runs import save_random_run, save_tiny_generator
from elm_jax.sampling import sample_store

# Every test here runs commands in subprocesses: the `slow` tier.
pytestmark = pytest.mark.slow


def sample_command(gen_dir, out_dir, *flags, devices=8):
  cmd = [sys.executable, "-m", "elm_jax.sample", "--config=configs/sample.py:tiny",
         f"--config.generator.checkpoint={gen_dir}", f"--workdir={out_dir}", *flags]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return dict(args=cmd, cwd=ROOT, env=env)


def run_sample(gen_dir, out_dir, *flags, devices=8):
  return subprocess.run(**sample_command(gen_dir, out_dir, *flags, devices=devices),
                        capture_output=True, text=True, timeout=600)


def test_sample_writes_grid_and_adm_npz_and_resumes(tiny_ar_dir, tmp_path):
  out = str(tmp_path / "out")
  # 8 devices, batches of 8: 20 samples = 8 + 8 + 4 (padded); grid 10 = 8 + 2.
  first = run_sample(tiny_ar_dir, out, "--config.batch_size=8")
  assert first.returncode == 0, first.stderr[-3000:]
  assert re.search(r"Batch 1/3: [\d.]+ images/s, ETA \d+m\d\ds", first.stderr)
  assert re.search(r"Batch 3/3: .* ETA 0m00s", first.stderr)
  assert glob.glob(os.path.join(out, "logs", "sample-*-p0.log"))
  with np.load(os.path.join(out, "samples.npz")) as f:
    images, labels = f["arr_0"], f["arr_1"]
  assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [2] * 10)
  from PIL import Image
  grid = np.asarray(Image.open(os.path.join(out, "grid.png")))
  assert grid.shape[0] == 5 * 34 + 2 and grid.shape[1] == 2 * 34 + 2
  # Resume: batch 1 is lost (and a stray temp file left by a kill); only it is
  # redone, and the result is identical.
  os.remove(os.path.join(out, "batches", "000001.npz"))
  open(os.path.join(out, "batches", "000000.npz.tmp.123"), "wb").close()
  before = os.path.getmtime(os.path.join(out, "batches", "000000.npz"))
  second = run_sample(tiny_ar_dir, out, "--config.batch_size=8")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "2 of 3 batches are already done" in second.stderr
  assert os.path.getmtime(os.path.join(out, "batches", "000000.npz")) == before
  with np.load(os.path.join(out, "samples.npz")) as f:
    np.testing.assert_array_equal(f["arr_0"], images)
  # Other settings in the same workdir are refused; the samples stay.
  third = run_sample(tiny_ar_dir, out, "--config.batch_size=8",
                     "--config.sampler.top_k=3")
  assert third.returncode != 0 and "sampler" not in third.stdout
  assert "other settings" in third.stderr and "top_k" in third.stderr
  with np.load(os.path.join(out, "samples.npz")) as f:
    np.testing.assert_array_equal(f["arr_0"], images)


def test_two_processes_sample_what_one_process_does(tiny_ar_dir, tmp_path):
  """2 processes x 2 devices over jax.distributed: each global batch is split
  over all 4 devices; process 0 alone writes, the same files as one process
  with 4 devices writes."""
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  flags = ["--config.batch_size=8", "--config.sampler.top_k=4"]
  command = sample_command(tiny_ar_dir, two, *flags, devices=2)
  with two_processes(command.pop("args"), **command) as procs:
    single = run_sample(tiny_ar_dir, one, *flags, devices=4)
    logs = finished_logs(procs, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  for i, log in enumerate(logs):
    assert f"Process {i} of 2, 2 local devices of 4" in log
  with np.load(os.path.join(one, "samples.npz")) as a, \
       np.load(os.path.join(two, "samples.npz")) as b:
    assert a["arr_0"].shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
  for name in ("grid.png", "batches/000000.npz"):
    with open(os.path.join(one, name), "rb") as a, open(os.path.join(two, name), "rb") as b:
      assert a.read() == b.read(), name


def test_sample_mlm_generator(tiny_tokenizer_dir, tmp_path):
  gen = save_tiny_generator("mlm", tiny_tokenizer_dir, str(tmp_path / "mlm"))
  out = str(tmp_path / "out")
  proc = run_sample(gen, out, "--config.num_samples=10", "--config.batch_size=8",
                    "--config.sampler.iterations=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["arr_0"].shape == (10, 32, 32, 3)


def test_sample_patched_generator(tiny_tokenizer_dir, tmp_path):
  """patch=2: 8x8 positions of four 8-bit sub-codes over the 16x16 tokenizer."""
  config = get_config("ar", "tiny,split=4-8")
  config.tokenizer.checkpoint, config.patch = tiny_tokenizer_dir, 2
  gen = save_random_run(config, str(tmp_path / "ar"), step=3)
  out = str(tmp_path / "out")
  proc = run_sample(gen, out, "--config.num_samples=10", "--config.batch_size=8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["arr_0"].shape == (10, 32, 32, 3)
    assert f["arr_0"].std() > 0


def test_sample_errors_name_the_fix(tiny_ar_dir, tiny_tokenizer_dir, tmp_path):
  from elm_jax import configs_lib, sample
  config = get_config("sample", "tiny")
  with pytest.raises(configs_lib.ConfigError, match="generator.checkpoint"):
    sample.validate(config)
  config.generator.checkpoint = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    sample.run(config, str(tmp_path / "a"))
  config.generator.checkpoint = tiny_tokenizer_dir
  with pytest.raises(ValueError, match="not a generator"):
    sample.run(config, str(tmp_path / "b"))
  config.generator.checkpoint, config.num_samples = tiny_ar_dir, 15
  with pytest.raises(ValueError, match="multiple of the 10 classes"):
    sample.run(config, str(tmp_path / "c"))
  assert not os.path.exists(tmp_path / "c" / "samples.npz")


def test_store_redoes_unreadable_batches(tmp_path):
  store = sample_store.SampleStore(str(tmp_path), {"seed": 0})
  store.write_batch(0, np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]))
  with open(store.batch_path(1), "wb") as f:
    f.write(b"truncated")
  assert store.load_batch(0) is not None and store.load_batch(1) is None
  with pytest.raises(RuntimeError, match=r"Batches \[1\] are missing"):
    store.assemble(2, 4)


def test_resume_refuses_another_tokenizer_checkpoint(tiny_tokenizer_dir, tmp_path):
  """The tokenizer decodes the samples: training it further (a later step)
  or naming another one must not mix decoders in one npz."""
  import shutil
  from elm_jax import sample
  tok = str(tmp_path / "tok")
  shutil.copytree(tiny_tokenizer_dir, tok)
  gen = save_tiny_generator("ar", tok, str(tmp_path / "ar"))
  config = get_config("sample", "tiny")
  config.generator.checkpoint, config.num_samples = gen, 0
  config.batch_size, config.grid.per_class = 8, 0  # 8 devices; no sampling
  out = str(tmp_path / "out")
  sample.run(config, out)  # pins the settings
  sample.run(config, out)  # same settings: fine
  config.tokenizer.checkpoint = tiny_tokenizer_dir  # same weights, other run
  with pytest.raises(ValueError, match="other settings.*'tokenizer'"):
    sample.run(config, out)
  config.tokenizer.checkpoint = ""
  tok_config = get_config("bae", "tiny")
  tok_config.loss.gan_weight = 0.0
  save_random_run(tok_config, tok, step=5)  # the tokenizer trained on
  with pytest.raises(ValueError, match="other settings.*tokenizer_step"):
    sample.run(config, out)
