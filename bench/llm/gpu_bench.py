#!/usr/bin/env python3
"""The speed benchmark of issue 10, on the GPU machine: every figure natively and through vgpu,
alternating, median of --reps runs each. Run by scripts/gpu-bench.sh, which says what it needs.

Each figure is a command that prints one JSON line with a metric and a "check" field; the check
must be identical natively and through vgpu (greedy tokens, checksums). Modes:
  native  the command as is
  shm     `vgpuctl run -- CMD` (a fresh vgpu-host on a /dev/shm region)
  shm-metrics  the same, but the host also serves Prometheus metrics (`vgpu-host --metrics
          127.0.0.1:PORT`, through `vgpuctl run --host-bin WRAPPER`) and a thread here scrapes
          http://127.0.0.1:PORT/metrics once a second while CMD runs, as a tight Prometheus scrape
          would (issue 14: decode speed with metrics on and off). The host's per-client counters
          are counted in every mode; this mode adds serving and scraping them. Each run records
          its scrapes (ok, failed, how many showed a client, the client's calls seen).
  tcp     the shim preloaded with VGPU_HOST=127.0.0.1:PORT against `vgpu-host --listen` (TLS 1.3,
          material from `vgpuctl host tls-init`, and the pre-shared key inside it)

Writes OUT/bench.md (the table), OUT/bench.json (every run) and OUT/bench.png (ratios).
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

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
        Figure("PyTorch decode, default SDPA (cuDNN)", dec, "torch_decode_default", "tok_s", "tok/s", target=0.95,
               modes=("shm", "shm-metrics")),
        Figure("PyTorch decode, cuDNN SDPA off", dec, "torch_decode_no-cudnn", "tok_s", "tok/s", target=0.95,
               modes=("shm", "shm-metrics")),
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
               modes=("shm", "shm-metrics", "tcp")),
        Figure("llama.cpp prefill pp512, graphs on", both, "llama_pp512_graphs_on", "tok_s", "tok/s", target=0.98,
               modes=("shm", "shm-metrics", "tcp")),
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


def metrics_wrapper(folder, port):
    """A vgpu-host for `vgpuctl run --host-bin`: the real one, serving metrics on 127.0.0.1:PORT
    besides the arguments vgpuctl gives it (exec keeps its pid, so vgpuctl stops it as usual)."""
    path = os.path.join(folder, "vgpu-host-metrics")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"exec {shlex.quote(os.path.join(ART, 'vgpu-host'))} \"$@\" --metrics 127.0.0.1:{port}\n")
    os.chmod(path, 0o755)
    return path


class Scraper(threading.Thread):
    """GETs URL every `interval` seconds until stopped, as a Prometheus scrape would. Counts
    scrapes that answered and that failed (refused before the host is up, after it is gone),
    those that showed a client (a vgpu_client_calls_total series), the most calls they showed
    in sum, and the time a scrape took."""

    def __init__(self, url, interval=1.0):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.done = threading.Event()
        self.ok = self.failed = self.with_client = 0
        self.max_calls, self.last_bytes, self.ms = 0, 0, []

    def run(self):
        while not self.done.is_set():
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=1.0) as r:
                    body = r.read().decode(errors="replace")
                self.ms.append((time.perf_counter() - t) * 1e3)
                self.ok += 1
                self.last_bytes = len(body)
                calls = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                         if line.startswith("vgpu_client_calls_total{")]
                if calls:
                    self.with_client += 1
                    self.max_calls = max(self.max_calls, int(sum(calls)))
            except (OSError, ValueError, IndexError):
                self.failed += 1
            self.done.wait(max(0.0, self.interval - (time.perf_counter() - t)))

    def stop(self):
        self.done.set()
        self.join(5)
        return {"ok": self.ok, "failed": self.failed, "with_client": self.with_client,
                "max_client_calls": self.max_calls, "last_bytes": self.last_bytes,
                "scrape_ms_median": round(statistics.median(self.ms), 2) if self.ms else None}


def stop_gently(p):
    """SIGTERM first: `vgpuctl run` passes it to its command and then stops the vgpu-host it
    started (a SIGKILLed vgpuctl would leave that host, in its own process group, running)."""
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_once(fig, mode, timeout, tcp, trace=None):
    env = dict(os.environ, **fig.env)
    argv = list(fig.argv)
    scraper, wrap_dir = None, None
    if mode == "shm":
        argv = [os.path.join(ART, "vgpuctl"), "run", "--"] + argv
    elif mode == "shm-metrics":
        port = free_port()
        wrap_dir = tempfile.mkdtemp(prefix="vgpu-bench-metrics-")
        argv = [os.path.join(ART, "vgpuctl"), "run", "--host-bin", metrics_wrapper(wrap_dir, port), "--"] + argv
        scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
        scraper.start()
    elif mode == "tcp":
        env["LD_PRELOAD"] = os.path.join(ART, "libvgpu-cuda.so")
        env.update(tcp.guest_env())
    if trace and mode != "native":
        env["VGPU_TRACE"] = trace
    t = time.time()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        stop_gently(p)
        out, err = p.communicate()
        err, rc = (err or "")[-1400:] + "\ntimeout", 124
    except BaseException:  # SIGTERM (SystemExit) or ^C: stop the command the same way, then go on out
        stop_gently(p)
        raise
    finally:
        scrapes = scraper.stop() if scraper else None
        if wrap_dir:
            shutil.rmtree(wrap_dir, ignore_errors=True)
    wall = time.time() - t
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                r = json.loads(line)
                results[r.get("bench")] = r
            except ValueError:
                pass
    r = {"mode": mode, "rc": rc, "wall_s": round(wall, 2), "results": results, "stderr_tail": err[-1500:]}
    if scrapes is not None:
        r["scrapes"] = scrapes
    return r


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

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    # A `timeout` around the bench sends SIGTERM: the running command is killed (subprocess.run
    # does that on the way out) and the report below covers the runs that finished.
    signal.signal(signal.SIGTERM, on_term)
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
                    if "scrapes" in r:
                        got += f" scrapes={r['scrapes']}"
                    print(f"[{m}] rc {r['rc']} wall {r['wall_s']}s {got}", file=sys.stderr, flush=True)
                    if r["rc"] != 0:
                        print(r["stderr_tail"], file=sys.stderr)
            report(args, figs, runs)
    finally:
        if tcp:
            tcp.stop()
        report(args, figs, runs)


def gpu_name():
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=10)
        return p.stdout.strip().splitlines()[0] if p.returncode == 0 and p.stdout.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def scrapes_cell(rs):
    got = [r["scrapes"] for r in rs if r.get("scrapes")]
    if not got:
        return "—"
    ok, failed, client = (sum(g[k] for g in got) for k in ("ok", "failed", "with_client"))
    return f"{ok} ok ({client} with a client), {failed} failed, {len(got)} runs"


def report(args, figs, runs):
    rows, raw, short = [], [], []
    for fig in figs:
        key = fig.group()
        modes = ["native"] + [m for m in fig.modes if (key, m) in runs]
        med, checks = {}, {}
        for m in modes:
            got = [r["results"].get(fig.pick) for r in runs.get((key, m), [])]
            vals = [g[fig.metric] for g in got if g and g.get(fig.metric) is not None]
            med[m] = statistics.median(vals) if vals else None
            checks[m] = {json.dumps(g.get("check")) for g in got if g}
            if len(vals) < args.reps:
                short.append(f"{fig.name} [{m}]: {len(vals)} of {args.reps}")
        same = {m: checks[m] == checks["native"] and len(checks[m]) == 1 for m in modes if m != "native"}
        rows.append((fig, med, same, runs.get((key, "shm-metrics"), []) if "shm-metrics" in modes else []))
        raw.append({"name": fig.name, "metric": fig.metric, "env": fig.env,
                    "runs": {m: [dict(r, results=r["results"].get(fig.pick)) for r in runs.get((key, m), [])]
                             for m in modes}})
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(raw, f, indent=1)
    if not hasattr(args, "gpu"):
        args.gpu = gpu_name()
    lines = [
        f"# Speed: native against vgpu on the {args.gpu}",
        "",
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, commit {args.commit}; median of {args.reps} runs "
        "each, native and vgpu alternating (`scripts/gpu-bench.sh`). Ratio = vgpu speed / native speed "
        "(for times: native time / vgpu time). \"same\": the check output (greedy tokens, checksums) is "
        "identical to native in every run of every vgpu mode. \"shm + metrics\": `vgpuctl run` whose host "
        "also serves /metrics, scraped once a second during the run (the per-client counters are counted "
        "in every mode); \"metrics / shm\" compares it with plain shm.",
        "",
        "| figure | unit | native | vgpu shm | ratio | target | same | shm + metrics | ratio | metrics / shm "
        "| scrapes | vgpu tcp | tcp ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plot = []
    for fig, med, same, metric_runs in rows:
        r = ratio(fig, med.get("native"), med.get("shm"))
        rm = ratio(fig, med.get("native"), med.get("shm-metrics"))
        rms = ratio(fig, med.get("shm"), med.get("shm-metrics"))
        rt = ratio(fig, med.get("native"), med.get("tcp"))
        tgt = "" if fig.target is None else f"≥ {fig.target}"
        hit = "" if fig.target is None or r is None else (" ✓" if r >= fig.target else " ✗")
        differ = [m for m, ok in same.items() if not ok]
        sm = "yes" if same and not differ else ("NO" if not same else "NO (" + ", ".join(differ) + ")")
        lines.append(f"| {fig.name} | {fig.unit} | {fmt(med.get('native'))} | {fmt(med.get('shm'))} | "
                     f"{fmt(r)}{hit} | {tgt} | {sm} | {fmt(med.get('shm-metrics'))} | {fmt(rm)} | "
                     f"{fmt(rms, 3)} | {scrapes_cell(metric_runs)} | {fmt(med.get('tcp'))} | {fmt(rt)} |")
        plot.append((fig.name, r, rt, fig.target, rm))
    if short:
        lines += ["", "Fewer runs than asked (cut short or failed): " + "; ".join(short) + "."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    try:
        make_plot(plot, os.path.join(args.out, "bench.png"), args.commit, args.gpu)
    except Exception as e:  # matplotlib missing or headless trouble: the table stands alone
        print(f"plot skipped: {e}", file=sys.stderr)


def make_plot(plot, path, commit, gpu):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [p[0] for p in plot]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    y = list(range(len(names)))
    ax.barh([i - 0.27 for i in y], [p[1] or 0 for p in plot], height=0.27, label="shm", color="#3b7dd8")
    ax.barh(y, [p[4] or 0 for p in plot], height=0.27, label="shm + metrics", color="#5aa469")
    ax.barh([i + 0.27 for i in y], [p[2] or 0 for p in plot], height=0.27, label="tcp", color="#e08a2c")
    for i, p in enumerate(plot):
        if p[3]:
            ax.plot([p[3], p[3]], [i - 0.45, i + 0.45], color="black", lw=1)
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to native (higher is better; black tick = target)")
    ax.set_title(f"vgpu on the {gpu}, commit {commit}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
