#!/usr/bin/env bash
# On the GPU machine: the speed benchmark for two builds in one run, so that their figures come
# from the same machine: B is .gpu-artifacts (this commit), A is .gpu-artifacts/base
# (scripts/stage-base-artifacts.sh). Each round runs scripts/gpu-bench.sh ARGS… for B, then
# for A (its four files swapped in, and back afterwards), each with its own native runs.
# Writes $OUT/ab-new-R/ and $OUT/ab-base-R/ (bench.md, bench.json) and $OUT/ab.md, the ratios
# side by side.
#
#   ROUNDS=1 scripts/gpu-ab.sh --reps 3 --sections torch --only decode
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
A=.gpu-artifacts
O="${OUT:-ab-out}"
FILES=(vgpuctl vgpu-host libvgpu-cuda.so libvgpu-nvml.so)
[[ -f "${A}/base/COMMIT" ]] || { echo "gpu-ab: no ${A}/base (scripts/stage-base-artifacts.sh)" >&2; exit 2; }
swap() {
    local f
    for f in "${FILES[@]}"; do
        mv "${A}/${f}" "${A}/${f}.swap" && mv "${A}/base/${f}" "${A}/${f}" && mv "${A}/${f}.swap" "${A}/base/${f}"
    done
}
swapped=0
trap '[[ ${swapped} == 1 ]] && swap' EXIT
trap 'exit 143' TERM INT
for r in $(seq 1 "${ROUNDS:-1}"); do
    OUT="${O}/ab-new-${r}" bash scripts/gpu-bench.sh "$@" > "${O}/ab-new-${r}.log" 2>&1
    swap; swapped=1
    OUT="${O}/ab-base-${r}" VGPU_COMMIT="$(cat "${A}/base/COMMIT")" \
        bash scripts/gpu-bench.sh "$@" > "${O}/ab-base-${r}.log" 2>&1
    swap; swapped=0
done
python3 - "${O}" "$(cat "${A}/base/COMMIT")" <<'PY'
import json, os, statistics, sys
out, base = sys.argv[1], sys.argv[2]
def figures(kind):
    rows = {}
    for d in sorted(os.listdir(out)):
        if not d.startswith(f"ab-{kind}-"):
            continue
        for fig in json.load(open(os.path.join(out, d, "bench.json"))):
            for mode, runs in fig["runs"].items():
                vals = [r["results"][fig["metric"]] for r in runs if r.get("results") and r["results"].get(fig["metric"]) is not None]
                rows.setdefault((fig["name"], mode), []).extend(vals)
    return {k: statistics.median(v) for k, v in rows.items() if v}
new, old = figures("new"), figures("base")
lines = [f"# A/B: this build (B) against {base} (A), same machine", "",
         "| figure | native (B's runs) | vgpu B | native (A's runs) | vgpu A | B / A (rates: > 1 is faster; times: < 1) |", "|---|---|---|---|---|---|"]
for (name, mode) in sorted(k for k in new if k[1] == "shm"):
    nb, vb = new.get((name, "native")), new.get((name, "shm"))
    na, va = old.get((name, "native")), old.get((name, "shm"))
    ratio = f"{vb / va:.3f}" if vb and va else "—"
    lines.append(f"| {name} | {nb} | {vb} | {na} | {va} | {ratio} |")
open(os.path.join(out, "ab.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
