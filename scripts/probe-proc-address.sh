#!/usr/bin/env bash
# Probes the real driver's cuGetProcAddress_v2 table (issue 5). Two halves:
#   scripts/probe-proc-address.sh build     here: compiles the probe and its name list into .gpu-artifacts/probe/
#   scripts/probe-proc-address.sh run OUT   on the GPU machine: writes OUT/proc-address-<driver>.txt
# The output is committed as cuda-headers/probe/proc-address-<driver>.txt and turned into
# cuda-headers/src/generated/proc_address.rs by `cargo run -p cuda-headers-generator -- proc-address`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ART="${ROOT}/.gpu-artifacts/probe"
case "${1:-}" in
build)
    INCLUDE="${HOME}/.cache/vgpu/cuda-headers/13.0.96/include"
    [[ -f "${INCLUDE}/cuda.h" ]] || bash "${ROOT}/scripts/build-gpu-tests.sh" >/dev/null
    mkdir -p "${ART}"
    gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I"${INCLUDE}" -o "${ART}/probe_proc_address" \
        "${ROOT}/cuda-headers/probe/probe_proc_address.c" -ldl
    exports="${ROOT}/../shared/observed/libcuda-580.159.04-exports.txt"
    [[ -f "${exports}" ]] || exports="/work/shared/observed/libcuda-580.159.04-exports.txt"
    # Base names: every exported name without its ABI suffix, plus every name the observed
    # runtimes asked for (some are not exported under that name).
    {
        sed -E 's/_ptsz$|_ptds$//; s/_v[0-9]+$//' "${exports}"
        awk '$1=="GPA2" && NF>=4 {print $2}' "$(dirname "${exports}")"/cudart13-*-getprocaddress.log
    } | grep -E '^cu' | sort -u > "${ART}/names.txt"
    { cat "${ART}/names.txt"; echo "--exports--"; cat "${exports}"; } > "${ART}/input.txt"
    echo "probe built: $(wc -l < "${ART}/names.txt") base names"
    ;;
run)
    out="${2:?usage: run OUTDIR}"
    "${ART}/probe_proc_address" < "${ART}/input.txt" > "${out}/proc-address.txt"
    echo "probe: $(wc -l < "${out}/proc-address.txt") lines"
    ;;
*) echo "usage: $0 build | run OUTDIR" >&2; exit 2 ;;
esac
