#!/usr/bin/env bash
# Unmodified CUDA stacks through vgpu (issues 5 and 12), on the GPU machine. Each row runs
# natively, then through vgpu over shared memory (`vgpuctl run`) and over TCP (the shim preloaded
# with VGPU_HOST naming one `vgpu-host --listen 127.0.0.1:0` started here, TLS 1.3 with client
# certificates from `vgpuctl host tls-init` and the pre-shared key inside it), and each
# vgpu stdout is diffed against native. Writes $OUT/stacks.md, rewritten after every row so that
# a run cut short still shows what finished, and appends every run's output to $OUT/logs.txt.
# The nvcc programs are built here with the machine's nvcc: test clients, not the project.
# docs/gpu-suite.md ("The stacks suite") lists the rows.
#
# Environment:
#   STACKS_MODES    vgpu transports to run, default "shm,tcp"
#   STACKS_ONLY     comma-separated globs of the rows to run (default all), e.g. "cupy_*,torch_nccl"
#   STACKS_TIMEOUT  one limit in seconds for every run, instead of each row's own
#   STACKS_BUDGET   seconds after which the rows not yet started are reported "not run" (480)
#   PY              the Python that has torch, cupy, triton and jax (default python3)
#   VGPU_COMMIT     the commit named in the summary
# Exit status: 0 when every row that ran passed (skipped rows included), 1 otherwise.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}" || exit 2
ART="${ROOT}/.gpu-artifacts"
OUT_DIR="${OUT:-${ROOT}/gpu-suite-out}"
MODES="${STACKS_MODES:-shm,tcp}"
ONLY="${STACKS_ONLY:-}"
BUDGET="${STACKS_BUDGET:-480}"
PY="${PY:-python3}"
mkdir -p "${OUT_DIR}"
WORK="$(mktemp -d)"
LOGS="${OUT_DIR}/logs.txt"
SUMMARY="${OUT_DIR}/stacks.md"
START=$(date +%s)
IFS=, read -ra MODE_LIST <<< "${MODES}"
ROWS=()
DETAILS=()
FAILED=0
TCP_PID=""
TCP_ADDR=""
TCP_KEY="${WORK}/tcp.key"
TLS_DIR="${WORK}/tls"
TCP_STARTS=0
RC=0
MS=0

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    if [[ -n "${TCP_PID}" ]]; then
        kill -TERM "${TCP_PID}" 2> /dev/null
        wait "${TCP_PID}" 2> /dev/null
    fi
    rm -rf "${WORK}"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

log() { echo "$*" >&2; }

# wanted NAME: whether STACKS_ONLY selects the row.
wanted() {
    [[ -z "${ONLY}" ]] && return 0
    local glob globs=()
    IFS=, read -ra globs <<< "${ONLY}"
    for glob in "${globs[@]}"; do
        # shellcheck disable=SC2053  # the right side is a glob on purpose
        [[ "$1" == ${glob} ]] && return 0
    done
    return 1
}

