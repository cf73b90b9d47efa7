#!/usr/bin/env bash
# Benchmark: full restore against restic, and the database strategy's speed against the
# logs strategy's, on the same RVM-board-like data set, in one run.
# Not part of CI: it needs restic and about 4 times the data set in free space.
#
# usage: benches/restore-speed.sh [SCALE] [RUNS]   (SCALE defaults to 1.0, RUNS to 3)
# env:   WORK=DIR             scratch directory (default: a new mktemp dir under /tmp);
#                             a given WORK must be missing or empty
#        KEEP=1               keep WORK afterwards (it is removed otherwise)
#        RVM_BACKUP_BIN=PATH  benchmark this binary instead of building target/release/rvm-backup
#        BASELINE_BIN=PATH    also time `backup database` and `backup logs` with this older
#                             binary, in the same runs (a before/after comparison)
#
# Every figure is the median of RUNS runs, each measured by benches/measure.py, from a cold
# page cache when this user can write /proc/sys/vm/drop_caches.
#
# Restore: `rvm-backup restore --all --target` (every strategy; it stages every archive,
# checking it as it writes, then publishes them all) against `restic restore latest
# --target` of the same data; each tree is compared with the source (diff -r, and the
# database by its SQL dump). Also each strategy restored alone (one pass over its archive).
#
# Read speed: `backup database` and `backup logs` (each includes the verify-after-write
# pass), as MB/s of source bytes; and, to tell the SQL read path from the cost of the
# content itself, the very same database file backed up as a plain file (a second config
# whose [logs] holds only a copy of it), and the same three with compression off.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${1:-1.0}
runs=${2:-3}
measure=(python3 "$repo/benches/measure.py")
mkdata="$repo/../shared/bench/mkdata.py"

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $scale =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SCALE must be a number like 1.0, not '$scale'"
[[ $runs =~ ^[1-9][0-9]?$ ]] || die "RUNS must be 1..99, not '$runs'"
[ -f "$mkdata" ] || die "data set generator not found: $mkdata"
for tool in python3 restic du df sqlite3 diff; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d /tmp/rvm-restore-bench.XXXXXX)
fi
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

need_mib=$(awk -v s="$scale" 'BEGIN { printf "%d", 1600 * s + 100 }')
need_free_mib "$WORK" "$need_mib"

bench_binary
baseline=${BASELINE_BIN:-}
[ -z "$baseline" ] || [ -x "$baseline" ] || die "no executable at BASELINE_BIN=$baseline"

section "data set (scale $scale) in $WORK/data"
python3 "$mkdata" "$WORK/data" "$scale"
data_bytes=$(du -sb "$WORK/data" | cut -f1)
echo "$data_bytes bytes"
mkdir -p "$WORK/dbfile"
cp "$WORK/data/db/rvm.sqlite" "$WORK/dbfile/"

# config NAME COMPRESSION LOGS_DIR: a config with its own store
config() {
    local name=$1 compression=$2 logs=$3
    mkdir -p -m 0700 "$WORK/store-$name"
    cat >"$WORK/$name.toml" <<EOF
backup_dir = "$WORK/store-$name"
key_file = "$WORK/master.key"
compression_enabled = $compression

[database]
path = "$WORK/data/db/rvm.sqlite"

[config]
paths = ["$WORK/data/config"]

[logs]
paths = ["$logs"]

[application]
paths = ["$WORK/data/app"]
EOF
}
config main true "$WORK/data/logs"
config dbfile true "$WORK/dbfile"
config raw false "$WORK/data/logs"
config rawdbfile false "$WORK/dbfile"
"$bin" --config "$WORK/main.toml" keygen --out "$WORK/master.key" >/dev/null

export RESTIC_REPOSITORY="$WORK/restic"
export RESTIC_PASSWORD="benchmark-only-not-a-secret"
export RESTIC_CACHE_DIR="$WORK/restic-cache"
restic init -q

cold_cache=no
drop_caches() {
    sync
    if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        cold_cache=yes
    fi
}

# run NAME I CMD...: measure CMD into $WORK/m-NAME-I.json
run() {
    local name=$1 i=$2
    shift 2
    echo "+ $*"
    "${measure[@]}" -o "$WORK/m-$name-$i.json" -- "$@"
}

section "backups (the stores to restore from)"
"$bin" --quiet --config "$WORK/main.toml" backup --all
restic backup -q "$WORK/data"

# ---- read speed: database against logs ---------------------------------------------------
for i in $(seq "$runs"); do
    section "read speed, run $i of $runs"
    for cfg in main dbfile raw rawdbfile; do
        for s in database logs; do
            # The dbfile configs only differ in [logs]: their database run is the main one's.
            case $cfg in dbfile | rawdbfile) [ "$s" = logs ] || continue ;; esac
            drop_caches
            run "$cfg-$s" "$i" "$bin" --quiet --config "$WORK/$cfg.toml" backup "$s"
        done
    done
    if [ -n "$baseline" ]; then
        for s in database logs; do
            drop_caches
            run "base-$s" "$i" "$baseline" --quiet --config "$WORK/main.toml" backup "$s"
        done
    fi
done

