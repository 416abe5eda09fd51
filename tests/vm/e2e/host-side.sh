#!/usr/bin/env bash
# Host side of tests/vm/run-vgpu-e2e.sh, run by scripts/vm-run.sh --host while the guest boots.
# Serves the ivshmem backing file ($VGPU_REGION, $VGPU_REGION_SIZE from vm-run.sh) with the real
# vgpu-host in Poll doorbell mode and a fake driver, follows the guest through its serial log,
# and records one "PASS name" / "FAIL name: why" line per check in $E2E_RESULTS.
#
# Environment (set by the runner):
#   E2E_HOST_BIN   vgpu-host executable        E2E_DRIVER   fake libcuda.so.1
#   E2E_SERIAL     the guest's serial log (vm-run.sh --log), read while QEMU writes it
#   E2E_RESULTS    file for the check lines    E2E_HOST_LOG file for vgpu-host's stderr
#   E2E_PEER_MS    --peer-timeout-ms           E2E_MODE     "serve" (default) or "futex"
#   E2E_HOLD_S     how long the guest keeps its client alive after it is done (serve mode)
# Every wait is bounded. Exit status: 0 when every check passed.
set -uo pipefail

: "${VGPU_REGION:?} ${VGPU_REGION_SIZE:?} ${E2E_HOST_BIN:?} ${E2E_DRIVER:?} ${E2E_SERIAL:?}"
: "${E2E_RESULTS:?} ${E2E_HOST_LOG:?}"
peer_ms="${E2E_PEER_MS:-2000}" mode="${E2E_MODE:-serve}" hold_s="${E2E_HOLD_S:-6}"
failed=0
pass() { echo "PASS $1" >>"$E2E_RESULTS"; echo "e2e-host: PASS $1"; }
fail() { echo "FAIL $1: $2" >>"$E2E_RESULTS"; echo "e2e-host: FAIL $1: $2"; failed=1; }
check() { local name="$1" why="$2"; shift 2; if "$@"; then pass "$name"; else fail "$name" "$why"; fi; }
now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# wait_grep PATTERN FILE SECONDS: true once FILE has a line matching PATTERN (ERE).
wait_grep() {
    local end=$(($(date +%s) + $3))
    while [ "$(date +%s)" -lt "$end" ]; do
        tr -d '\r' <"$2" 2>/dev/null | grep -Eq -- "$1" && return 0
        sleep 0.05
    done
    return 1
}
serial_value() { tr -d '\r' <"$E2E_SERIAL" | sed -n "s/^E2E $1=//p" | tail -1; }
workers_named() { ps -o comm= --ppid "$host_pid" 2>/dev/null | grep -cx -- "$1"; }


doorbell=poll
[ "$mode" = futex ] && doorbell=futex
# QEMU was started just before us (it may still be exec'ing); its command line names the
# backing file.
qemu_pid=""
for _ in $(seq 100); do
    qemu_pid="$(pgrep -f -- "mem-path=$VGPU_REGION," | head -1)"
    [ -n "$qemu_pid" ] && break
    sleep 0.1
done

"$E2E_HOST_BIN" --region "$VGPU_REGION" --region-size "$VGPU_REGION_SIZE" --doorbell "$doorbell" \
    --driver "$E2E_DRIVER" --peer-timeout-ms "$peer_ms" --log info 2>"$E2E_HOST_LOG" &
host_pid=$!
stop_host() {
    [ -n "$host_pid" ] || return 0
    kill -TERM "$host_pid" 2>/dev/null
    local end=$(($(date +%s) + 6)) rc
    while kill -0 "$host_pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
    if kill -0 "$host_pid" 2>/dev/null; then
        kill -KILL "$host_pid" 2>/dev/null
        wait "$host_pid" 2>/dev/null
        host_pid=""
        return 137
    fi
    wait "$host_pid"; rc=$?
    host_pid=""
    return "$rc"
}
trap 'stop_host >/dev/null 2>&1' EXIT

check "host serving the ivshmem backing file ($doorbell doorbell)" "no 'serving' line within 30 s" \
    wait_grep "vgpu-host: serving $VGPU_REGION" "$E2E_HOST_LOG" 30
check "host region left at the backing file's size ($VGPU_REGION_SIZE bytes)" \
    "size is now $(stat -c %s "$VGPU_REGION")" test "$(stat -c %s "$VGPU_REGION")" -eq "$VGPU_REGION_SIZE"

if ! wait_grep '^E2E-DONE rc=' "$E2E_SERIAL" 150; then
    fail "guest program finished" "no E2E-DONE line in the serial log within 150 s"
    stop_host
    exit 1
