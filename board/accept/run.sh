#!/usr/bin/env bash
# Board acceptance test: boot an emulated aarch64 board (real Debian, real systemd,
# udev, a USB stick) under qemu-system-aarch64 and prove rvm-backup's board paths end
# to end: the daemon under systemd, backups, the platform's socket access, and (as
# they exist) export to the stick and the boot-time disaster restore.
#
# usage: board/accept/run.sh [BOOT...]     (default: all; see the list below)
#   smoke      the base system reaches multi-user and powers itself off (not in "all")
#   healthy    boot 1: daemon under systemd (notify, watchdog), socket as a reader,
#              scheduled backups, export onto the plugged stick
#   dead-card  boot 2: a fresh image and that stick: restored before the platform starts
#   left-in    boot 3: the stick stays in: nothing restored again, newer data stays
#   power-cut  boot 4: qemu killed during the restore, then booted again: complete
#   no-stick   boot 5: a board in service, no stick: the boot is not delayed
#   fresh-no-stick  boot 5b: a fresh card, no stick: the recovery unit waits
#              recovery_timeout, then the platform starts on the empty board
#   restore-fails   boot 6: a fresh card and a stick whose set was changed: the
#              recovery unit fails, the platform never starts, RESULT says FAILED
# Each boot builds on the previous ones (healthy first).
# env: RVM_ACCEPT_BINARY  the aarch64 binary (default target/board/rvm-backup, built
#                         by cross/build-release.sh when missing)
#      RVM_ACCEPT_WORK    scratch directory (default /var/tmp/rvm-board-accept)
#      RVM_ACCEPT_CACHE   cache of the base system (see rootfs.sh)
#      RVM_ACCEPT_CUT_DELAYS  seconds into the restore when power-cut kills qemu,
#                         tried in turn until one lands inside it ("2 1 4 0.5")
# Needs root. Prints one line per boot with its time; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
ALL_BOOTS=(healthy dead-card left-in power-cut no-stick fresh-no-stick restore-fails)
# The line disaster-restore logs when every archive is verified and its journal is
# about to be written: the restore proper begins. Seconds between that line and the
# power cut, tried in turn until one lands inside the restore (config, the 32 MiB
# application tree, database, logs: about 9 s here).
CUT_DELAYS=${RVM_ACCEPT_CUT_DELAYS:-2 1 4 0.5}
RESTORE_BEGINS='rvm-backup\[[0-9]*\]: info: disaster-restore: every archive to restore verified'


die() {
    printf 'board-accept: %s\n' "$*" >&2
    exit 1
}
log() { printf '[board-accept %4ds] %s\n' "$SECONDS" "$*"; }
# bad MESSAGE: a failed check; the run goes on (later boots still tell something)
# and exits non-zero at the end.
declare -a failures=()
bad() {
    printf '[board-accept %4ds] FAILED: %s\n' "$SECONDS" "$*"
    failures+=("$*")
}

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
declare -a timings=()
if [[ " ${boots[*]} " == *" healthy "* ]]; then
    # A new run: a new healthy board and a new fleet recovery key pair, made the way
    # the platform team makes it.
    rm -rf "$work"
    mkdir -p "$work"
    aarch64=()
    [ "$(uname -m)" = aarch64 ] || aarch64=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
    "${aarch64[@]}" "$binary" keygen --recovery --out "$work/fleet-recovery.key" |
        grep '^recovery_public_key = ' >"$work/recovery.pub" || die "keygen --recovery printed no recovery_public_key line"
else
    # Later boots alone (while developing): they go on from the last run's boards.
    [ -d "$work/healthy" ] || die "run the healthy boot first (no $work/healthy)"
fi
recovery_pub=$(cat "$work/recovery.pub")

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
    if grep -aq "RVM-ACCEPT: END $name fails=0" "$work/$name.log"; then
        log "boot $name: in-board checks passed in ${took}s"
    elif grep -aq "RVM-ACCEPT: END $name " "$work/$name.log"; then
        bad "boot $name: in-board checks failed (console: $work/$name.log)"
    else
        die "boot $name: the harness did not finish (console: $work/$name.log)"
    fi
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

