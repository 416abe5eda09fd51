#!/usr/bin/env bash
# Stages the QEMU bundle that scripts/gpu-vm.sh boots on the GPU machine (which has no QEMU and
# no network): .gpu-artifacts/vm.tar.xz, small enough to travel in one carry beside the other
# artifacts. Runs here (Debian 12, root for the first apt-get and kernel fetch).
#
# The bundle (unpacked by gpu-vm.sh into /tmp):
#   vm/bin/qemu-system-x86_64   Debian's, run through vm/lib/ld-linux-x86-64.so.2 --library-path vm/lib
#   vm/lib/                     the loader, libc and exactly the libraries that binary needs
#                               (resolved by the bundled loader from the unpacked packages only)
#   vm/lib/qemu/                accel-tcg-x86_64.so (QEMU_MODULE_DIR: TCG when /dev/kvm is absent)
#   vm/share/qemu/              firmware: bios-256k.bin, kvmvapic.bin, linuxboot_dma.bin (-L)
#   vm/vmlinuz                  Debian's generic kernel (the cloud kernel has no 9p)
#   vm/initrd.cpio              busybox, tests/vm/hostroot/init and the modules for
#                               virtio-pci, 9p and overlayfs
#   vm/qemu                     wrapper: loader + library path + firmware + module dir
#   vm/MANIFEST                 package versions, kernel, sizes
#
# Packages come from `apt-get download` (cached in ~/.cache/vgpu/vm-bundle/debs) and are unpacked
# with `dpkg -x` into a scratch folder, never over /. The kernel comes from scripts/vm-setup.sh with
# VGPU_VM_CACHE=~/.cache/vgpu/vm-generic. Prints the bundle's size; fails if it exceeds
# VM_BUNDLE_MAX_MIB (default 35).
#
# Usage: scripts/stage-vm-artifacts.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ART="${ROOT}/.gpu-artifacts"
CACHE="${HOME}/.cache/vgpu/vm-bundle"
DEBS="${CACHE}/debs"
KCACHE="${VGPU_VM_GENERIC_CACHE:-${HOME}/.cache/vgpu/vm-generic}"
MAX_MIB="${VM_BUNDLE_MAX_MIB:-35}"
# Modules the guest's init loads (with their dependencies from modules.dep, each after those).
MODULES=(virtio_pci 9pnet_virtio 9p overlay)
FIRMWARE=(bios-256k.bin kvmvapic.bin linuxboot_dma.bin)

log() { echo "stage-vm: $*" >&2; }
die() { echo "stage-vm: error: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "needs dpkg (Debian)"
command -v cpio >/dev/null || die "needs cpio (scripts/vm-setup.sh installs it)"
command -v xz >/dev/null || die "needs xz"

# ---- the kernel: Debian's generic one (linux-image-amd64), which builds 9p as modules ----
if [[ ! -s "${KCACHE}/vmlinuz" ]]; then
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    if [[ -z "${pkg}" ]]; then
        apt-get update -qq
        pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    fi
    [[ -n "${pkg}" ]] || die "cannot resolve linux-image-amd64"
    VGPU_VM_CACHE="${KCACHE}" VGPU_VM_KERNEL_PKG="${pkg}" bash "${ROOT}/scripts/vm-setup.sh" >&2
fi
kver="$(cat "${KCACHE}/kernel-version")"

# ---- QEMU and its libraries: the library closure of qemu-system-x86's dependencies ----
# Only library packages are followed (qemu-system-common's own dependencies, e.g. spice, are not
# needed by the binary); what is actually copied is decided by the loader below.
mapfile -t lib_pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances qemu-system-x86 2>/dev/null \
    | grep -E '^(lib[a-z0-9].*|zlib1g)$' | sort -u)
