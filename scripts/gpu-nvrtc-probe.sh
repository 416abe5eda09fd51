#!/usr/bin/env bash
# On the GPU machine: NVRTC's use of the driver's compute cache (table da9151d3) and what it costs.
# Runs one small NVRTC compile (bench/llm/nvrtc_bench.py, median of 8) natively with the driver's
# cache warm and disabled; under `vgpuctl run` with the guest's cache in a fresh directory (a cold
# process, then a warm one), in memory only, and off; then once natively under the export-table
# spy (nine words forwarded), which shows the real driver's answers to every slot NVRTC calls,
# and once traced through vgpu. Writes $OUT/nvrtc-probe.txt; prints its headline lines.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
ART=.gpu-artifacts
O="${OUT:-nvrtc-out}"; mkdir -p "$O"
LOG="$O/nvrtc-probe.txt"
B="python3 bench/llm/nvrtc_bench.py"
spy=$(mktemp -d)/spy.so
gcc -shared -fPIC -O1 -Wall -o "$spy" tests/stacks/spy/export_table_spy.c -ldl
CACHE=$(mktemp -d)/vgpu-nvrtc
T=da9151d33ae6cc41a5c04f26d533e328
{
    echo "== native";                               $B
    echo "== native, CUDA_CACHE_DISABLE=1";         CUDA_CACHE_DISABLE=1 $B
    echo "== vgpuctl run, fresh cache directory";   VGPU_COMPILE_CACHE=$CACHE $ART/vgpuctl run -- $B
    echo "== vgpuctl run, same directory again";    VGPU_COMPILE_CACHE=$CACHE $ART/vgpuctl run -- $B
    echo "== vgpuctl run, memory only";             VGPU_COMPILE_CACHE=memory $ART/vgpuctl run -- $B
    echo "== vgpuctl run, CUDA_CACHE_DISABLE=1";    CUDA_CACHE_DISABLE=1 $ART/vgpuctl run -- $B
    echo "   files: $(ls "$CACHE" | wc -l), bytes: $(du -sb "$CACHE" | cut -f1)"
    echo "== spy on the real driver (table $T, nine words), 2 compiles"
    SPY_TABLES=$T SPY_WORDS=7 SPY_PEEK=${SPY_PEEK:-32} LD_PRELOAD=$spy $B --reps 2 2>&1 | grep -E '^SPY|^\{'
    echo "== spy, CUDA_CACHE_DISABLE=1, 1 compile"
    CUDA_CACHE_DISABLE=1 SPY_TABLES=$T SPY_WORDS=7 LD_PRELOAD=$spy $B --reps 1 2>&1 | grep -E '^SPY (call|.*ret)|^\{'
    echo "== trace under vgpuctl run"
    VGPU_COMPILE_CACHE=$CACHE VGPU_TRACE=1 $ART/vgpuctl run -- $B --reps 2 2>&1 | grep -E 'da9151d3|^\{' | head -40
} > "$LOG" 2>&1
grep -E '^==|^\{|files:' "$LOG"
