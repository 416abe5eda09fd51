#!/usr/bin/env bash
# On the GPU machine: builds the export-table spy and runs a client natively under it.
#   tests/stacks/spy/run-spy.sh OUTFILE TABLES CMD...   (TABLES: comma-separated UUIDs, or "all")
# The spy's lines ("SPY ...") go to OUTFILE; the client's own output to OUTFILE.out.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"; tables="$2"; shift 2
lib="$(mktemp -d)/export_table_spy.so"
gcc -shared -fPIC -O1 -Wall -o "${lib}" "${here}/export_table_spy.c" -ldl || exit 1
SPY_TABLES="${tables}" LD_PRELOAD="${lib}" "$@" > "${out}.out" 2> "${out}.err"
rc=$?
grep '^SPY' "${out}.err" > "${out}"
echo "rc ${rc}" >> "${out}"