# sql DB QUERY: run QUERY on a copy of the board's database taken out with debugfs.
sql() { sqlite3 -batch "$1" "$2"; }

# board_state DISK NAME: the board's data as the host sees it, under $work/NAME/.
board_state() {
    local d="$work/$2"
    debugfs_dump "$1" /var/lib/myrvm "$d/lib"
    debugfs_dump "$1" /etc/myrvm "$d/etc"
    debugfs_dump "$1" /opt/myrvm "$d/opt"
    debugfs_dump "$1" /var/log/myrvm "$d/log"
    debugfs_dump "$1" /var/lib/rvm-backup "$d/store"
}

# The stick, as a technician's laptop sees it.
stick_results() { mdir -b -i "$work/stick.img" :: 2>/dev/null | grep -c 'RESULT-' || true; }
show_newest_result() {
    local r
    r=$(mdir -b -i "$work/stick.img" :: 2>/dev/null | grep 'RESULT-' | sort | tail -n 1)
    [ -n "$r" ] || {
        bad "$1: no RESULT file on the stick"
        return
    }
    log "$1: the stick's newest result file ${r#::/}:"
    mcopy -i "$work/stick.img" "$r" - | sed 's/^/    | /'
}

# check_restored NAME: the board NAME holds exactly the healthy board's last state.
check_restored() {
    local d="$work/$1" want got
    want=$(sql "$work/healthy/lib/myrvm/rvm.sqlite" "SELECT id, boot, at, item FROM deposits ORDER BY id")
    got=$(sql "$d/lib/myrvm/rvm.sqlite" "SELECT id, boot, at, item FROM deposits WHERE boot = 'healthy' ORDER BY id")
    [ -n "$want" ] && [ "$want" = "$got" ] ||
        bad "$1: the database's rows from the healthy board differ ($(wc -l <<<"$got") rows, want $(wc -l <<<"$want"))"
    local n
    n=$(grep -m1 '^db ' "$d/lib/myrvm/started.txt" | sed -n 's/^db rows=//p')
    [ "$n" = "$(wc -l <<<"$want")" ] ||
        bad "$1: the platform started on a database with '${n:-none}' rows, want $(wc -l <<<"$want")"
    cmp -s "$work/healthy/etc/myrvm/site.conf" "$d/etc/myrvm/site.conf" || bad "$1: /etc/myrvm/site.conf differs"
    cmp -s "$work/healthy/opt/myrvm/data/model.bin" "$d/opt/myrvm/data/model.bin" || bad "$1: /opt/myrvm/data/model.bin differs"
    cmp -s "$work/healthy/log/myrvm/platform.log.1" "$d/log/myrvm/platform.log.1" || bad "$1: /var/log/myrvm/platform.log.1 differs"
    log "$1: checked against the healthy board: $(wc -l <<<"$want") rows, site config, application data, logs"
}

run_healthy() {
    "$here/image.sh" healthy "$base" "$work/board.img" "$binary" "$recovery_pub"
    new_stick "$work/stick.img"
    boot healthy "$work/board.img" 600 "$work/stick.img"
    board_state "$work/board.img" healthy
    local rows
    rows=$(sql "$work/healthy/lib/myrvm/rvm.sqlite" 'SELECT count(*) FROM deposits') ||
        die "healthy: cannot read the board's database"
    [ "$rows" -gt 0 ] || die "healthy: the platform wrote no rows"
    log "healthy: the board's database has $rows rows; on the stick:"
    mdir -/ -b -i "$work/stick.img" ::rvm-backup | awk 'NR <= 20 { print "    " $0 }'
    mdir -/ -b -i "$work/stick.img" ::rvm-backup | grep '/set-.*/MANIFEST$' >/dev/null ||
        die "healthy: no complete recovery set on the stick"
}

