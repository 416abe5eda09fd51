#!/usr/bin/env bash
# Boots a throw-away QEMU guest with an ivshmem-plain device and runs one command in it,
# optionally with a host command running at the same time on the same shared memory.
#
# Usage: scripts/vm-run.sh [options] -- GUEST_COMMAND...
#
#   --bin PATH          copy a program into the guest's /vgpu/bin, on its PATH (repeatable). Static binaries are best;
#                       a dynamic one gets its interpreter and libraries (from ldd) copied as well.
#   --file SRC:DEST     copy a file to DEST inside the guest (repeatable)
#   --host 'CMD'        shell command run on the host while the guest runs; it sees
#                       VGPU_REGION=/dev/shm/... (the backing file) and VGPU_REGION_SIZE
#   --env NAME=VALUE    set in the guest command's environment (repeatable)
#   --shm-size SIZE     region size, a power of two: bytes or with K/M/G suffix (default 1M)
#   --no-shm            no ivshmem device
#   --module NAME       insmod a module (and its dependencies) from the cached kernel (repeatable)
#   --timeout SECS      hard limit for the whole run; QEMU and the host command are killed (default 120)
#   --grace SECS        how long one side may keep running after the other failed (default 10)
#   --mem SIZE          guest memory (default 512M)   --smp N   guest CPUs (default 1)
#   --accel tcg|kvm     default tcg; kvm (-cpu host) needs /dev/kvm and is not tested (see docs/vm.md)
#   --root-image IMG    boot IMG (an ext4 image from scripts/vm-debian.sh) with systemd as PID 1;
#                       it is opened read-only (changes go to a throw-away overlay)
#   --log PATH          keep the guest serial log here (default: printed, then deleted)
#   --quiet             print the guest log only on failure
#
# The guest sees VGPU_REGION=/sys/bus/pci/devices/<BDF>/resource2 (mmap it; read(2) does not work)
# and VGPU_REGION_SIZE. Exit status: 0 when the guest command and the host command both exit 0,
# 1 otherwise (including timeouts and a guest that never reported), 2 for bad usage.
# Needs scripts/vm-setup.sh first. VGPU_VM_CACHE as in vm-setup.sh.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${VGPU_VM_CACHE:-$HOME/.cache/vgpu/vm}"

die_usage() { echo "vm-run: error: $*" >&2; exit 2; }
log() { echo "vm-run: $*"; }

bins=() files=() envs=() modules=()
host_cmd="" shm_size="1M" use_shm=1 timeout_s=120 grace_s=10 mem="512M" smp=1 accel="tcg"
keep_log="" quiet=0 root_image=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bins+=("${2:?}"); shift 2 ;;
        --file) files+=("${2:?}"); shift 2 ;;
        --host) host_cmd="${2:?}"; shift 2 ;;
        --env) envs+=("${2:?}"); shift 2 ;;
        --shm-size) shm_size="${2:?}"; shift 2 ;;
        --no-shm) use_shm=0; shift ;;
        --module) modules+=("${2:?}"); shift 2 ;;
        --timeout) timeout_s="${2:?}"; shift 2 ;;
        --grace) grace_s="${2:?}"; shift 2 ;;
        --mem) mem="${2:?}"; shift 2 ;;
        --smp) smp="${2:?}"; shift 2 ;;
        --accel) accel="${2:?}"; shift 2 ;;
        --log) keep_log="${2:?}"; shift 2 ;;
        --root-image) root_image="${2:?}"; shift 2 ;;
        --quiet) quiet=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die_usage "unknown option '$1' (see --help)" ;;
    esac
done
[ $# -gt 0 ] || die_usage "no guest command given (… -- GUEST_COMMAND)"
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || die_usage "--timeout must be a positive integer"
[[ "$grace_s" =~ ^[0-9]+$ ]] || die_usage "--grace must be an integer"
case "$accel" in
    tcg) cpu=max ;;
    kvm) cpu=host; [ -w /dev/kvm ] || die_usage "--accel kvm needs a writable /dev/kvm" ;;
    *) die_usage "--accel must be tcg or kvm" ;;
esac

to_bytes() {
    local v="$1" n unit
    [[ "$v" =~ ^([0-9]+)([KMG]?)$ ]] || return 1
    n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[2]}"
    case "$unit" in K) n=$((n << 10)) ;; M) n=$((n << 20)) ;; G) n=$((n << 30)) ;; esac
    echo "$n"
}
shm_bytes="$(to_bytes "$shm_size")" || die_usage "--shm-size '$shm_size' is not a size"
[ "$shm_bytes" -ge 4096 ] && [ $((shm_bytes & (shm_bytes - 1))) -eq 0 ] \
    || die_usage "--shm-size must be a power of two of at least 4K (got $shm_bytes)"

