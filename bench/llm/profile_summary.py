#!/usr/bin/env python3
"""Summarises a `py-spy record --native --format raw` profile: of the samples whose stack contains
FILTER (default: a `generate` frame, i.e. decoding), the share whose leaf frame lies in each
library, and the share that has each library anywhere in the stack.

    profile_summary.py PROFILE.raw [--filter SUBSTR] [--top N]
"""
import argparse
import collections
import re


def library(frame):
    m = re.search(r"\(([^():]+?\.so[.\d]*)[^)]*\)", frame)
    if m:
        return m.group(1).split("/")[-1]
    m = re.search(r"\(([^():]+\.py)", frame)
    return "python:" + m.group(1).split("/")[-1] if m else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--filter", default="generate (")
    ap.add_argument("--top", type=int, default=14)
    a = ap.parse_args()
    leaf, anywhere, frames = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in open(a.profile, errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit() or a.filter not in stack:
            continue
        n = int(count)
        total += n
        parts = stack.split(";")
        leaf[library(parts[-1])] += n
        for lib in {library(p) for p in parts}:
            anywhere[lib] += n
        frames[parts[-1][:110]] += n
    print(f"{total} samples with {a.filter!r} in the stack")
    for title, counter in (("leaf library", leaf), ("library anywhere in the stack", anywhere),
                           ("leaf frame", frames)):
        print(f"-- {title}")
        for name, n in counter.most_common(a.top):
            print(f"{100 * n / max(total, 1):6.1f}%  {name}")


if __name__ == "__main__":
    main()
