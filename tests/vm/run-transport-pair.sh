#!/usr/bin/env bash
# Cross-VM test of the real transport crate: tests/vm/transport-pair (host role on the /dev/shm
# backing file, guest role on the ivshmem BAR inside a QEMU guest), Poll doorbell mode.
#
# Usage: tests/vm/run-transport-pair.sh     (runs scripts/vm-setup.sh first)
# Last line: "vm-transport: N passed, M failed"; exit 0 only when nothing failed.
set -uo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
passed=0 failed=0
"$repo/scripts/vm-setup.sh" || { echo "vm-transport: 0 passed, 1 failed (vm-setup.sh failed)"; exit 1; }

# Static-pie executable; own target dir since it is its own workspace.
export CARGO_TARGET_DIR="$repo/target/vm-transport-pair"
if ! RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release -j2 \
        --manifest-path "$repo/tests/vm/transport-pair/Cargo.toml" --target x86_64-unknown-linux-gnu; then
    echo "vm-transport: 0 passed, 1 failed (cannot build tests/vm/transport-pair)"
    exit 1
fi
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/transport-pair"

run_case() {
    local name="$1" threads="$2" calls="$3" smp="$4" start secs
    echo "=== $name"
    start=$(date +%s.%N)
    if "$repo/scripts/vm-run.sh" --quiet --timeout 180 --smp "$smp" --shm-size 1M --bin "$bin" \
            --host "'$bin' host $threads $calls" -- transport-pair guest "$threads" "$calls"; then
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        echo "--- PASS $name (${secs}s wall, boot to result)"
        passed=$((passed + 1))
    else
        echo "--- FAIL $name"
        failed=$((failed + 1))
    fi
}

run_case "transport echo across the VM, 1 channel, 300 calls" 1 300 1
run_case "transport echo across the VM, 4 channels x 100 calls, 2 vCPUs" 4 100 2

echo "vm-transport: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
