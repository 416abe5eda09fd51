#!/usr/bin/env python3
"""The speed benchmark of issue 10, on the GPU machine: every figure natively and through vgpu,
alternating, median of --reps runs each. Run by scripts/gpu-bench.sh, which says what it needs.

Each figure is a command that prints one JSON line with a metric and a "check" field; the check
must be identical natively and through vgpu (greedy tokens, checksums). Modes:
  native  the command as is
  shm     `vgpuctl run -- CMD` (a fresh vgpu-host on a /dev/shm region)
  tcp     the shim preloaded with VGPU_HOST=127.0.0.1:PORT against `vgpu-host --listen` (TLS 1.3,
          material from `vgpuctl host tls-init`, and the pre-shared key inside it)

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
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ART = os.path.join(ROOT, ".gpu-artifacts")
PY = sys.executable
HERE = os.path.join(ROOT, "bench", "llm")


class Figure:
    """One figure: `pick` names the JSON line (its "bench") of `argv`'s output that holds it.
    Figures with the same command and environment share its runs."""

    def __init__(self, name, argv, pick, metric, unit, higher_better=True, target=None, modes=("shm",),
                 env=None):
        self.name, self.argv, self.pick, self.metric, self.unit = name, argv, pick, metric, unit
        self.higher_better, self.target, self.modes = higher_better, target, modes
        self.env = env or {}

    def group(self):
        return (tuple(self.argv), tuple(sorted(self.env.items())))


def torch_figures():
    tb = [PY, os.path.join(HERE, "torch_bench.py")]
    dec = tb + ["decode", "--sdpa", "both", "--tokens", "32"]
    st = tb + ["suite"]

    def copy(name, pick, target=None):
        return Figure(name, st, pick, "gb_s", "GB/s", target=target)

    return [
        Figure("PyTorch decode, default SDPA (cuDNN)", dec, "torch_decode_default", "tok_s", "tok/s", target=0.95),
        Figure("PyTorch decode, cuDNN SDPA off", dec, "torch_decode_no-cudnn", "tok_s", "tok/s", target=0.95),
        Figure("tiny op (z.add_(1))", st, "torch_tinyop", "us_per_op", "µs/op", higher_better=False, target=0.9),
        copy("pinned HtoD 1 MiB", "torch_copy_pinned_h2d_1MiB", 0.9),
        copy("pinned HtoD 1 MiB, pin_memory() each copy", "torch_copy_pinned_h2d_1MiB_pin_each", 0.9),
        copy("pinned DtoH 1 MiB", "torch_copy_pinned_d2h_1MiB", 0.9),
        copy("pinned HtoD 64 MiB", "torch_copy_pinned_h2d_64MiB", 0.98),
        copy("pageable HtoD 1 MiB", "torch_copy_pageable_h2d_1MiB"),
        copy("pageable DtoH 1 MiB", "torch_copy_pageable_d2h_1MiB"),
        copy("pageable HtoD 64 MiB", "torch_copy_pageable_h2d_64MiB", 1.0),
        copy("pageable DtoH 64 MiB", "torch_copy_pageable_d2h_64MiB", 1.0),
    ]


def nvrtc_figures():
    return [Figure("NVRTC compile of one kernel", [PY, os.path.join(HERE, "nvrtc_bench.py")], "nvrtc_compile",
                   "ms_median", "ms", higher_better=False)]


def llama_figures(model):
    lb = [PY, os.path.join(HERE, "llama_bench.py"), "--bin", os.path.join(ART, "llama"), "--model", model]
    off = {"GGML_CUDA_DISABLE_GRAPHS": "1"}
    both = lb + ["bench"]
    return [
        Figure("llama.cpp decode tg128, graphs on", both, "llama_tg128_graphs_on", "tok_s", "tok/s", target=0.95,
               modes=("shm", "tcp")),
        Figure("llama.cpp prefill pp512, graphs on", both, "llama_pp512_graphs_on", "tok_s", "tok/s", target=0.98,
               modes=("shm", "tcp")),
        Figure("llama.cpp decode tg128, graphs off", both, "llama_tg128_graphs_off", "tok_s", "tok/s", target=0.95,
               env=off),
        Figure("llama.cpp prefill pp512, graphs off", both, "llama_pp512_graphs_off", "tok_s", "tok/s", target=0.98,
               env=off),
        Figure("llama.cpp start to first token (model load)", lb + ["load"], "llama_load", "load_ms", "ms",
               higher_better=False, target=0.9),
        Figure("llama.cpp completion, 128 greedy tokens", lb + ["complete"], "llama_completion_128", "tok_s",
               "tok/s", target=0.95),
        Figure("llama.cpp completion, its 5-token prompt", lb + ["complete"], "llama_completion_128", "prompt_tok_s",
               "tok/s"),
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpHost:
    """A `vgpu-host --listen` on loopback for the tcp mode."""

    def __init__(self):
        self.port = free_port()
        # Clients show a certificate in TLS 1.3 (material from `vgpuctl host tls-init`) and
        # prove they hold a pre-shared key inside it, as they would in production.
        fd, self.key = tempfile.mkstemp(prefix="vgpu-bench-", suffix=".key")
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.close(fd)
        os.chmod(self.key, 0o600)
        self.tls = tempfile.mkdtemp(prefix="vgpu-bench-tls-")
        subprocess.run([os.path.join(ART, "vgpuctl"), "host", "tls-init", self.tls, "--name", "127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen([os.path.join(ART, "vgpu-host"), "--listen", f"127.0.0.1:{self.port}",
                                      "--tls-cert", os.path.join(self.tls, "host.pem"),
                                      "--tls-key", os.path.join(self.tls, "host.key"),
                                      "--tls-client-ca", os.path.join(self.tls, "ca.pem"),
                                      "--tcp-key", self.key],
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
        os.unlink(self.key)
        shutil.rmtree(self.tls, ignore_errors=True)

    def guest_env(self):
        """What a guest of this host sets."""
        return {
            "VGPU_HOST": f"127.0.0.1:{self.port}",
            "VGPU_HOST_KEY_FILE": self.key,
            "VGPU_TLS_CA": os.path.join(self.tls, "ca.pem"),
            "VGPU_TLS_CERT": os.path.join(self.tls, "client.pem"),
            "VGPU_TLS_KEY": os.path.join(self.tls, "client.key"),
        }


def run_once(fig, mode, timeout, tcp, trace=None):
    env = dict(os.environ, **fig.env)
    argv = list(fig.argv)
    if mode == "shm":
        argv = [os.path.join(ART, "vgpuctl"), "run", "--"] + argv
    elif mode == "tcp":
        env["LD_PRELOAD"] = os.path.join(ART, "libvgpu-cuda.so")
        env.update(tcp.guest_env())
    if trace and mode != "native":
        env["VGPU_TRACE"] = trace
    t = time.time()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout", 124
    wall = time.time() - t
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                r = json.loads(line)
                results[r.get("bench")] = r
            except ValueError:
                pass
    return {"mode": mode, "rc": rc, "wall_s": round(wall, 2), "results": results, "stderr_tail": err[-1500:]}


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
    figs = []  # in the order the sections are named
    for section in sections:
        if section == "nvrtc":
            figs += nvrtc_figures()
        elif section == "torch":
            figs += torch_figures()
        elif section == "llama" and args.model:
            figs += llama_figures(args.model)
    if args.only:
        keys = args.only.split(",")
        figs = [f for f in figs if any(k in f.name for k in keys)]
    tcp = None
    if not args.no_tcp and any("tcp" in f.modes for f in figs):
        tcp = TcpHost()
    groups = {}
    for fig in figs:
        groups.setdefault(fig.group(), []).append(fig)
    runs = {}  # (group, mode) -> [run]
    try:
        for key, members in groups.items():
            modes = ["native"] + sorted({m for f in members for m in f.modes if m != "tcp" or tcp})
            for _ in range(args.reps):
                for m in modes:
                    r = run_once(members[0], m, args.timeout, tcp)
                    runs.setdefault((key, m), []).append(r)
                    got = ", ".join(f"{f.pick}={(r['results'].get(f.pick) or {}).get(f.metric)}" for f in members)
                    print(f"[{m}] rc {r['rc']} wall {r['wall_s']}s {got}", file=sys.stderr, flush=True)
                    if r["rc"] != 0:
                        print(r["stderr_tail"], file=sys.stderr)
            report(args, figs, runs)
    finally:
        if tcp:
            tcp.stop()
        report(args, figs, runs)


def report(args, figs, runs):
    rows, raw = [], []
    for fig in figs:
        key = fig.group()
        modes = ["native"] + [m for m in fig.modes if (key, m) in runs]
        med, checks = {}, {}
        for m in modes:
            got = [r["results"].get(fig.pick) for r in runs.get((key, m), [])]
            vals = [g[fig.metric] for g in got if g and g.get(fig.metric) is not None]
            med[m] = statistics.median(vals) if vals else None
            checks[m] = {json.dumps(g.get("check")) for g in got if g}
        same = {m: checks[m] == checks["native"] and len(checks[m]) == 1 for m in modes if m != "native"}
        rows.append((fig, med, same))
        raw.append({"name": fig.name, "metric": fig.metric, "env": fig.env,
                    "runs": {m: [dict(r, results=r["results"].get(fig.pick)) for r in runs.get((key, m), [])]
                             for m in modes}})
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
