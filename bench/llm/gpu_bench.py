#!/usr/bin/env python3
"""The speed benchmark of issue 10, on the GPU machine: every figure natively and through vgpu,
alternating, median of --reps runs each. Run by scripts/gpu-bench.sh, which says what it needs.

Each figure is a command that prints one JSON line with a metric and a "check" field; the check
must be identical natively and through vgpu (greedy tokens, checksums). Modes:
  native  the command as is
  shm     `vgpuctl run -- CMD` (a fresh vgpu-host on a /dev/shm region)
  tcp     the shim preloaded with VGPU_HOST=127.0.0.1:PORT against `vgpu-host --listen`

Writes OUT/bench.md (the table), OUT/bench.json (every run) and OUT/bench.png (ratios).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ART = os.path.join(ROOT, ".gpu-artifacts")
PY = sys.executable
HERE = os.path.join(ROOT, "bench", "llm")


class Figure:
    def __init__(self, name, argv, metric, unit, higher_better=True, target=None, modes=("shm",),
                 env=None, section="torch"):
        self.name, self.argv, self.metric, self.unit = name, argv, metric, unit
        self.higher_better, self.target, self.modes = higher_better, target, modes
        self.env, self.section = env or {}, section


def torch_figures():
    tb = [PY, os.path.join(HERE, "torch_bench.py")]
    figs = [
        Figure("PyTorch decode, default SDPA (cuDNN)", tb + ["decode", "--sdpa", "default"], "tok_s", "tok/s",
               target=0.95),
        Figure("PyTorch decode, cuDNN SDPA off", tb + ["decode", "--sdpa", "no-cudnn"], "tok_s", "tok/s",
               target=0.95),
        Figure("tiny op (z.add_(1))", tb + ["tinyop"], "us_per_op", "µs/op", higher_better=False, target=0.9),
        Figure("pinned HtoD 1 MiB", tb + ["copy", "--kind", "pinned", "--dir", "h2d", "--mib", "1"], "gb_s",
               "GB/s", target=0.9),
        Figure("pinned HtoD 1 MiB, pin_memory() each copy", tb + ["copy", "--kind", "pinned", "--dir", "h2d", "--mib",
                                                              "1", "--pin-each"], "gb_s", "GB/s", target=0.9),
        Figure("pinned DtoH 1 MiB", tb + ["copy", "--kind", "pinned", "--dir", "d2h", "--mib", "1"], "gb_s",
               "GB/s", target=0.9),
        Figure("pinned HtoD 64 MiB", tb + ["copy", "--kind", "pinned", "--dir", "h2d", "--mib", "64", "--reps",
                                           "10"], "gb_s", "GB/s", target=0.98),
        Figure("pageable HtoD 1 MiB", tb + ["copy", "--kind", "pageable", "--dir", "h2d", "--mib", "1"], "gb_s",
               "GB/s"),
        Figure("pageable HtoD 64 MiB", tb + ["copy", "--kind", "pageable", "--dir", "h2d", "--mib", "64",
                                             "--reps", "10"], "gb_s", "GB/s", target=1.0),
        Figure("pageable DtoH 64 MiB", tb + ["copy", "--kind", "pageable", "--dir", "d2h", "--mib", "64",
                                             "--reps", "10"], "gb_s", "GB/s", target=1.0),
    ]
    return figs


def nvrtc_figures():
    return [Figure("NVRTC compile of one kernel", [PY, os.path.join(HERE, "nvrtc_bench.py")], "ms_median", "ms",
                   higher_better=False, section="nvrtc")]


def llama_figures(model):
    lb = [PY, os.path.join(HERE, "llama_bench.py"), "--bin", os.path.join(ART, "llama"), "--model", model]
    off = {"GGML_CUDA_DISABLE_GRAPHS": "1"}
    return [
        Figure("llama.cpp decode, graphs on", lb + ["decode"], "tok_s", "tok/s", target=0.95,
               modes=("shm", "tcp"), section="llama"),
        Figure("llama.cpp decode, graphs off", lb + ["decode"], "tok_s", "tok/s", target=0.95, env=off,
               section="llama"),
        Figure("llama.cpp prefill 512, graphs on", lb + ["prefill"], "tok_s", "tok/s", target=0.98, section="llama"),
        Figure("llama.cpp prefill 512, graphs off", lb + ["prefill"], "tok_s", "tok/s", target=0.98, env=off,
               section="llama"),
        Figure("llama.cpp model load to first token", lb + ["load"], "load_ms", "ms", higher_better=False,
               target=0.9, section="llama"),
        Figure("llama.cpp completion, 128 greedy tokens", lb + ["complete"], "tok_s", "tok/s", target=0.95,
               section="llama"),
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpHost:
    """A `vgpu-host --listen` on loopback for the tcp mode."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([os.path.join(ART, "vgpu-host"), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_once(fig, mode, timeout, tcp, trace=None):
    env = dict(os.environ, **fig.env)
    argv = list(fig.argv)
    if mode == "shm":
        argv = [os.path.join(ART, "vgpuctl"), "run", "--"] + argv
    elif mode == "tcp":
        env["LD_PRELOAD"] = os.path.join(ART, "libvgpu-cuda.so")
        env["VGPU_HOST"] = f"127.0.0.1:{tcp.port}"
    if trace and mode != "native":
        env["VGPU_TRACE"] = trace
    t = time.time()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout", 124
    wall = time.time() - t
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                pass
    return {"mode": mode, "rc": rc, "wall_s": round(wall, 2), "result": result, "stderr_tail": err[-1500:]}


