#!/usr/bin/env bash
# Train (or sample) on every worker of a Cloud TPU pod slice: copy the code, install, run.
usage="usage: launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=ID]
         [--create --accelerator=v5p-128 --version=RUNTIME] [--no-install] [--sample]
         CONFIG WORKDIR [EXTRA_FLAGS...]
  CONFIG   e.g. configs/ar.py:imagenet,size=XXL,split=2-12
  WORKDIR  must be one path every worker sees (a Filestore/NFS mount): orbax
           writes checkpoints collectively, process 0 writes the logs
  --create   first create the TPU VM slice (gcloud compute tpus tpu-vm create)
  --no-install  skip launch/setup.sh + launch/requirements-tpu.txt on the workers
  --sample   run elm_jax.sample, not elm_jax.main (CONFIG: configs/sample.py[:variant],
             WORKDIR: where process 0 writes the samples)
  --dry-run  print the commands instead of running them
  EXTRA_FLAGS go to the command on every worker (e.g. --config.mesh.fsdp=-1).
The code copied is the repository's committed HEAD (git archive).
Each worker runs the same command; jax.distributed starts from the TPU metadata.
The command runs detached from ssh, logging to WORKDIR/logs/HOSTNAME.log (its
pid in HOSTNAME.pid); the script ends printing how to follow and stop it."
set -euo pipefail

dry_run=0 create=0 install=1 module=elm_jax.main
tpu="" zone="" project="" accelerator="" version=""
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --sample) module=elm_jax.sample ;;
    --create) create=1 ;;
    --no-install) install=0 ;;
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 2 || -z "$tpu" || -z "$zone" ]]; then
  echo "$usage" >&2
  exit 2
fi
if [[ $create == 1 && ( -z "$accelerator" || -z "$version" ) ]]; then
  echo "--create needs --accelerator (e.g. v5p-128) and --version (the TPU VM runtime, e.g. v2-alpha-tpuv5)" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ $create == 1 ]]; then
  run gcloud compute tpus tpu-vm create "$tpu" "${where[@]}" \
    --accelerator-type="$accelerator" --version="$version"
fi
tarball="/tmp/elm_jax_$$.tar.gz"
run git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
run gcloud compute tpus tpu-vm scp "$tarball" "$tpu:elm_jax.tar.gz" "${where[@]}" --worker=all
run gcloud compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all \
  --command="rm -rf ~/elm_jax && mkdir -p ~/elm_jax && tar -xzf ~/elm_jax.tar.gz -C ~/elm_jax"
if [[ $install == 1 ]]; then
  run gcloud compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all \
    --command="cd ~/elm_jax && bash launch/setup.sh && python3 -m pip install -q -r launch/requirements-tpu.txt"
fi
# On the shared workdir: one place for every worker's log, kept after a
# preemption deletes the VMs. $(hostname) is expanded on each worker.
logs="$(quote "$workdir/logs")"
log="$logs/\$(hostname)"
# setsid + nohup: the run outlives the ssh session (no SIGHUP, its own
# session); with stdin, stdout and stderr off the session, ssh returns at once.
command="$(quote python3 -m $module "--config=$config" "--workdir=$workdir" "$@")"
train="cd ~/elm_jax && mkdir -p $logs && { setsid nohup $command >> $log.log 2>&1 < /dev/null &"
train+=" echo \$! > $log.pid; echo \"\$(hostname): started pid \$!\"; }"
run gcloud compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all --command="$train"
ssh="gcloud compute tpus tpu-vm ssh $(quote "$tpu" "${where[@]}")"
echo "# Follow the logs (every worker's, from worker 0):"
echo "$ssh --worker=0 $(quote "--command=tail -F $logs/*.log")"
echo "# Stop with SIGTERM (training saves its step first, then exits 143):"
echo "$ssh --worker=all $(quote "--command=kill -TERM \$(cat $log.pid)")"
echo "# After a stop or a preemption (recreate the slice with --create), the same"
echo "# command resumes from the latest checkpoint in the workdir."
