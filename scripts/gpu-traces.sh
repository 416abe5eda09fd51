#!/usr/bin/env bash
# On the GPU machine: runs one command through vgpu with VGPU_TRACE on, to see why it fails
# where native passes, and writes what matters in a trace: the calls that returned an error
# (first 60), the last 60 calls before the end, `vgpuctl trace-summary`, and the command's
# stderr tail. Over shm the command runs under `vgpuctl run`; over tcp it gets the shim
# preloaded against a `vgpu-host --listen 127.0.0.1:0` started here, with TLS material from
# `vgpuctl host tls-init` (as gpu-stacks.sh does).
#
#   scripts/gpu-traces.sh NAME shm|tcp TIMEOUT_S CMD...     → $OUT/traces/NAME.txt
#
# Expects .gpu-artifacts/ (scripts/stage-gpu-artifacts.sh). VGPU_TRACES_DRIVER names another
# driver for the tcp host (a fake libcuda.so.1, to rehearse without a GPU). Exit status: the
# command's.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}" || exit 2
A="${ROOT}/.gpu-artifacts"
name="$1"; mode="$2"; limit="$3"; shift 3
dir="${OUT:-${ROOT}/gpu-suite-out}/traces"
mkdir -p "${dir}"
work="$(mktemp -d)"
trace="${work}/trace"
host_pid=""
cleanup() {
    [[ -n "${host_pid}" ]] && kill -TERM "${host_pid}" 2> /dev/null && wait "${host_pid}" 2> /dev/null
    rm -rf "${work}"
}
trap cleanup EXIT
case "${mode}" in
    shm)
        VGPU_TRACE="${trace}" timeout -k 5 "${limit}" "${A}/vgpuctl" run -- "$@" \
            > "${work}/stdout" 2> "${work}/stderr"
        rc=$?
        ;;
    tcp)
        "${A}/vgpuctl" host tls-init "${work}/tls" > /dev/null || exit 2
        "${A}/vgpu-host" ${VGPU_TRACES_DRIVER:+--driver "${VGPU_TRACES_DRIVER}"} --listen 127.0.0.1:0 --tls-cert "${work}/tls/host.pem" \
            --tls-key "${work}/tls/host.key" --tls-client-ca "${work}/tls/ca.pem" \
            2> "${work}/host.log" &
        host_pid=$!
        addr=""
        for _ in $(seq 100); do
            addr="$(sed -n 's/.*serving tcp \(127\.0\.0\.1:[0-9]*\).*/\1/p' "${work}/host.log" | head -n 1)"
            [[ -n "${addr}" ]] && break
            sleep 0.1
        done
        [[ -z "${addr}" ]] && { echo "gpu-traces: the tcp host did not start" >&2; cat "${work}/host.log" >&2; exit 2; }
        VGPU_TRACE="${trace}" VGPU_HOST="${addr}" VGPU_TLS_CA="${work}/tls/ca.pem" \
            VGPU_TLS_CERT="${work}/tls/client.pem" VGPU_TLS_KEY="${work}/tls/client.key" \
            LD_PRELOAD="${A}/libvgpu-cuda.so" timeout -k 5 "${limit}" "$@" \
            > "${work}/stdout" 2> "${work}/stderr"
        rc=$?
        ;;
    *) echo "usage: $0 NAME shm|tcp TIMEOUT_S CMD..." >&2; exit 2 ;;
esac
{
    echo "# ${name} over ${mode}: rc ${rc}: $*"
    echo "## stdout (last 20 lines)"; tail -n 20 "${work}/stdout"
    echo "## stderr (last 40 lines)"; tail -n 40 "${work}/stderr" | cut -c1-400
    echo "## calls that returned an error (first 60)"
    grep -E 'CUDA_ERROR|NOT_SUPPORTED|panicked' "${trace}" 2> /dev/null | head -n 60 | cut -c1-400
    echo "## last 60 trace lines"; tail -n 60 "${trace}" 2> /dev/null | cut -c1-400
    echo "## trace-summary"; "${A}/vgpuctl" trace-summary "${trace}" --limit 40 2>&1
    [[ -n "${host_pid}" ]] && { echo "## host log (last 30)"; tail -n 30 "${work}/host.log"; }
} > "${dir}/${name}.txt" 2>&1
exit "${rc}"
