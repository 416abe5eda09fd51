#!/usr/bin/env bash
# On the GPU machine: py-spy profiles (--native) of PyTorch decode with cuDNN attention, natively
# and through `vgpuctl run`, summarised by bench/llm/profile_summary.py. Needs the py-spy wheel in
# .whl/ (carried). Writes $OUT/profile-{native,vgpu}.{raw,txt}.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
A=.gpu-artifacts
O="${OUT:-profile-out}"; mkdir -p "$O"
P="$(mktemp -d)"
python3 -m pip install -q --no-deps --target "$P" .whl/py_spy-*.whl || exit 2
SPY="$P/bin/py-spy"
TOKENS="${TOKENS:-48}"
CMD=(python3 bench/llm/torch_bench.py decode --sdpa "${SDPA:-default}" --tokens "$TOKENS")
timeout 200 "$SPY" record --native --format raw -r 200 -o "$O/profile-native.raw" -- "${CMD[@]}"
timeout 200 "$A/vgpuctl" run -- "$SPY" record --native --format raw -r 200 -o "$O/profile-vgpu.raw" -- "${CMD[@]}"
for m in native vgpu; do
    python3 bench/llm/profile_summary.py "$O/profile-$m.raw" > "$O/profile-$m.txt"
    echo "== $m"; cat "$O/profile-$m.txt"
done
