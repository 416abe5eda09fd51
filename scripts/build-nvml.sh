#!/usr/bin/env bash
# Builds the NVML facade: <target>/<profile>/libvgpu-nvml.so (soname libnvidia-ml.so.1) plus a
# libnvidia-ml.so.1 symlink beside it, and prints the .so's path.
#
#   scripts/build-nvml.sh            # release: target/release/libvgpu-nvml.so
#   scripts/build-nvml.sh --debug    # debug:   target/debug/libvgpu-nvml.so (what the tests use)
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

cargo_args=(build --quiet -p nvml --lib)
[ "$profile" = release ] && cargo_args+=(--release)
"${CARGO:-cargo}" "${cargo_args[@]}"

dir="${CARGO_TARGET_DIR:-target}/$profile"
built="$dir/libvgpu_nvml.so"
[ -f "$built" ] || { echo "build-nvml: $built was not produced" >&2; exit 1; }

tmp="$dir/.libvgpu-nvml.so.$$"
cp "$built" "$tmp"
mv -f "$tmp" "$dir/libvgpu-nvml.so"
ln -s libvgpu-nvml.so "$dir/.libnvidia-ml.so.1.$$"
mv -fT "$dir/.libnvidia-ml.so.1.$$" "$dir/libnvidia-ml.so.1"

realpath "$dir/libvgpu-nvml.so"
