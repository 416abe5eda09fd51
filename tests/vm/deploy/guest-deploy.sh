#!/bin/sh
# Guest side of tests/vm/run-deploy-systemd.sh: runs inside vgpu-test.service of the Debian guest
# (systemd is PID 1). Sets up a fake ollama.service, then exercises the real vgpuctl:
#   install --restart, verify --json (checked against /proc, systemctl and journalctl directly),
#   uninstall --restart (service back without the shim, tree back to what it was);
# then the host side: vgpuctl host install, vgpu-host@vm1 on the fake driver, a workload holding
# 5 MiB seen by `vgpuctl top --once --instance vm1`, and the journal's CLIENT field.
# Prints one "DEPLOY PASS name" / "DEPLOY FAIL name: why" line per check and
# "DEPLOY-SUMMARY passed=N failed=M"; exits 0 only when nothing failed.
# Files come from $VGPU_DIR/files (vm-run.sh --file …:/vgpu/files/…); vgpuctl is on PATH.
F="$VGPU_DIR/files"
LIB=/usr/lib64/libvgpu-cuda.so
UNIT=ollama.service
DROPIN=/etc/systemd/system/ollama.service.d/vgpu.conf
passed=0 failed=0
ok() { echo "DEPLOY PASS $1"; passed=$((passed + 1)); }
bad() { echo "DEPLOY FAIL $1: $2"; failed=$((failed + 1)); }
check() { name="$1" why="$2"; shift 2; if "$@"; then ok "$name"; else bad "$name" "$why"; fi; }
not() { ! "$@"; }
t0=$(cut -d' ' -f1 /proc/uptime)
stamp() { awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "+%.1fs", b - a }'; }
say() { echo "deploy: $(stamp) $*"; }

mainpid() { systemctl show -p MainPID --value "$UNIT"; }
children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
mapped() { grep -q "libvgpu-cuda.so" /proc/"$1"/maps 2>/dev/null; }
# (Forks are slow under TCG: one grep reads every process's file, and skips processes that
# exit meanwhile.)
comm_pids() { grep -lx -- "$1" /proc/[0-9]*/comm 2>/dev/null | sed 's,^/proc/,,; s,/comm$,,'; }
mappers() { grep -l 'libvgpu-cuda\.so' /proc/[0-9]*/maps 2>/dev/null | sed 's,^/proc/,,; s,/maps$,,'; }
# Processes that map the shim, outside the service's cgroup.
stray_mappers() {
    for p in $(mappers); do
        grep -q "/$UNIT\$" "/proc/$p/cgroup" 2>/dev/null || echo "$p($(cat "/proc/$p/comm" 2>/dev/null))"
    done
}
journal_of() { journalctl -q -u "$UNIT" _PID="$1" -o cat --no-pager 2>/dev/null; }
# wait_for SECONDS CMD…: true once CMD succeeds (polled every 0.2 s).
wait_for() {
    n=$(($1 * 5)); shift
    while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done
    return 1
}
service_up() { # the service is active with a main process, its runner child, and its start line logged
    [ "$(systemctl is-active "$UNIT")" = active ] || return 1
    m=$(mainpid); [ -n "$m" ] && [ "$m" != 0 ] || return 1
    [ -n "$(children "$m")" ] || return 1
    journal_of "$m" | grep -q 'library='
}
# Every path vgpuctl may write, with type, mode, size, link target and content hash.
tree() {
    for p in /etc/systemd/system /var/lib/vgpu /etc/ld.so.preload /usr/lib64 /etc/environment; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            find "$p" -xdev -exec stat -c '%n %F %a %s %N' {} +
            find "$p" -xdev -type f -exec md5sum {} +
        else
            echo "absent $p"
        fi
    done | sort
}
# JSON from `vgpuctl verify --json` (serde_json pretty form): "id mark" per check.
marks() { awk -F'"' '/"id":/ { id = $4 } /"mark":/ { print id, $4 }' "$1"; }
mark_of() { marks "$1" | awk -v id="$2" '$1 == id { print $2; exit }'; }

check "PID 1 is systemd" "PID 1 is $(cat /proc/1/comm)" test "$(cat /proc/1/comm)" = systemd
say "setting up the fake ollama.service"
mkdir -p /usr/lib64 /usr/local/bin
install -m 0755 "$F/libvgpu-cuda.so" "$LIB"
install -m 0755 "$F/ollama-fake" /usr/local/bin/ollama
install -m 0644 "$F/ollama.service" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl start "$UNIT"
check "before: ollama.service up with its runner child" "$(systemctl status "$UNIT" 2>&1 | head -5)" \
    wait_for 20 service_up
