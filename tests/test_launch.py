"""launch/*.sh in --dry-run mode: the commands they would run, and bad usage;
the SLURM job's requeue and the TPU workers' detached runs, with stand-ins for
srun, scontrol and python3."""

import glob
import os
import shlex
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/ar.py:imagenet,size=XXL,split=2-12"


def launch(script, *args, ok=True):
  result = subprocess.run(["bash", os.path.join(REPO, "launch", script), *args],
                          capture_output=True, text=True, timeout=30)
  if ok:
    assert result.returncode == 0, result.stderr
  return result


def test_single_machine_dry_run():
  out = launch("single_machine.sh", "--dry-run", "--install", CONFIG, "/data/run 1",
               "--config.seed=3").stdout.splitlines()
  assert out == ["bash launch/setup.sh",
                 f"python3 -m elm_jax.main --config={CONFIG} '--workdir=/data/run 1' "
                 "--config.seed=3"]
  # The printed line is valid shell: it splits back into the same words.
  assert shlex.split(out[1])[4:] == ["--workdir=/data/run 1", "--config.seed=3"]


def test_tpu_pod_dry_run():
  out = launch("tpu_pod.sh", "--dry-run", "--tpu=elm-pod", "--zone=us-east5-a",
               "--project=proj", "--create", "--accelerator=v5p-128",
               "--version=v2-alpha-tpuv5", CONFIG, "/mnt/fs/xxl",
               "--config.mesh.fsdp=-1").stdout.splitlines()
  where = "--zone=us-east5-a --project=proj"
  assert out[0] == (f"gcloud compute tpus tpu-vm create elm-pod {where} "
                    "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5")
  assert out[1].startswith(f"git -C {REPO} archive --format=tar.gz")
  tarball = shlex.split(out[1])[-2]
  assert out[2] == (f"gcloud compute tpus tpu-vm scp {tarball} elm-pod:elm_jax.tar.gz "
                    f"{where} --worker=all")
  ssh = f"gcloud compute tpus tpu-vm ssh elm-pod {where} --worker=all"
  commands = [line for line in out if not line.startswith("#")]
  assert all(line.startswith(ssh) for line in commands[3:6])
  assert "tar -xzf ~/elm_jax.tar.gz" in out[3]
  assert "launch/setup.sh" in out[4] and "launch/requirements-tpu.txt" in out[4]
  logs = "/mnt/fs/xxl/logs/$(hostname)"
  assert shlex.split(out[5])[-1] == (
      "--command=cd ~/elm_jax && mkdir -p /mnt/fs/xxl/logs && { setsid nohup "
      f"python3 -m elm_jax.main --config={CONFIG} --workdir=/mnt/fs/xxl "
      f"--config.mesh.fsdp=-1 >> {logs}.log 2>&1 < /dev/null & echo $! > {logs}.pid; "
      'echo "$(hostname): started pid $!"; }')
  # Then how to follow and stop the run, as commands to paste.
  assert commands[6:] == [
      f"gcloud compute tpus tpu-vm ssh elm-pod {where} --worker=0 "
      "'--command=tail -F /mnt/fs/xxl/logs/*.log'",
      f"{ssh} '--command=kill -TERM $(cat {logs}.pid)'"]


def test_tpu_pod_without_create_or_install():
  out = launch("tpu_pod.sh", "--dry-run", "--no-install", "--tpu=t", "--zone=z",
               "configs/bae.py", "/w").stdout
  assert "tpu-vm create" not in out and "setup.sh" not in out
  assert "setsid nohup python3 -m elm_jax.main --config=configs/bae.py" in out


