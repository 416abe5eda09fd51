#!/usr/bin/env bash
# Builds workspace programs as static executables for the VM guest and prints their paths, one a line.
#
# Usage: tests/vm/build-static.sh CARGO_ARGS...
#   tests/vm/build-static.sh -p transport --example transport-echo
#   tests/vm/build-static.sh -p transport --test multiprocess        (test binaries: --no-run is added)
#
# Uses RUSTFLAGS='-C target-feature=+crt-static' with an explicit --target x86_64-unknown-linux-gnu,
# so that build scripts and proc macros stay dynamic host programs while the outputs are static-pie
# glibc executables (the musl target is not needed). Outputs land in
# target/x86_64-unknown-linux-gnu/, apart from the normal build. Cargo's own output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { echo "usage: $0 CARGO_ARGS... (e.g. -p transport --example transport-echo)" >&2; exit 2; }

sub=build
for a in "$@"; do
    case "$a" in --test|--tests|--lib|--bins|--benches) sub=test ;; esac
done
extra=()
[ "$sub" = test ] && extra=(--no-run)

json="$(RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo "$sub" ${extra[@]+"${extra[@]}"} --target x86_64-unknown-linux-gnu -j2 \
    --message-format=json-render-diagnostics "$@")"
paths="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' \
    | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//')"
[ -n "$paths" ] || { echo "build-static: error: cargo $sub $* produced no executable" >&2; exit 1; }
for p in $paths; do
    if readelf -l "$p" | grep -q 'Requesting program interpreter'; then
        echo "build-static: error: $p is dynamically linked" >&2
        exit 1
    fi
done
printf '%s\n' "$paths"
