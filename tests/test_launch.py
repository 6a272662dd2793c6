"""launch/*.sh in --dry-run mode: the commands they would run, and bad usage."""

import os
import shlex
import subprocess

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
  assert all(line.startswith(ssh) for line in out[3:])
  assert "tar -xzf ~/elm_jax.tar.gz" in out[3]
  assert "launch/setup.sh" in out[4] and "launch/requirements-tpu.txt" in out[4]
  command = shlex.split(out[5])[-1]
  assert command == (f"--command=cd ~/elm_jax && python3 -m elm_jax.main "
                     f"--config={CONFIG} --workdir=/mnt/fs/xxl --config.mesh.fsdp=-1")
  assert len(out) == 6


def test_tpu_pod_without_create_or_install():
  out = launch("tpu_pod.sh", "--dry-run", "--no-install", "--tpu=t", "--zone=z",
               "configs/bae.py", "/w").stdout
  assert "create" not in out and "setup.sh" not in out
  assert "--command=cd ~/elm_jax && python3 -m elm_jax.main --config=configs/bae.py" in out


def test_sample_runs_elm_jax_sample_on_every_host():
  flags = ["--sample", "configs/sample.py:imagenet", "/shared/samples",
           "--config.generator.checkpoint=/shared/xxl"]
  want = ("python3 -m elm_jax.sample --config=configs/sample.py:imagenet "
          "--workdir=/shared/samples --config.generator.checkpoint=/shared/xxl")
  assert launch("single_machine.sh", "--dry-run", *flags).stdout.splitlines() == [want]
  pod = launch("tpu_pod.sh", "--dry-run", "--no-install", "--tpu=t", "--zone=z",
               *flags).stdout.splitlines()
  assert shlex.split(pod[-1])[-1] == f"--command=cd ~/elm_jax && {want}"
  assert f"srun {want}" in launch("gpu_slurm.sh", "--dry-run", *flags).stdout.splitlines()
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
               "--workdir=/shared/xxl --config.mesh.fsdp=-1"):
    assert line in out.splitlines(), line


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