run_dead_card() {
    "$here/image.sh" fresh "$base" "$work/dead.img" "$binary" "$recovery_pub"
    # The technician copies the recovery key into the stick's top folder (15.1).
    mcopy -o -i "$work/stick.img" "$work/fleet-recovery.key" ::rvm-recovery.key
    boot dead-card "$work/dead.img" 600 "$work/stick.img"
    board_state "$work/dead.img" dead-card
    check_restored dead-card
    show_newest_result dead-card
}

run_left_in() {
    local before after newer
    before=$(stick_results)
    newer=$(sql "$work/dead-card/lib/myrvm/rvm.sqlite" "SELECT count(*) FROM deposits WHERE boot = 'dead-card'")
    boot left-in "$work/dead.img" 600 "$work/stick.img"
    board_state "$work/dead.img" left-in
    after=$(sql "$work/left-in/lib/myrvm/rvm.sqlite" "SELECT count(*) FROM deposits WHERE boot = 'dead-card'")
    [ "$after" -ge "$newer" ] && [ "$newer" -gt 0 ] ||
        bad "left-in: the platform's newer rows are gone ($after of $newer)"
    cmp -s "$work/dead-card/store/rvm-backup/restored-sets.json" "$work/left-in/store/rvm-backup/restored-sets.json" ||
        bad "left-in: restored-sets.json changed: something was restored again"
    log "left-in: nothing restored again; the platform's $newer newer rows stayed"
    if [ "$(stick_results)" -gt "$before" ]; then
        show_newest_result left-in
    else
        log "left-in: no new result file on the stick (a board in service is left alone without one)"
    fi
}

# cut_once DELAY: a fresh card and the stick; kill qemu DELAY seconds after the binary
# says it starts to restore; leave what the disk holds then under $work/power-cut.
cut_once() {
    local name=power-cut start=$SECONDS pid qemu t=0
    "$here/image.sh" fresh "$base" "$work/cut.img" "$binary" "$recovery_pub"
    log "boot $name: starting; qemu is killed $1 s after the restore begins"
    rm -f "$work/$name.log"
    "$here/qemu-boot.sh" "$base" "$work/cut.img" "$work/$name.log" 600 "$work/stick.img" \
        "rvm_accept.boot=$name" "rvm_accept.hold=1" &
    pid=$!
    until grep -aq "$RESTORE_BEGINS" "$work/$name.log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "$name: qemu ended before the restore began (console: $work/$name.log)"
        [ "$t" -lt 3000 ] || die "$name: the restore did not begin within 300 s"
        sleep 0.1
        t=$((t + 1))
    done
    sleep "$1"
    qemu=$(ps -o pid= --ppid "$pid" | tr -d ' ')
    [ -n "$qemu" ] && kill -KILL "$qemu"
    { wait "$pid"; } 2>/dev/null || true
    timings+=("$(printf '%-10s %4ds (killed %ss in)' "$name" $((SECONDS - start)) "$1")")
    # What the cut left: a copy of the disk, its ext4 journal replayed as a mount would.
    cp --sparse=always "$work/cut.img" "$work/cut-inspect.img"
    e2fsck -fy "$work/cut-inspect.img" >/dev/null 2>&1 || true
    board_state "$work/cut-inspect.img" power-cut
    rm -f "$work/cut-inspect.img"
}

run_power_cut() {
    local name=power-cut delay hit=0
    # A cut must land inside the restore (after its checks, before its end): try the
    # delays in turn, each on a new fresh card, until the disk shows a cut restore.
    for delay in $CUT_DELAYS; do
        cut_once "$delay"
        if [ -e "$work/power-cut/store/rvm-backup/disaster-restore.json" ]; then
            log "$name: cut in the middle of the restore, $delay s in (its journal: $(tr -d '\n ' <"$work/power-cut/store/rvm-backup/disaster-restore.json" | head -c 200))"
            hit=1
            break
        fi
        log "$name: the cut $delay s in missed the restore (no restore journal on the disk)"
    done
    [ "$hit" = 1 ] || bad "$name: no cut landed inside the restore (delays $CUT_DELAYS s)"
    [ ! -e "$work/power-cut/lib/myrvm/started.txt" ] || bad "$name: the platform started during the restore"

    boot after-cut "$work/cut.img" 600 "$work/stick.img"
    board_state "$work/cut.img" after-cut
    check_restored after-cut
    show_newest_result after-cut
}

