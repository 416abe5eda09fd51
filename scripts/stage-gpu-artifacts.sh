#!/usr/bin/env bash
# Builds the release binaries here and stages what the GPU machine runs into .gpu-artifacts/:
# vgpuctl, vgpu-host, libvgpu-cuda.so (+ libcuda.so.1 link), libvgpu-nvml.so, transport-bench.
# Symbols are kept (debug info is stripped) so that profiles name functions. Carry .gpu-artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
ART=.gpu-artifacts
cargo build --release --quiet -p vgpuctl -p host -p transport --bins
bash scripts/build-shim.sh >/dev/null
bash scripts/build-nvml.sh >/dev/null
mkdir -p "$ART"
for f in vgpuctl vgpu-host transport-bench libvgpu-cuda.so libvgpu-nvml.so; do
    strip --strip-debug -o "$ART/.$f.$$" "target/release/$f"
    mv -f "$ART/.$f.$$" "$ART/$f"
done
ln -sfn libvgpu-cuda.so "$ART/libcuda.so.1"
echo "staged at $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'):"
ls -la "$ART" | grep -v '^total'
