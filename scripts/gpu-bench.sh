#!/usr/bin/env bash
# The speed benchmark (issue 10) on the GPU machine: bench/llm/gpu_bench.py with the machine's
# python3 (PyTorch, transformers, matplotlib). Expects .gpu-artifacts/ from
# scripts/stage-gpu-artifacts.sh and, for the llama.cpp rows, .gpu-artifacts/llama/ (llama-bench,
# llama-completion, gguf-py; see bench/llm/README.md). Writes $OUT/bench.md, bench.json, bench.png.
#
#   scripts/gpu-bench.sh [--reps N] [--sections nvrtc,torch,llama] [--only SUBSTR,...] [--no-tcp]
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
OUT_DIR="${OUT:-${ROOT}/bench-out}"
mkdir -p "${OUT_DIR}"
MODEL_ARGS=()
if [[ -x .gpu-artifacts/llama/llama-bench ]]; then
    MODEL="${LLAMA_MODEL:-/tmp/vgpu-llama-2048x16-f16.gguf}"
    [[ -f "${MODEL}" ]] || python3 bench/llm/make_gguf.py --gguf-py .gpu-artifacts/llama/gguf-py --out "${MODEL}" \
        || exit 2
    MODEL_ARGS=(--model "${MODEL}")
fi
exec python3 bench/llm/gpu_bench.py --out "${OUT_DIR}" "${MODEL_ARGS[@]}" "$@"
