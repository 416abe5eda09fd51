#!/usr/bin/env bash
# Builds the NVML facade: <target>/<profile>/libvgpu-nvml.so (soname libnvidia-ml.so.1) plus a
# libnvidia-ml.so.1 symlink beside it, and prints the .so's path.
#
#   scripts/build-nvml.sh            # release: target/release/libvgpu-nvml.so
#   scripts/build-nvml.sh --debug    # debug:   target/debug/libvgpu-nvml.so (what the tests use)
#
# Honours CARGO_TARGET_DIR and CARGO. Safe to run concurrently: files are replaced by rename.
exec bash "$(dirname "$0")/build-cdylib.sh" nvml vgpu-nvml libnvidia-ml.so.1 "$@"
