#!/usr/bin/env bash
# Installs, from Debian's packages, what the test suite needs and the machine lacks. Idempotent;
# needs root (CI runs as root).
#
#   scripts/install-test-deps.sh [--root DIR] [--dry-run]
#
# Every dependency is checked by the exact file the tests load or run, and printed with the file
# that satisfied it ("ok") or the package that will provide it ("missing"). libclang is looked for
# as bindgen's clang-sys finds it at run time: libclang.so, libclang-*.so, libclang.so.* or
# libclang-*.so.*, never libclang-cpp (a different library that Debian ships on its own), in
# `llvm-config --prefix`, LD_LIBRARY_PATH, LIBRARY_PATH and the system library folders.
#
# --root DIR checks a fake root instead of / (the environment and llvm-config are then left
# out: they describe this machine); --dry-run prints what would be installed and installs nothing.
# scripts' own test: tests/tests/install_deps.rs.
set -euo pipefail
shopt -s nullglob
root=""
dry_run=0
while (($#)); do
    case "$1" in
        --root) root="${2%/}"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        *) echo "install-test-deps: unknown argument $1" >&2; exit 2 ;;
    esac
done

need=()
say() { printf 'install-test-deps: %-34s %s\n' "$1" "$2"; }
found() { # what, file
    say "$1" "ok       ${2#"$root"}"
}
missing() { # what, package...
    local what="$1"; shift
    say "${what}" "missing  -> $*"
    for p in "$@"; do [[ " ${need[*]} " == *" $p "* ]] || need+=("$p"); done
}

# The first existing file among globs under the root (globs are absolute paths).
first_file() {
    local g f
    for g in "$@"; do
        for f in ${root}${g}; do
            [[ -e "$f" ]] && { printf '%s' "$f"; return 0; }
        done
    done
    return 1
}

command_file() { # name
    first_file {/usr/local/sbin,/usr/local/bin,/usr/sbin,/usr/bin,/sbin,/bin}/"$1"
}

check_command() { # command, package...
    local cmd="$1"; shift
    local f
    if f=$(command_file "${cmd}"); then found "${cmd}" "$f"; else missing "${cmd}" "$@"; fi
}

# clang-sys's run-time search (clang-sys 1.x, build/common.rs and build/dynamic.rs).
libclang_dirs() {
    if [[ -z "${root}" ]]; then
        if [[ -n "${LIBCLANG_PATH:-}" ]]; then
            printf '%s\n' "${LIBCLANG_PATH}"
            return
        fi
        local prefix
        if prefix=$(llvm-config --prefix 2>/dev/null); then
            printf '%s\n' "${prefix}/bin" "${prefix}/lib" "${prefix}/lib64"
        fi
        local IFS=:
        local d
        for d in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do [[ -n "$d" ]] && printf '%s\n' "$d"; done
    fi
    local g
    for g in '/usr/local/llvm*/lib*' '/usr/local/lib*/*/*' '/usr/local/lib*/*' '/usr/local/lib*' \
        '/usr/lib*/*/*' '/usr/lib*/*' '/usr/lib*'; do
        # shellcheck disable=SC2086 # the glob is meant to expand
        for d in ${root}${g}; do [[ -d "$d" ]] && printf '%s\n' "${d#"$root"}"; done
    done
}

check_libclang() {
    local d f name
    while IFS= read -r d; do
        for f in "${root}${d}"/{libclang.so,libclang-*.so,libclang.so.*,libclang-*.so.*}; do
            name="${f##*/}"
            [[ "${name}" == *-cpp.* ]] && continue
            [[ -e "$f" ]] && { found "libclang (bindgen)" "$f"; return; }
        done
    done < <(libclang_dirs)
    missing "libclang (bindgen)" libclang-dev
}

check_clang_headers() { # clang's own headers, which bindgen needs to parse cuda.h
    local f
    if f=$(first_file '/usr/lib/llvm-*/lib/clang/*/include/stddef.h' '/usr/lib/clang/*/include/stddef.h' \
        '/usr/local/lib/clang/*/include/stddef.h'); then
        found "clang resource headers (bindgen)" "$f"
    else
        missing "clang resource headers (bindgen)" libclang-dev
    fi
}

check_static_busybox() {
    local f
    if f=$(command_file busybox) && file -L "$f" 2>/dev/null | grep -q 'statically linked'; then
        found "busybox (static)" "$f"
    else
        missing "busybox (static)" busybox-static
    fi
}

check_command cc gcc libc6-dev
check_libclang
check_clang_headers
check_command systemd-analyze systemd
check_command qemu-system-x86_64 qemu-system-x86
check_command file file
check_static_busybox
check_command cpio cpio
check_command depmod kmod
check_command unzip unzip
check_command debootstrap debootstrap
check_command mkfs.ext4 e2fsprogs
check_command tmux tmux

if ((${#need[@]} == 0)); then
    echo "install-test-deps: nothing to install"
elif ((dry_run)); then
    echo "install-test-deps: would install ${need[*]} (dry run)"
else
    echo "install-test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