def ratio(fig, native, other):
    if native is None or other is None or native == 0 or other == 0:
        return None
    return other / native if fig.higher_better else native / other


def fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sections", default="nvrtc,torch,llama")
    ap.add_argument("--only", default="", help="comma-separated substrings of figure names")
    ap.add_argument("--model", default="")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--no-tcp", action="store_true")
    ap.add_argument("--commit", default=os.environ.get("VGPU_COMMIT", "?"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sections = args.sections.split(",")
    figs = []
    if "nvrtc" in sections:
        figs += nvrtc_figures()
    if "torch" in sections:
        figs += torch_figures()
    if "llama" in sections and args.model:
        figs += llama_figures(args.model)
    if args.only:
        keys = args.only.split(",")
        figs = [f for f in figs if any(k in f.name for k in keys)]
    tcp = None
    if not args.no_tcp and any("tcp" in f.modes for f in figs):
        tcp = TcpHost()
    rows, raw = [], []
    try:
        for fig in figs:
            modes = ["native"] + [m for m in fig.modes if m != "tcp" or tcp]
            runs = {m: [] for m in modes}
            for _ in range(args.reps):
                for m in modes:
                    r = run_once(fig, m, args.timeout, tcp)
                    runs[m].append(r)
                    res = r["result"] or {}
                    print(f"{fig.name} [{m}] rc {r['rc']} {fig.metric}={res.get(fig.metric)} wall {r['wall_s']}s",
                          file=sys.stderr, flush=True)
                    if r["rc"] != 0:
                        print(r["stderr_tail"], file=sys.stderr)
            med, checks = {}, {}
            for m in modes:
                vals = [r["result"][fig.metric] for r in runs[m] if r["result"] and fig.metric in r["result"]]
                med[m] = statistics.median(vals) if vals else None
                checks[m] = {json.dumps(r["result"].get("check")) for r in runs[m] if r["result"]}
            same = {m: checks[m] == checks["native"] and len(checks[m]) == 1 for m in modes if m != "native"}
            rows.append((fig, med, same))
            raw.append({"name": fig.name, "metric": fig.metric, "env": fig.env, "runs": runs})
    finally:
        if tcp:
            tcp.stop()
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(raw, f, indent=1)
    lines = [
        "# Speed: native against vgpu on the H200",
        "",
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, commit {args.commit}; median of {args.reps} runs "
        "each, native and vgpu alternating (`scripts/gpu-bench.sh`). Ratio = vgpu speed / native speed "
        "(for times: native time / vgpu time). \"same\": the check output (greedy tokens, checksums) is "
        "identical to native in every run.",
        "",
        "| figure | unit | native | vgpu shm | ratio | target | same | vgpu tcp | tcp ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plot = []
    for fig, med, same in rows:
        r = ratio(fig, med.get("native"), med.get("shm"))
        rt = ratio(fig, med.get("native"), med.get("tcp"))
        tgt = "" if fig.target is None else f"≥ {fig.target}"
        hit = "" if fig.target is None or r is None else (" ✓" if r >= fig.target else " ✗")
        lines.append(f"| {fig.name} | {fig.unit} | {fmt(med.get('native'))} | {fmt(med.get('shm'))} | "
                     f"{fmt(r)}{hit} | {tgt} | {'yes' if same.get('shm') else 'NO'} | "
                     f"{fmt(med.get('tcp'))} | {fmt(rt)} |")
        plot.append((fig.name, r, rt, fig.target))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    print(text)
    try:
        make_plot(plot, os.path.join(args.out, "bench.png"), args.commit)
    except Exception as e:  # matplotlib missing or headless trouble: the table stands alone
        print(f"plot skipped: {e}", file=sys.stderr)


def make_plot(plot, path, commit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [p[0] for p in plot]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    y = list(range(len(names)))
    ax.barh([i + 0.2 for i in y], [p[1] or 0 for p in plot], height=0.4, label="shm", color="#3b7dd8")
    ax.barh([i - 0.2 for i in y], [p[2] or 0 for p in plot], height=0.4, label="tcp", color="#e08a2c")
    for i, p in enumerate(plot):
        if p[3]:
            ax.plot([p[3], p[3]], [i - 0.45, i + 0.45], color="black", lw=1)
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to native (higher is better; black tick = target)")
    ax.set_title(f"vgpu on the H200, commit {commit}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
