#!/usr/bin/env bash
# The speed benchmark (issue 10) on the GPU machine: bench/llm/gpu_bench.py with the machine's
# python3 (PyTorch, transformers, matplotlib). Expects .gpu-artifacts/ from
# scripts/stage-gpu-artifacts.sh and, for the llama.cpp rows, .gpu-artifacts/llama/ (llama-bench,
# llama-completion, gguf-py; see bench/llm/README.md). Writes $OUT/bench.md, bench.json, bench.png.
#
#   scripts/gpu-bench.sh [--reps N] [--sections nvrtc,torch,llama] [--only SUBSTR,...] [--no-tcp]
#
# With TRACES=1 it first traces one PyTorch decode (cuDNN attention off, 16 tokens) and one
# llama.cpp completion (32 tokens) through vgpu and writes `vgpuctl trace-summary` of them to
# $OUT/trace-torch.txt (the timed run only: between its two synchronisations) and
# $OUT/trace-llama.txt: the round trips per decode step.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
OUT_DIR="${OUT:-${ROOT}/bench-out}"
mkdir -p "${OUT_DIR}"
MODEL_ARGS=()
# llama.cpp travels packed (.gpu-artifacts/llama.tar.xz, to stay under the carry limit); its
# libraries need the CUDA runtime and cuBLAS of the machine.
if [[ -f .gpu-artifacts/llama.tar.xz && ! -d .gpu-artifacts/llama ]]; then
    tar xJf .gpu-artifacts/llama.tar.xz -C .gpu-artifacts
fi
CU13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${CU13}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
if [[ -x .gpu-artifacts/llama/llama-bench ]]; then
    MODEL="${LLAMA_MODEL:-/tmp/vgpu-llama-2048x16-f16.gguf}"
    [[ -f "${MODEL}" ]] || python3 bench/llm/make_gguf.py --gguf-py .gpu-artifacts/llama/gguf-py --out "${MODEL}" \
        || exit 2
    MODEL_ARGS=(--model "${MODEL}")
fi
A=.gpu-artifacts
if [[ "${TRACES:-0}" == 1 ]]; then
    T="$(mktemp -d)"
    VGPU_TRACE="${T}/torch.trace" timeout 300 "${A}/vgpuctl" run -- \
        python3 bench/llm/torch_bench.py decode --sdpa no-cudnn --tokens 16 > "${T}/torch.out"
    "${A}/vgpuctl" trace-summary "${T}/torch.trace" --last-between cuCtxSynchronize_v2 --limit 20 \
        > "${OUT_DIR}/trace-torch.txt"
    if [[ ${#MODEL_ARGS[@]} -gt 0 ]]; then
        VGPU_TRACE="${T}/llama.trace" timeout 300 "${A}/vgpuctl" run -- "${A}/llama/llama-completion" \
            -m "${MODEL}" -ngl 99 -n 32 --temp 0 --seed 1 -p "Once upon a time" -no-cnv --no-warmup \
            > "${T}/llama.out" 2>&1 < /dev/null
        "${A}/vgpuctl" trace-summary "${T}/llama.trace" --limit 20 > "${OUT_DIR}/trace-llama.txt"
    fi
    rm -rf "${T}"
fi
exec python3 bench/llm/gpu_bench.py --out "${OUT_DIR}" "${MODEL_ARGS[@]}" "$@"
