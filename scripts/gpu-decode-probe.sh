#!/usr/bin/env bash
# On the GPU machine: where the time of the PyTorch figures still behind native goes.
# - cuDNN-attention decode, native and through vgpu: per-token wall and CPU time and a CPU-only
#   torch.profiler table (`torch_bench.py where`), under `/usr/bin/time` for the whole process
#   tree's CPU (the host's worker included under vgpu);
# - the same decode traced through vgpu: `vgpuctl trace-summary` of the last 8 tokens;
# - pin_memory() then copy_, 1 MiB x 20, native timing and traced through vgpu with the default
#   spin and with VGPU_SPIN_US=50; the last calls of each trace with their threads;
# - "contention": pin_memory-each untimed by traces, with the CPU kept busier or quieter (OpenMP
#   threads, their spin-wait policy, a lower priority for the command than for the host);
# - "loads": the cuDNN decode traced with VGPU_LOG=debug: each library/module load's duration
#   and image kind and size.
# Writes $OUT/decode-probe.txt. SECTIONS (default "where,trace,pin") picks parts.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
A=.gpu-artifacts
O="${OUT:-decode-out}"; mkdir -p "$O"
T="$(mktemp -d)"
TB="python3 bench/llm/torch_bench.py"
SECTIONS="${SECTIONS:-where,trace,pin}"
has() { [[ ",${SECTIONS}," == *",$1,"* ]]; }
TIME=(/usr/bin/time -f "process tree: %e s wall, %U s user, %S s system")
{
    echo "perf: $(command -v perf || echo none)"
    if has where; then
        for sdpa in default no-cudnn; do
            echo "== where ($sdpa), native"; "${TIME[@]}" timeout 150 $TB where --sdpa $sdpa --tokens 16
            echo "== where ($sdpa), vgpu";   "${TIME[@]}" timeout 150 "$A/vgpuctl" run -- $TB where --sdpa $sdpa --tokens 16
        done
    fi
    if has trace; then
        echo "== cuDNN decode traced through vgpu (a 4-token warm-up, then 16 tokens)"
        VGPU_TRACE="$T/dec.trace" timeout 200 "$A/vgpuctl" run -- $TB where --sdpa default --tokens 16 --top 0 >/dev/null
        "$A/vgpuctl" trace-summary "$T/dec.trace" --limit 30 2>&1 | tail -40
    fi
    if has pin; then
        echo "== pin_memory() each copy: native"
        timeout 60 $TB copy --kind pinned --dir h2d --mib 1 --reps 20 --pin-each
        for spin in default 50; do
            echo "== pin_memory() each copy, traced through vgpu, spin $spin"
            if [[ $spin == default ]]; then unset VGPU_SPIN_US; else export VGPU_SPIN_US=$spin; fi
            VGPU_TRACE="$T/pin-$spin.trace" timeout 100 "$A/vgpuctl" run -- $TB copy --kind pinned --dir h2d --mib 1 --reps 20 --pin-each
            "$A/vgpuctl" trace-summary "$T/pin-$spin.trace" --limit 25
            echo "-- the last 70 calls"
            grep -v cuGetProcAddress "$T/pin-$spin.trace" | tail -70 | cut -c1-230
        done
        unset VGPU_SPIN_US
    fi
    if has contention; then
        echo "cpus: nproc $(nproc); cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo -); $(taskset -p $$)"
        PIN=(copy --kind pinned --dir h2d --mib 1 --reps 20 --pin-each)
        echo "== pin-each native, OMP_NUM_THREADS=1"; OMP_NUM_THREADS=1 timeout 60 $TB "${PIN[@]}"
        echo "== pin-each vgpu";                      timeout 60 "$A/vgpuctl" run -- $TB "${PIN[@]}"
        echo "== pin-each vgpu, OMP_NUM_THREADS=1";   OMP_NUM_THREADS=1 timeout 60 "$A/vgpuctl" run -- $TB "${PIN[@]}"
        echo "== pin-each vgpu, OMP_WAIT_POLICY=PASSIVE"; OMP_WAIT_POLICY=PASSIVE timeout 60 "$A/vgpuctl" run -- $TB "${PIN[@]}"
        echo "== pin-each vgpu, command at nice 10";  timeout 60 "$A/vgpuctl" run -- nice -n 10 $TB "${PIN[@]}"
        echo "== pin-each vgpu, VGPU_SPIN_US=0";      VGPU_SPIN_US=0 timeout 60 "$A/vgpuctl" run -- $TB "${PIN[@]}"
        echo "== pin-each vgpu, all on 2 CPUs (taskset -c 2,3)"; timeout 60 taskset -c 2,3 "$A/vgpuctl" run -- $TB "${PIN[@]}"
    fi
    if has loads; then
        echo "== cuDNN decode, library and module loads through vgpu (VGPU_LOG=debug)"
        VGPU_LOG=debug VGPU_TRACE="$T/loads.trace" timeout 200 "$A/vgpuctl" run -- $TB where --sdpa default --tokens 16 --top 0 >/dev/null 2>"$T/loads.err"
        grep -c "module image" "$T/loads.err"
        echo "-- image kinds and sizes (count, kind, bytes), last 40"
        grep -o "module image: .*" "$T/loads.err" | tail -40 | sort | uniq -c | sort -rn | head -20
        echo "-- load calls: duration, last 40"
        grep -E "\] cu(Library|Module)Load" "$T/loads.trace" | tail -40 | sed -E 's/^vgpu-trace\[[0-9:]+\] ([A-Za-z_]+)\(.*\) -> ([A-Z_]+) ([0-9.]+us).*(@[0-9.]+)$/\1 \2 \3 \4/'
        echo "-- NVRTC compile-cache calls (table da9151d3): slot, input length, duration, last 40"
        grep -E "da9151d3\[[0-9]\]" "$T/loads.trace" | tail -40 | sed -E 's/^vgpu-trace\[[0-9:]+\] //' | cut -c1-200
        echo "-- unload calls, last 10"
        grep -E "\] cu(Library|Module)Unload" "$T/loads.trace" | tail -10 | cut -c1-200
    fi
} > "$O/decode-probe.txt" 2>&1
rm -rf "$T"
grep -E '^==|bench|process tree' "$O/decode-probe.txt"
