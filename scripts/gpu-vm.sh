#!/usr/bin/env bash
# On the GPU machine (issue 13): a GPU-less QEMU guest computes on the host's GPU through
# ivshmem and vgpu-host, measured against native runs on the host. Run from the repository root
# with .gpu-artifacts/ carried: vm.tar.xz (scripts/stage-vm-artifacts.sh), vgpuctl, vgpu-host,
# libvgpu-cuda.so, libvgpu-nvml.so (scripts/stage-gpu-artifacts.sh) and bin/ (the driver-API
# programs, scripts/build-gpu-tests.sh).
#
# Each step boots a fresh guest: the bundled QEMU (its own loader and libraries), KVM with
# -cpu host (TCG when /dev/kvm is absent), no GPU device, an ivshmem-plain device on a region
# file in /dev/shm served by its own `vgpu-host --doorbell poll`, and as root file system this
# machine's / read-only over 9p under a tmpfs overlay (tests/vm/hostroot/init): the guest has the
# same Python stacks and repository, but its own kernel, no NVIDIA driver and no /dev/nvidia*.
# Guest programs run under `vgpuctl run --region <ivshmem BAR2>`. Every step has its own time
# limit and writes its own folder and rows, so a call cut short still brings back what finished:
#
#   boot    boot time; VM_PROBE (devquery) in the guest, diffed against a native run; no
#           /dev/nvidia* and no NVIDIA module in the guest                 $OUT/boot/
#   suite   the driver-API programs (VM_SUITE, gpu-suite.sh's rows) in the guest, each diffed
#           against a native run                                          $OUT/suite/
#   rtt     cuStreamSynchronize round trip, p50/p99 (tests/gpu/vm_probe.c): native, vgpu on this
#           host (same Poll region), vgpu from the guest                  $OUT/rtt/
#   faults  kill: QEMU SIGKILLed while a guest process holds VM_HOLD_MIB of device memory, the
#           time until its worker is gone and the memory is back (bound 2 s);
#           restart: vgpu-host stopped (SIGTERM, then SIGKILL: VM_RESTART_SIGNALS) and started
#           again VM_RESTART_GAP_S (3) s later while a guest process calls in a loop: its first failing call and the time
#           since its last success (bound 5 s), then a new guest process works against the new
#           host (one boot per signal)                                    $OUT/faults/
#   torch   bench/llm/torch_bench.py decode (VM_TORCH_ARGS) in the guest and natively: tok/s
#           ratio, greedy tokens compared                                 $OUT/torch/
#   stacks  tests/stacks/*_check.py (torch, cupy, triton, jax, nvml) in the guest, diffed
#           against native                                                $OUT/stacks/
#   llama   llama-bench tg128 in the guest and natively, when .gpu-artifacts/llama(.tar.xz) is
#           there (not in the default STEPS)                              $OUT/llama/
#
# STEPS (default "boot,suite,rtt,faults,torch,stacks") picks and orders them; T_BOOT, T_SUITE,
# T_RTT, T_FAULTS, T_TORCH, T_STACKS, T_LLAMA (seconds) bound each. $OUT/vm.md collects the rows
# as steps finish; $OUT/vm.log the progress. Other knobs: VM_ACCEL (kvm|tcg; unset: KVM when it
# boots the bundled kernel to init within VM_KVM_PROBE_S (20) s, else TCG), VM_MEM (16G),
# VM_SMP (8), VM_REGION_SIZE (64M: the size of the region file and so of the guest's BAR, a power
# of two), VM_PEER_MS (500: vgpu-host --peer-timeout-ms, which bounds how soon a killed guest's
# worker exits: about twice it), VM_HOLD_MIB (4096), VM_RTT_CALLS (20000), VGPU_VM_DRIVER (the
# driver vgpu-host and the native runs use; a path to a fake libcuda.so.1 for the no-GPU rehearsal,
# whose folder then goes on the native runs' LD_LIBRARY_PATH).
# Exit status: 0 when every row passed, 1 otherwise, 2 for missing artifacts.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
A="${ROOT}/.gpu-artifacts"
O="${OUT:-${ROOT}/vm-out}"
mkdir -p "${O}"
O="$(cd "${O}" && pwd)"
STEPS="${STEPS:-boot,suite,rtt,faults,torch,stacks}"
MEM="${VM_MEM:-16G}"
SMP="${VM_SMP:-8}"
REGION_SIZE="${VM_REGION_SIZE:-64M}"
PEER_MS="${VM_PEER_MS:-500}"
HOLD_MIB="${VM_HOLD_MIB:-4096}"
RTT_CALLS="${VM_RTT_CALLS:-20000}"
PROBE="${VM_PROBE:-devquery}"
SUITE="${VM_SUITE:-devquery module_ptx module_cubin memcpy streams_events two_threads host_callback ollama_discovery ollama_discovery_new graphs pools_vmm launch_rate}"
TORCH_ARGS="${VM_TORCH_ARGS:-decode --sdpa both --tokens 32 --reps 3}"
RESTART_SIGNALS="${VM_RESTART_SIGNALS:-TERM KILL}"
RESTART_GAP_S="${VM_RESTART_GAP_S:-3}"
DRIVER="${VGPU_VM_DRIVER:-libcuda.so.1}"
KILL_BOUND_MS=2000
RESTART_BOUND_MS=5000
CUBIN="${ROOT}/tests/gpu/kernels.sm_90.cubin"