def test_sample_runs_elm_jax_sample_on_every_host():
  flags = ["--sample", "configs/sample.py:imagenet", "/shared/samples",
           "--config.generator.checkpoint=/shared/xxl"]
  want = ("python3 -m elm_jax.sample --config=configs/sample.py:imagenet "
          "--workdir=/shared/samples --config.generator.checkpoint=/shared/xxl")
  assert launch("single_machine.sh", "--dry-run", *flags).stdout.splitlines() == [want]
  pod = launch("tpu_pod.sh", "--dry-run", "--no-install", "--tpu=t", "--zone=z",
               *flags).stdout
  assert f"setsid nohup {want} >> /shared/samples/logs/" in pod
  slurm = launch("gpu_slurm.sh", "--dry-run", *flags).stdout.splitlines()
  assert f"srun {want} || status=$?" in slurm
  assert "elm_jax.main" not in launch("gpu_slurm.sh", "--dry-run", *flags).stdout


@pytest.mark.parametrize("per,tasks", [("gpu", 8), ("node", 1)])
def test_gpu_slurm_dry_run(per, tasks):
  out = launch("gpu_slurm.sh", "--dry-run", "--nodes=4", f"--per={per}",
               "--partition=a100", "--time=48:00:00", "--install", CONFIG,
               "/shared/xxl", "--config.mesh.fsdp=-1").stdout
  for line in ("#SBATCH --nodes=4", f"#SBATCH --ntasks-per-node={tasks}",
               "#SBATCH --gpus-per-node=8", "#SBATCH --partition=a100",
               "#SBATCH --time=48:00:00", f"cd {REPO}",
               "srun --ntasks-per-node=1 python3 -m pip install -q -r "
               "requirements.txt 'jax[cuda12]==0.10.2'",
               f"srun python3 -m elm_jax.main --config={CONFIG} "
               "--workdir=/shared/xxl --config.mesh.fsdp=-1 || status=$?"):
    assert line in out.splitlines(), line


def test_every_launch_script_parses():
  for script in glob.glob(os.path.join(REPO, "launch", "*.sh")):
    result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert result.returncode == 0, (script, result.stderr)


def test_gpu_slurm_asks_for_sigterm_before_the_limit_and_requeue(tmp_path):
  out = launch("gpu_slurm.sh", "--dry-run", "--time=4:00:00", "--signal_before=600",
               "configs/bae.py", "/shared/w").stdout.splitlines()
  # No B: the signal goes to the tasks (the python processes), not the shell.
  for line in ("#SBATCH --signal=TERM@600", "#SBATCH --requeue",
               "#SBATCH --open-mode=append"):
    assert line in out, line
  assert "#SBATCH --signal=TERM@300" in launch(
      "gpu_slurm.sh", "--dry-run", "c", "w").stdout.splitlines()
  # sbatch reads #SBATCH lines only before the first command.
  first_command = next(i for i, line in enumerate(out[1:], 1)
                       if line and not line.startswith("#"))
  assert all(i < first_command for i, line in enumerate(out) if line.startswith("#SBATCH"))
  (tmp_path / "job.sh").write_text("\n".join(out))
  assert subprocess.run(["bash", "-n", tmp_path / "job.sh"]).returncode == 0
  result = launch("gpu_slurm.sh", "--dry-run", "--signal_before=0", "c", "w", ok=False)
  assert result.returncode == 2 and "--signal_before" in result.stderr


