#!/usr/bin/env bash
# Builds a Debian bookworm root image with systemd as PID 1 for deployment tests in the VM harness.
#
# Usage: scripts/vm-debian.sh [--rebuild] [--include PKG,PKG...]
# Output: $VGPU_VM_CACHE/debian-bookworm.ext4 (default ~/.cache/vgpu/vm), a sparse 2 GiB ext4 image.
# Then: scripts/vm-run.sh --root-image ~/.cache/vgpu/vm/debian-bookworm.ext4 [--bin …] -- CMD…
#
# The image is debootstrap's minbase plus systemd-sysv, udev and openssh-server, with:
#   - vgpu-test.service: when /run/vgpu/cmd exists (the harness puts it there before handing over
#     to systemd), runs /run/vgpu/guest-run once multi-user.target is reached, writes its output to
#     the serial console and powers off;
#   - serial/tty gettys masked (they would hang up the console the test writes to); root has no
#     password, for interactive debugging with vm-run.sh's log.
# Needs root (debootstrap, chroot), network to deb.debian.org, debootstrap and e2fsprogs (mkfs.ext4 -d).
set -euo pipefail

cache="${VGPU_VM_CACHE:-$HOME/.cache/vgpu/vm}"
image="$cache/debian-bookworm.ext4"
mirror="${VGPU_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# openssh-server: deployment tests check that sshd does not get the shim (tests/vm/run-deploy-systemd.sh).
rebuild=0 include="systemd-sysv,udev,openssh-server"
while [ $# -gt 0 ]; do
    case "$1" in
        --rebuild) rebuild=1; shift ;;
        --include) include="$include,${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "vm-debian: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "vm-debian: $*"; }

# The package list the image was built with sits beside it; another list means another image.
stamp="$image.packages"
if [ -s "$image" ] && [ "$rebuild" -eq 0 ]; then
    if [ "$(cat "$stamp" 2>/dev/null)" = "$include" ]; then
        log "image present: $image (--rebuild to make it again)"
        exit 0
    fi
    log "image present but built with other packages ($(cat "$stamp" 2>/dev/null || echo unknown)); rebuilding"
fi
[ "$(id -u)" -eq 0 ] || { echo "vm-debian: error: needs root (debootstrap, chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
command -v mkfs.ext4 >/dev/null || { echo "vm-debian: error: mkfs.ext4 missing (e2fsprogs)" >&2; exit 1; }

mkdir -p "$cache"
work="$(mktemp -d "$cache/.debian.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/root"
t0=$(date +%s)
log "debootstrap bookworm (minbase + $include) from $mirror"
debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; echo "vm-debian: error: debootstrap failed" >&2; exit 1; }
t1=$(date +%s)

echo vgpu-guest >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vgpu-guest\n' >"$rootfs/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$rootfs/etc/fstab"
: >"$rootfs/etc/machine-id"
chroot "$rootfs" passwd -d root >/dev/null
cat >"$rootfs/etc/systemd/system/vgpu-test.service" <<'UNIT'
[Unit]
Description=vgpu VM harness test command (scripts/vm-run.sh)
ConditionPathExists=/run/vgpu/cmd
After=multi-user.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
Environment=VGPU_DIR=/run/vgpu
ExecStart=/run/vgpu/guest-run
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
UNIT
chroot "$rootfs" systemctl enable vgpu-test.service >/dev/null 2>&1
chroot "$rootfs" systemctl mask serial-getty@ttyS0.service getty@tty1.service >/dev/null 2>&1
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

rm -f "$work/image"
truncate -s 2G "$work/image"
mkfs.ext4 -q -F -L vgpu-root -d "$rootfs" "$work/image"
mv "$work/image" "$image"
echo "$include" >"$stamp"
t2=$(date +%s)
log "built $image ($(du -sh --apparent-size "$rootfs" | cut -f1) of files; debootstrap $((t1 - t0))s, image $((t2 - t1))s)"