[ -s "$cache/vmlinuz" ] || { echo "vm-run: error: no kernel in $cache; run scripts/vm-setup.sh" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "vm-run: error: qemu-system-x86_64 missing; run scripts/vm-setup.sh" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "vm-run: error: /bin/busybox missing; run scripts/vm-setup.sh" >&2; exit 1; }

work="$(mktemp -d /tmp/vgpu-vm.XXXXXX)"
shm_path="/dev/shm/vgpu-vm-$$-${work##*.}"
qemu_pid="" host_pid="" host_pgid=""
kill_qemu() { [ -z "$qemu_pid" ] || kill -KILL "$qemu_pid" 2>/dev/null || true; }
kill_host() {
    [ -n "$host_pid" ] || return 0
    kill -KILL -- "-$host_pid" 2>/dev/null || true
    kill -KILL "$host_pid" 2>/dev/null || true
}
cleanup() {
    set +e
    kill_qemu
    kill_host
    # Anything the host command left behind in its process group.
    [ -z "$host_pgid" ] || kill -KILL -- "-$host_pgid" 2>/dev/null || true
    rm -rf "$work"
    rm -f "$shm_path"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- initramfs ----
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,vgpu}
cp /bin/busybox "$root/bin/busybox"
cp "$repo/tests/vm/init" "$root/init"
cp "$repo/tests/vm/guest-run" "$root/vgpu/guest-run"
chmod 0755 "$root/init" "$root/vgpu/guest-run"
mkdir -p "$root/vgpu/bin"