[[ ${#lib_pkgs[@]} -gt 0 ]] || die "apt-cache knows no dependencies of qemu-system-x86 (apt-get update?)"
want=(qemu-system-x86 qemu-system-common qemu-system-data seabios busybox-static "${lib_pkgs[@]}")
mkdir -p "${DEBS}"
chmod 0755 "${CACHE}" "${DEBS}"   # apt's sandbox user writes here
# Candidate versions, one apt-cache call; Debian file names write an epoch's ':' as '%3a'.
declare -A version=()
while read -r p v; do version[${p}]="${v}"; done < <(apt-cache show --no-all-versions "${want[@]}" \
    | awk '/^Package:/ {p = $2} /^Version:/ {print p, $2}')
deb_of() { compgen -G "${DEBS}/${1}_${version[${1}]/:/%3a}_*.deb" | head -n1; }
missing=()
for p in "${want[@]}"; do
    [[ -n "${version[${p}]:-}" ]] || die "no candidate version of ${p}"
    [[ -n "$(deb_of "${p}")" ]] || missing+=("${p}=${version[${p}]}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "downloading ${#missing[@]} packages"
    (cd "${DEBS}" && apt-get download -q "${missing[@]}" 2>&1 \
        | grep -v -e '^W: Download is performed unsandboxed' -e '^Get:' >&2 || true)
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/vgpu-stage-vm.XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT
x="${scratch}/x"
mkdir -p "${x}"
for p in "${want[@]}"; do
    deb="$(deb_of "${p}")"
    [[ -n "${deb}" ]] || die "${p} ${version[${p}]} was not downloaded"
    dpkg -x "${deb}" "${x}"
    echo "${p} ${version[${p}]}" >> "${scratch}/packages"
done

b="${scratch}/vm"
mkdir -p "${b}/bin" "${b}/lib/qemu" "${b}/share/qemu"
cp "${x}/usr/bin/qemu-system-x86_64" "${b}/bin/"
cp "${x}/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" "${b}/lib/qemu/"
loader="${x}/lib64/ld-linux-x86-64.so.2"
[[ -e "${loader}" ]] || loader="${x}/usr/lib64/ld-linux-x86-64.so.2"
cp -L "${loader}" "${b}/lib/ld-linux-x86-64.so.2"
libpath="${x}/lib/x86_64-linux-gnu:${x}/usr/lib/x86_64-linux-gnu"
# Every library the binary and the TCG module need, as the bundled loader resolves them from
# the unpacked packages. A library found outside the scratch folder (this machine's own) or not
# at all means a package is missing from the closure.
for obj in "${b}/bin/qemu-system-x86_64" "${b}/lib/qemu/accel-tcg-x86_64.so"; do
    listing="$("${b}/lib/ld-linux-x86-64.so.2" --library-path "${libpath}" --list "${obj}")" \
        || die "the loader cannot list ${obj##*/}: ${listing}"
    if grep -q 'not found' <<< "${listing}"; then
        die "libraries of ${obj##*/} not in the unpacked packages: $(grep 'not found' <<< "${listing}" | tr -s ' \t' ' ')"
    fi
    while read -r path; do
        case "${path}" in
            "${x}"/*) cp -L -n "${path}" "${b}/lib/" ;;
            */ld-linux-x86-64.so.2) ;;
            *) die "${obj##*/} resolved ${path} outside the unpacked packages" ;;
        esac
    done < <(awk '/=>/ {print $3}' <<< "${listing}")
done
for f in "${FIRMWARE[@]}"; do
    src="${x}/usr/share/qemu/${f}"
    [[ -e "${src}" ]] || src="${x}/usr/share/seabios/${f}"
    # /usr/share/qemu/bios-256k.bin is a link into seabios' folder (absolute or relative).
    if [[ -L "${src}" && ! -e "$(readlink -f "${src}")" ]]; then
        src="${x}/usr/share/seabios/${f}"
    fi
    [[ -e "${src}" ]] || die "firmware ${f} not found in the packages"
    cp -L "${src}" "${b}/share/qemu/${f}"
done
strip --strip-unneeded "${b}"/bin/* "${b}"/lib/*.so* "${b}"/lib/qemu/*.so 2>/dev/null || true

cat > "${b}/qemu" <<'EOF'
#!/bin/sh
# Runs the bundled QEMU through the bundled loader and libraries (none of this machine's).
d="$(cd "$(dirname "$0")" && pwd)"
QEMU_MODULE_DIR="$d/lib/qemu" exec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" \
    "$d/bin/qemu-system-x86_64" -L "$d/share/qemu" "$@"
EOF
chmod 0755 "${b}/qemu"
"${b}/qemu" --version | head -n1 > "${scratch}/qemu-version" || die "the bundled QEMU does not run"
log "$(cat "${scratch}/qemu-version") runs through the bundled loader"

# ---- kernel and initramfs ----
cp "${KCACHE}/vmlinuz" "${b}/vmlinuz"
ird="${scratch}/initrd"
mkdir -p "${ird}"/{bin,dev,proc,sys,tmp,newroot,lower,upper,lib/modules}
cp "${x}/bin/busybox" "${ird}/bin/busybox"
cp "${ROOT}/tests/vm/hostroot/init" "${ird}/init"
chmod 0755 "${ird}/init" "${ird}/bin/busybox"
: > "${ird}/modules"
declare -A added=()
add_module() { # NAME: its dependencies first, then itself
    local line rel d
    line="$(grep -E "(^|/)${1}\.ko(\.[a-z]+)?:" "${KCACHE}/modules/modules.dep" | head -n1)"
    [[ -n "${line}" ]] || die "module ${1} not in kernel ${kver}"
    rel="${line%%:*}"
    [[ -z "${added[${rel}]:-}" ]] || return 0
    added[${rel}]=1
    for d in ${line#*:}; do add_module "$(basename "${d%%.ko*}")"; done
    cp "${KCACHE}/modules/${rel}" "${ird}/lib/modules/"
    echo "/lib/modules/${rel##*/}" >> "${ird}/modules"
}
for m in "${MODULES[@]}"; do add_module "${m}"; done
(cd "${ird}" && find . -print0 | cpio --null -o -H newc --quiet) > "${b}/initrd.cpio"

{
    echo "vgpu VM bundle, staged $(date -u +%FT%TZ) from $(git -C "${ROOT}" rev-parse --short HEAD 2>/dev/null || echo '?')"
    cat "${scratch}/qemu-version"
    echo "kernel ${kver} (modules: $(sed 's,.*/,,; s,\.ko.*,,' "${ird}/modules" | tr '\n' ' '))"
    echo "libraries: $(cd "${b}/lib" && ls | grep -v '^qemu$' | tr '\n' ' ')"
    echo "unpacked: $(du -sh "${b}" | cut -f1)"
    echo "packages:"
    sed 's/^/  /' "${scratch}/packages"
} > "${b}/MANIFEST"

mkdir -p "${ART}"
tar -C "${scratch}" -cf - vm | xz -T0 -6 > "${ART}/.vm.tar.xz.$$"
mv -f "${ART}/.vm.tar.xz.$$" "${ART}/vm.tar.xz"
bytes="$(stat -c %s "${ART}/vm.tar.xz")"
mib="$(awk -v b="${bytes}" 'BEGIN { printf "%.1f", b / 1048576 }')"
echo "staged ${ART}/vm.tar.xz: ${mib} MiB (${bytes} bytes; unpacked $(du -sh "${b}" | cut -f1))"
(( bytes <= MAX_MIB * 1048576 )) || die "the bundle is over ${MAX_MIB} MiB"
