#!/usr/bin/env python3
"""PyTorch figures for the speed benchmark (issue 10), run natively or under `vgpuctl run`.

    torch_bench.py decode [--sdpa default|no-cudnn|both] [--tokens N]   HF Llama (~1B, random weights, bf16)
    torch_bench.py tinyop [--ops N]                                 z.add_(1) in a loop
    torch_bench.py copy --kind pinned|pageable --dir h2d|d2h --mib N [--reps N] [--pin-each]
    torch_bench.py suite                                            tinyop and every copy, one process
    torch_bench.py where [--sdpa ...] [--tokens N]                  where a decode step's time goes

`where` prints, for one decode run after a warm-up: each token's wall time, the process's CPU
time (user, system) per token, and a CPU-only torch.profiler table (no CUPTI needed) of the ops
with the most self CPU time per token. Run it natively and through vgpu and compare.

Prints one JSON line per figure on stdout: {"bench": ..., figures..., "check": ...}. "check" is
what must be identical between native and vgpu (the greedy tokens, a checksum), so the caller
can diff it.
"""
import argparse
import json
import statistics
import sys
import time

import torch


def sync():
    torch.cuda.synchronize()


def build_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
        max_position_embeddings=4096, tie_word_embeddings=True,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16), device="cuda")
    return model, prompt


def decode(args):
    model, prompt = build_model()
    gen = dict(do_sample=False, pad_token_id=0, eos_token_id=None)

    def run(n):
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **gen)
        sync()
        return time.perf_counter() - t, out

    for sdpa in (["default", "no-cudnn"] if args.sdpa == "both" else [args.sdpa]):
        torch.backends.cuda.enable_cudnn_sdp(sdpa == "default")
        run(4)  # warm-up: kernels, compiled attention, allocator
        t_short, _ = run(1)
        times = []
        for _ in range(args.reps):
            t, out = run(args.tokens)
            times.append(t)
        t = statistics.median(times)
        # Decode speed without the prompt's prefill: (N-1) tokens in the time beyond a 1-token run.
        tok_s = (args.tokens - 1) / max(t - t_short, 1e-9)
        tokens = out[0, prompt.shape[1]:].tolist()
        print(json.dumps({"bench": f"torch_decode_{sdpa}", "tok_s": round(tok_s, 2),
                          "ms_per_token": round(1e3 / tok_s, 3), "runs_s": [round(x, 4) for x in times],
                          "check": tokens}), flush=True)


def where(args):
    import resource
    from torch.profiler import ProfilerActivity, profile

    model, prompt = build_model()
    gen = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    torch.backends.cuda.enable_cudnn_sdp(args.sdpa == "default")

    class Stamps:  # a streamer: put() is called once for the prompt, then once per new token
        def __init__(self):
            self.t = []

        def put(self, _):
            torch.cuda.synchronize()
            self.t.append(time.perf_counter())

        def end(self):
            pass

    def run(n, streamer=None):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, streamer=streamer, **gen)

    run(4)
    stamps = Stamps()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(args.tokens, stamps)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    steps = [(b - a) * 1e3 for a, b in zip(stamps.t[1:], stamps.t[2:])]
    n = args.tokens
    print(json.dumps({"bench": f"where_{args.sdpa}", "wall_ms_per_token": round((t1 - t0) * 1e3 / n, 3),
                      "user_ms_per_token": round((r1.ru_utime - r0.ru_utime) * 1e3 / n, 3),
                      "sys_ms_per_token": round((r1.ru_stime - r0.ru_stime) * 1e3 / n, 3),
                      "step_ms": {"median": round(statistics.median(steps), 3), "min": round(min(steps), 3),
                                  "max": round(max(steps), 3)},
                      "steps_ms": [round(x, 2) for x in steps]}), flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(args.tokens)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    for e in rows:
        print(json.dumps({"op": e.key, "calls_per_token": round(e.count / n, 2),
                          "self_cpu_ms_per_token": round(e.self_cpu_time_total / 1e3 / n, 3),
                          "cpu_ms_per_token": round(e.cpu_time_total / 1e3 / n, 3)}), flush=True)


def tinyop(args):
    z = torch.zeros(1, device="cuda")
    for _ in range(1000):
        z.add_(1)
    sync()
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(args.ops):
            z.add_(1)
        sync()
        best.append((time.perf_counter() - t) / args.ops * 1e6)
    print(json.dumps({"bench": "torch_tinyop", "us_per_op": round(statistics.median(best), 3),
                      "check": float(z.item())}), flush=True)


def copy(args):
    n = args.mib << 20
    pinned = args.kind == "pinned"
    host = torch.empty(n, dtype=torch.uint8, pin_memory=pinned)
    host.copy_(torch.arange(n, dtype=torch.int64).to(torch.uint8))
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    if args.dir == "h2d":
        src, dst = host, dev
    else:
        dev.copy_(host)
        host.zero_()
        src, dst = dev, host
    pageable_src = torch.empty(n, dtype=torch.uint8).copy_(host) if args.pin_each else None

    def one():
        if args.pin_each:  # a DataLoader's pattern: pin each batch, then copy it
            dst.copy_(pageable_src.pin_memory(), non_blocking=True)
        else:
            dst.copy_(src, non_blocking=pinned)

    for _ in range(3):
        one()
    sync()
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(args.reps):
            one()
        sync()
        rates.append(n * args.reps / (time.perf_counter() - t) / 1e9)
    check = int(dst.to("cpu" if dst.is_cuda else "cpu")[:: max(1, n // 4096)].to(torch.int64).sum())
    print(json.dumps({"bench": f"torch_copy_{args.kind}_{args.dir}_{args.mib}MiB{'_pin_each' if args.pin_each else ''}",
                      "gb_s": round(statistics.median(rates), 3), "check": check}), flush=True)


SUITE = [  # (kind, dir, MiB, reps, pin_each)
    ("pinned", "h2d", 1, 20, False), ("pinned", "h2d", 1, 20, True), ("pinned", "d2h", 1, 20, False),
    ("pinned", "h2d", 64, 10, False), ("pageable", "h2d", 1, 20, False), ("pageable", "d2h", 1, 20, False),
    ("pageable", "h2d", 64, 10, False), ("pageable", "d2h", 64, 10, False),
]


def suite(args):
    tinyop(argparse.Namespace(ops=20000))
    for kind, direction, mib, reps, pin_each in SUITE:
        copy(argparse.Namespace(kind=kind, dir=direction, mib=mib, reps=reps, pin_each=pin_each))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--sdpa", choices=["default", "no-cudnn", "both"], default="default")
    d.add_argument("--tokens", type=int, default=32)
    d.add_argument("--reps", type=int, default=1)
    t = sub.add_parser("tinyop")
    t.add_argument("--ops", type=int, default=20000)
    c = sub.add_parser("copy")
    c.add_argument("--kind", choices=["pinned", "pageable"], required=True)
    c.add_argument("--dir", choices=["h2d", "d2h"], required=True)
    c.add_argument("--mib", type=int, required=True)
    c.add_argument("--reps", type=int, default=20)
    c.add_argument("--pin-each", action="store_true", help="h2d: pin_memory() a pageable copy each time")
    sub.add_parser("suite")
    w = sub.add_parser("where")
    w.add_argument("--sdpa", choices=["default", "no-cudnn"], default="default")
    w.add_argument("--tokens", type=int, default=16)
    w.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    {"decode": decode, "tinyop": tinyop, "copy": copy, "suite": suite, "where": where}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