run_no_stick() {
    boot no-stick "$work/cut.img" 600 -
}

# accept_state DISK NAME: what the harness and the platform wrote on the board NAME
# (under $work/NAME/), and its recovery_timeout in seconds (the test sets "<N>s").
accept_state() {
    debugfs_dump "$1" /var/lib/rvm-accept "$work/$2/accept"
    debugfs_dump "$1" /var/lib/myrvm "$work/$2/lib"
    debugfs -R "cat /etc/rvm-backup/rvm-backup.toml" "$1" 2>/dev/null |
        sed -n 's/^recovery_timeout = "\([0-9]*\)s".*/\1/p' >"$work/$2/recovery_timeout"
}
# rec_time NAME KEY: a value the harness recorded in /var/lib/rvm-accept/NAME.times.
rec_time() { sed -n "s/^$2=//p" "$work/$1/accept/rvm-accept/$1.times" 2>/dev/null; }
# le A B: A <= B (decimals)
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

# Boot 5b: a fresh card (as provisioned, like dead-card's) and no stick. The recovery
# unit must really wait recovery_timeout for a stick (a late one still counts), then
# exit 0; the platform then starts on the empty board, no later than recovery_timeout
# plus a margin after the recovery unit started.
NO_STICK_MARGIN=15
run_fresh_no_stick() {
    local name=fresh-no-stick bound start done plat wait delay
    "$here/image.sh" fresh "$base" "$work/fresh.img" "$binary" "$recovery_pub"
    boot $name "$work/fresh.img" 600 -
    accept_state "$work/fresh.img" $name
    bound=$(cat "$work/$name/recovery_timeout")
    [ -n "$bound" ] || die "$name: no recovery_timeout in the image's config"
    start=$(rec_time $name rec_start) done=$(rec_time $name rec_done) plat=$(rec_time $name plat_start)
    [ -n "$start" ] && [ -n "$plat" ] || die "$name: the harness recorded no times"
    [ "$(rec_time $name rec_result)/$(rec_time $name rec_status)" = success/0 ] ||
        bad "$name: the recovery unit did not succeed ($(rec_time $name rec_result)/$(rec_time $name rec_status))"
    wait=$(awk -v a="$start" -v b="$done" 'BEGIN { printf "%.1f", b - a }')
    delay=$(awk -v a="$start" -v b="$plat" 'BEGIN { printf "%.1f", b - a }')
    log "$name: the recovery unit waited ${wait}s (${start}s to ${done}s after boot); the platform started ${delay}s after it began (recovery_timeout ${bound}s)"
    le "$bound" "$wait" || bad "$name: the recovery unit waited ${wait}s, less than recovery_timeout ${bound}s"
    le "$done" "$plat" && le "$delay" $((bound + NO_STICK_MARGIN)) ||
        bad "$name: the platform started ${delay}s after the recovery unit, beyond recovery_timeout ${bound}s + ${NO_STICK_MARGIN}s"
    grep -aq "no recovery stick at /media/rvm-recovery (after ${bound}s): nothing to do" "$work/$name.log" ||
        bad "$name: the console does not say that no stick came within ${bound}s"
    grep -q '^db none' "$work/$name/lib/myrvm/started.txt" 2>/dev/null ||
        bad "$name: the platform did not start on the empty board ($(head -c 300 "$work/$name/lib/myrvm/started.txt" 2>&1))"
    timings+=("$(printf '%-10s waited %ss, platform %ss after the recovery unit began' "" "$wait" "$delay")")
}

