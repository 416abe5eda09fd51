#!/usr/bin/env bash
# Prepares the VM test harness (scripts/vm-run.sh): host tools and a guest kernel.
#
# Idempotent: installs only what is missing, downloads the kernel only once.
#   - apt packages: qemu-system-x86 (QEMU + SeaBIOS), busybox-static, cpio, gcc, libc6-dev, kmod
#   - Debian's cloud kernel (linux-image-cloud-amd64), extracted into the cache:
#       $VGPU_VM_CACHE/vmlinuz          the guest kernel
#       $VGPU_VM_CACHE/modules/         its /lib/modules/<version> tree
#       $VGPU_VM_CACHE/kernel-version   the version string
# VGPU_VM_CACHE defaults to ~/.cache/vgpu/vm (outside the repository).
# Set VGPU_VM_KERNEL_PKG to pin a kernel package (default: what linux-image-cloud-amd64 depends on).
set -euo pipefail

cache="${VGPU_VM_CACHE:-$HOME/.cache/vgpu/vm}"
log() { echo "vm-setup: $*"; }

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v gcc >/dev/null || need_pkgs+=(gcc)
command -v depmod >/dev/null || need_pkgs+=(kmod)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "vm-setup: error: need root to install ${need_pkgs[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
else
    log "host tools present: $(qemu-system-x86_64 --version | head -1)"
fi

mkdir -p "$cache"
if [ -s "$cache/vmlinuz" ] && [ -s "$cache/kernel-version" ] && [ -s "$cache/modules/modules.dep" ]; then
    log "kernel cached: $(cat "$cache/kernel-version") in $cache"
    exit 0
fi

pkg="${VGPU_VM_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
    pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    if [ -z "$pkg" ]; then
        log "no package list yet; running apt-get update"
        apt-get update -qq
        pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    fi
fi
[ -n "$pkg" ] || { echo "vm-setup: error: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "downloading $pkg"
# apt's sandbox user cannot write into a root-owned 0700 temp dir; let it.
chmod 0755 "$work"
(cd "$work" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
deb="$(ls "$work"/*.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || { echo "vm-setup: error: apt-get download $pkg produced no .deb" >&2; exit 1; }
dpkg -x "$deb" "$work/root"
vmlinuz="$(ls "$work"/root/boot/vmlinuz-* | head -1)"
version="${vmlinuz##*/vmlinuz-}"
# dpkg -x skips the postinst that would run depmod; vm-run.sh --module needs modules.dep.
depmod -b "$work/root" "$version"
rm -rf "$cache/modules"
mv "$work/root/lib/modules/$version" "$cache/modules"
cp "$work/root/boot/config-$version" "$cache/config"
mv "$vmlinuz" "$cache/vmlinuz"
echo "$version" >"$cache/kernel-version"
log "kernel $version extracted to $cache ($(du -sh "$cache" | cut -f1))"
