#!/usr/bin/env bash
# On the GPU machine: what NVRTC asks of the driver, and what it costs. Runs one small NVRTC
# compile (bench/llm/nvrtc_bench.py) natively, natively with table da9151d3's slot 1 forced to
# fail (the export-table spy's SPY_FAIL), with the shim preloaded and no host, and under
# `vgpuctl run`; then once natively under the spy with deep peeks. Writes $OUT/nvrtc-probe.txt.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
ART=.gpu-artifacts
O="${OUT:-nvrtc-out}"; mkdir -p "$O"
LOG="$O/nvrtc-probe.txt"
B="python3 bench/llm/nvrtc_bench.py"
spy=$(mktemp -d)/spy.so
gcc -shared -fPIC -O1 -Wall -o "$spy" tests/stacks/spy/export_table_spy.c -ldl
{
    echo "== native";                 $B
    T=da9151d33ae6cc41a5c04f26d533e328
    for rc in 801 1 0 100; do
        echo "== native, slot 1 answers $rc without the driver"
        SPY_TABLES=$T SPY_FAIL=da9151d3:1=$rc LD_PRELOAD=$spy $B 2>/dev/null
    done
    echo "== native, CUDA_CACHE_DISABLE=1, what slot 1 returns"
    CUDA_CACHE_DISABLE=1 SPY_TABLES=$T LD_PRELOAD=$spy $B --reps 2 2>&1 | grep -E ' ret |^\{'
    echo "== native, CUDA_CACHE_DISABLE=1"; CUDA_CACHE_DISABLE=1 $B
    echo "== native, fresh HOME";     HOME=$(mktemp -d) $B
    echo "== shim preloaded, no host"; LD_PRELOAD=$ART/libvgpu-cuda.so $B 2>/dev/null
    echo "== vgpuctl run";            $ART/vgpuctl run -- $B
    echo "== spy (all tables, deep peeks), 2 compiles"
    SPY_TABLES=all SPY_WORDS=7 SPY_PEEK=${SPY_PEEK:-192} SPY_DEEP=1 LD_PRELOAD=$spy $B --reps 2 2>&1 | grep -E '^SPY|^\{'
    echo "== trace under vgpuctl run"
    VGPU_TRACE=1 $ART/vgpuctl run -- $B --reps 2 2>&1 | grep -v '^vgpu-trace.*cuGetProcAddress' | head -60
} > "$LOG" 2>&1
grep -E '^==|^\{' "$LOG"