@pytest.mark.parametrize("status,requeued", [(143, True), (0, False), (1, False)])
def test_gpu_slurm_job_requeues_itself_only_when_stopped_by_the_signal(
    tmp_path, status, requeued):
  """The batch script with stand-ins for srun (exiting `status`) and scontrol."""
  job = tmp_path / "job.sh"
  job.write_text(launch("gpu_slurm.sh", "--dry-run", "configs/bae.py", "/shared/w").stdout)
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
  bin_dir.mkdir()
  for tool, code in (("srun", status), ("scontrol", 0)):
    (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} "$@" >> {calls}\nexit {code}\n')
    (bin_dir / tool).chmod(0o755)
  result = subprocess.run(
      ["bash", job], capture_output=True, text=True, timeout=30,
      env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42"})
  assert result.returncode == status, result.stderr
  lines = calls.read_text().splitlines()
  assert lines[0] == "srun python3 -m elm_jax.main --config=configs/bae.py --workdir=/shared/w"
  assert lines[1:] == (["scontrol requeue 42"] if requeued else [])


def test_tpu_pod_worker_command_runs_detached_and_stops_on_sigterm(tmp_path):
  """The --command each worker runs, here with a stand-in python3: the shell
  returns at once, the run goes on in its own session and logs to
  WORKDIR/logs/HOSTNAME.log; the printed stop command delivers SIGTERM."""
  workdir = tmp_path / "work dir"
  out = launch("tpu_pod.sh", "--dry-run", "--no-install", "--tpu=t", "--zone=z",
               "configs/bae.py", str(workdir)).stdout.splitlines()
  commands = [shlex.split(line)[-1].removeprefix("--command=")
              for line in out if "--command=" in line]
  start, follow, stop = commands[-3:]
  (tmp_path / "elm_jax").mkdir()
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "python3").write_text(
      '#!/bin/bash\ntrap \'echo "saved on SIGTERM"; exit 143\' TERM\n'
      'echo "python3 $*"\nwhile true; do sleep 0.1; done\n')
  (bin_dir / "python3").chmod(0o755)
  env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
  begun = time.monotonic()
  # capture_output: this returns only once nothing holds the shell's stdout.
  result = subprocess.run(["bash", "-c", start], capture_output=True, text=True,
                          timeout=20, env=env)
  assert result.returncode == 0 and time.monotonic() - begun < 10, result.stderr
  log = workdir / "logs" / f"{os.uname().nodename}.log"
  pid = int((workdir / "logs" / f"{os.uname().nodename}.pid").read_text())

  def wait_for(text):
    deadline = time.monotonic() + 20
    while text not in log.read_text() and time.monotonic() < deadline:
      time.sleep(0.05)

  try:
    assert f"started pid {pid}" in result.stdout
    wait_for("python3")  # started, its SIGTERM handler set
    assert os.getsid(pid) == pid != os.getsid(0)  # its own session
    assert follow == f"tail -F {shlex.quote(str(workdir / 'logs'))}/*.log"
    subprocess.run(["bash", "-c", stop], check=True, timeout=20, env=env)
    wait_for("saved on SIGTERM")
    assert log.read_text().splitlines() == [
        f"python3 -m elm_jax.main --config=configs/bae.py --workdir={workdir}",
        "saved on SIGTERM"]
  finally:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


@pytest.mark.parametrize("script,args,message", [
    ("single_machine.sh", ["configs/ar.py"], "usage: launch/single_machine.sh"),
    ("tpu_pod.sh", ["--zone=z", "c", "w"], "usage: launch/tpu_pod.sh"),
    ("tpu_pod.sh", ["--tpu=t", "--zone=z", "--create", "c", "w"], "--create needs"),
    ("gpu_slurm.sh", ["--per=core", "c", "w"], "expected gpu or node"),
    ("gpu_slurm.sh", ["--bogus", "c", "w"], "unknown option --bogus"),
])
def test_bad_usage_exits_with_a_message(script, args, message):
  result = launch(script, "--dry-run", *args, ok=False)
  assert result.returncode == 2
  assert message in result.stderr


def test_tpu_requirements_pin_libtpu_of_installed_jax():
  import importlib.metadata
  wanted = [r for r in importlib.metadata.requires("jax") if r.startswith("libtpu")]
  pinned = [line for line in open(os.path.join(REPO, "launch", "requirements-tpu.txt"))
            if line.startswith("libtpu==")]
  assert len(pinned) == 1 and wanted
  prefix = wanted[0].split(";")[0].split("==")[1].rstrip("*")  # "0.0.42."
  assert pinned[0].strip().split("==")[1].startswith(prefix)