is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }
copy_libs() {
    local lib
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
        [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
}
for b in ${bins[@]+"${bins[@]}"}; do
    [ -f "$b" ] || { echo "vm-run: error: --bin $b: no such file" >&2; exit 1; }
    cp -L "$b" "$root/vgpu/bin/"
    chmod 0755 "$root/vgpu/bin/$(basename "$b")"
    if ! is_static "$b"; then
        log "note: $(basename "$b") is dynamically linked; copying its libraries from the host"
        copy_libs "$b"
    fi
done
for f in ${files[@]+"${files[@]}"}; do
    src="${f%%:*}" dest="${f#*:}"
    [ "$src" != "$f" ] && [ -n "$dest" ] || die_usage "--file wants SRC:DEST (got '$f')"
    [ -e "$src" ] || { echo "vm-run: error: --file $src: no such file" >&2; exit 1; }
    mkdir -p "$root$(dirname "$dest")"
    cp -rL "$src" "$root$dest"
    if [ -f "$src" ] && [ -x "$src" ] && ! is_static "$src"; then copy_libs "$src"; fi
done
if [ -n "$root_image" ]; then
    [ -f "$root_image" ] || { echo "vm-run: error: --root-image $root_image: no such file" >&2; exit 1; }
    modules+=(virtio_pci virtio_blk)
fi
if [ "${#modules[@]}" -gt 0 ]; then
    dep="$cache/modules/modules.dep"
    [ -f "$dep" ] || { echo "vm-run: error: $dep missing; run scripts/vm-setup.sh" >&2; exit 1; }
    declare -A seen=()
    add_module() {
        local name="${1//-/_}" line path d
        line="$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$dep" | head -1)" \
            || { echo "vm-run: error: module $1 not in $dep" >&2; exit 1; }
        path="${line%%:*}"
        [ -n "${seen[$path]:-}" ] && return
        seen[$path]=1
        for d in ${line#*:}; do add_module "$(basename "${d%%.ko*}")"; done
        mkdir -p "$root/lib/modules/$(dirname "$path")"
        cp "$cache/modules/$path" "$root/lib/modules/$path"
        echo "/lib/modules/$path" >>"$root/vgpu/modules"
    }
    for m in "${modules[@]}"; do add_module "$m"; done
fi
{
    for e in ${envs[@]+"${envs[@]}"}; do
        [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env wants NAME=VALUE (got '$e')"
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    done
} >"$root/vgpu/env"
printf '%q ' "$@" >"$root/vgpu/cmd"
echo >>"$root/vgpu/cmd"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/initrd.cpio"

# ---- run ----
serial="${keep_log:-$work/serial.log}"
: >"$serial"
qemu_args=(
    -nodefaults -no-user-config -nographic -no-reboot
    -machine pc -accel "$accel" -cpu "$cpu" -m "$mem" -smp "$smp"
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.cpio"
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off${root_image:+ vgpu.root=/dev/vda}"
    -serial "file:$serial" -monitor none
)
if [ -n "$root_image" ]; then
    qemu_args+=(-drive "file=$root_image,if=virtio,format=raw,snapshot=on")
fi
if [ "$use_shm" -eq 1 ]; then
    truncate -s "$shm_bytes" "$shm_path"
    qemu_args+=(
        -object "memory-backend-file,id=vgpu-shm,share=on,mem-path=$shm_path,size=$shm_bytes"
        -device "ivshmem-plain,memdev=vgpu-shm"
    )
fi

t0=$(date +%s.%N)
qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$work/qemu.out" 2>&1 &
qemu_pid=$!
if [ -n "$host_cmd" ]; then
    # Own process group so that a timeout kills the whole host command.
    VGPU_REGION="$shm_path" VGPU_REGION_SIZE="$shm_bytes" \
        setsid bash -c "$host_cmd" </dev/null > >(sed -u 's/^/host| /') 2>&1 &
    host_pid=$! host_pgid=$!
fi

elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
qemu_rc="" host_rc="" timed_out=0 first_fail_at="" stopping=0
deadline=$(( $(date +%s) + timeout_s ))
while :; do
    if [ -z "$qemu_rc" ] && ! kill -0 "$qemu_pid" 2>/dev/null; then
        wait "$qemu_pid" && qemu_rc=0 || qemu_rc=$?
        qemu_pid=""
    fi
    if [ -n "$host_pid" ] && [ -z "$host_rc" ] && ! kill -0 "$host_pid" 2>/dev/null; then
        wait "$host_pid" && host_rc=0 || host_rc=$?
        host_pid=""
    fi
    [ -n "$qemu_rc" ] && { [ -z "$host_cmd" ] || [ -n "$host_rc" ]; } && break
    now=$(date +%s)
    # One side is done: the other gets --grace seconds (the guest is done when QEMU is).
    if [ -z "$first_fail_at" ] && { [ -n "$qemu_rc" ] || { [ -n "$host_rc" ] && [ "$host_rc" -ne 0 ]; }; }; then
        first_fail_at=$now
    fi
    if [ "$stopping" -eq 0 ] && { [ "$now" -ge "$deadline" ] \
            || { [ -n "$first_fail_at" ] && [ $((now - first_fail_at)) -ge "$grace_s" ]; }; }; then
        stopping=1
        if [ "$now" -ge "$deadline" ]; then
            timed_out=1
        else
            log "the other side ended ${grace_s}s ago (--grace)"
        fi
        [ -n "$qemu_pid" ] && { log "killing QEMU (still running)"; kill_qemu; }
        [ -n "$host_pid" ] && { log "killing the host command (still running)"; kill_host; }
    fi
    sleep 0.1
done
total="$(elapsed)"

guest_rc="$(tr -d '\r' <"$serial" | sed -n 's/^VGPU-VM-EXIT rc=\([0-9]*\)$/\1/p' | tail -1)"
ready_at="$(tr -d '\r' <"$serial" | sed -n 's/^vgpu-vm: ready after \([0-9.]*\)s.*/\1/p' | tail -1)"
ok=1
[ "$guest_rc" = 0 ] || ok=0
[ -z "$host_cmd" ] || [ "$host_rc" = 0 ] || ok=0
if [ "$ok" -eq 0 ] || [ "$quiet" -eq 0 ]; then
    tr -d '\r' <"$serial" | sed -E 's/\x1b(\[[0-9;?]*[A-Za-z]|c)//g; s/^/guest| /'
    if [ -s "$work/qemu.out" ]; then sed 's/^/qemu| /' "$work/qemu.out"; fi
fi
[ "$timed_out" -eq 1 ] && log "hit the time limit (--timeout $timeout_s)"
[ -n "$guest_rc" ] || log "guest never reported an exit code (no VGPU-VM-EXIT line; QEMU rc=${qemu_rc:-killed})"
host_desc="n/a"
[ -n "$host_cmd" ] && host_desc="${host_rc:-none}"
log "guest rc=${guest_rc:-none} host rc=$host_desc guest-ready=${ready_at:-?}s (guest uptime) total=${total}s wall"
[ "$ok" -eq 1 ] && exit 0 || exit 1
