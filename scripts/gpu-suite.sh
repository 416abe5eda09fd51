#!/usr/bin/env bash
# Runs the driver-API GPU suite on the GPU machine, natively and through vgpu, and writes
# $OUT/summary.md (a Markdown table) and $OUT/logs.txt. See docs/gpu-suite.md.
#
# Builds nothing: it expects, under .gpu-artifacts/,
#   bin/                        the programs (scripts/build-gpu-tests.sh, run elsewhere)
#   vgpuctl, vgpu-host, libvgpu-cuda.so, libcuda.so.1 -> libvgpu-cuda.so   (not with --native-only)
# The one exception: when tests/gpu/kernels.sm_90.cubin is missing it is assembled with ptxas
# from tests/gpu/kernels.ptx, and always copied to $OUT/ so that it can be committed.
#
# Usage: scripts/gpu-suite.sh [--native-only] [--out DIR] [--timeout SECONDS]
#   --native-only   run each program natively twice and diff run 1 against run 2 (checks that
#                   the programs are correct and their output deterministic, before the shim)
#   --out DIR       where summary.md and logs.txt go (default: $OUT, else ./gpu-suite-out)
#   --timeout S     per-program limit (default 300)
# SUITE_QUICK=1 runs the programs' rows (and forged_handles) only: no SIGKILL, discovery timing or
# benchmark figures.
# Exit status: 0 when every row passed, 1 otherwise, 2 for bad usage or missing artifacts.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
ART="${ROOT}/.gpu-artifacts"
BIN="${ART}/bin"
VGPUCTL="${ART}/vgpuctl"
CUBIN="${ROOT}/tests/gpu/kernels.sm_90.cubin"
NATIVE_ONLY=0
OUT_DIR="${OUT:-${ROOT}/gpu-suite-out}"
LIMIT=300
HOG_MIB=4096
HOG_TOLERANCE_MIB=512
KILL_LIMIT_MS=1000
DISCOVERY_LIMIT_MS=50

while [[ $# -gt 0 ]]; do
    case "$1" in
        --native-only) NATIVE_ONLY=1 ;;
        --out) OUT_DIR="$2"; shift ;;
        --timeout) LIMIT="$2"; shift ;;
        *) echo "gpu-suite: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

mkdir -p "${OUT_DIR}"
WORK="$(mktemp -d)"
SUMMARY="${OUT_DIR}/summary.md"
LOGS="${OUT_DIR}/logs.txt"
: > "${LOGS}"
ROWS=()
FAILED=0
BG_PIDS=()

# Stops a background `timeout` runner: SIGTERM, which timeout forwards to its child, then
# SIGKILL if it is still there after 2 s.
stop_runner() {
    local pid="$1" i
    kill -TERM "${pid}" 2>/dev/null || return 0
    for i in $(seq 1 20); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "${pid}" 2>/dev/null
    wait "${pid}" 2>/dev/null
}

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        stop_runner "${pid}"
    done
    rm -rf "${WORK}"
}
trap cleanup EXIT