write_summary() {
    local header="| check | native rc |" rule="|---|---|" mode
    for mode in "${MODE_LIST[@]}"; do
        header+=" ${mode} rc | ${mode} identical? |"
        rule+="---|---|"
    done
    {
        echo "# Unmodified CUDA stacks through vgpu"
        echo
        echo "$(date -u +%FT%TZ), commit ${VGPU_COMMIT:-?}; each row: a native run, then vgpu over" \
            "${MODES} (shm: \`vgpuctl run\`; tcp: \`VGPU_HOST\` against \`vgpu-host --listen\`);" \
            "each vgpu stdout diffed against native."
        echo
        echo "${header} time ms (native / ${MODES//,/ / }) | result |"
        echo "${rule}---|---|"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "Overall: $([[ ${FAILED} -eq 0 ]] && echo PASS || echo FAIL). Every run's output: logs.txt."
        if [[ ${#DETAILS[@]} -gt 0 ]]; then
            echo
            echo "## Why rows failed (first lines)"
            printf '%s\n' "${DETAILS[@]}"
        fi
    } > "${SUMMARY}"
}

# The TCP host: started on first use, and again if it died; its address in TCP_ADDR.
tcp_host() {
    if [[ -n "${TCP_PID}" ]] && kill -0 "${TCP_PID}" 2> /dev/null; then
        return 0
    fi
    [[ -n "${TCP_PID}" ]] && log_file "TCP host (exited)" "${WORK}/tcp-host.err"
    TCP_STARTS=$((TCP_STARTS + 1))
    [[ ${TCP_STARTS} -gt 3 ]] && return 1
    TCP_ADDR=""
    TCP_PID=""
    (umask 077 && head -c 32 /dev/urandom > "${TCP_KEY}")
    if [[ ! -f "${TLS_DIR}/host.pem" ]]; then
        "${ART}/vgpuctl" host tls-init "${TLS_DIR}" --name 127.0.0.1 > /dev/null || return 1
    fi
    VGPU_SPIN_US="${VGPU_SPIN_US:-1000}" "${ART}/vgpu-host" --listen 127.0.0.1:0 \
        --tls-cert "${TLS_DIR}/host.pem" --tls-key "${TLS_DIR}/host.key" \
        --tls-client-ca "${TLS_DIR}/ca.pem" \
        --tcp-key "${TCP_KEY}" --log warn 2> "${WORK}/tcp-host.err" &
    TCP_PID=$!
    local _
    for _ in $(seq 1 200); do
        TCP_ADDR=$(sed -n 's/.*serving tcp \([0-9.]*:[0-9]*\).*/\1/p' "${WORK}/tcp-host.err" | head -n 1)
        [[ -n "${TCP_ADDR}" ]] && return 0
        kill -0 "${TCP_PID}" 2> /dev/null || break
        sleep 0.1
    done
    kill -TERM "${TCP_PID}" 2> /dev/null
    TCP_PID=""
    return 1
}

# LD_PRELOAD of a TCP run: what `vgpuctl run` preloads (the shim, the NVML facade if staged).
tcp_preload() {
    local value="${ART}/libvgpu-cuda.so"
    [[ -f "${ART}/libvgpu-nvml.so" ]] && value+=":${ART}/libvgpu-nvml.so"
    [[ -n "${LD_PRELOAD:-}" ]] && value+=":${LD_PRELOAD}"
    echo "${value}"
}

# run_one NAME MODE LIMIT CMD...: stdout to $WORK/NAME.MODE, stderr beside it; sets RC and MS.
run_one() {
    local name="$1" mode="$2" limit="$3" t0 t1
    shift 3
    local out="${WORK}/${name}.${mode}"
    t0=$(date +%s%N)
    case "${mode}" in
        native) timeout -k 5 "${limit}" "$@" ;;
        shm) timeout -k 5 "${limit}" "${ART}/vgpuctl" run -- "$@" ;;
        tcp)
            timeout -k 5 "${limit}" env -u VGPU_REGION LD_PRELOAD="$(tcp_preload)" \
                VGPU_HOST="${TCP_ADDR}" VGPU_HOST_KEY_FILE="${TCP_KEY}" \
                VGPU_TLS_CA="${TLS_DIR}/ca.pem" VGPU_TLS_CERT="${TLS_DIR}/client.pem" \
                VGPU_TLS_KEY="${TLS_DIR}/client.key" \
                VGPU_SPIN_US="${VGPU_SPIN_US:-1000}" "$@"
            ;;
        *) echo "unknown mode ${mode} (STACKS_MODES: shm, tcp)" >&2; false ;;
    esac > "${out}" 2> "${out}.err"
    RC=$?
    t1=$(date +%s%N)
    MS=$(((t1 - t0) / 1000000))
}

log_file() { # title, file
    {
        echo "--- $1"
        tail -c 12000 "$2" 2> /dev/null
    } >> "${LOGS}"
}

# why FILE RC LIMIT: the first lines that say why a run failed (its FAIL lines, the shim's
# errors and warnings, the last exception lines, or where its output differs from native).
why() {
    local file="$1" rc="$2" limit="$3"
    {
        case "${rc}" in
            124 | 137) echo "timed out after ${limit} s" ;;
            0 | 1 | 2) ;;
            *) [[ ${rc} -gt 128 ]] && echo "killed by signal $((rc - 128))" ;;
        esac
        grep -m 2 '^FAIL' "${file}"
        grep -m 3 -E '^vgpu-(cuda|nvml)\[[0-9]+\]: (error|warn)' "${file}.err"
        grep -E 'Error|Exception|error:|FAILED|terminate called|Aborted|Segmentation' "${file}.err" \
            | grep -v '^vgpu-' | tail -n 3
        [[ ${rc} -eq 0 && -f "${file}.diff" ]] && grep -E '^[-+]([^-+]|$)' "${file}.diff" | head -n 4
    } 2> /dev/null | cut -c1-240 | head -n 8 > "${file}.why"
    [[ -s "${file}.why" ]] || tail -n 3 "${file}.err" 2> /dev/null | cut -c1-240 > "${file}.why"
    cat "${file}.why"
}

