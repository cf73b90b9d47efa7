#!/usr/bin/env bash
# Benchmark: rvm-backup against restic on the same RVM-board-like data set.
# Not part of CI: it needs restic, minutes of time, and about 3.5 times the data set in
# free space (SCALE 1.0 makes about 350 MB of data).
#
# usage: benches/backup-vs-restic.sh [SCALE]        (SCALE defaults to 1.0)
# env:   WORK=DIR             scratch directory (default: a new mktemp dir under /tmp);
#                             a given WORK must be missing or empty
#        KEEP=1               keep WORK afterwards (it is removed otherwise)
#        RVM_BACKUP_BIN=PATH  benchmark this binary instead of building target/release/rvm-backup
#        COMPRESSION_LEVEL=N  compression_level for rvm-backup (default: the config's default)
#
# Each tool backs up the data set once, from a cold page cache when this user can write
# /proc/sys/vm/drop_caches. Every run is measured by benches/measure.py: wall time, peak
# RSS (VmHWM), and bytes written (wchar, all write syscalls, including restic's cache).
# "Kept" is what the repository holds afterwards (du -sb). After that come rvm-backup
# verify --all against restic check --read-data, and a restore of the application tree by
# each tool, checked with diff -r against the source.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${1:-1.0}
measure=(python3 "$repo/benches/measure.py")
mkdata="$repo/../shared/bench/mkdata.py"

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $scale =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SCALE must be a number like 1.0, not '$scale'"
[ -f "$mkdata" ] || die "data set generator not found: $mkdata"
for tool in python3 restic du df; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
[[ ${COMPRESSION_LEVEL:-1} =~ ^([1-9]|10)$ ]] || die "COMPRESSION_LEVEL must be 1..10"

# ---- scratch space --------------------------------------------------------------
if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d /tmp/rvm-bench.XXXXXX)
fi
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

need_mib=$(awk -v s="$scale" 'BEGIN { printf "%d", 1300 * s + 100 }')
need_free_mib "$WORK" "$need_mib"

# ---- binary -----------------------------------------------------------------------
bench_binary

# ---- data set and config ------------------------------------------------------------
section "data set (scale $scale) in $WORK/data"
python3 "$mkdata" "$WORK/data" "$scale"
data_bytes=$(du -sb "$WORK/data" | cut -f1)
data_files=$(find "$WORK/data" -type f | wc -l)
echo "$data_bytes bytes in $data_files files"

cfg="$WORK/rvm-backup.toml"
mkdir -p -m 0700 "$WORK/rvb"
{
    echo "backup_dir = \"$WORK/rvb\""
    echo "key_file = \"$WORK/master.key\""
    [ -z "${COMPRESSION_LEVEL:-}" ] || echo "compression_level = $COMPRESSION_LEVEL"
    cat <<EOF

[database]
path = "$WORK/data/db/rvm.sqlite"

[config]
paths = ["$WORK/data/config"]

[logs]
paths = ["$WORK/data/logs"]

[application]
paths = ["$WORK/data/app"]
EOF
} >"$cfg"
"$bin" --config "$cfg" keygen --out "$WORK/master.key" >/dev/null

export RESTIC_REPOSITORY="$WORK/restic"
export RESTIC_PASSWORD="benchmark-only-not-a-secret"
export RESTIC_CACHE_DIR="$WORK/restic-cache"
restic init -q

# ---- measurement helpers -----------------------------------------------------------
cold_cache=no
drop_caches() {
    sync
    if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        cold_cache=yes
    fi
}

# run NAME CMD...: measure CMD into $WORK/m-NAME.json
run() {
    local name=$1
    shift
    echo "+ $*"
    "${measure[@]}" -o "$WORK/m-$name.json" -- "$@"
}

same_tree() {
    if diff -r "$1" "$2" >/dev/null; then
        echo "  restored tree identical to the source"
    else
        die "restored tree $2 differs from $1"
    fi
}

# ---- backups ---------------------------------------------------------------------------
section "rvm-backup backup --all"
drop_caches
run rvb-backup "$bin" --quiet --config "$cfg" backup --all
rvb_kept=$(du -sb "$WORK/rvb" | cut -f1)

