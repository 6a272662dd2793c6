"""Multi-process start-up plans, process-count-independent batches, and a real
2-process run (jax.distributed over 127.0.0.1, 4 CPU devices each) against a
1-process run on 8 devices."""

import glob
import os
import signal
import sys

import grain
import numpy as np
import pytest

from config_loading import get_config
from processes import finished_logs, logged_step, signal_when, two_processes
from elm_jax import checkpointing, distributed
from elm_jax.data import global_batches
from elm_jax.metrics import read_jsonl

# Every test here runs commands in subprocesses: the `slow` tier.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ plans
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[003-004]",
         "SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}


def test_plan_explicit_flags():
  p = distributed.plan("10.0.0.1:1234", 4, 2, environ={})
  assert p.source == "explicit"
  assert p.kwargs == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                          process_id=2)
  p = distributed.plan("h:1", 2, 0, local_device_ids=[0, 1], environ=SLURM)
  assert p.source == "explicit" and p.kwargs["local_device_ids"] == [0, 1]


@pytest.mark.parametrize("args,missing", [
    (("h:1", 0, -1), "--num_processes, --process_id missing"),
    (("", 2, 1), "--coordinator_address missing"),
])
def test_plan_incomplete_flags_name_the_missing_one(args, missing):
  with pytest.raises(ValueError, match=missing):
    distributed.plan(*args, environ={})
  with pytest.raises(ValueError, match="must be below"):
    distributed.plan("h:1", 2, 2, environ={})


def test_plan_slurm_per_gpu_and_per_node():
  p = distributed.plan(environ={**SLURM, "SLURM_NTASKS_PER_NODE": "8"},
                       tpu_chips_attached=False)
  assert p == distributed.Plan("slurm", {})  # jax gives task i GPU SLURM_LOCALID
  per_node = {**SLURM, "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "1(x2)",
              "SLURM_GPUS_ON_NODE": "8"}
  p = distributed.plan(environ=per_node, tpu_chips_attached=False)
  assert p.kwargs == {"local_device_ids": list(range(8))}
  single = {**SLURM, "SLURM_NTASKS": "1"}
  assert distributed.plan(environ=single).source == "single"


def test_plan_tpu_and_nothing():
  assert distributed.plan(environ={}, tpu_chips_attached=True).source == "tpu"
  gke = {"TPU_WORKER_HOSTNAMES": "w0,w1"}
  assert distributed.plan(environ=gke, tpu_chips_attached=False).source == "tpu"
  assert distributed.plan(environ={}, tpu_chips_attached=False).source == "single"
  jax_env = {"JAX_COORDINATOR_ADDRESS": "h:1"}
  assert distributed.plan(environ=jax_env).source == "explicit"


def test_parse_device_ids():
  assert distributed.parse_device_ids("0, 1,2") == [0, 1, 2]
  assert distributed.parse_device_ids("") == []
  with pytest.raises(ValueError, match="comma-separated integers"):
    distributed.parse_device_ids("0;1")


# ------------------------------------------------------------ global batches
class _Range:
  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return np.int64(i)


