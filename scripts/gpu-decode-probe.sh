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
# - "copies": the copies still behind native (pageable DtoH 64 MiB, pinned 1 MiB both ways) timed
#   natively and traced through vgpu: trace-summary and the last calls with their start times;
# - "prefill": llama-bench pp512 with CUDA graphs off and on, timed natively and through vgpu, and
#   traced through vgpu (trace-summary): where prefill's time goes.
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
    if has copies; then
        for c in "pageable d2h 64 5" "pinned h2d 1 20" "pinned d2h 1 20"; do
            set -- $c
            echo "== copy $1 $2 $3 MiB x $4: native, vgpu, traced vgpu"
            timeout 60 $TB copy --kind $1 --dir $2 --mib $3 --reps $4
            timeout 60 "$A/vgpuctl" run -- $TB copy --kind $1 --dir $2 --mib $3 --reps $4
            VGPU_TRACE="$T/copy.trace" timeout 60 "$A/vgpuctl" run -- $TB copy --kind $1 --dir $2 --mib $3 --reps $4
            "$A/vgpuctl" trace-summary "$T/copy.trace" --limit 15
            echo "-- the last 60 calls"
            grep -v cuGetProcAddress "$T/copy.trace" | tail -60 | cut -c1-200
        done
    fi
    if has prefill; then
        [[ -f .gpu-artifacts/llama.tar.xz && ! -d .gpu-artifacts/llama ]] && tar xJf .gpu-artifacts/llama.tar.xz -C .gpu-artifacts
        CU13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
        export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${CU13}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
        M=/tmp/vgpu-llama-2048x16-f16.gguf
        [[ -f $M ]] || python3 bench/llm/make_gguf.py --gguf-py "$A/llama/gguf-py" --out "$M"
        LB=("$A/llama/llama-bench" -m "$M" -ngl 99 -p 512 -n 0 -r 3)
        for g in 1 0; do
            echo "== prefill pp512, GGML_CUDA_DISABLE_GRAPHS=$g: native, vgpu"
            GGML_CUDA_DISABLE_GRAPHS=$g timeout 100 "${LB[@]}" 2>/dev/null | grep -E "pp512|model"
            GGML_CUDA_DISABLE_GRAPHS=$g timeout 100 "$A/vgpuctl" run -- "${LB[@]}" 2>/dev/null | grep -E "pp512"
            echo "-- traced through vgpu"
            rm -f "$T/pp.trace"
            GGML_CUDA_DISABLE_GRAPHS=$g VGPU_LOG=debug VGPU_TRACE="$T/pp.trace" timeout 150 "$A/vgpuctl" run -- "${LB[@]}" 2>"$T/pp.err" | grep pp512
            "$A/vgpuctl" trace-summary "$T/pp.trace" --limit 25
            echo "-- module images (kind, bytes) and load calls (duration, start), in order"
            grep -o "module image: .*" "$T/pp.err" | head -60
            grep -E "\] cu(Library|Module)(Load|Unload)" "$T/pp.trace" | head -60 | sed -E 's/^vgpu-trace\[[0-9:]+\] ([A-Za-z_]+)\(.*\) -> ([A-Z_]+) ([0-9.]+us).*(@[0-9.]+)$/\1 \2 \3 \4/'
            echo "-- the timed section's calls between loads: cuStreamSynchronize count and start times"
            grep -c cuStreamSynchronize "$T/pp.trace"
        done
    fi
} > "$O/decode-probe.txt" 2>&1
rm -rf "$T"
grep -E '^==|bench|process tree' "$O/decode-probe.txt"