detail() { # name, mode, rc, text
    DETAILS+=("" "**$1 ($2)**, rc $3:" '```text' "$4" '```')
}

# skip NAME REASON: a row that could not run here (not a failure).
skip() {
    local cells="" mode
    for mode in "${MODE_LIST[@]}"; do cells+=" - | - |"; done
    ROWS+=("| $1 | - |${cells} - | SKIP: $2 |")
    log "$1: SKIP ($2)"
    write_summary
}

# fail_row NAME REASON FILE: a row that failed before it could run (a build).
fail_row() {
    local cells="" mode
    for mode in "${MODE_LIST[@]}"; do cells+=" - | - |"; done
    ROWS+=("| $1 | - |${cells} - | FAIL ($2) |")
    detail "$1" "$2" "-" "$(grep -m 6 -iE 'error|undefined|fatal' "$3" | cut -c1-240)"
    FAILED=1
    log "$1: FAIL ($2)"
    write_summary
}

# check [-t SECONDS] NAME CMD...: NAME natively, then through vgpu in each mode; stdouts diffed.
check() {
    local limit=240
    if [[ "$1" == -t ]]; then
        limit="$2"
        shift 2
    fi
    limit="${STACKS_TIMEOUT:-${limit}}"
    local name="$1"
    shift
    wanted "${name}" || return 0
    if [[ $(($(date +%s) - START)) -gt ${BUDGET} ]]; then
        skip "${name}" "not run, STACKS_BUDGET (${BUDGET} s) spent"
        return 0
    fi
    local cells="" times bad=() mode same rc_native out
    run_one "${name}" native "${limit}" "$@"
    rc_native=${RC}
    times="${MS}"
    out="${WORK}/${name}.native"
    { echo "===== ${name} (native): rc ${RC}"; } >> "${LOGS}"
    log_file "stdout" "${out}"
    log_file "stderr (tail)" "${out}.err"
    if [[ ${rc_native} -ne 0 ]]; then
        bad+=(native)
        detail "${name}" native "${rc_native}" "$(why "${out}" "${rc_native}" "${limit}")"
    fi
    for mode in "${MODE_LIST[@]}"; do
        out="${WORK}/${name}.${mode}"
        if [[ ${mode} == tcp ]] && ! tcp_host; then
            cells+=" - | - |"
            times+=" / -"
            bad+=(tcp)
            detail "${name}" tcp "-" "no TCP host: $(head -n 3 "${WORK}/tcp-host.err" 2> /dev/null)"
            continue
        fi
        run_one "${name}" "${mode}" "${limit}" "$@"
        same=no
        diff -u "${WORK}/${name}.native" "${out}" > "${out}.diff" && same=yes
        cells+=" ${RC} | ${same} |"
        times+=" / ${MS}"
        {
            echo "===== ${name} (${mode}): rc ${RC} identical ${same}"
        } >> "${LOGS}"
        log_file "stdout" "${out}"
        log_file "diff against native" "${out}.diff"
        log_file "stderr (tail)" "${out}.err"
        if [[ ${RC} -ne 0 || ${same} != yes ]]; then
            bad+=("${mode}")
            detail "${name}" "${mode}" "${RC}" "$(why "${out}" "${RC}" "${limit}")"
        fi
    done
    local verdict=PASS
    if [[ ${#bad[@]} -gt 0 ]]; then
        verdict="FAIL (${bad[*]})"
        FAILED=1
    fi
    ROWS+=("| ${name} | ${rc_native} |${cells} ${times} | ${verdict} |")
    log "${name}: ${verdict} (native rc ${rc_native}; ${cells})"
    write_summary
}

# build NAME CMD...: runs a build; a failed one becomes NAME's FAIL row with the first errors.
build() {
    local name="$1"
    shift
    if "$@" > "${WORK}/${name}.build" 2>&1; then
        log_file "build ${name}" "${WORK}/${name}.build"
        return 0
    fi
    log_file "build ${name} (failed)" "${WORK}/${name}.build"
    fail_row "${name}" "build" "${WORK}/${name}.build"
    return 1
}

# A CUDA 12 cudart: from the nvidia-cuda-runtime-cu12 wheel in PY's environment, a CUDA 12
# toolkit, the loader's cache, or a bounded search; prints the first that exists, or nothing.
find_cudart12() {
    local candidate
    {
        "${PY}" - 2> /dev/null << 'EOF'
import glob, os, sys
for p in sys.path:
    for f in sorted(glob.glob(os.path.join(p, "nvidia", "cuda_runtime", "lib", "libcudart.so.12*"))):
        print(f)
EOF
        compgen -G "/usr/local/cuda-12*/targets/x86_64-linux/lib/libcudart.so.12*"
        compgen -G "/usr/local/cuda-12*/lib64/libcudart.so.12*"
        ldconfig -p 2> /dev/null | awk '/libcudart\.so\.12/ {print $NF}'
        timeout 20 find /opt /usr/local /usr/lib -name 'libcudart.so.12*' 2> /dev/null
    } | while read -r candidate; do
        if [[ -f "${candidate}" ]]; then
            echo "${candidate}"
            break
        fi
    done
}

write_summary
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
for prog in vecadd sgemm streams graph managed; do
    extra=()
    [[ ${prog} == sgemm ]] && extra=(-lcublas)
    for cudart in static shared; do
        name="nvcc_${prog}_${cudart}"
        wanted "${name}" || continue
        build "${name}" "${NVCC}" -O2 -arch=sm_90 -cudart "${cudart}" -o "${WORK}/${prog}_${cudart}" \
            "tests/stacks/cuda/${prog}.cu" "${extra[@]}" \
            && check -t 90 "${name}" "${WORK}/${prog}_${cudart}"
    done
done

if wanted cudart12_skew; then
    lib=$(find_cudart12)
    if [[ -z "${lib}" ]]; then
        skip cudart12_skew "no CUDA 12 cudart found (nvidia-cuda-runtime-cu12 wheel in ${PY}'s path, /usr/local/cuda-12*, ldconfig, find /opt /usr/local /usr/lib)"
    else
        echo "cudart12_skew: ${lib}" >> "${LOGS}"
        mkdir -p "${WORK}/cu12"
        ln -sf "${lib}" "${WORK}/cu12/libcudart.so"
        nvcc12=$(compgen -G "/usr/local/cuda-12*/bin/nvcc" | sort -V | tail -n 1)
        # A CUDA 12 nvcc if there is one; otherwise this nvcc, with its own cudart left out and
        # CUDA 12's linked in (the program uses only calls both runtimes have).
        build cudart12_skew "${nvcc12:-${NVCC}}" -O2 -arch=sm_90 -cudart none \
            -o "${WORK}/cudart12_skew" tests/stacks/cuda/cudart_skew.cu \
            -L"${WORK}/cu12" -lcudart -Xlinker "-rpath=$(dirname "${lib}")" \
            && check -t 90 cudart12_skew "${WORK}/cudart12_skew"
    fi
fi

check -t 60 nvml "${PY}" tests/stacks/nvml_check.py
check -t 120 cupy "${PY}" tests/stacks/cupy_check.py
for lib in fft random sparse linalg; do
    check -t 120 "cupy_${lib}" "${PY}" tests/stacks/cupy_libs_check.py "${lib}"
done
check -t 180 torch "${PY}" tests/stacks/torch_check.py
check -t 150 torch_cudnn_conv "${PY}" tests/stacks/torch_libs_check.py conv
check -t 150 torch_cudnn_lstm "${PY}" tests/stacks/torch_libs_check.py lstm
check -t 150 torch_nccl "${PY}" tests/stacks/torch_libs_check.py nccl
check -t 150 triton "${PY}" tests/stacks/triton_check.py
check -t 180 jax "${PY}" tests/stacks/jax_check.py
check -t 300 torch_compile "${PY}" tests/stacks/torch_libs_check.py compile

[[ -n "${TCP_PID}" ]] && log_file "TCP host stderr" "${WORK}/tcp-host.err"
echo "total $(($(date +%s) - START)) s" >> "${LOGS}"
write_summary
cat "${SUMMARY}" >&2
exit "${FAILED}"
