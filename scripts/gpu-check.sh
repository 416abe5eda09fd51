#!/usr/bin/env bash
# On the GPU machine: the short check after a change, for a device call of a few minutes. Each
# step has its own time limit and writes its own file under $OUT, so a call that runs out of time
# still brings back what finished:
#   suite    SUITE_QUICK=1 scripts/gpu-suite.sh (the programs' rows, forged_handles)  summary.md
#   stacks   scripts/gpu-stacks.sh, the issue-5 rows over shm only (nvcc, PyTorch, CuPy, Triton,
#            JAX, NVML; STACKS_ONLY picks others)                                   stacks.md
#   copy     the streaming-copy microbenchmark (.gpu-artifacts/shim-unit-tests)     streaming.txt
#   ab       scripts/gpu-ab.sh, PyTorch decode, this build against .gpu-artifacts/base ab.md
#   loads    llama-bench pp512 traced through vgpu: module images and load durations loads.txt
# STEPS (default "suite,copy,stacks,ab,loads") picks and orders them; T_SUITE, T_STACKS, T_AB and
# T_LOADS (seconds) bound the longer steps.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}" || exit 2
A=.gpu-artifacts
O="${OUT:-check-out}"; mkdir -p "$O"
STEPS="${STEPS:-suite,copy,stacks,ab,loads}"
step() { echo "== $1 ($(date -u +%T))" | tee -a "$O/check.log"; }
# The stacks rows that fit the step's time over shm (gpu-stacks.sh alone runs them all, over TCP too).
CHECK_STACKS='nvcc_vecadd_*,nvcc_sgemm_*,nvcc_streams_*,nvcc_graph_*,torch,cupy,triton,jax,nvml'
for s in ${STEPS//,/ }; do
    case "$s" in
        suite) step suite; SUITE_QUICK=1 timeout "${T_SUITE:-80}" bash scripts/gpu-suite.sh --timeout 40 --out "$O" >> "$O/check.log" 2>&1 ;;
        stacks) step stacks; STACKS_TIMEOUT=50 STACKS_MODES=shm STACKS_ONLY="${STACKS_ONLY:-$CHECK_STACKS}" OUT="$O" \
            timeout "${T_STACKS:-130}" bash scripts/gpu-stacks.sh >> "$O/check.log" 2>&1 ;;
        copy) step copy; timeout 15 "$A/shim-unit-tests" streaming_copy --ignored --nocapture 2>&1 | grep GB/s > "$O/streaming.txt" ;;
        ab) step ab; OUT="$O" ROUNDS=1 timeout "${T_AB:-110}" bash scripts/gpu-ab.sh --reps 1 --sections torch --only "PyTorch decode" >> "$O/check.log" 2>&1 ;;
        loads)
            step loads
            [[ -d "$A/llama" ]] || tar xJf "$A/llama.tar.xz" -C "$A"
            CU13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
            M=/tmp/vgpu-llama-2048x16-f16.gguf
            [[ -f $M ]] || python3 bench/llm/make_gguf.py --gguf-py "$A/llama/gguf-py" --out "$M" > /dev/null
            T="$(mktemp -d)"
            LD_LIBRARY_PATH="/usr/local/cuda/lib64:${CU13}" VGPU_LOG=debug VGPU_TRACE="$T/pp.trace" timeout "${T_LOADS:-40}" \
                "$A/vgpuctl" run -- "$A/llama/llama-bench" -m "$M" -ngl 99 -p 512 -n 0 -r 3 > "$T/pp.out" 2> "$T/pp.err"
            {
                grep pp512 "$T/pp.out"
                "$A/vgpuctl" trace-summary "$T/pp.trace" --limit 12
                echo "-- module images (kind, bytes), in order"
                grep -o "module image: .*" "$T/pp.err" | head -40
                echo "-- loads: duration and start, in order"
                grep -E "\] cu(Library|Module)Load" "$T/pp.trace" | head -40 \
                    | sed -E 's/^vgpu-trace\[[0-9:]+\] ([A-Za-z_]+)\(.*\) -> ([A-Z_]+) ([0-9.]+us).*(@[0-9.]+)$/\1 \2 \3 \4/'
                echo "-- stream syncs: count, then the last 5 with their start"
                grep -c "cuStreamSynchronize" "$T/pp.trace"
                grep "cuStreamSynchronize" "$T/pp.trace" | tail -5 | cut -c1-160
            } > "$O/loads.txt" 2>&1
            rm -rf "$T"
            ;;
    esac
done
step "done"
