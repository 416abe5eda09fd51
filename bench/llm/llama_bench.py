#!/usr/bin/env python3
"""llama.cpp figures for the speed benchmark (issue 10), run natively or under `vgpuctl run`.

    llama_bench.py --bin DIR --model FILE bench|load|complete

bench     llama-bench -p 512 -n 128, all layers on the GPU: prefill (pp512) and decode (tg128)
          tokens/s, one JSON line each
load      llama-completion with one token to generate: wall time from start to exit, ms
complete  llama-completion, 128 greedy tokens: decode tokens/s; check = the generated text

Prints one JSON line. GGML_CUDA_DISABLE_GRAPHS in the environment is passed through.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def bench(args, extra):
    cmd = [os.path.join(args.bin, "llama-bench"), "-m", args.model, "-ngl", "99", "-r", str(args.reps),
           "-o", "json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        sys.exit(p.returncode)
    return json.loads(p.stdout)


def completion(args, n):
    cmd = [os.path.join(args.bin, "llama-completion"), "-m", args.model, "-ngl", "99", "-n", str(n),
           "--temp", "0", "--seed", "1", "-p", "Once upon a time", "-no-cnv", "--no-warmup"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        sys.exit(p.returncode)
    return p, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("mode", choices=["bench", "load", "complete"])
    a = ap.parse_args()
    graphs = "off" if os.environ.get("GGML_CUDA_DISABLE_GRAPHS") else "on"
    if a.mode == "bench":
        for r in bench(a, ["-p", "512", "-n", "128"]):
            kind = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
            print(json.dumps({"bench": f"llama_{kind}_graphs_{graphs}", "tok_s": r["avg_ts"],
                              "check": [r["n_prompt"], r["n_gen"]]}))
    elif a.mode == "load":
        p, wall = completion(a, 1)
        m = re.search(r"load time =\s*([\d.]+) ms", p.stderr)
        print(json.dumps({"bench": "llama_load", "load_ms": round(wall * 1e3, 1),
                          "model_load_ms": float(m.group(1)) if m else None, "check": p.stdout}))
    else:
        p, _ = completion(a, 128)
        # llama_perf_context_print's lines: "…print: prompt eval time = …" then "…print:        eval
        # time = …"; the decode line is the one with nothing but spaces before "eval".
        ev = re.search(r"print:\s+eval time =.*?([\d.]+) tokens per second", p.stderr)
        pr = re.search(r"print:\s+prompt eval time =.*?([\d.]+) tokens per second", p.stderr)
        print(json.dumps({"bench": "llama_completion_128", "tok_s": float(ev.group(1)) if ev else None,
                          "prompt_tok_s": float(pr.group(1)) if pr else None, "check": p.stdout}))


if __name__ == "__main__":
    main()
