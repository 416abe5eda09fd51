#!/usr/bin/env bash
# The whole vgpu path across a VM boundary: a CUDA driver-API program in a QEMU guest, with the
# shim (libvgpu-cuda.so) preloaded, talks through the ivshmem BAR to the real vgpu-host on this
# machine, which serves the QEMU backing file in Poll doorbell mode with a fake driver
# (host/tests/fake_driver/libcuda.c). TCG, no KVM, no GPU.
#
# Usage: tests/vm/run-vgpu-e2e.sh [--release]     (debug binaries by default: what cargo test built)
#
# Cases:
#   1. serve: the guest's values are the fake driver's (name, version, count, memory, capability),
#      a 4 KiB and a 3 MiB memory round trip compare equal, one worker serves the guest pid,
#      which the host cannot see; the guest stays idle past the peer timeout (worker kept),
#      then powers off with its client connected: the worker must exit by the across-VM
#      liveness rule (docs/host.md, rule 2), and the host stops cleanly.
#   2. futex: a host region in Futex doorbell mode is refused by the guest (ForeignKernel):
#      cuInit returns CUDA_ERROR_NOT_INITIALIZED (3) with the shim's one log line, no client.
# Last line: "vm-vgpu-e2e: N passed, M failed"; exit 0 only when nothing failed.
set -uo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
profile=debug
case "${1:-}" in
    --release) profile=release ;;
    "" | --debug) ;;
    *) echo "usage: $0 [--release|--debug]" >&2; exit 2 ;;
esac
passed=0 failed=0
t_start=$(date +%s.%N)
pass() { echo "--- PASS $1"; passed=$((passed + 1)); }
fail() { echo "--- FAIL $1${2:+: $2}"; failed=$((failed + 1)); }
finish() {
    local secs
    secs=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "vm-vgpu-e2e: whole test ${secs}s wall"
    echo "vm-vgpu-e2e: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0 || exit 1
}
abort() { fail "$1"; finish; }

"$repo/scripts/vm-setup.sh" >/dev/null || abort "scripts/vm-setup.sh failed"

work="$(mktemp -d /tmp/vgpu-e2e.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# ---- build: vgpu-host, the shim, the fake driver, the guest program ----
target="${CARGO_TARGET_DIR:-$repo/target}"
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
if ! (cd "$repo" && timeout 1200 cargo build -j2 --quiet -p host --bin vgpu-host "${cargo_profile[@]}") \
        >"$work/build.log" 2>&1; then
    tail -30 "$work/build.log"
    abort "cannot build vgpu-host"
fi
if ! shim="$(cd "$repo" && timeout 1200 bash scripts/build-shim.sh "--$profile" 2>"$work/build-shim.log")"; then
    tail -30 "$work/build-shim.log"
    abort "cannot build the shim"
fi
host_bin="$target/$profile/vgpu-host"
[ -x "$host_bin" ] || abort "no $host_bin"
cc -shared -fPIC -O2 -Wall -Wextra -Werror -Wl,-soname,libcuda.so.1 \
    -o "$work/libcuda.so.1" "$repo/host/tests/fake_driver/libcuda.c" || abort "cannot build the fake driver"
cc -O2 -Wall -Wextra -Werror -o "$work/cuda_probe" "$repo/tests/vm/e2e/cuda_probe.c" -ldl \
    || abort "cannot build tests/vm/e2e/cuda_probe.c"

# Guest files: the shim under its shipping path (vm-run.sh copies its libc/ld.so, and the
# probe's, from ldd); LD_PRELOAD makes dlopen("libcuda.so.1") return it.
guest_shim=/usr/lib64/libvgpu-cuda.so
peer_ms=2000
shm=64M  # a power of two (PCI BAR) and vgpu-host's default region size