LOG="${O}/vm.log"
MD="${O}/vm.md"
FAILED=0
log() { echo "gpu-vm: $*" | tee -a "${LOG}" >&2; }
# row LINE: one table row; a row whose result is FAIL fails the run.
row() { echo "$*" >> "${MD}"; [[ "$*" != *"| FAIL"* ]] || FAILED=1; }
verdict() { if [[ "$1" == PASS ]]; then echo PASS; else echo "FAIL${2:+ ($2)}"; fi; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- artifacts and the bundle ----
for f in vm.tar.xz vgpuctl vgpu-host libvgpu-cuda.so bin/vm_probe "bin/${PROBE}"; do
    [[ -e "${A}/${f}" ]] || { echo "gpu-vm: missing ${A}/${f}" >&2; exit 2; }
done
NATIVE_ENV=()
if [[ "${DRIVER}" == */* ]]; then
    [[ -f "${DRIVER}" ]] || { echo "gpu-vm: VGPU_VM_DRIVER ${DRIVER} does not exist" >&2; exit 2; }
    DRIVER="$(cd "$(dirname "${DRIVER}")" && pwd)/$(basename "${DRIVER}")"
    NATIVE_ENV=("LD_LIBRARY_PATH=$(dirname "${DRIVER}")${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}")
fi
native() { env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "$@"; }

to_bytes() {
    local v="$1" n unit
    [[ "${v}" =~ ^([0-9]+)([KMG]?)$ ]] || return 1
    n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[2]}"
    case "${unit}" in K) n=$((n << 10)) ;; M) n=$((n << 20)) ;; G) n=$((n << 30)) ;; esac
    echo "${n}"
}
REGION_BYTES="$(to_bytes "${REGION_SIZE}")" && (( REGION_BYTES >= 4096 && (REGION_BYTES & (REGION_BYTES - 1)) == 0 )) \
    || { echo "gpu-vm: VM_REGION_SIZE=${REGION_SIZE} is not a power of two of at least 4K" >&2; exit 2; }

WORK="$(mktemp -d /tmp/vgpu-gpuvm.XXXXXX)"
BUNDLE_ID="$(cksum < "${A}/vm.tar.xz" | cut -d' ' -f1)"
B="/tmp/vgpu-vm-bundle-${BUNDLE_ID}/vm"
if [[ ! -x "${B}/qemu" ]]; then
    t0=$(now_ms)
    mkdir -p "${B%/vm}.part" && tar -xJf "${A}/vm.tar.xz" -C "${B%/vm}.part" && rm -rf "${B%/vm}" \
        && mv "${B%/vm}.part" "${B%/vm}" || { echo "gpu-vm: cannot unpack ${A}/vm.tar.xz" >&2; exit 2; }
    log "bundle unpacked in $(( $(now_ms) - t0 )) ms to ${B}"
fi

# Each step runs in a subshell that stops what it started on exit: QEMU by pid, hosts by pid
# (their workers follow them), region files. The main shell stops a running step on exit.
QPIDS=() HPIDS=() SHMS=() STEP_PID=""
cleanup_step() {
    local p
    for p in ${QPIDS[@]+"${QPIDS[@]}"}; do kill -KILL "${p}" 2>/dev/null; done
    for p in ${HPIDS[@]+"${HPIDS[@]}"}; do kill -TERM "${p}" 2>/dev/null; done
    sleep 0.3
    for p in ${HPIDS[@]+"${HPIDS[@]}"}; do kill -KILL "${p}" 2>/dev/null; done
    for p in ${SHMS[@]+"${SHMS[@]}"}; do rm -f "${p}"; done
}
cleanup() {
    if [[ -n "${STEP_PID}" ]] && kill -TERM "${STEP_PID}" 2>/dev/null; then
        sleep 2
        kill -KILL "${STEP_PID}" 2>/dev/null
    fi
    rm -rf "${WORK}"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

ACCEL="${VM_ACCEL:-}"
ACCEL_NOTE="VM_ACCEL=${ACCEL}"
if [[ -z "${ACCEL}" ]]; then
    ACCEL=tcg
    ACCEL_NOTE="no writable /dev/kvm"
    if [[ -w /dev/kvm ]]; then
        # KVM must run the bundled kernel, not only open: a /dev/kvm backed by kvm_pvm (a
        # software nested hypervisor, as on the GPU machine's Firecracker VMs) starts QEMU and
        # SeaBIOS but hangs an unmodified guest kernel after its decompressor. So boot the kernel
        # and initramfs with no vgpu.xfer: init exits at once (VGPU-VM-EXIT rc=125) and powers off.
        t0=$(now_ms)
        "${B}/qemu" -nodefaults -no-user-config -nographic -monitor none -no-reboot \
            -machine pc -accel kvm -cpu host -m 512M -smp 1 -kernel "${B}/vmlinuz" -initrd "${B}/initrd.cpio" \
            -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" -serial "file:${WORK}/kvm-check.serial" \
            < /dev/null > "${WORK}/kvm-check.out" 2>&1 &
        kp=$!
        for _ in $(seq 1 $(( ${VM_KVM_PROBE_S:-20} * 10 ))); do
            tr -d '\r' < "${WORK}/kvm-check.serial" 2>/dev/null | grep -q '^VGPU-VM-EXIT' && { ACCEL=kvm; break; }
            kill -0 "${kp}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${kp}" 2>/dev/null
        wait "${kp}" 2>/dev/null
        if [[ "${ACCEL}" == kvm ]]; then
            ACCEL_NOTE="a KVM guest booted to init in $(( $(now_ms) - t0 )) ms"
        else
            ACCEL_NOTE="KVM did not boot the guest kernel to init within ${VM_KVM_PROBE_S:-20} s ($(ls /sys/module 2>/dev/null | grep -x 'kvm_[a-z]*' | tr '\n' ' ')loaded; serial: $(tr -d '\r' < "${WORK}/kvm-check.serial" 2>/dev/null | sed 's/\x1b[^a-zA-Z]*[a-zA-Z]//g' | tr '\n' ' ' | cut -c1-160); qemu: $(tr '\n' ' ' < "${WORK}/kvm-check.out" | cut -c1-200)); using TCG"
        fi
    fi
fi
CPU=max
[[ "${ACCEL}" == kvm ]] && CPU=host

{
    echo "# vgpu in a GPU-less QEMU guest (scripts/gpu-vm.sh)"
    echo
    echo "$(date -u +%FT%TZ), commit ${VGPU_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}, $(nproc) CPUs, $(uname -r)"
    echo "- guest: $(sed -n 2p "${B}/MANIFEST"), $(sed -n 3p "${B}/MANIFEST" | cut -d'(' -f1), accel ${ACCEL} (-cpu ${CPU}), ${SMP} vCPUs, ${MEM}"
    echo "- accel: ${ACCEL_NOTE}"
    echo "- region: ${REGION_SIZE} ivshmem-plain, vgpu-host --doorbell poll --peer-timeout-ms ${PEER_MS}, driver ${DRIVER}"
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1 || echo none)"
    echo
    echo "| step | check | native | VM | result |"
    echo "|---|---|---|---|---|"
} > "${MD}"
: > "${LOG}"
log "steps ${STEPS}; accel ${ACCEL} (${ACCEL_NOTE}); bundle ${B}; out ${O}"

# ---- hosts, guests ----
# host_start NAME [SHM]: vgpu-host on a region file (created at REGION_BYTES unless SHM exists);
# sets HOST_PID and SHM. The log goes to $O/NAME/host.log (appended across restarts).
host_start() {
    local name="$1" i
    SHM="${2:-/dev/shm/vgpu-gpuvm-$$-${name}}"
    if [[ ! -e "${SHM}" ]]; then
        truncate -s "${REGION_BYTES}" "${SHM}" || return 1
        SHMS+=("${SHM}")
    fi
    mkdir -p "${O}/${name}"
    local hlog="${O}/${name}/host.log"
    local mark
    mark=0
    [[ -f "${hlog}" ]] && mark="$(wc -l < "${hlog}")"
    "${A}/vgpu-host" --region "${SHM}" --region-size "${REGION_BYTES}" --doorbell poll \
        --peer-timeout-ms "${PEER_MS}" --driver "${DRIVER}" --log info 2>> "${hlog}" &
    HOST_PID=$!
    HPIDS+=("${HOST_PID}")
    for i in $(seq 1 300); do
        tail -n +"$((mark + 1))" "${hlog}" | grep -q "vgpu-host: serving" && return 0
        kill -0 "${HOST_PID}" 2>/dev/null || { log "${name}: vgpu-host exited: $(tail -n 3 "${hlog}" | tr '\n' ' ')"; return 1; }
        sleep 0.1
    done
    log "${name}: vgpu-host not serving after 30 s"
    return 1
}

# host_stop [SIGNAL]: stops HOST_PID (SIGTERM by default; SIGKILL after 5 s); sets STOP_MS.
host_stop() {
    local sig="${1:-TERM}" t0 i
    t0=$(now_ms)
    kill -"${sig}" "${HOST_PID}" 2>/dev/null
    for i in $(seq 1 50); do kill -0 "${HOST_PID}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${HOST_PID}" 2>/dev/null
    wait "${HOST_PID}" 2>/dev/null
    STOP_MS=$(( $(now_ms) - t0 ))
}

# guest_cmd: the start of a guest's command file ($WORK/NAME/xfer/cmd) on stdout; the step
# appends its own lines. In the guest: the host's PATH, A (the artifacts), X (the transfer
# folder) and the command `vgpu CMD…` (CMD under vgpuctl run on the ivshmem region; a program,
# so that `timeout` can run it).
guest_cmd() {
    cat <<EOF
export A='${A}'
X="\$VGPU_XFER"
mkdir -p /run/vgpu-bin
printf '#!/bin/sh\\nexec "\$A/vgpuctl" run --region "\$VGPU_REGION" -- "\$@"\\n' > /run/vgpu-bin/vgpu
chmod 0755 /run/vgpu-bin/vgpu
export PATH='/run/vgpu-bin:${PATH}'
EOF
}

# vm_start NAME: boots the guest on SHM with $WORK/NAME/xfer shared; sets QPID, Q_T0.
vm_start() {
    local name="$1" x="${WORK}/$1/xfer"
    mkdir -p "${O}/${name}"
    Q_T0=$(now_ms)
    "${B}/qemu" -nodefaults -no-user-config -nographic -no-reboot \
        -machine pc -accel "${ACCEL}" -cpu "${CPU}" -m "${MEM}" -smp "${SMP}" \
        -kernel "${B}/vmlinuz" -initrd "${B}/initrd.cpio" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off vgpu.xfer=${x} vgpu.cwd=${ROOT}" \
        -serial "file:${O}/${name}/serial.log" -monitor none \
        -object "memory-backend-file,id=vgpu-shm,share=on,mem-path=${SHM},size=${REGION_BYTES}" \
        -device ivshmem-plain,memdev=vgpu-shm \
        -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
        -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
        -fsdev "local,id=xfer,path=${x},security_model=none" \
        -device virtio-9p-pci,fsdev=xfer,mount_tag=xfer \
        < /dev/null > "${O}/${name}/qemu.out" 2>&1 &
    QPID=$!
    QPIDS+=("${QPID}")
}

# vm_ready NAME LIMIT: waits for the guest's "ready" line; sets READY_MS (wall, from QEMU start)
# and READY_UPTIME (the guest's uptime then).
vm_ready() {
    local serial="${O}/$1/serial.log" end=$(( $(now_ms) + $2 * 1000 ))
    READY_MS="" READY_UPTIME=""
    while (( $(now_ms) < end )); do
        if tr -d '\r' 2>/dev/null < "${serial}" | grep -q '^vgpu-vm: ready after'; then
            READY_MS=$(( $(now_ms) - Q_T0 ))
            READY_UPTIME="$(tr -d '\r' < "${serial}" | sed -n 's/^vgpu-vm: ready after \([0-9.]*\)s.*/\1/p' | head -n1)"
            return 0
        fi
        kill -0 "${QPID}" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# vm_wait NAME LIMIT: waits for QEMU to exit (SIGKILL at LIMIT s); sets GUEST_RC ("" if the guest
# never reported) and prints the serial log's tail into vm.log when it did not end with rc 0.
vm_wait() {
    local name="$1" end=$(( $(date +%s) + $2 ))
    while kill -0 "${QPID}" 2>/dev/null && (( $(date +%s) < end )); do sleep 0.1; done
    if kill -0 "${QPID}" 2>/dev/null; then
        log "${name}: guest still running after $2 s; killing QEMU"
        kill -KILL "${QPID}" 2>/dev/null
    fi
    wait "${QPID}" 2>/dev/null
    GUEST_RC="$(tr -d '\r' < "${O}/${name}/serial.log" 2>/dev/null | sed -n 's/^VGPU-VM-EXIT rc=\([0-9]*\)$/\1/p' | tail -n1)"
    if [[ "${GUEST_RC}" != 0 ]]; then
        log "${name}: guest rc=${GUEST_RC:-none}; serial log tail:"
        tr -d '\r' < "${O}/${name}/serial.log" 2>/dev/null | tail -n 20 | sed 's/^/  guest| /' | tee -a "${LOG}" >&2
        sed 's/^/  qemu| /' "${O}/${name}/qemu.out" 2>/dev/null | tail -n 5 | tee -a "${LOG}" >&2
    fi
}

# vm_step NAME LIMIT: host up, guest booted with $WORK/NAME/xfer/cmd, waited for, host stopped.
# The guest's files are copied to $O/NAME/guest/. Returns 1 when the host or guest failed.
vm_step() {
    local name="$1" limit="$2"
    host_start "${name}" || return 1
    vm_start "${name}"
    vm_ready "${name}" "$(left)" && log "${name}: guest ready ${READY_MS} ms after QEMU start (guest uptime ${READY_UPTIME} s)"
    vm_wait "${name}" "${limit}"
    host_stop > /dev/null
    mkdir -p "${O}/${name}/guest"
    cp -r "${WORK}/${name}/xfer/." "${O}/${name}/guest/" 2>/dev/null
    rm -f "${SHM}"
    [[ "${GUEST_RC}" == 0 ]]
}

# left: seconds left to the running step, less 5 for its verdicts.
left() { local l=$(( STEP_END - $(date +%s) - 5 )); (( l > 1 )) || l=1; echo "${l}"; }

# same A B: "yes" when the files are identical (a diff goes beside A).
same() { if diff -u "$1" "$2" > "$1.diff" 2>&1; then rm -f "$1.diff"; echo yes; else echo no; fi; }

# ---- steps ----
step_boot() {
    local d="${O}/boot" x="${WORK}/boot/xfer" n_rc v
    mkdir -p "${d}" "${x}"
    timeout -k 5 60 env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "${A}/bin/${PROBE}" > "${d}/native.out" 2> "${d}/native.err"
    n_rc=$?
    {
        guest_cmd
        cat <<EOF
{ ls -d /dev/nvidia* 2>/dev/null; grep -i nvidia /proc/modules; ls -d /proc/driver/nvidia 2>/dev/null; } > "\$X/nvidia-nodes.txt"
uname -r > "\$X/uname.txt"
timeout -k 5 60 vgpu "\$A/bin/${PROBE}" > "\$X/probe.out" 2> "\$X/probe.err"
echo \$? > "\$X/probe.rc"
EOF
    } > "${x}/cmd"
    vm_step boot "$(left)"
    local g_rc s nodes
    g_rc="$(cat "${d}/guest/probe.rc" 2>/dev/null || echo none)"
    s="$(same "${d}/native.out" "${d}/guest/probe.out")"
    v=FAIL; [[ "${n_rc}" == 0 && "${g_rc}" == 0 && "${s}" == yes ]] && v=PASS
    row "| boot | guest ready: ${READY_MS:-?} ms wall from QEMU start, guest uptime ${READY_UPTIME:-?} s; guest kernel $(cat "${d}/guest/uname.txt" 2>/dev/null) | - | - | $( [[ -n "${READY_MS}" ]] && verdict PASS || verdict FAIL 'no ready line') |"
    row "| boot | ${PROBE} through the shim in the guest, stdout diffed | rc ${n_rc} | rc ${g_rc}, identical ${s} | $(verdict "${v}") |"
    nodes="$(wc -l < "${d}/guest/nvidia-nodes.txt" 2>/dev/null || echo '?')"
    v=FAIL; [[ "${nodes}" == 0 ]] && v=PASS
    row "| boot | no /dev/nvidia*, NVIDIA module or /proc/driver/nvidia in the guest | - | ${nodes} found | $(verdict "${v}") |"
}

step_suite() {
    local d="${O}/suite" x="${WORK}/suite/xfer" p args t0 rc
    mkdir -p "${d}/native" "${x}"
    for p in ${SUITE}; do
        args=""; [[ "${p}" == module_cubin ]] && args="${CUBIN}"
        t0=$(now_ms)
        timeout -k 5 60 env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "${A}/bin/${p}" ${args} > "${d}/native/${p}.out" 2> "${d}/native/${p}.err"
        rc=$?
        echo "${rc} $(( $(now_ms) - t0 ))" > "${d}/native/${p}.rc"
    done
    {
        guest_cmd
        echo "mkdir -p \"\$X/out\""
        for p in ${SUITE}; do
            args=""; [[ "${p}" == module_cubin ]] && args="'${CUBIN}'"
            cat <<EOF
t0=\$(date +%s%N)
timeout -k 5 60 vgpu "\$A/bin/${p}" ${args} > "\$X/out/${p}.out" 2> "\$X/out/${p}.err"
rc=\$?
echo "\$rc \$(( (\$(date +%s%N) - t0) / 1000000 ))" > "\$X/out/${p}.rc"
EOF
        done
    } > "${x}/cmd"
    vm_step suite "$(left)"
    local n g s v
    for p in ${SUITE}; do
        n="$(cat "${d}/native/${p}.rc" 2>/dev/null)"
        g="$(cat "${d}/guest/out/${p}.rc" 2>/dev/null || echo 'none -')"
        s="$(same "${d}/native/${p}.out" "${d}/guest/out/${p}.out")"
        v=FAIL; [[ "${n%% *}" == 0 && "${g%% *}" == 0 && "${s}" == yes ]] && v=PASS
        row "| suite | ${p} (stdout identical: ${s}) | rc ${n%% *}, ${n##* } ms | rc ${g%% *}, ${g##* } ms | $(verdict "${v}") |"
    done
}

rtt_field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$1" 2>/dev/null | head -n1; }
step_rtt() {
    local d="${O}/rtt" x="${WORK}/rtt/xfer"
    mkdir -p "${d}" "${x}"
    timeout -k 5 60 env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "${A}/bin/vm_probe" rtt "${RTT_CALLS}" > "${d}/native.out" 2> "${d}/native.err"
    {
        guest_cmd
        echo "timeout -k 5 90 vgpu \"\$A/bin/vm_probe\" rtt ${RTT_CALLS} > \"\$X/rtt.out\" 2> \"\$X/rtt.err\""
    } > "${x}/cmd"
    # The same host and region first serve a client on this machine (Poll doorbell, no VM), then
    # the guest's: the difference is the VM boundary.
    if host_start rtt; then
        timeout -k 5 60 env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "${A}/vgpuctl" run --region "${SHM}" -- \
            "${A}/bin/vm_probe" rtt "${RTT_CALLS}" > "${d}/host-poll.out" 2> "${d}/host-poll.err"
        vm_start rtt
        vm_ready rtt "$(left)"
        vm_wait rtt "$(left)"
        host_stop > /dev/null
        mkdir -p "${d}/guest" && cp -r "${x}/." "${d}/guest/"
        rm -f "${SHM}"
    fi
    local f
    for f in native host-poll guest/rtt; do
        [[ -s "${d}/${f}.out" ]] && log "rtt ${f}: $(cat "${d}/${f}.out")"
    done
    local v=FAIL
    [[ -n "$(rtt_field "${d}/guest/rtt.out" p50_us)" ]] && v=PASS
    row "| rtt | cuStreamSynchronize round trip p50 / p99 µs; vgpu on this host over the same Poll region: $(rtt_field "${d}/host-poll.out" p50_us) / $(rtt_field "${d}/host-poll.out" p99_us) | $(rtt_field "${d}/native.out" p50_us) / $(rtt_field "${d}/native.out" p99_us) | $(rtt_field "${d}/guest/rtt.out" p50_us) / $(rtt_field "${d}/guest/rtt.out" p99_us) | $(verdict "${v}") |"
}

# GPU memory in use (MiB), from nvidia-smi; empty without it.
gpu_used_mib() { timeout 5 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n1 | tr -d ' '; }
workers_of() { ps -o comm= --ppid "$1" 2>/dev/null | grep -cx -- "$2"; }

step_faults() {
    local d="${O}/faults" x="${WORK}/kill/xfer" i pid base used t0 gone_ms="" mem_ms="" v
    mkdir -p "${d}" "${x}"
    timeout -k 5 60 env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} "${A}/bin/${PROBE}" > "${d}/native.out" 2> "${d}/native.err"
    # -- kill: a guest process holds device memory; QEMU is SIGKILLed.
    {
        guest_cmd
        echo "vgpu \"\$A/bin/vm_probe\" hold ${HOLD_MIB} > \"\$X/hold.out\" 2> \"\$X/hold.err\""
    } > "${x}/cmd"
    if host_start kill; then
        sleep 1   # the spare worker's context settles
        base="$(gpu_used_mib)"
        vm_start kill
        for i in $(seq 1 900); do
            pid="$(sed -n 's/^allocated .* pid=\([0-9]*\)$/\1/p' "${x}/hold.out" 2>/dev/null)"
            [[ -n "${pid}" ]] && break
            kill -0 "${QPID}" 2>/dev/null || break
            sleep 0.1
        done
        if [[ -n "${pid}" ]]; then
            used="$(gpu_used_mib)"
            log "kill: guest pid ${pid} holds ${HOLD_MIB} MiB; GPU used ${base:-?} -> ${used:-?} MiB; workers vgpuw-${pid}: $(workers_of "${HOST_PID}" "vgpuw-${pid}")"
            t0=$(now_ms)
            kill -KILL "${QPID}"
            { wait "${QPID}"; } 2>/dev/null
            while (( $(now_ms) - t0 < 15000 )); do
                [[ -z "${gone_ms}" ]] && (( $(workers_of "${HOST_PID}" "vgpuw-${pid}") == 0 )) && gone_ms=$(( $(now_ms) - t0 ))
                if [[ -z "${mem_ms}" && -n "${base}" ]]; then
                    u="$(gpu_used_mib)"
                    [[ -n "${u}" ]] && (( u <= base + 256 )) && mem_ms=$(( $(now_ms) - t0 ))
                fi
                [[ -n "${gone_ms}" && ( -n "${mem_ms}" || -z "${base}" ) ]] && break
                sleep 0.05
            done
        else
            log "kill: the guest never reported its allocation"
            kill -KILL "${QPID}" 2>/dev/null
        fi
        host_stop > /dev/null
        rm -f "${SHM}"
        cp -r "${x}/." "${d}/" 2>/dev/null
    fi
    v=FAIL; [[ -n "${gone_ms}" ]] && (( gone_ms <= KILL_BOUND_MS )) && v=PASS
    row "| faults | QEMU SIGKILLed while a guest process holds ${HOLD_MIB} MiB: its worker gone after | - | ${gone_ms:-never} ms | $(verdict "${v}" "bound ${KILL_BOUND_MS} ms") |"
    if [[ -n "${base}" ]]; then
        v=FAIL; [[ -n "${mem_ms}" ]] && (( mem_ms <= KILL_BOUND_MS )) && v=PASS
        row "| faults | the same: GPU memory back to ${base} MiB (+256) per nvidia-smi after | - | ${mem_ms:-never} ms | $(verdict "${v}" "bound ${KILL_BOUND_MS} ms") |"
    fi
    grep -E "client silent|worker exited" "${O}/kill/host.log" 2>/dev/null | tail -n 3 | sed 's/^/  /' >> "${LOG}"

    local sig
    for sig in ${RESTART_SIGNALS}; do restart_case "${sig}"; done
}

# restart_case SIGNAL: vgpu-host is stopped with SIGNAL and started again on the same region
# while a guest process calls in a loop; then a new guest process must work.
restart_case() {
    local sig="$1" name="restart-${1,,}" d="${O}/faults/restart-${1,,}" x="${WORK}/restart-${1,,}/xfer"
    local i shm after_ms="" code="" after_rc="" s v
    mkdir -p "${d}" "${x}"
    {
        guest_cmd
        cat <<EOF
vgpu "\$A/bin/vm_probe" until-fail 60 > "\$X/loop.out" 2> "\$X/loop.err"
echo \$? > "\$X/loop.rc"
i=0
while [ ! -e "\$X/host-back" ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
timeout -k 5 60 vgpu "\$A/bin/${PROBE}" > "\$X/after.out" 2> "\$X/after.err"
echo \$? > "\$X/after.rc"
EOF
    } > "${x}/cmd"
    if host_start "${name}"; then
        shm="${SHM}"
        vm_start "${name}"
        for i in $(seq 1 900); do
            grep -q '^looping' "${x}/loop.out" 2>/dev/null && break
            kill -0 "${QPID}" 2>/dev/null || break
            sleep 0.1
        done
        if grep -q '^looping' "${x}/loop.out" 2>/dev/null; then
            sleep 1
            host_stop "${sig}"
            log "${name}: vgpu-host stopped (SIG${sig}) in ${STOP_MS} ms; starting it again on ${shm} in ${RESTART_GAP_S} s"
            # The guest's calls must fail while no host runs, not only once a new one re-initialises
            # the region.
            sleep "${RESTART_GAP_S}"
            host_start "${name}" "${shm}" && touch "${x}/host-back"
            vm_wait "${name}" "$(left)"
            host_stop
        else
            log "${name}: the guest loop never started"
            kill -KILL "${QPID}" 2>/dev/null
            host_stop
        fi
        rm -f "${shm}"
        cp -r "${x}/." "${d}/" 2>/dev/null
    fi
    after_ms="$(sed -n 's/^first_failure .*after_ms=\([0-9.]*\).*/\1/p' "${d}/loop.out" 2>/dev/null)"
    code="$(sed -n 's/^first_failure code=\([0-9]*\) name=\([A-Z_?]*\).*/\2 (\1)/p' "${d}/loop.out" 2>/dev/null)"
    v=FAIL; [[ -n "${after_ms}" ]] && awk -v a="${after_ms}" -v b="${RESTART_BOUND_MS}" 'BEGIN { exit !(a <= b) }' && v=PASS
    row "| faults | vgpu-host stopped (SIG${sig}) under a guest process calling in a loop, restarted ${RESTART_GAP_S} s later: first failure ${code:-none}, after its last success | - | ${after_ms:-never} ms | $(verdict "${v}" "bound ${RESTART_BOUND_MS} ms") |"
    row "| faults | the guest's log line for it (SIG${sig}) | - | $(grep -m1 -o 'lost the vgpu host.*' "${d}/loop.err" 2>/dev/null | tr '|' '/' || echo none) | - |"
    after_rc="$(cat "${d}/after.rc" 2>/dev/null || echo none)"
    s="$(same "${O}/faults/native.out" "${d}/after.out")"
    v=FAIL; [[ "${after_rc}" == 0 ]] && v=PASS
    row "| faults | after SIG${sig}: a new guest process once the host is back, ${PROBE} (identical to native: ${s}) | - | rc ${after_rc} | $(verdict "${v}") |"
}

json_field() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    l = l.strip()
    if l.startswith("{"):
        d = json.loads(l)
        if d.get("bench") == sys.argv[2]: print(json.dumps(d.get(sys.argv[3])))' "$@" 2>/dev/null; }
step_torch() {
    local d="${O}/torch" x="${WORK}/torch/xfer"
    mkdir -p "${d}" "${x}"
    timeout -k 5 "$(( $(left) / 2 ))" env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} python3 bench/llm/torch_bench.py ${TORCH_ARGS} \
        > "${d}/native.out" 2> "${d}/native.err"
    log "torch native: rc $? $(tr '\n' ' ' < "${d}/native.out" | cut -c1-400)"
    {
        guest_cmd
        echo "timeout -k 5 $(( $(left) - 20 )) vgpu python3 bench/llm/torch_bench.py ${TORCH_ARGS} > \"\$X/torch.out\" 2> \"\$X/torch.err\""
        echo "echo \$? > \"\$X/torch.rc\""
    } > "${x}/cmd"
    vm_step torch "$(left)"
    log "torch guest: rc $(cat "${d}/guest/torch.rc" 2>/dev/null) $(tr '\n' ' ' < "${d}/guest/torch.out" 2>/dev/null | cut -c1-400)"
    local b nt gt nc gc ratio v
    for b in $(sed -n 's/^{"bench": "\([a-z_-]*\)".*/\1/p' "${d}/native.out" 2>/dev/null); do
        nt="$(json_field "${d}/native.out" "${b}" tok_s)"
        gt="$(json_field "${d}/guest/torch.out" "${b}" tok_s)"
        nc="$(json_field "${d}/native.out" "${b}" check)"
        gc="$(json_field "${d}/guest/torch.out" "${b}" check)"
        ratio="$(awk -v n="${nt}" -v g="${gt}" 'BEGIN { if (n > 0 && g > 0) printf "%.2f", g / n; else print "-" }')"
        v=FAIL; [[ -n "${gc}" && "${nc}" == "${gc}" ]] && v=PASS
        row "| torch | ${b} tok/s (VM / native ${ratio}; greedy tokens identical: $([[ -n "${gc}" && "${nc}" == "${gc}" ]] && echo yes || echo no)) | ${nt:-?} | ${gt:-?} | $(verdict "${v}") |"
    done
    [[ -s "${d}/native.out" ]] || row "| torch | native run | no output | - | $(verdict FAIL) |"
}

step_stacks() {
    local d="${O}/stacks" x="${WORK}/stacks/xfer" s n g v stacks="${VM_STACKS:-torch cupy triton jax nvml}"
    mkdir -p "${d}/native" "${x}"
    for s in ${stacks}; do
        timeout -k 5 "${T_STACK:-60}" env ${NATIVE_ENV[@]+"${NATIVE_ENV[@]}"} python3 "tests/stacks/${s}_check.py" \
            > "${d}/native/${s}.out" 2> "${d}/native/${s}.err"
        echo $? > "${d}/native/${s}.rc"
    done
    {
        guest_cmd
        echo "mkdir -p \"\$X/out\""
        for s in ${stacks}; do
            echo "timeout -k 5 ${T_STACK:-60} vgpu python3 tests/stacks/${s}_check.py > \"\$X/out/${s}.out\" 2> \"\$X/out/${s}.err\"; echo \$? > \"\$X/out/${s}.rc\""
        done
    } > "${x}/cmd"
    vm_step stacks "$(left)"
    for s in ${stacks}; do
        n="$(cat "${d}/native/${s}.rc" 2>/dev/null)"
        g="$(cat "${d}/guest/out/${s}.rc" 2>/dev/null || echo none)"
        v="$(same "${d}/native/${s}.out" "${d}/guest/out/${s}.out")"
        row "| stacks | ${s}_check.py (stdout identical: ${v}) | rc ${n} | rc ${g} | $(verdict "$([[ "${n}" == 0 && "${g}" == 0 && "${v}" == yes ]] && echo PASS || echo FAIL)") |"
    done
}

step_llama() {
    local d="${O}/llama" x="${WORK}/llama/xfer" cu13 model
    mkdir -p "${d}" "${x}"
    [[ -d "${A}/llama" || ! -f "${A}/llama.tar.xz" ]] || tar xJf "${A}/llama.tar.xz" -C "${A}"
    if [[ ! -x "${A}/llama/llama-bench" ]]; then
        row "| llama | llama-bench | no .gpu-artifacts/llama | - | skipped |"
        return
    fi
    cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)"
    model=/tmp/vgpu-llama-2048x16-f16.gguf
    [[ -f "${model}" ]] || python3 bench/llm/make_gguf.py --gguf-py "${A}/llama/gguf-py" --out "${model}" > /dev/null
    local cmd="${A}/llama/llama-bench -m ${model} -ngl 99 -p 0 -n 128 -r 3"
    LD_LIBRARY_PATH="/usr/local/cuda/lib64:${cu13}" timeout -k 5 120 ${cmd} > "${d}/native.out" 2> "${d}/native.err"
    {
        guest_cmd
        echo "export LD_LIBRARY_PATH='/usr/local/cuda/lib64:${cu13}'"
        echo "timeout -k 5 $(( $(left) - 20 )) vgpu ${cmd} > \"\$X/llama.out\" 2> \"\$X/llama.err\""
    } > "${x}/cmd"
    vm_step llama "$(left)"
    local nt gt
    nt="$(grep tg128 "${d}/native.out" | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')"
    gt="$(grep tg128 "${d}/guest/llama.out" 2>/dev/null | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')"
    row "| llama | llama-bench tg128 tok/s (VM / native $(awk -v n="${nt}" -v g="${gt}" 'BEGIN { if (n > 0 && g > 0) printf "%.2f", g / n; else print "-" }')) | ${nt:-?} | ${gt:-?} | $(verdict "$([[ -n "${gt}" ]] && echo PASS || echo FAIL)") |"
}

for s in ${STEPS//,/ }; do
    case "${s}" in
        boot) limit="${T_BOOT:-90}" ;; suite) limit="${T_SUITE:-200}" ;; rtt) limit="${T_RTT:-120}" ;;
        faults) limit="${T_FAULTS:-200}" ;; torch) limit="${T_TORCH:-300}" ;;
        stacks) limit="${T_STACKS:-300}" ;; llama) limit="${T_LLAMA:-200}" ;;
        *) log "unknown step ${s}"; FAILED=1; continue ;;
    esac
    t0=$(now_ms)
    log "== ${s} ($(date -u +%T), limit ${limit} s)"
    # One subshell per step, stopped at its limit, so that one hang cannot eat the call.
    ( trap cleanup_step EXIT; trap 'exit 143' TERM INT; STEP_END=$(( $(date +%s) + limit )); "step_${s}"; exit "${FAILED}" ) &
    STEP_PID=$!
    end=$(( $(date +%s) + limit ))
    while kill -0 "${STEP_PID}" 2>/dev/null && (( $(date +%s) < end )); do sleep 0.2; done
    if kill -0 "${STEP_PID}" 2>/dev/null; then
        log "${s}: over its limit of ${limit} s; stopping it"
        kill -TERM "${STEP_PID}" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "${STEP_PID}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${STEP_PID}" 2>/dev/null
        row "| ${s} | over its time limit (${limit} s) | - | - | $(verdict FAIL) |"
    fi
    wait "${STEP_PID}" || FAILED=1
    STEP_PID=""
    log "${s} done in $(( $(now_ms) - t0 )) ms"
done
{
    echo
    echo "Overall: $([[ ${FAILED} -eq 0 ]] && echo PASS || echo FAIL). Per step: \$OUT/<step>/ (serial.log, host.log, guest/ files); progress in vm.log."
} >> "${MD}"
cat "${MD}" >&2
exit "${FAILED}"
