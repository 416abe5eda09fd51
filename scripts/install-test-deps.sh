#!/usr/bin/env bash
# Installs, from Debian's packages, what the test suite needs and the machine lacks. Idempotent;
# needs root (CI runs as root). Prints what it installs.
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
    || need+=(libclang-dev)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[[ -x /bin/busybox || -x /usr/bin/busybox ]] && file -L "$(command -v busybox)" 2>/dev/null | grep -q static \
    || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v unzip >/dev/null || need+=(unzip)
command -v file >/dev/null || need+=(file)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if ((${#need[@]})); then
    echo "install-test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "install-test-deps: nothing to install"
fi