def _stream(process, count, batch, steps):
  sampler = global_batches.ProcessSliceSampler(
      grain.samplers.IndexSampler(100, shuffle=True, num_epochs=None, seed=3),
      batch, process, count)
  loader = grain.DataLoader(data_source=_Range(100), sampler=sampler,
                            operations=[grain.transforms.Batch(batch // count)],
                            shard_options=grain.sharding.NoSharding())
  it = iter(loader)
  return [next(it) for _ in range(steps)]


def test_global_batches_do_not_depend_on_process_count():
  one = _stream(0, 1, 12, 20)  # 20 x 12 > 100 records: crosses an epoch
  for count in (2, 3, 4):
    parts = [_stream(p, count, 12, 20) for p in range(count)]
    for step in range(20):
      joined = np.concatenate([parts[p][step] for p in range(count)])
      np.testing.assert_array_equal(joined, one[step])
  assert sorted(np.concatenate(one[:8])[:100]) != list(range(100))  # shuffled
  assert len(set(np.concatenate(one[:8])[:96].tolist())) == 96  # no repeats


def test_global_positions_with_workers():
  """grain gives worker w local positions w, w+W, ... and returns the workers'
  batches round-robin; local batch t must still be global batch t's slice."""
  for workers in (1, 2, 3):
    s = global_batches.ProcessSliceSampler(None, 8, 1, 2, worker_count=workers)
    for t in range(6):
      worker, nth = t % workers, t // workers
      local = [worker + workers * (nth * 4 + r) for r in range(4)]
      assert [s.global_position(j) for j in local] == [t * 8 + 4 + r for r in range(4)]


def test_batch_must_divide_by_processes():
  with pytest.raises(ValueError, match="multiple of jax.process_count"):
    global_batches.ProcessSliceSampler(None, 10, 0, 4)


# ------------------------------------------------------- 2 processes vs 1
OVERRIDES = {"total_steps": 2, "checkpoint_every": 2, "eval_every": 2,
             "log_every": 1, "model.num_layers": 1, "eval.batch_size": 8}


def _two_process_argv(tokenizer_dir, workdir, dump):
  flags = ["--config=configs/ar.py:tiny,split=2-4",
           f"--config.tokenizer.checkpoint={tokenizer_dir}",
           f"--workdir={workdir}", f"--dump={dump}"]
  flags += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  worker = os.path.join(REPO, "tests", "distributed_worker.py")
  return [sys.executable, worker, *flags]


def _cpu_env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _single_process_run(tokenizer_dir, workdir):
  from elm_jax.train import loop
  from elm_jax.train.ar import ARStage
  config = get_config("ar", "tiny,split=2-4")
  config.tokenizer.checkpoint = tokenizer_dir
  for key, value in OVERRIDES.items():
    node, _, leaf = key.rpartition(".")
    (config[node] if node else config)[leaf] = value
  return loop.train_and_evaluate(config, workdir, ARStage(config))


def test_two_processes_match_one(tmp_path, tiny_tokenizer_dir):
  import jax
  multi, single, dump = (str(tmp_path / d) for d in ("multi", "single", "dump"))
  os.makedirs(dump)
  with two_processes(_two_process_argv(tiny_tokenizer_dir, multi, dump),
                     cwd=REPO, env=_cpu_env(4)) as procs:
    # The reference run overlaps with the subprocesses.
    reference = _single_process_run(tiny_tokenizer_dir, single)
    finished_logs(procs)

  # Both processes hold the same replicated parameters, equal to the 8-device run's.
  local = [dict(np.load(os.path.join(dump, f"params_{i}.npz"))) for i in range(2)]
  ref = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
         jax.tree_util.tree_leaves_with_path(reference.params)}
  assert local[0].keys() == local[1].keys() == ref.keys()
  for name in ref:
    np.testing.assert_array_equal(local[0][name], local[1][name], err_msg=name)
    # Gradient sums run in another order; Adam's normalisation can turn a
    # last-bit difference of a near-zero gradient into a visible one, still
    # far below the 1e-3 a weight moves per step.
    np.testing.assert_allclose(local[0][name], ref[name], rtol=1e-5, atol=1e-4,
                               err_msg=name)

  # Same global batches -> same losses; only process 0 writes metrics and events.
  loss = lambda d: [r["train/loss"] for r in read_jsonl(d) if "train/loss" in r]
  assert len(loss(multi)) == 2
  np.testing.assert_allclose(loss(multi), loss(single), rtol=1e-5)
  assert len(glob.glob(os.path.join(multi, "events.out.tfevents*"))) == 1

  # The checkpoint is one collective save (both processes' data-iterator
  # states) and restores to what the processes held.
  step_dir = os.path.join(multi, "checkpoints", "2")
  assert sorted(os.listdir(os.path.join(step_dir, "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  restored = checkpointing.Checkpointer(multi).restore(2)
  for path, leaf in jax.tree_util.tree_leaves_with_path(restored["params"]):
    np.testing.assert_array_equal(np.asarray(leaf),
                                  local[0][jax.tree_util.keystr(path)])


def _tokenizer_argv(workdir):
  return [sys.executable, "-m", "elm_jax.main", "--config=configs/bae.py:tiny",
          f"--workdir={workdir}", "--config.total_steps=6", "--config.eval_every=6",
          "--config.checkpoint_every=3"]


def test_two_process_tokenizer_run_and_sigterm(tmp_path):
  """The tokenizer stage (GAN, LPIPS, evaluation, image summaries) through
  `python -m elm_jax.main` on 2 processes x 2 devices: both finish, process 0
  alone writes the logs, the checkpoint holds both data-iterator states. A
  SIGTERM to one process stops both at one step, saved; the same command
  then ends with the uninterrupted run's parameters, bit for bit."""
  env = dict(_cpu_env(2), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  workdir = str(tmp_path / "bae")
  with two_processes(_tokenizer_argv(workdir), cwd=REPO, env=env) as procs:
    logs = finished_logs(procs)
  for i, log in enumerate(logs):
    assert f"Process {i} of 2, 2 local devices of 4" in log
  rows = read_jsonl(workdir)
  assert [r["step"] for r in rows if "train/loss/total" in r] == [1, 2, 3, 4, 5, 6]
  assert any("eval/psnr" in r for r in rows)
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents*"))) == 1
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "6", "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

  stopped = str(tmp_path / "stopped")
  with two_processes(_tokenizer_argv(stopped), cwd=REPO, env=env) as procs:
    signal_when(procs[1], lambda: logged_step(stopped, "train/loss/total") >= 1,
                signal.SIGTERM, 300, "step 1 was logged")
    logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [143, 143], logs[0][-3000:] + logs[1][-3000:]
  step = checkpointing.Checkpointer(stopped).latest_step()
  assert 1 <= step < 6
  for log in logs:
    assert f"Stopped by SIGTERM at step {step}; checkpoint" in log
  with two_processes(_tokenizer_argv(stopped), cwd=REPO, env=env) as procs:
    finished_logs(procs)
  losses = lambda d: [(r["step"], r["train/loss/total"]) for r in read_jsonl(d)
                      if "train/loss/total" in r]
  assert losses(stopped) == losses(workdir)
  a = jax_leaves(checkpointing.Checkpointer(workdir).restore(6))
  b = jax_leaves(checkpointing.Checkpointer(stopped).restore(6))
  assert len(a) == len(b) > 100
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
