#!/usr/bin/env bash
# Unmodified CUDA stacks through vgpu (issue 5), on the GPU machine: each check runs natively and
# through `vgpuctl run`, and their stdout is diffed. Writes $OUT/stacks.md and appends to
# $OUT/logs.txt. The nvcc programs are built here with the machine's nvcc (static cudart, the
# default, and -cudart shared): a build of test clients, not of the project.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
ART="${ROOT}/.gpu-artifacts"
OUT_DIR="${OUT:-${ROOT}/gpu-suite-out}"
LIMIT="${STACKS_TIMEOUT:-240}"
mkdir -p "${OUT_DIR}"
WORK="$(mktemp -d)"
LOGS="${OUT_DIR}/logs.txt"
ROWS=()
FAILED=0
PY=python3

check() { # name, then the command
    local name="$1"; shift
    local t0 t1 t2 rc1 rc2 same=no verdict=PASS
    t0=$(date +%s%N)
    timeout -k 5 "${LIMIT}" "$@" > "${WORK}/${name}.native" 2> "${WORK}/${name}.native.err"; rc1=$?
    t1=$(date +%s%N)
    timeout -k 5 "${LIMIT}" "${ART}/vgpuctl" run -- "$@" > "${WORK}/${name}.vgpu" 2> "${WORK}/${name}.vgpu.err"; rc2=$?
    t2=$(date +%s%N)
    diff -u "${WORK}/${name}.native" "${WORK}/${name}.vgpu" > "${WORK}/${name}.diff" && same=yes
    [[ ${rc1} -ne 0 || ${rc2} -ne 0 || ${same} != yes ]] && { verdict=FAIL; FAILED=1; }
    {
        echo "===== ${name}: ${verdict} rc ${rc1}/${rc2} identical ${same}"
        echo "--- native stdout"; cat "${WORK}/${name}.native"
        echo "--- vgpu stdout"; cat "${WORK}/${name}.vgpu"
        echo "--- diff"; cat "${WORK}/${name}.diff"
        echo "--- native stderr (tail)"; tail -c 4000 "${WORK}/${name}.native.err"
        echo "--- vgpu stderr (tail)"; tail -c 12000 "${WORK}/${name}.vgpu.err"
    } >> "${LOGS}"
    ROWS+=("| ${name} | ${rc1} | ${rc2} | ${same} | $(( (t1 - t0) / 1000000 )) / $(( (t2 - t1) / 1000000 )) | ${verdict} |")
    echo "${name}: ${verdict} (rc ${rc1}/${rc2}, identical ${same})" >&2
}

NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
for prog in vecadd sgemm streams graph; do
    extra=(); [[ ${prog} == sgemm ]] && extra=(-lcublas)
    "${NVCC}" -O2 -arch=sm_90 -o "${WORK}/${prog}_static" "tests/stacks/cuda/${prog}.cu" "${extra[@]}" >> "${LOGS}" 2>&1
    "${NVCC}" -O2 -arch=sm_90 -cudart shared -o "${WORK}/${prog}_shared" "tests/stacks/cuda/${prog}.cu" "${extra[@]}" >> "${LOGS}" 2>&1
    check "nvcc_${prog}_static" "${WORK}/${prog}_static"
    check "nvcc_${prog}_shared" "${WORK}/${prog}_shared"
done
for stack in torch cupy triton jax nvml; do
    check "${stack}" "${PY}" "tests/stacks/${stack}_check.py"
done

{
    echo "# Unmodified CUDA stacks through vgpu"
    echo
    echo "$(date -u +%FT%TZ), commit ${VGPU_COMMIT:-?}; each row: native run, then \`vgpuctl run\`; stdout diffed."
    echo
    echo "| check | native rc | vgpu rc | output identical? | time ms (native / vgpu) | result |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Overall: $([[ ${FAILED} -eq 0 ]] && echo PASS || echo FAIL). Failures' traces: logs.txt."
} > "${OUT_DIR}/stacks.md"
cat "${OUT_DIR}/stacks.md" >&2
rm -rf "${WORK}"
exit "${FAILED}"