m0=$(mainpid)
check "before: ollama logs library=cpu (no shim)" "$(journal_of "$m0")" sh -c "journalctl -q -u $UNIT _PID=$m0 -o cat | grep -q library=cpu"
check "before: shim not mapped in ollama (pid $m0)" "mapped" not mapped "$m0"
sshds=$(comm_pids sshd)
if [ -n "$sshds" ]; then ok "sshd is running in the guest (pids $(echo $sshds))"
else echo "deploy: note: no sshd running; the sshd checks only see vgpuctl's 'nothing to check'"; fi
before=$(tree)
say "baseline recorded"
check "vgpuctl is a dynamic executable using the image's libc" "ldd says: $(ldd "$(command -v vgpuctl)" 2>&1 | head -3)" \
    sh -c "ldd '$(command -v vgpuctl)' >/dev/null 2>&1"

say "vgpuctl install --service ollama --lib $LIB --restart"
vgpuctl install --service ollama --lib "$LIB" --restart; rc=$?
check "install --restart exits 0" "exit $rc" test "$rc" -eq 0
check "install: ollama.service back up with a new main pid and its runner" "not up" \
    wait_for 20 sh -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" != $m0 ]"
wait_for 20 service_up
m1=$(mainpid); kids1=$(children "$m1")
say "service restarted with the shim (main pid $m1)"
check "install: drop-in $DROPIN exists" "missing" test -f "$DROPIN"
check "install: systemctl show -p Environment has LD_PRELOAD=$LIB" "$(systemctl show -p Environment --value "$UNIT")" \
    sh -c "systemctl show -p Environment --value $UNIT | tr ' ' '\n' | grep -qx 'LD_PRELOAD=$LIB'"
check "install: shim mapped in the main pid $m1" "not in /proc/$m1/maps" mapped "$m1"
for k in $kids1; do
    check "install: shim mapped in the child $k ($(cat /proc/$k/comm))" "not in /proc/$k/maps" mapped "$k"
done
check "install: the service has a child to check" "no child" test -n "$kids1"
check "install: shim not mapped in PID 1 ($(cat /proc/1/comm))" "mapped" not mapped 1
for s in $(comm_pids sshd); do check "install: shim not mapped in sshd (pid $s)" "mapped" not mapped "$s"; done
all=" $(mappers | tr '\n' ' ')"
case "$all" in
    *" $m1 "*) ok "install: the /proc scan used below finds the shim in the main pid" ;;
    *) bad "install: the /proc scan used below finds the shim in the main pid" "found:$all" ;;
esac
stray=$(stray_mappers)
check "install: no process outside ollama.service maps the shim" "$stray" test -z "$stray"
check "install: journal of the new main pid shows library=cuda" "$(journal_of "$m1")" \
    wait_for 10 sh -c "journalctl -q -u $UNIT _PID=$m1 -o cat | grep -q library=cuda"
check "install: /etc/ld.so.preload does not name the shim" "$(cat /etc/ld.so.preload 2>/dev/null)" \
    not grep -qs libvgpu-cuda /etc/ld.so.preload
check "install: recovery script present" "missing" test -x /var/lib/vgpu/emergency-recovery.sh

say "vgpuctl verify --service ollama --json"
vgpuctl verify --service ollama --json >/tmp/verify.json; rc=$?
cat /tmp/verify.json
check "verify --json exits 0" "exit $rc" test "$rc" -eq 0
check "verify --json: \"ok\": true" "$(grep '"ok"' /tmp/verify.json)" grep -q '"ok": true' /tmp/verify.json
for id in dropin environment main children pid1 journal ld_so_preload; do
    mk=$(mark_of /tmp/verify.json "$id")
    check "verify --json: check '$id' is pass" "mark '$mk'" test "$mk" = pass
done
mk=$(mark_of /tmp/verify.json sshd)
if [ -n "$sshds" ]; then check "verify --json: check 'sshd' is pass" "mark '$mk'" test "$mk" = pass
else check "verify --json: check 'sshd' is info (no sshd)" "mark '$mk'" test "$mk" = info; fi
fails=$(marks /tmp/verify.json | awk '$2 == "fail"' | wc -l)
check "verify --json: no check failed" "$fails failed" test "$fails" -eq 0
say "vgpuctl verify --service ollama (human form)"
vgpuctl verify --service ollama

say "vgpuctl uninstall --restart"
vgpuctl uninstall --restart; rc=$?
check "uninstall --restart exits 0" "exit $rc" test "$rc" -eq 0
check "uninstall: ollama.service back up with a new main pid" "still $m1" \
    wait_for 20 sh -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" != $m1 ]"
check "uninstall: ollama.service up with its runner child" "not up" wait_for 20 service_up
m2=$(mainpid); kids2=$(children "$m2")
say "service restarted without the shim (main pid $m2)"
check "uninstall: drop-in gone" "still there" not test -e "$DROPIN"
check "uninstall: drop-in directory gone" "still there" not test -e "${DROPIN%/*}"
check "uninstall: /var/lib/vgpu gone" "still there" not test -e /var/lib/vgpu
check "uninstall: systemctl show -p Environment has no LD_PRELOAD" "$(systemctl show -p Environment --value "$UNIT")" \
    not sh -c "systemctl show -p Environment --value $UNIT | grep -q LD_PRELOAD"
