#!/usr/bin/env bash
# The project's test command (README: "Run the tests"); CI runs it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
bash scripts/install-test-deps.sh

step "cargo test --workspace"
cargo test --workspace

step "loom models of the transport's orderings"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p transport --release --lib loom

step "GPU suite programs compile (-Werror), against the shim"
bash scripts/build-shim.sh
bash scripts/build-gpu-tests.sh

step "QEMU guest: ivshmem shared memory, then the transport across the VM boundary"
bash tests/vm/run-ivshmem-smoke.sh
bash tests/vm/run-transport-pair.sh

step "QEMU guest: the whole vgpu path across the VM (shim in the guest, vgpu-host with a fake driver)"
bash tests/vm/run-vgpu-e2e.sh

step "QEMU guest with systemd as PID 1: vgpuctl install, verify, uninstall"
bash tests/vm/run-deploy-systemd.sh