# tamper_stick OUT: a copy of the stick whose sets were changed after export: one
# byte in the middle of every config archive part (sizes unchanged, so the sets
# still look complete; only their hashes tell).
tamper_stick() {
    local part f n=0
    cp --sparse=always "$work/stick.img" "$1"
    part="$work/tamper.part"
    while IFS= read -r f; do
        rm -f "$part"
        mcopy -n -i "$1" "$f" "$part"
        printf 'X' | dd of="$part" bs=1 seek=$(($(stat -c %s "$part") / 2)) conv=notrunc status=none
        mcopy -o -i "$1" "$part" "$f"
        n=$((n + 1))
    done < <(mdir -/ -b -i "$1" ::rvm-backup | grep '/pool/config/.*\.rvb$')
    rm -f "$part"
    [ "$n" -gt 0 ] || die "restore-fails: no config archive on the stick to change"
}

# Boot 6: the boot-time restore fails (a fresh card, the stick's set was changed).
# The recovery unit fails, the platform never starts, and the stick and the journal
# say in plain text what happened. The good stick stays as it was.
run_restore_fails() {
    local name=restore-fails s="$work/stick-tampered.img" before after boards_before boards_after
    tamper_stick "$s"
    before=$(mdir -b -i "$s" :: 2>/dev/null | grep -c 'RESULT-' || true)
    boards_before=$(mdir -b -i "$s" ::rvm-backup 2>/dev/null | grep -c . || true)
    "$here/image.sh" fresh "$base" "$work/failed.img" "$binary" "$recovery_pub"
    boot $name "$work/failed.img" 600 "$s"
    accept_state "$work/failed.img" $name
    [ "$(rec_time $name rec_result)/$(rec_time $name rec_status)" = exit-code/1 ] ||
        bad "$name: the recovery unit did not fail ($(rec_time $name rec_result)/$(rec_time $name rec_status))"
    [ "$(rec_time $name plat_start)" = 0.0 ] || bad "$name: the platform started at $(rec_time $name plat_start)s"
    [ ! -e "$work/$name/lib/myrvm/started.txt" ] || bad "$name: the platform recorded a start"
    [ ! -e "$work/$name/lib/myrvm/rvm.sqlite" ] || bad "$name: the platform made a database"
    after=$(mdir -b -i "$s" :: 2>/dev/null | grep -c 'RESULT-' || true)
    [ "$after" -eq $((before + 1)) ] || bad "$name: $after result files on the stick, want $((before + 1))"
    local r
    r=$(mdir -b -i "$s" :: 2>/dev/null | grep 'RESULT-' | sort | tail -n 1)
    if [ -n "$r" ] && mcopy -i "$s" "$r" - | grep 'RESULT: FAILED' >/dev/null; then
        log "$name: the stick's newest result file ${r#::/}:"
        mcopy -i "$s" "$r" - | sed 's/^/    | /'
    else
        bad "$name: the stick's newest result file does not say RESULT: FAILED"
    fi
    grep -aq 'rvm-backup: RESULT: FAILED' "$work/$name.log" || bad "$name: the console does not say RESULT: FAILED"
    boards_after=$(mdir -b -i "$s" ::rvm-backup 2>/dev/null | grep -c . || true)
    [ "$boards_after" -eq "$boards_before" ] ||
        bad "$name: the failed board wrote sets of its own onto the stick ($boards_before board folder(s) before, $boards_after after): a retry would pick them"
    log "$name: the recovery unit failed, the platform never started, the stick says FAILED"
}

for b in "${boots[@]}"; do
    case $b in
        smoke) run_smoke ;;
        healthy) run_healthy ;;
        dead-card) run_dead_card ;;
        left-in) run_left_in ;;
        power-cut) run_power_cut ;;
        no-stick) run_no_stick ;;
        fresh-no-stick) run_fresh_no_stick ;;
        restore-fails) run_restore_fails ;;
        *) die "unknown boot '$b' (have: ${ALL_BOOTS[*]})" ;;
    esac
done

printf '    %s\n' "${timings[@]}"
if [ "${#failures[@]}" -gt 0 ]; then
    printf 'board-accept: %d check(s) failed:\n' "${#failures[@]}" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
log "all passed: ${boots[*]}"