log() { echo "$*" | tee -a "${LOGS}" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Appends a file to logs.txt, at most 64 KiB of it (the tail).
log_file() {
    local title="$1" file="$2"
    {
        echo "----- ${title} ($(wc -c < "${file}") bytes, last 64 KiB) -----"
        tail -c 65536 "${file}"
        echo
    } >> "${LOGS}"
}

require() {
    local missing=0 f
    for f in "$@"; do
        if [[ ! -e "${f}" ]]; then
            echo "gpu-suite: missing ${f}" >&2
            missing=1
        fi
    done
    [[ ${missing} -eq 0 ]] || exit 2
}

# run_one MODE TAG PROG ARGS...: runs natively (MODE=native) or through vgpuctl (MODE=vgpu);
# stdout to $WORK/TAG.out, stderr to $WORK/TAG.err; sets RC and MS.
run_one() {
    local mode="$1" tag="$2" prog="$3"
    shift 3
    local t0
    t0=$(now_ms)
    if [[ "${mode}" == native ]]; then
        timeout -k 5 "${LIMIT}" "${BIN}/${prog}" "$@" > "${WORK}/${tag}.out" 2> "${WORK}/${tag}.err"
    else
        timeout -k 5 "${LIMIT}" "${VGPUCTL}" run -- "${BIN}/${prog}" "$@" \
            > "${WORK}/${tag}.out" 2> "${WORK}/${tag}.err"
    fi
    RC=$?
    MS=$(( $(now_ms) - t0 ))
    [[ ${RC} -eq 124 || ${RC} -eq 137 ]] && echo "TIMEOUT after ${LIMIT}s" >> "${WORK}/${tag}.err"
    log_file "${tag} stdout (rc ${RC}, ${MS} ms)" "${WORK}/${tag}.out"
    log_file "${tag} stderr" "${WORK}/${tag}.err"
}

# Runs PROG twice (native+native or native+vgpu) and adds a table row.
compare() {
    local prog="$1"
    shift
    local second=vgpu
    [[ ${NATIVE_ONLY} -eq 1 ]] && second=native
    log "== ${prog} $*"
    run_one native "${prog}.1" "${prog}" "$@"
    local rc1=${RC} ms1=${MS}
    run_one "${second}" "${prog}.2" "${prog}" "$@"
    local rc2=${RC} ms2=${MS}
    local same=no
    if diff -u "${WORK}/${prog}.1.out" "${WORK}/${prog}.2.out" > "${WORK}/${prog}.diff"; then
        same=yes
    else
        log_file "${prog} diff (run 1 vs run 2)" "${WORK}/${prog}.diff"
    fi
    local verdict=PASS
    if [[ ${rc1} -ne 0 || ${rc2} -ne 0 || ${same} != yes ]]; then
        verdict=FAIL
        FAILED=1
    fi
    log "   ${verdict}: rc ${rc1}/${rc2}, identical ${same}, ${ms1}/${ms2} ms"
    ROWS+=("| ${prog} | ${rc1} | ${rc2} | ${same} | ${ms1} / ${ms2} | ${verdict} |")
}

# forged_handles through vgpu only (natively the driver would dereference the forged values):
# each forged or destroyed handle must get CUDA_ERROR_INVALID_HANDLE from the host's gate (a
# context CUDA_ERROR_INVALID_CONTEXT), and
# the process's own handles must keep working (the fill's sum is fixed by its seed).
forged_handles_test() {
    log "== forged_handles (vgpu only)"
    run_one vgpu forged_handles forged_handles
    local expected="forged stream: CUDA_ERROR_INVALID_HANDLE
forged event: CUDA_ERROR_INVALID_HANDLE
forged function: CUDA_ERROR_INVALID_HANDLE
event as a stream: CUDA_ERROR_INVALID_HANDLE
destroyed stream: CUDA_ERROR_INVALID_HANDLE
forged context: CUDA_ERROR_INVALID_CONTEXT
forged array: CUDA_ERROR_INVALID_HANDLE"
    local verdict=PASS
    if [[ ${RC} -ne 0 ]] || [[ "$(head -n 7 "${WORK}/forged_handles.out")" != "${expected}" ]] \
        || ! grep -q "^own handles after: fill sum " "${WORK}/forged_handles.out"; then
        verdict=FAIL
        FAILED=1
    fi
    log "   ${verdict}: rc ${RC}, $(tr '\n' ';' < "${WORK}/forged_handles.out")"
    ROWS+=("| forged_handles (vgpu only) | - | ${RC} | expected refusals: $([[ ${verdict} == PASS ]] && echo yes || echo no) | - / ${MS} | ${verdict} |")
}

# Prints the free MiB reported by meminfo (MODE native or vgpu), or nothing on failure.
free_mib() {
    local mode="$1" out
    if [[ "${mode}" == native ]]; then
        out=$(timeout -k 2 20 "${BIN}/meminfo" 2>>"${WORK}/meminfo.err")
    else
        out=$(timeout -k 2 20 "${VGPUCTL}" run --region "${SK_REGION}" -- "${BIN}/meminfo" 2>>"${WORK}/meminfo.err")
    fi
    sed -n 's/^free_mib=\([0-9]*\).*/\1/p' <<< "${out}"
}

# Starts memhog (MODE native or vgpu), kills the memhog process with SIGKILL once it has
# allocated, and polls meminfo every 100 ms until free memory is back at the baseline. Through
# vgpu, one host serves the whole test (as in production): the baseline is what a client of that
# host sees before memhog (it includes the host's prewarmed spare), and memhog and every poll are
# clients of it.
SK_REGION="/dev/shm/vgpu-suite-sigkill-$$"
sigkill_test() {
    local mode="$1"
    log "== sigkill (${mode}): memhog ${HOG_MIB} MiB, kill -9, poll meminfo"
    local host_pid=""
    if [[ "${mode}" == vgpu ]]; then
        "${ART}/vgpu-host" --region "${SK_REGION}" 2>> "${WORK}/sigkill-host.err" &
        host_pid=$!
        BG_PIDS+=("${host_pid}")
        local i
        for i in $(seq 1 100); do
            grep -q "serving" "${WORK}/sigkill-host.err" 2>/dev/null && break
            sleep 0.1
        done
    fi
    sigkill_body "${mode}"
    if [[ -n "${host_pid}" ]]; then
        kill -TERM "${host_pid}" 2>/dev/null
        wait "${host_pid}" 2>/dev/null
        log_file "sigkill host stderr" "${WORK}/sigkill-host.err"
    fi
}

sigkill_body() {
    local mode="$1"
    local baseline
    baseline=$(free_mib "${mode}")
    if [[ -z "${baseline}" ]]; then
        log "   FAIL: native meminfo gave no value"
        ROWS+=("| sigkill_frees_memory (${mode}) | - | - | - | - | FAIL (no baseline) |")
        FAILED=1
        return
    fi
    local hog_out="${WORK}/memhog.${mode}.out"
    if [[ "${mode}" == native ]]; then
        timeout -k 5 120 "${BIN}/memhog" "${HOG_MIB}" > "${hog_out}" 2> "${WORK}/memhog.${mode}.err" &
    else
        timeout -k 5 120 "${VGPUCTL}" run --region "${SK_REGION}" -- "${BIN}/memhog" "${HOG_MIB}" \
            > "${hog_out}" 2> "${WORK}/memhog.${mode}.err" &
    fi
    local runner=$!
    BG_PIDS+=("${runner}")
    local hog_pid="" i
    for i in $(seq 1 600); do
        hog_pid=$(sed -n 's/^allocated .* pid=\([0-9]*\)$/\1/p' "${hog_out}")
        [[ -n "${hog_pid}" ]] && break
        kill -0 "${runner}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "${hog_pid}" ]]; then
        log "   FAIL: memhog did not report its allocation"
        stop_runner "${runner}"
        log_file "memhog ${mode} stderr" "${WORK}/memhog.${mode}.err"
        ROWS+=("| sigkill_frees_memory (${mode}) | - | - | - | - | FAIL (memhog did not allocate) |")
        FAILED=1
        return
    fi
    local during
    during=$(free_mib "${mode}")
    log "   baseline free ${baseline} MiB, with memhog ${during:-?} MiB"
    kill -9 "${hog_pid}" 2>/dev/null
    local t0 elapsed=-1 now_free=""
    t0=$(now_ms)
    while (( $(now_ms) - t0 < 10000 )); do
        now_free=$(free_mib "${mode}")
        if [[ -n "${now_free}" ]] && (( now_free + HOG_TOLERANCE_MIB >= baseline )); then
            elapsed=$(( $(now_ms) - t0 ))
            break
        fi
        sleep 0.1
    done
    wait "${runner}" 2>/dev/null
    log_file "memhog ${mode} stderr" "${WORK}/memhog.${mode}.err"
    local verdict=PASS
    if (( elapsed < 0 || elapsed > KILL_LIMIT_MS )); then
        verdict=FAIL
        FAILED=1
    fi
    local hog_visible=no
    [[ -n "${during}" ]] && (( during + HOG_MIB / 2 <= baseline )) && hog_visible=yes
    log "   ${verdict}: memory back after ${elapsed} ms (last free ${now_free:-?} MiB, hog visible ${hog_visible})"
    ROWS+=("| sigkill_frees_memory (${mode}) | - | - | hog visible: ${hog_visible} | ${elapsed} ms to baseline | ${verdict} (limit ${KILL_LIMIT_MS} ms) |")
}

# Median of the discovery_ms values of runs 2..N of ollama_discovery in one warm session.
discovery_test() {
    local mode="$1" prog="$2"
    # Half a second apart, as discoveries are (Ollama runs them seconds apart): time enough for
    # the host to have a warm spare worker again.
    local script="for i in 1 2 3 4; do '${BIN}/${prog}' > /dev/null || exit 1; sleep 0.5; done"
    log "== discovery timing ${prog} (${mode})"
    if [[ "${mode}" == native ]]; then
        timeout -k 5 120 bash -c "${script}" 2> "${WORK}/disc.err"
    else
        timeout -k 5 120 "${VGPUCTL}" run -- bash -c "${script}" 2> "${WORK}/disc.err"
    fi
    local rc=$?
    log_file "${prog} ${mode} discovery stderr" "${WORK}/disc.err"
    local median
    median=$(sed -n 's/^discovery_ms=\([0-9.]*\)$/\1/p' "${WORK}/disc.err" | tail -n 3 | sort -g \
        | sed -n 2p)
    local verdict=PASS
    if [[ ${rc} -ne 0 || -z "${median}" ]]; then
        verdict=FAIL
        FAILED=1
    elif [[ "${mode}" == vgpu ]] && ! awk -v m="${median}" -v l="${DISCOVERY_LIMIT_MS}" 'BEGIN{exit !(m < l)}'; then
        verdict=FAIL
        FAILED=1
    fi
    log "   ${verdict}: discovery_ms median of warm runs ${median:-?} (rc ${rc})"
    ROWS+=("| ${prog} discovery_ms (${mode}) | ${rc} | - | - | ${median:-?} ms (median of 3 warm runs) | ${verdict}$([[ ${mode} == vgpu ]] && echo " (limit ${DISCOVERY_LIMIT_MS} ms)") |")
}

# Figures for the record: where context set-up time goes (native and through vgpu, warm host),
# and the transport's round trip and bandwidth on this machine.
BENCH=()
benchmarks() {
    log "== benchmarks"
    if [[ -x "${BIN}/ctx_timing" ]]; then
        BENCH+=("- ctx_timing native: \`$("${BIN}/ctx_timing" 2>&1 >/dev/null | tail -n1)\`")
        if [[ ${NATIVE_ONLY} -eq 0 ]]; then
            local lines
            lines=$(timeout -k 5 60 "${VGPUCTL}" run -- bash -c "'${BIN}/ctx_timing'; '${BIN}/ctx_timing'" 2>&1 >/dev/null \
                | grep '^init_ms=')
            BENCH+=("- ctx_timing through vgpu, first client (prewarmed spare): \`$(echo "${lines}" | sed -n 1p)\`")
            BENCH+=("- ctx_timing through vgpu, second client: \`$(echo "${lines}" | sed -n 2p)\`")
        fi
    fi
    if [[ -x "${BIN}/launch_rate" ]]; then
        # Kernel launches per second: native, then through vgpu with posted (fire-and-forget)
        # launches, then with every call synchronous (VGPU_ASYNC=0).
        BENCH+=("- launch_rate native: \`$(timeout -k 5 120 "${BIN}/launch_rate" 2>&1 >/dev/null | grep "round 1" | tail -n1)\`")
        if [[ ${NATIVE_ONLY} -eq 0 ]]; then
            BENCH+=("- launch_rate through vgpu, posted: \`$(timeout -k 5 120 "${VGPUCTL}" run -- "${BIN}/launch_rate" 2>&1 >/dev/null | grep "round 1" | tail -n1)\`")
            BENCH+=("- launch_rate through vgpu, VGPU_ASYNC=0: \`$(VGPU_ASYNC=0 timeout -k 5 120 "${VGPUCTL}" run -- "${BIN}/launch_rate" 2>&1 >/dev/null | grep "round 1" | tail -n1)\`")
        fi
    fi
    if [[ -x "${ART}/transport-bench" ]]; then
        local json tls
        # The tls row needs material (issue 11); without vgpuctl the row is left out.
        tls="$(mktemp -d)/tls"
        "${VGPUCTL}" host tls-init "${tls}" --name 127.0.0.1 > /dev/null 2>> "${LOGS}" || tls=""
        json=$(VGPU_BENCH_TLS="${tls}" timeout -k 5 120 "${ART}/transport-bench" 2>> "${LOGS}" \
            | tee -a "${LOGS}" | tail -n1)
        [[ -n "${tls}" ]] && rm -rf "$(dirname "${tls}")"
        BENCH+=("- transport-bench ($(nproc) CPUs): \`${json}\`")
    fi
}

ensure_cubin() {
    if [[ ! -f "${CUBIN}" ]]; then
        # The one build step allowed here: the cubin needs ptxas, which only this machine has.
        local ptxas
        ptxas=$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)
        log "== assembling ${CUBIN} with ${ptxas}"
        "${ptxas}" -arch=sm_90 "${ROOT}/tests/gpu/kernels.ptx" -o "${CUBIN}" >> "${LOGS}" 2>&1 \
            || { log "ptxas failed"; exit 2; }
    fi
    cp "${CUBIN}" "${OUT_DIR}/"
}

