#!/usr/bin/env bash
# vgpuctl in a real systemd guest: boots the Debian bookworm image (scripts/vm-debian.sh, systemd
# as PID 1, openssh-server running) under TCG and runs tests/vm/deploy/guest-deploy.sh in it:
# a fake ollama.service (tests/vm/deploy/ollama-fake: logs library=cuda when the shim is preloaded,
# library=cpu otherwise, and starts a "runner" child), then the real vgpuctl:
#   install --service ollama --lib /usr/lib64/libvgpu-cuda.so --restart
#   verify --service ollama --json   (each check also verified directly: /proc maps of the main
#                                     pid, its child, PID 1, sshd; systemctl show; journalctl;
#                                     /etc/ld.so.preload; no process outside the unit maps the shim)
#   uninstall --restart              (service back without the shim; vgpuctl's paths byte-for-byte
#                                     as before; verify now fails)
# The shim needs no host for that: preloading it runs no code until a CUDA call. Then the host
# side (issue 14): vgpuctl host install, vgpu-host@vm1 started on the fake driver
# (host/tests/posted/fake_kernels.c), a guest workload (host/tests/operator/workload.c) holding
# 5 MiB, `vgpuctl top --once --instance vm1` showing it through the unit's control socket, and
# the journal's CLIENT field picking the supervisor's and the worker's lines about it.
#
# Usage: tests/vm/run-deploy-systemd.sh [--release]   (debug binaries by default)
# Needs root the first time (vm-setup.sh, vm-debian.sh build the kernel cache and the image,
# ~1-2 min, kept in $VGPU_VM_CACHE). VGPU_DEPLOY_KEEP_LOG=PATH keeps the guest's serial log.
# Last line: "vm-deploy-systemd: N passed, M failed".
set -uo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
profile=debug
case "${1:-}" in
    --release) profile=release ;;
    "" | --debug) ;;
    *) echo "usage: $0 [--release|--debug]" >&2; exit 2 ;;
esac
cache="${VGPU_VM_CACHE:-$HOME/.cache/vgpu/vm}"
passed=0 failed=0
t_start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
pass() { echo "--- PASS $1"; passed=$((passed + 1)); }
fail() { echo "--- FAIL $1${2:+: $2}"; failed=$((failed + 1)); }
finish() {
    echo "vm-deploy-systemd: whole test $(since "$t_start")s wall"
    echo "vm-deploy-systemd: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0 || exit 1
}
abort() { fail "$1"; finish; }

"$repo/scripts/vm-setup.sh" >/dev/null || abort "scripts/vm-setup.sh failed"
t=$(date +%s.%N)
"$repo/scripts/vm-debian.sh" || abort "scripts/vm-debian.sh failed"
echo "vm-deploy-systemd: image ready after $(since "$t")s"
image="$cache/debian-bookworm.ext4"

work="$(mktemp -d /tmp/vgpu-deploy.XXXXXX)"
trap 'rm -rf "$work"' EXIT
target="${CARGO_TARGET_DIR:-$repo/target}"
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
t=$(date +%s.%N)
if ! (cd "$repo" && timeout 1200 cargo build -j2 --quiet -p vgpuctl --bin vgpuctl -p host --bin vgpu-host "${cargo_profile[@]}") \
        >"$work/build.log" 2>&1; then
    tail -30 "$work/build.log"
    abort "cannot build vgpuctl"
fi
if ! shim="$(cd "$repo" && timeout 1200 bash scripts/build-shim.sh "--$profile" 2>"$work/build-shim.log")"; then
    tail -30 "$work/build-shim.log"
    abort "cannot build the shim"
fi
echo "vm-deploy-systemd: vgpuctl and the shim built (or up to date) in $(since "$t")s"
vgpuctl="$target/$profile/vgpuctl"
[ -x "$vgpuctl" ] || abort "no $vgpuctl"
[ -x "$target/$profile/vgpu-host" ] || abort "no $target/$profile/vgpu-host"
# Without their debug info: the guest's initramfs carries every file, in 512 MiB of memory
# (debug builds of the three are over 200 MB together since TLS joined them).
host_bin="$work/vgpu-host"
strip --strip-debug -o "$host_bin" "$target/$profile/vgpu-host" || abort "cannot strip vgpu-host"
strip --strip-debug -o "$work/vgpuctl" "$vgpuctl" || abort "cannot strip vgpuctl"
vgpuctl="$work/vgpuctl"
strip --strip-debug -o "$work/libvgpu-cuda.so" "$shim" || abort "cannot strip the shim"
shim="$work/libvgpu-cuda.so"
cc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o "$work/libcuda.so.1" \
    "$repo/host/tests/posted/fake_kernels.c" -lpthread || abort "cannot build the fake driver"
cc -O2 -o "$work/workload" "$repo/host/tests/operator/workload.c" -ldl || abort "cannot build the workload"

d="$repo/tests/vm/deploy"
serial="$work/serial.log"
echo "=== vgpuctl install / verify / uninstall in a systemd guest"
t=$(date +%s.%N)
"$repo/scripts/vm-run.sh" --quiet --no-shm --timeout 300 --root-image "$image" --log "$serial" \
    --bin "$vgpuctl" \
    --file "$shim:/vgpu/files/libvgpu-cuda.so" \
    --file "$d/ollama-fake:/vgpu/files/ollama-fake" \
    --file "$d/ollama.service:/vgpu/files/ollama.service" \
    --file "$d/guest-deploy.sh:/vgpu/files/guest-deploy.sh" \
    --file "$host_bin:/vgpu/files/vgpu-host" \
    --file "$work/libcuda.so.1:/vgpu/files/fake-libcuda.so.1" \
    --file "$work/workload:/vgpu/files/workload" \
    -- sh -c 'sh "$VGPU_DIR/files/guest-deploy.sh"' >"$work/vm-run.out" 2>&1
rc=$?
boot_s="$(since "$t")"
[ -z "${VGPU_DEPLOY_KEEP_LOG:-}" ] || cp "$serial" "$VGPU_DEPLOY_KEEP_LOG"
tail -1 "$work/vm-run.out"
clean() { tr -d '\r' <"$serial" | sed -E 's/\x1b(\[[0-9;?]*[A-Za-z]|c)//g'; }
# vgpuctl's own output and the guest's notes, for the log.
clean | grep -E '^(deploy:|vgpu |  |✓|✗|-|!|\{|\}|installed|uninstall|recover|not restarted|already)' | sed 's/^/  guest| /'
while IFS= read -r line; do
    case "$line" in
        "DEPLOY PASS "*) pass "${line#DEPLOY PASS }" ;;
        "DEPLOY FAIL "*) fail "${line#DEPLOY FAIL }" ;;
    esac
done < <(clean)
if clean | grep -q '^DEPLOY-SUMMARY '; then pass "guest script ran to the end"
else
    fail "guest script ran to the end" "no DEPLOY-SUMMARY line; guest log follows"
    clean | tail -60 | sed 's/^/  guest| /'
    sed 's/^/  /' "$work/vm-run.out" | tail -20
fi
if [ "$rc" -eq 0 ]; then pass "vm-run.sh: guest command exit 0 (${boot_s}s boot to power-off)"
else fail "vm-run.sh: guest command exit 0" "vm-run.sh exit $rc"; fi
finish