serial_value() { tr -d '\r' <"$1" | sed -n "s/^E2E $2=//p" | tail -1; }
expect_value() {
    local serial="$1" key="$2" want="$3" got
    got="$(serial_value "$serial" "$key")"
    if [ "$got" = "$want" ]; then pass "guest $key = $want"; else fail "guest $key = $want" "got '${got}'"; fi
}
host_results() {
    local line
    while IFS= read -r line; do
        case "$line" in
            "PASS "*) pass "host: ${line#PASS }" ;;
            "FAIL "*) fail "host: ${line#FAIL }" ;;
        esac
    done <"$1"
}
run_vm() { # NAME MODE GUEST_CMD
    local name="$1" mode="$2" guest_cmd="$3" dir="$work/$1" start secs rc
    mkdir -p "$dir"
    : >"$dir/results"
    echo "=== $name"
    start=$(date +%s.%N)
    "$repo/scripts/vm-run.sh" --quiet --timeout 240 --grace 30 --shm-size "$shm" \
        --log "$dir/serial.log" --bin "$work/cuda_probe" --file "$shim:$guest_shim" \
        --env "LD_PRELOAD=$guest_shim" --env VGPU_LOG=warn \
        --host "E2E_HOST_BIN='$host_bin' E2E_DRIVER='$work/libcuda.so.1' E2E_SERIAL='$dir/serial.log' \
                E2E_RESULTS='$dir/results' E2E_HOST_LOG='$dir/host.log' E2E_PEER_MS=$peer_ms \
                E2E_MODE=$mode bash '$repo/tests/vm/e2e/host-side.sh'" \
        -- sh -c "$guest_cmd" >"$dir/vm-run.out" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    sed 's/^/  /' "$dir/vm-run.out" | grep -v '^  guest| $'
    echo "  (${secs}s wall; vm-run.sh exit $rc)"
    if [ -s "$dir/host.log" ] && { [ "$rc" -ne 0 ] || [ -n "${VGPU_E2E_VERBOSE:-}" ]; }; then
        sed 's/^/  vgpu-host| /' "$dir/host.log"
    fi
    if [ "$rc" -eq 0 ]; then pass "$name: vm-run.sh (guest and host command both exit 0)"
    else fail "$name: vm-run.sh (guest and host command both exit 0)" "exit $rc"; fi
    host_results "$dir/results"
}

# Case 1. The guest program runs in the background so that the guest can power off while it
# still holds its channel: guest-run's command ends when the probe is done and has been idle for
# longer than the peer timeout, then init powers off under it.
hold_after=$((peer_ms * 3 / 1000 + 1))
run_vm serve serve "cuda_probe 3600 > /tmp/probe.out 2>&1 & p=\$!
i=0
while ! grep -q '^E2E-DONE' /tmp/probe.out 2>/dev/null && kill -0 \$p 2>/dev/null && [ \$i -lt 1200 ]; do
    sleep 0.1; i=\$((i + 1)); done
cat /tmp/probe.out
grep -q '^E2E-DONE rc=0' /tmp/probe.out || exit 1
sleep $hold_after
kill -0 \$p || { echo 'E2E error=probe exited early'; exit 1; }
echo 'E2E powering off with the client connected'"
serial="$work/serve/serial.log"
expect_value "$serial" libcuda "$guest_shim"
expect_value "$serial" device_name "Fake GPU"
expect_value "$serial" driver_version 12080
expect_value "$serial" device_count 1
expect_value "$serial" total_mem $((80 << 30))
expect_value "$serial" compute_capability 9.0
expect_value "$serial" device_get_out_of_range 101
if tr -d '\r' <"$serial" | grep -qx 'E2E memcpy_round_trip bytes=4096 equal=1'; then
    pass "guest memory round trip, 4 KiB (cuMemAlloc/HtoD/DtoH/cuMemFree)"
else fail "guest memory round trip, 4 KiB"; fi
if tr -d '\r' <"$serial" | grep -qx 'E2E memcpy_round_trip bytes=3145728 equal=1'; then
    pass "guest memory round trip, 3 MiB (bulk area)"
else fail "guest memory round trip, 3 MiB (bulk area)"; fi
if tr -d '\r' <"$serial" | grep -q '^E2E error='; then
    fail "guest reported no call errors" "$(tr -d '\r' <"$serial" | grep '^E2E error=' | head -3 | tr '\n' ' ')"
else pass "guest reported no call errors"; fi
[ -f "$work/serve/results" ] && sed -n 's/^WORKER_EXIT_S /worker exit after power-off: /p' "$work/serve/results" | sed 's/$/ s/'

# Case 2. Futex doorbells do not cross a VM: the guest must be refused at once, with one line.
run_vm futex futex "cuda_probe; rc=\$?; echo \"E2E probe_exit=\$rc\"; [ \$rc -eq 1 ]"
serial="$work/futex/serial.log"
if tr -d '\r' <"$serial" | grep -qx 'E2E error=cuInit(0) returned 3'; then
    pass "futex region: guest cuInit returns CUDA_ERROR_NOT_INITIALIZED (3)"
else fail "futex region: guest cuInit returns CUDA_ERROR_NOT_INITIALIZED (3)"; fi
n="$(tr -d '\r' <"$serial" | grep -c 'vgpu-cuda\[[0-9]*\]: error: .*created on another kernel')"
if [ "$n" -eq 1 ]; then pass "futex region: exactly one shim log line naming the foreign kernel"
else fail "futex region: exactly one shim log line naming the foreign kernel" "$n lines"; fi

leftover="$(ls /dev/shm/vgpu-vm-* 2>/dev/null | wc -l)"
if [ "$leftover" -eq 0 ]; then pass "no /dev/shm/vgpu-vm-* backing file left behind"
else fail "no /dev/shm/vgpu-vm-* backing file left behind" "$leftover left"; fi
finish