main() {
    require "${BIN}/devquery" "${BIN}/meminfo" "${BIN}/memhog"
    if [[ ${NATIVE_ONLY} -eq 0 ]]; then
        require "${VGPUCTL}" "${ART}/vgpu-host" "${ART}/libvgpu-cuda.so" "${ART}/libcuda.so.1"
    fi
    ensure_cubin
    {
        echo "gpu-suite $(date -u +%FT%TZ) native_only=${NATIVE_ONLY} commit ${VGPU_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -n 5
    } >> "${LOGS}"

    compare devquery
    compare module_ptx
    compare module_cubin "${CUBIN}"
    compare memcpy
    compare streams_events
    compare two_threads
    compare host_callback
    compare ollama_discovery
    compare ollama_discovery_new
    compare graphs
    compare pools_vmm
    compare managed
    compare launch_rate

    if [[ "${SUITE_QUICK:-0}" == 1 ]]; then
        # SUITE_QUICK=1: the programs' rows only (and forged_handles), for a short device call.
        [[ ${NATIVE_ONLY} -eq 1 ]] || forged_handles_test
    elif [[ ${NATIVE_ONLY} -eq 1 ]]; then
        sigkill_test native
        discovery_test native ollama_discovery
        discovery_test native ollama_discovery_new
    else
        forged_handles_test
        sigkill_test vgpu
        discovery_test native ollama_discovery
        discovery_test vgpu ollama_discovery
        discovery_test native ollama_discovery_new
        discovery_test vgpu ollama_discovery_new
    fi

    local second="vgpu"
    [[ ${NATIVE_ONLY} -eq 1 ]] && second="native run 2"
    [[ "${SUITE_QUICK:-0}" == 1 ]] || benchmarks
    {
        echo "# vgpu driver-API GPU suite"
        echo
        echo "$(date -u +%FT%TZ), commit ${VGPU_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}, mode: $([[ ${NATIVE_ONLY} -eq 1 ]] && echo native-only || echo native vs vgpu)"
        echo
        echo "| test | native rc | ${second} rc | output identical? | time (ms, native / ${second}) | result |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "Overall: $([[ ${FAILED} -eq 0 ]] && echo PASS || echo FAIL). Logs: logs.txt."
        if ((${#BENCH[@]})); then
            echo
            echo "## Benchmarks (figures, not pass/fail)"
            echo
            printf '%s\n' "${BENCH[@]}"
        fi
    } > "${SUMMARY}"
    cat "${SUMMARY}" >&2
    exit "${FAILED}"
}

main
