#!/usr/bin/env bash
# On the GPU machine: where the time of the two PyTorch figures still behind native goes.
# - cuDNN-attention decode (16 tokens) traced through vgpu: `vgpuctl trace-summary` of the timed
#   part, and every cuLibraryLoadData/cuModuleLoadData line with its duration;
# - one small cubin loaded and unloaded 50 times (bench/llm/module_load_bench.py), native and vgpu;
# - pin_memory() then copy_, 1 MiB x 20, traced through vgpu.
# Writes $OUT/decode-probe.txt.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
A=.gpu-artifacts
O="${OUT:-decode-out}"; mkdir -p "$O"
T="$(mktemp -d)"
TB="python3 bench/llm/torch_bench.py"
{
    echo "== module load, native";  timeout 60 python3 bench/llm/module_load_bench.py
    echo "== module load, vgpu";    timeout 60 "$A/vgpuctl" run -- python3 bench/llm/module_load_bench.py
    echo "== cuDNN decode traced through vgpu"
    VGPU_TRACE="$T/dec.trace" timeout 200 "$A/vgpuctl" run -- $TB decode --sdpa default --tokens 16
    "$A/vgpuctl" trace-summary "$T/dec.trace" --last-between cuCtxSynchronize_v2 --limit 25
    echo "-- module and library loads (all)"
    grep -E 'cu(Library|Module)Load' "$T/dec.trace" | sed -E 's/^(.{0,90}).*( -> .*)$/\1 …\2/' | tail -25
    echo "== pin_memory() each copy, traced through vgpu"
    VGPU_TRACE="$T/pin.trace" timeout 100 "$A/vgpuctl" run -- $TB copy --kind pinned --dir h2d --mib 1 --reps 20 --pin-each
    "$A/vgpuctl" trace-summary "$T/pin.trace" --limit 25
    echo "-- the last 60 calls"
    grep -v cuGetProcAddress "$T/pin.trace" | tail -60 | cut -c1-200
} > "$O/decode-probe.txt" 2>&1
rm -rf "$T"
grep -E '^==|bench' "$O/decode-probe.txt"
