#!/usr/bin/env bash
# Builds one of the guest cdylibs: <target>/<profile>/<LIB>.so (its soname SONAME) plus a SONAME
# symlink beside it, and prints the .so's path. What scripts/build-shim.sh and
# scripts/build-nvml.sh run.
#
#   scripts/build-cdylib.sh PACKAGE LIB SONAME [--release|--debug]
#   scripts/build-cdylib.sh shim vgpu-cuda libcuda.so.1 --debug   # target/debug/libvgpu-cuda.so
#
# Honours CARGO_TARGET_DIR and CARGO. Safe to run concurrently: files are replaced by rename.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 3 ] || { echo "usage: $0 PACKAGE LIB SONAME [--release|--debug]" >&2; exit 2; }
package=$1 lib=$2 soname=$3
shift 3

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    --release | "") profile=release ;;
    *) echo "usage: scripts/build-$package.sh [--release|--debug]" >&2; exit 2 ;;
esac

cargo_args=(build --quiet -p "$package" --lib)
[ "$profile" = release ] && cargo_args+=(--release)
"${CARGO:-cargo}" "${cargo_args[@]}"

dir="${CARGO_TARGET_DIR:-target}/$profile"
# Cargo names the file after the crate's lib name, with `_` for `-`.
built="$dir/lib${lib//-/_}.so"
[ -f "$built" ] || { echo "build-$package: $built was not produced" >&2; exit 1; }

tmp="$dir/.lib$lib.so.$$"
cp "$built" "$tmp"
mv -f "$tmp" "$dir/lib$lib.so"
ln -s "lib$lib.so" "$dir/.$soname.$$"
mv -fT "$dir/.$soname.$$" "$dir/$soname"

realpath "$dir/lib$lib.so"
