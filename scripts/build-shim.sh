#!/usr/bin/env bash
# Builds the guest shim: <target>/<profile>/libvgpu-cuda.so (soname libcuda.so.1) plus a
# libcuda.so.1 symlink beside it, and prints the .so's path.
#
#   scripts/build-shim.sh            # release: target/release/libvgpu-cuda.so
#   scripts/build-shim.sh --debug    # debug:   target/debug/libvgpu-cuda.so (what the tests use)
#
# Honours CARGO_TARGET_DIR and CARGO. Safe to run concurrently: files are replaced by rename.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    --release | "") profile=release ;;
    *) echo "usage: $0 [--release|--debug]" >&2; exit 2 ;;
esac

cargo_args=(build --quiet -p shim --lib)
[ "$profile" = release ] && cargo_args+=(--release)
"${CARGO:-cargo}" "${cargo_args[@]}"

dir="${CARGO_TARGET_DIR:-target}/$profile"
built="$dir/libvgpu_cuda.so"
[ -f "$built" ] || { echo "build-shim: $built was not produced" >&2; exit 1; }

tmp="$dir/.libvgpu-cuda.so.$$"
cp "$built" "$tmp"
mv -f "$tmp" "$dir/libvgpu-cuda.so"
ln -s libvgpu-cuda.so "$dir/.libcuda.so.1.$$"
mv -fT "$dir/.libcuda.so.1.$$" "$dir/libcuda.so.1"

realpath "$dir/libvgpu-cuda.so"
