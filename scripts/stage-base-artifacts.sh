#!/usr/bin/env bash
# Stages an earlier commit's vgpu build into .gpu-artifacts/base/ for an A/B run on the GPU
# machine (scripts/gpu-ab.sh): vgpuctl, vgpu-host, libvgpu-cuda.so, libvgpu-nvml.so, built in a
# temporary worktree with scripts/stage-gpu-artifacts.sh (a first build takes minutes).
#
#   scripts/stage-base-artifacts.sh COMMIT
set -euo pipefail
cd "$(dirname "$0")/.."
commit="${1:?usage: stage-base-artifacts.sh COMMIT}"
wt="${TMPDIR:-/tmp}/vgpu-base-$(git rev-parse --short "${commit}")"
[[ -d "${wt}" ]] || git worktree add -q --detach "${wt}" "${commit}"
(cd "${wt}" && bash scripts/stage-gpu-artifacts.sh >/dev/null)
mkdir -p .gpu-artifacts/base
for f in vgpuctl vgpu-host libvgpu-cuda.so libvgpu-nvml.so; do
    cp -f "${wt}/.gpu-artifacts/${f}" .gpu-artifacts/base/
done
git rev-parse --short "${commit}" > .gpu-artifacts/base/COMMIT
echo "base staged at $(cat .gpu-artifacts/base/COMMIT) in .gpu-artifacts/base/"