check "uninstall: shim not mapped in the main pid $m2" "mapped" not mapped "$m2"
for k in $kids2; do check "uninstall: shim not mapped in the child $k" "mapped" not mapped "$k"; done
check "uninstall: journal of the new main pid shows library=cpu" "$(journal_of "$m2")" \
    wait_for 10 sh -c "journalctl -q -u $UNIT _PID=$m2 -o cat | grep -q library=cpu"
anymap=$(mappers)
check "uninstall: no process maps the shim" "$anymap" test -z "$anymap"
after=$(tree)
if [ "$before" = "$after" ]; then ok "uninstall: vgpuctl's paths are byte-for-byte as before install"
else
    bad "uninstall: vgpuctl's paths are byte-for-byte as before install" "differences below"
    echo "$before" >/tmp/before.tree; echo "$after" >/tmp/after.tree
    diff /tmp/before.tree /tmp/after.tree | head -20
fi
vgpuctl verify --service ollama >/tmp/verify-after.txt 2>&1; rc=$?
check "verify after uninstall fails (shim gone)" "exit $rc: $(cat /tmp/verify-after.txt)" test "$rc" -ne 0

say "vgpu-host@vm1 under systemd: the control socket and the journal's fields"
HOST_UNIT=vgpu-host@vm1.service
install -m 0755 "$F/vgpu-host" /usr/bin/vgpu-host
mkdir -p /usr/lib/vgpu-fake
install -m 0755 "$F/fake-libcuda.so.1" /usr/lib/vgpu-fake/libcuda.so.1
vgpuctl host install; rc=$?
check "host install exits 0" "exit $rc" test "$rc" -eq 0
mkdir -p "/etc/systemd/system/$HOST_UNIT.d"
# The fake driver, and the workload's 16 MiB quota through an instance's own ExecStart (as
# docs/host.md shows for a metrics port of its own).
cat >"/etc/systemd/system/$HOST_UNIT.d/test.conf" <<'EOF_UNIT'
[Service]
Environment=LD_LIBRARY_PATH=/usr/lib/vgpu-fake
ExecStart=
ExecStart=/usr/bin/vgpu-host --region /dev/shm/vgpu-%i --control /run/vgpu-host/%i/control.sock --client-memory-mib 16
EOF_UNIT
systemctl daemon-reload
systemctl start "$HOST_UNIT"
check "vgpu-host@vm1 serves its control socket" "$(systemctl status "$HOST_UNIT" 2>&1 | tail -5)" \
    wait_for 60 test -S /run/vgpu-host/vm1/control.sock
# The workload holds everything until its stdin closes: a pipe from a long sleep. (Installed
# first: $F may be on a noexec mount.)
install -m 0755 "$F/workload" /usr/local/bin/vgpu-workload
sleep 600 | LD_PRELOAD="$LIB" VGPU_REGION=/dev/shm/vgpu-vm1 /usr/local/bin/vgpu-workload >/tmp/workload.out 2>&1 &
wpid=$!
if wait_for 60 grep -q ready /tmp/workload.out; then ok "the workload is ready"
else
    bad "the workload is ready" "output: $(cat /tmp/workload.out)"
    ls -la /dev/shm
    journalctl -q -u "$HOST_UNIT" -o cat --no-pager | tail -20
fi
vgpuctl top --once --instance vm1 --interval 0.2 >/tmp/top.txt 2>&1; rc=$?
cat /tmp/top.txt
check "top --once --instance vm1 shows the workload's 5 MiB" "exit $rc: $(cat /tmp/top.txt)" \
    sh -c "grep -E '^$wpid +region +5.0 MiB' /tmp/top.txt"
client=$(awk -v p="$wpid" '$1 == p { print $(NF - 1) }' /tmp/top.txt)
check "the journal's CLIENT=$client field picks the supervisor's line" \
    "$(journalctl -q -u "$HOST_UNIT" -o verbose --no-pager | tail -40)" \
    sh -c "journalctl -q -u $HOST_UNIT CLIENT=$client -o cat --no-pager | grep -q 'new client'"
kill "$wpid"
check "the journal's CLIENT field picks the worker's line (its span)" \
    "$(journalctl -q -u "$HOST_UNIT" -o cat --no-pager | tail -10)" \
    wait_for 20 sh -c "journalctl -q -u $HOST_UNIT CLIENT=$client PID=$wpid -o cat --no-pager | grep -q 'client exited'"
systemctl stop "$HOST_UNIT"
check "the control socket is gone with the host" "still there" not test -e /run/vgpu-host/vm1/control.sock

say "done"
echo "DEPLOY-SUMMARY passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