section "restic backup"
drop_caches
run restic-backup restic backup -q "$WORK/data"
restic_kept=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)

# ---- verify / check --------------------------------------------------------------------
section "rvm-backup verify --all"
drop_caches
run rvb-verify "$bin" --quiet --config "$cfg" verify --all

section "restic check --read-data"
drop_caches
run restic-check restic check -q --read-data

# ---- restore of the application tree ------------------------------------------------------
section "rvm-backup restore application"
drop_caches
run rvb-restore "$bin" --quiet --config "$cfg" restore application latest --target "$WORK/restore-rvb"
same_tree "$WORK/data/app" "$WORK/restore-rvb$WORK/data/app"

section "restic restore (application tree)"
drop_caches
run restic-restore restic restore latest -q --target "$WORK/restore-restic" --include "$WORK/data/app"
same_tree "$WORK/data/app" "$WORK/restore-restic$WORK/data/app"

# ---- report ------------------------------------------------------------------------------
section "results"
python3 - "$WORK" "$scale" "$data_bytes" "$data_files" "$rvb_kept" "$restic_kept" "$cold_cache" \
    "$(restic version | head -n 1)" <<'EOF'
import json, sys

work, scale, data_bytes, data_files, rvb_kept, restic_kept, cold, restic_version = sys.argv[1:]
data_bytes, rvb_kept, restic_kept = int(data_bytes), int(rvb_kept), int(restic_kept)
m = lambda name: json.load(open(f"{work}/m-{name}.json"))
mib = lambda n: "-" if n is None else f"{n / 1048576:.1f}"
rss = lambda r: "-" if r["rss_kib"] is None else f"{r['rss_kib'] / 1024:.1f}"
cpu = lambda r: f"{r['user_s'] + r['sys_s']:.2f}"

print(f"data set: scale {scale}, {data_bytes} bytes ({mib(data_bytes)} MiB) in {data_files} files")
print(f"cold page cache before each run: {cold}; {restic_version}")
print()
hdr = ("tool", "wall s", "cpu s", "peak RSS MiB", "written MiB (wchar)", "to disk MiB",
       "kept MiB", "written/kept", "kept/data")
rows = []
for tool, name, kept in (("rvm-backup", "rvb-backup", rvb_kept), ("restic", "restic-backup", restic_kept)):
    r = m(name)
    ratio = f"{r['wchar'] / kept:.2f}" if r["wchar"] is not None and kept else "-"
    rows.append((tool, f"{r['wall_s']:.2f}", cpu(r), rss(r), mib(r["wchar"]), mib(r["write_bytes"]),
                 mib(kept), ratio, f"{kept / data_bytes:.3f}"))
widths = [max(len(str(x[i])) for x in [hdr] + rows) for i in range(len(hdr))]
fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
print("backup")
print(fmt(hdr))
for row in rows:
    print(fmt(row))
ours, theirs = m("rvb-backup")["wall_s"], m("restic-backup")["wall_s"]
print(f"wall time ours/restic: {ours / theirs:.2f}" if theirs else "wall time ours/restic: -")

print()
hdr2 = ("operation", "tool", "wall s", "cpu s", "peak RSS MiB", "read MiB (rchar)", "written MiB (wchar)")
rows2 = []
for op, pairs in (("verify", (("rvm-backup verify --all", "rvb-verify"), ("restic check --read-data", "restic-check"))),
                  ("restore app", (("rvm-backup restore", "rvb-restore"), ("restic restore", "restic-restore")))):
    for tool, name in pairs:
        r = m(name)
        rows2.append((op, tool, f"{r['wall_s']:.2f}", cpu(r), rss(r), mib(r["rchar"]), mib(r["wchar"])))
widths = [max(len(str(x[i])) for x in [hdr2] + rows2) for i in range(len(hdr2))]
fmt2 = lambda row: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
print(fmt2(hdr2))
for row in rows2:
    print(fmt2(row))
EOF