fi
guest_pid="$(serial_value pid)"

if [ "$mode" = futex ]; then
    # A Futex region cannot be used from another kernel: the guest must be refused, the host
    # must never see a client.
    check "futex region: no client reached the host" "host log has 'new client'" \
        bash -c "! grep -q 'new client' '$E2E_HOST_LOG'"
    stop_host; rc=$?
    check "host stops cleanly on SIGTERM (exit 0)" "exit status $rc" test "$rc" -eq 0
    exit "$failed"
fi

# One worker serves the guest process; its pid is the guest's and means nothing here.
new_clients="$(grep -c 'new client' "$E2E_HOST_LOG")"
check "host log: exactly one new client" "$new_clients 'new client' lines" test "$new_clients" -eq 1
check "host log: the client is the guest's pid $guest_pid" "$(grep 'new client' "$E2E_HOST_LOG" | head -1)" \
    grep -Eq "new client .*pid=$guest_pid " "$E2E_HOST_LOG"
check "worker: guest pid $guest_pid not visible on this kernel (transport liveness)" \
    "no 'client pid not visible here' line for pid $guest_pid" \
    grep -Eq "client pid not visible here.*pid=$guest_pid\b" "$E2E_HOST_LOG"
check "host: no local process is the guest program (pid $guest_pid)" "/proc/$guest_pid/comm is cuda_probe" \
    test "$(cat "/proc/$guest_pid/comm" 2>/dev/null)" != cuda_probe
n="$(workers_named "vgpuw-$guest_pid")"
check "one worker process vgpuw-$guest_pid under vgpu-host" "$n such workers" test "$n" -eq 1

# The guest is done but keeps its client alive: an idle live client keeps its worker past the
# peer timeout (its heartbeat keeps beating).
sleep "$(awk -v p="$peer_ms" 'BEGIN { printf "%.2f", p * 1.5 / 1000 }')"
n="$(workers_named "vgpuw-$guest_pid")"
check "worker still there $((peer_ms * 3 / 2)) ms after the guest went idle (heartbeat)" "$n workers" \
    test "$n" -eq 1

# Now the guest powers off with the client still holding its channel.
if [ -z "$qemu_pid" ]; then
    fail "guest powered off" "could not find the QEMU process"
else
    end=$(($(date +%s) + hold_s + 60))
    while kill -0 "$qemu_pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
    if kill -0 "$qemu_pid" 2>/dev/null; then
        fail "guest powered off" "QEMU still running"
    else
        off_at="$(now)"
        pass "guest powered off with the client still connected"
        # Documented rule (docs/host.md, liveness rule 2): the channel ends with PeerGone after
        # one peer timeout without heartbeat, the worker exits one more peer timeout later.
        bound_ms=$((peer_ms * 2 + 2000))
        end=$(($(date +%s) + bound_ms / 1000 + 5))
        while [ "$(workers_named "vgpuw-$guest_pid")" -gt 0 ] && [ "$(date +%s)" -lt "$end" ]; do
            sleep 0.05
        done
        gone_s="$(secs_since "$off_at")"
        echo "e2e-host: worker gone $gone_s s after the guest powered off (peer timeout $peer_ms ms)"
        echo "WORKER_EXIT_S $gone_s" >>"$E2E_RESULTS"
        check "worker exits within 2 x peer timeout + 2 s of power-off (took ${gone_s} s, bound $((bound_ms / 1000)) s)" \
            "still running" awk -v g="$gone_s" -v b="$bound_ms" 'BEGIN { exit !(g * 1000 <= b) }'
        check "worker did not exit before one peer timeout (took ${gone_s} s)" "exited too early" \
            awk -v g="$gone_s" -v p="$peer_ms" 'BEGIN { exit !(g * 1000 >= p * 0.9) }'
        check "worker log: 'client silent for the peer timeout; worker exits'" "line missing" \
            wait_grep "client silent for the peer timeout; worker exits.*pid=$guest_pid" "$E2E_HOST_LOG" 3
        check "supervisor log: worker exited (client $guest_pid)" "line missing" \
            wait_grep "worker exited .*pid=$guest_pid\b" "$E2E_HOST_LOG" 3
    fi
fi

stop_host; rc=$?
check "host stops cleanly on SIGTERM (exit 0)" "exit status $rc" test "$rc" -eq 0
check "backing file kept (the host did not create it)" "gone" test -f "$VGPU_REGION"
exit "$failed"
