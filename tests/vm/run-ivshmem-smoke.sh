#!/usr/bin/env bash
# VM smoke test of the ivshmem path: boots a real QEMU guest (TCG, no KVM needed) and checks that a
# host process (on the /dev/shm backing file) and a guest process (on the ivshmem BAR2, mmapped from
# sysfs resource2) exchange data both ways. Also checks that the harness itself reports guest
# failures and never hangs.
#
# Usage: tests/vm/run-ivshmem-smoke.sh [--debian]
#   Runs scripts/vm-setup.sh first (needs root, or the tools and kernel already in place).
#   --debian also runs the ping-pong in a Debian guest with systemd as PID 1 (scripts/vm-debian.sh
#   builds its image on first use: about 1 minute with network; each boot then takes about 17 s).
# Last line: "vm-ivshmem: N passed, M failed"; exit 0 only when nothing failed.
set -uo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
run="$repo/scripts/vm-run.sh"
passed=0 failed=0 debian=0
case "${1:-}" in
    --debian) debian=1 ;;
    "") ;;
    *) echo "usage: $0 [--debian]" >&2; exit 2 ;;
esac

"$repo/scripts/vm-setup.sh" || { echo "vm-ivshmem: 0 passed, 1 failed (vm-setup.sh failed)"; exit 1; }

work="$(mktemp -d /tmp/vgpu-vm-smoke.XXXXXX)"
trap 'rm -rf "$work"' EXIT
pingpong="$work/ivshmem_pingpong"
if ! gcc -O2 -Wall -Wextra -Werror -static -o "$pingpong" "$repo/tests/vm/ivshmem_pingpong.c"; then
    echo "vm-ivshmem: 0 passed, 1 failed (cannot build ivshmem_pingpong.c statically)"
    exit 1
fi

# check NAME EXPECTED_RC LOG_PATTERN -- VM_RUN_ARGS...
# Runs vm-run.sh; passes when its exit status is EXPECTED_RC and its output matches LOG_PATTERN.
check() {
    local name="$1" want_rc="$2" pattern="$3" rc start secs
    shift 4
    echo "=== $name"
    start=$(date +%s.%N)
    "$run" "$@" >"$work/out" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq "$want_rc" ] && grep -Eq "$pattern" "$work/out"; then
        grep -E '^(host\| |vm-run: )' "$work/out"
        echo "--- PASS $name (${secs}s wall, boot to result)"
        passed=$((passed + 1))
    else
        cat "$work/out"
        echo "--- FAIL $name: vm-run.sh exited $rc (want $want_rc), output pattern '$pattern' $(grep -Eq "$pattern" "$work/out" && echo found || echo missing) (${secs}s)"
        failed=$((failed + 1))
    fi
}

shm_before="$(ls /dev/shm | grep '^vgpu-vm-' | sort)"

check "ivshmem ping-pong, 1000 rounds both ways" 0 \
    'host\| host: ok: guest attached.* 1000 round trips' -- \
    --quiet --timeout 120 --shm-size 1M --env VGPU_PINGPONG_TIMEOUT=60 \
    --bin "$pingpong" --host "VGPU_PINGPONG_TIMEOUT=60 '$pingpong' host \"\$VGPU_REGION\" 1000" \
    -- sh -c 'ivshmem_pingpong guest "$VGPU_REGION" 1000'

check "ivshmem ping-pong, 16 MiB region, 100000 rounds" 0 'host\| host: ok: guest attached.*100000 round trips' -- \
    --quiet --timeout 120 --shm-size 16M \
    --bin "$pingpong" --host "'$pingpong' host \"\$VGPU_REGION\" 100000" \
    -- sh -c 'ivshmem_pingpong guest "$VGPU_REGION" 100000'

check "harness reports a failing guest command" 1 'guest rc=7 ' -- \
    --quiet --timeout 60 -- sh -c 'exit 7'

check "harness kills a hung guest at --timeout" 1 'hit the time limit.*|guest never reported' -- \
    --quiet --timeout 10 -- sleep 1000

check "harness stops the guest when the host command fails" 1 'host rc=3 ' -- \
    --quiet --timeout 60 --grace 2 --host 'exit 3' -- sleep 1000

echo "=== harness leaves no /dev/shm backing file behind (after passing, failing and killed runs)"
leftover="$(comm -13 <(printf '%s\n' "$shm_before") <(ls /dev/shm | grep '^vgpu-vm-' | sort) | grep . || true)"
if [ -z "$leftover" ]; then
    echo "--- PASS no leftover backing files"
    passed=$((passed + 1))
else
    echo "--- FAIL leftover backing files in /dev/shm: $leftover"
    failed=$((failed + 1))
fi

if [ "$debian" -eq 1 ]; then
    cache="${VGPU_VM_CACHE:-$HOME/.cache/vgpu/vm}"
    if "$repo/scripts/vm-debian.sh"; then
        check "ivshmem ping-pong in a Debian guest, systemd as PID 1" 0 \
            'host\| host: ok: guest attached.* 1000 round trips' -- \
            --quiet --timeout 180 --root-image "$cache/debian-bookworm.ext4" \
            --bin "$pingpong" --host "'$pingpong' host \"\$VGPU_REGION\" 1000" \
            -- sh -c '[ "$(cat /proc/1/comm)" = systemd ] && ivshmem_pingpong guest "$VGPU_REGION" 1000'
    else
        echo "--- FAIL Debian guest: scripts/vm-debian.sh could not build the image"
        failed=$((failed + 1))
    fi
fi

echo "vm-ivshmem: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
