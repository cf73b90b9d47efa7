#!/usr/bin/env bash
# Board acceptance test: boot an emulated aarch64 board (real Debian, real systemd,
# udev, a USB stick) under qemu-system-aarch64 and prove rvm-backup's board paths end
# to end: the daemon under systemd, backups, the platform's socket access, and (as
# they exist) export to the stick and the boot-time disaster restore.
#
# usage: board/accept/run.sh [BOOT...]     (default: all; see the list below)
#   smoke     the base system reaches multi-user and powers itself off
#   healthy   boot 1: daemon, watchdog, socket, scheduled backups
# env: RVM_ACCEPT_BINARY  the aarch64 binary (default target/board/rvm-backup, built
#                         by cross/build-release.sh when missing)
#      RVM_ACCEPT_WORK    scratch directory (default /var/tmp/rvm-board-accept)
#      RVM_ACCEPT_CACHE   cache of the base system (see rootfs.sh)
# Needs root. Prints one line per boot with its time; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
ALL_BOOTS=(smoke healthy)

die() {
    printf 'board-accept: %s\n' "$*" >&2
    exit 1
}
log() { printf '[board-accept %4ds] %s\n' "$SECONDS" "$*"; }

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, image owners, binfmt)"
boots=("$@")
[ "${#boots[@]}" -gt 0 ] || boots=("${ALL_BOOTS[@]}")

"$here/host-deps.sh"

binary=${RVM_ACCEPT_BINARY:-$repo/target/board/rvm-backup}
if [ ! -f "$binary" ]; then
    log "no $binary: building it (cross/build-release.sh)"
    "$repo/cross/build-release.sh"
fi
[ -f "$binary" ] || die "no board binary at $binary"

t0=$SECONDS
base=$("$here/rootfs.sh")
log "base system ready in $((SECONDS - t0))s: $base"

work=${RVM_ACCEPT_WORK:-/var/tmp/rvm-board-accept}
rm -rf "$work"
mkdir -p "$work"
declare -a timings=()

# The fleet's recovery key pair, made the way the platform team makes it.
aarch64=()
[ "$(uname -m)" = aarch64 ] || aarch64=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
recovery_pub=$("${aarch64[@]}" "$binary" keygen --recovery --out "$work/fleet-recovery.key" | grep '^recovery_public_key = ')
[ -n "$recovery_pub" ] || die "keygen --recovery printed no recovery_public_key line"

# boot NAME DISK SECONDS STICK [KERNEL ARGS]: boot once, then require the harness's
# END line with no failures. The console log is $work/NAME.log.
boot() {
    local name=$1 disk=$2 secs=$3 stick=$4
    shift 4
    local start=$SECONDS rc=0
    log "boot $name: starting (at most ${secs}s)"
    "$here/qemu-boot.sh" "$base" "$disk" "$work/$name.log" "$secs" "$stick" \
        "rvm_accept.boot=$name" "$@" || rc=$?
    local took=$((SECONDS - start))
    timings+=("$(printf '%-10s %4ds (qemu exit %d)' "$name" "$took" "$rc")")
    grep -a 'RVM-ACCEPT:' "$work/$name.log" | sed 's/^/    /' || true
    [ "$rc" -ne 124 ] || die "boot $name: timed out after ${secs}s (console: $work/$name.log)"
    [ "$rc" -eq 0 ] || die "boot $name: qemu exited with $rc (console: $work/$name.log)"
    grep -aq "RVM-ACCEPT: END $name fails=0" "$work/$name.log" ||
        die "boot $name: the in-board checks failed (console: $work/$name.log)"
    log "boot $name: passed in ${took}s"
}

new_stick() {
    rm -f "$1"
    truncate -s 256M "$1"
    mkfs.vfat -F 32 -n RVMBACKUP "$1" >/dev/null
}

# debugfs_dump DISK PATH DEST: copy PATH out of the (not running) board's disk.
debugfs_dump() {
    rm -rf "$3"
    mkdir -p "$3"
    debugfs -R "rdump $2 $3" "$1" >/dev/null 2>&1
}

run_smoke() {
    "$here/image.sh" smoke "$base" "$work/smoke.img"
    boot smoke "$work/smoke.img" 300 -
}

run_healthy() {
    "$here/image.sh" healthy "$base" "$work/board.img" "$binary" "$recovery_pub"
    new_stick "$work/stick.img"
    boot healthy "$work/board.img" 600 "$work/stick.img"
    # From the host: the board's database holds the platform's rows.
    debugfs_dump "$work/board.img" /var/lib/myrvm "$work/healthy-myrvm"
    local rows
    rows=$(sqlite3 "$work/healthy-myrvm/myrvm/rvm.sqlite" 'SELECT count(*) FROM deposits' 2>&1) ||
        die "healthy: cannot read the board's database: $rows"
    [ "$rows" -gt 0 ] || die "healthy: the platform wrote no rows"
    log "healthy: the board's database has $rows rows"
}

for b in "${boots[@]}"; do
    case $b in
        smoke) run_smoke ;;
        healthy) run_healthy ;;
        *) die "unknown boot '$b' (have: ${ALL_BOOTS[*]})" ;;
    esac
done

log "all passed: ${boots[*]}"
printf '    %s\n' "${timings[@]}"