# ---- full restore ---------------------------------------------------------------------------
for i in $(seq "$runs"); do
    section "full restore, run $i of $runs"
    rm -rf "$WORK/r-ours" "$WORK/r-restic"
    drop_caches
    run rvb-restore "$i" "$bin" --quiet --config "$WORK/main.toml" restore --all --target "$WORK/r-ours"
    drop_caches
    run restic-restore "$i" restic restore latest -q --target "$WORK/r-restic"
    # Each strategy alone: one pass over its archive, as restore --all makes over each
    # (it stages them all before publishing any, so a damaged one touches nothing).
    for s in config application database logs; do
        rm -rf "$WORK/r-one"
        drop_caches
        run "rvb-restore-$s" "$i" "$bin" --quiet --config "$WORK/main.toml" restore "$s" latest --target "$WORK/r-one"
    done
done
for t in config logs app; do
    diff -r "$WORK/data/$t" "$WORK/r-ours$WORK/data/$t" >/dev/null || die "our restore of $t differs"
    diff -r "$WORK/data/$t" "$WORK/r-restic$WORK/data/$t" >/dev/null || die "restic's restore of $t differs"
done
dump() { sqlite3 "file:$1?immutable=1" .dump | sha256sum; }
[ "$(dump "$WORK/data/db/rvm.sqlite")" = "$(dump "$WORK/r-ours$WORK/data/db/rvm.sqlite")" ] ||
    die "our restore of the database differs"
echo "restored trees identical to the source; the restored database dumps the same"

# ---- report -----------------------------------------------------------------------------------
section "results"
db_bytes=$(stat -c %s "$WORK/data/db/rvm.sqlite")
logs_bytes=$(du -sb "$WORK/data/logs" | cut -f1)
python3 - "$WORK" "$scale" "$runs" "$data_bytes" "$db_bytes" "$logs_bytes" "$cold_cache" \
    "$(restic version | head -n 1)" "$baseline" <<'EOF'
import json, statistics, sys

work, scale, runs, data_bytes, db_bytes, logs_bytes, cold, restic_version, baseline = sys.argv[1:]
runs, data_bytes, db_bytes, logs_bytes = int(runs), int(data_bytes), int(db_bytes), int(logs_bytes)
def med(name, field="wall_s"):
    return statistics.median(json.load(open(f"{work}/m-{name}-{i}.json"))[field] for i in range(1, runs + 1))
def rss(name):
    return statistics.median((json.load(open(f"{work}/m-{name}-{i}.json"))["rss_kib"] or 0) / 1024
                             for i in range(1, runs + 1))

print(f"data set: scale {scale}, {data_bytes / 1048576:.1f} MiB; database {db_bytes / 1e6:.1f} MB, "
      f"logs {logs_bytes / 1e6:.1f} MB; median of {runs} runs; cold page cache: {cold}; {restic_version}")
print()
ours, theirs = med("rvb-restore"), med("restic-restore")
print("full restore (every strategy)        wall s   peak RSS MiB")
print(f"  rvm-backup restore --all --target  {ours:6.2f}   {rss('rvb-restore'):6.1f}")
print(f"  restic restore latest --target     {theirs:6.2f}   {rss('restic-restore'):6.1f}")
print(f"  ratio ours/restic: {ours / theirs:.2f}")
single = {s: med(f"rvb-restore-{s}") for s in ("config", "application", "database", "logs")}
print("  each strategy alone (restore STRATEGY --target): "
      + ", ".join(f"{s} {t:.2f} s" for s, t in single.items())
      + f"; sum {sum(single.values()):.2f} s, ratio sum/restic {sum(single.values()) / theirs:.2f}")
print()
print("read speed (backup incl. its verify)   compressed        compression off")
rows = (("database strategy", "main-database", "raw-database", db_bytes),
        ("database file as a plain file", "dbfile-logs", "rawdbfile-logs", db_bytes),
        ("logs strategy", "main-logs", "raw-logs", logs_bytes))
speed = {}
for label, on, off, size in rows:
    a, b = med(on), med(off)
    speed[label] = (size / a / 1e6, size / b / 1e6)
    print(f"  {label:<34} {a:5.2f} s {size / a / 1e6:6.1f} MB/s   {b:5.2f} s {size / b / 1e6:6.1f} MB/s")
db, logs, plain = speed["database strategy"], speed["logs strategy"], speed["database file as a plain file"]
print(f"  database/logs MB/s: {db[0] / logs[0]:.2f} compressed, {db[1] / logs[1]:.2f} without compression")
print(f"  database strategy / same file as a plain file: {db[0] / plain[0]:.2f} compressed, "
      f"{db[1] / plain[1]:.2f} without compression")
if baseline:
    b_db, b_logs = db_bytes / med("base-database") / 1e6, logs_bytes / med("base-logs") / 1e6
    print(f"  baseline {baseline}: database {med('base-database'):.2f} s {b_db:.1f} MB/s, "
          f"logs {med('base-logs'):.2f} s {b_logs:.1f} MB/s, database/logs {b_db / b_logs:.2f}")
    print(f"  database strategy, this binary / baseline: {db[0] / b_db:.2f}x the MB/s")
EOF
