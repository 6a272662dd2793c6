#!/usr/bin/env bash
# Train (or sample) on one machine (all its GPUs / TPU chips / CPU cores, one process).
usage="usage: launch/single_machine.sh [--dry-run] [--install] [--sample] CONFIG WORKDIR [EXTRA_FLAGS...]
  CONFIG   e.g. configs/ar.py:size=L,split=2-10
  WORKDIR  checkpoints, logs and metrics (resumes if it holds a checkpoint)
  --install  first run launch/setup.sh (Python stack, Fashion-MNIST)
  --sample   run elm_jax.sample, not elm_jax.main (CONFIG: configs/sample.py[:variant],
             WORKDIR: where the samples go)
  --dry-run  print the commands instead of running them
  EXTRA_FLAGS go to the command, e.g. --config.tokenizer.checkpoint=DIR"
set -euo pipefail

dry_run=0
install=0
module=elm_jax.main
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --sample) module=elm_jax.sample ;;
    --install) install=1 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 2 ]]; then
  echo "$usage" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cd "$repo"
if [[ $install == 1 ]]; then
  run bash launch/setup.sh
fi
run python3 -m $module "--config=$config" "--workdir=$workdir" "$@"
