#!/usr/bin/env bash
# Builds the guest shim: <target>/<profile>/libvgpu-cuda.so (soname libcuda.so.1) plus a
# libcuda.so.1 symlink beside it, and prints the .so's path.
#
#   scripts/build-shim.sh            # release: target/release/libvgpu-cuda.so
#   scripts/build-shim.sh --debug    # debug:   target/debug/libvgpu-cuda.so (what the tests use)
#
# Honours CARGO_TARGET_DIR and CARGO. Safe to run concurrently: files are replaced by rename.
exec bash "$(dirname "$0")/build-cdylib.sh" shim vgpu-cuda libcuda.so.1 "$@"
