#!/usr/bin/env bash
# Memory must not grow with the size of what is backed up (DESIGN.md: streaming,
# fixed-memory pipelines). This backs up, verifies and restores a 160 MiB file and a
# 1600 MiB file, each as the only path of an [application] strategy with a fresh config
# and backup directory, and measures each run's peak RSS (VmHWM) with benches/measure.py.
#
# usage: benches/rss-scaling.sh
# env:   WORK=DIR             scratch directory (default: a new mktemp dir under /tmp);
#                             a given WORK must be missing or empty. Needs about 4.5 GiB free.
#        KEEP=1               keep WORK afterwards (it is removed otherwise)
#        RVM_BACKUP_BIN=PATH  measure this binary instead of building target/release/rvm-backup
#        SMALL_MIB, BIG_MIB   file sizes (default 160 and 1600)
#
# Exit status 1 when any run peaks above 16 MiB, or when a run on the big file peaks more
# than 2 MiB above the same run on the small file.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
measure=(python3 "$repo/benches/measure.py")
small_mib=${SMALL_MIB:-160}
big_mib=${BIG_MIB:-1600}
limit_kib=$((16 * 1024))
growth_kib=$((2 * 1024))

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $small_mib =~ ^[1-9][0-9]*$ && $big_mib =~ ^[1-9][0-9]*$ ]] || die "SMALL_MIB and BIG_MIB must be positive integers"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d /tmp/rvm-rss.XXXXXX)
fi
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Source, archive (about half the source: half of it is incompressible) and restored
# copy of the big file exist at the same time; the small run is removed before it.
need_mib=$((big_mib * 27 / 10 + 200))
need_free_mib "$WORK" "$need_mib"

bench_binary

# make_file PATH MIB: alternating 1 MiB blocks of random bytes (incompressible) and of
# log-like text (deflate has work to do), so both paths of the pipeline are exercised.
make_file() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
block = 1 << 20
texts = []
for k in range(8):
    lines, n, i = [], 0, 0
    while n < block:
        line = (f"2026-11-{1 + k:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d} INFO rvm.scanner "
                f"deposit accepted id={k * 100000 + i} machine=RVM-{i % 16:04d} weight={(i * 37) % 900}.{i % 10}g\n")
        lines.append(line)
        n += len(line)
        i += 1
    texts.append("".join(lines).encode()[:block])
with open(path, "wb") as f:
    for m in range(mib):
        f.write(os.urandom(block) if m % 2 == 0 else texts[(m // 2) % len(texts)])
EOF
}

key="$WORK/master.key"

# one_run LABEL MIB: back up, verify and restore one file of MIB MiB.
one_run() {
    local label=$1 mib=$2
    local d="$WORK/$label"
    local cfg="$d/rvm-backup.toml"
    section "$label: $mib MiB"
    mkdir -p "$d/src" "$d/backups"
    make_file "$d/src/blob.bin" "$mib"
    cat >"$cfg" <<EOF
backup_dir = "$d/backups"
key_file = "$key"

[application]
paths = ["$d/src"]
EOF
    if [ ! -f "$key" ]; then
        "$bin" --config "$cfg" keygen --out "$key" >/dev/null
    fi
    local op
    for op in backup verify restore; do
        local args
        case $op in
            backup) args=(backup application) ;;
            verify) args=(verify --all) ;;
            restore) args=(restore application latest --target "$d/restore") ;;
        esac
        echo "+ rvm-backup --quiet --config $cfg ${args[*]}"
        sync
        "${measure[@]}" -o "$WORK/m-$label-$op.json" -- "$bin" --quiet --config "$cfg" "${args[@]}"
    done
    cmp "$d/src/blob.bin" "$d/restore$d/src/blob.bin" || die "$label: restored file differs from the source"
    echo "restored file identical to the source"
    rm -rf "$d/src" "$d/backups" "$d/restore"
}

one_run small "$small_mib"
one_run big "$big_mib"

section "peak RSS"
rc=0
python3 - "$WORK" "$small_mib" "$big_mib" "$limit_kib" "$growth_kib" <<'EOF' || rc=$?
import json, sys

work, small_mib, big_mib, limit, growth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
m = lambda label, op: json.load(open(f"{work}/m-{label}-{op}.json"))
failures = []
print(f"{'operation':<10} {'file MiB':>9} {'wall s':>8} {'MiB/s':>8} {'peak RSS KiB':>13} {'MiB':>6}")
for op in ("backup", "verify", "restore"):
    for label, mib in (("small", small_mib), ("big", big_mib)):
        r = m(label, op)
        kib = r["rss_kib"]
        rate = f"{int(mib) / r['wall_s']:.1f}" if r["wall_s"] else "-"
        shown = (f"{kib:>13} {kib / 1024:>6.1f}") if kib is not None else f"{'-':>13} {'-':>6}"
        print(f"{op:<10} {mib:>9} {r['wall_s']:>8.2f} {rate:>8} {shown}")
        if kib is None:
            failures.append(f"{op} {label}: no RSS sample (run too short to measure)")
        elif kib > limit:
            failures.append(f"{op} {label}: peak RSS {kib} KiB is over the {limit} KiB limit")
    a, b = m("small", op)["rss_kib"], m("big", op)["rss_kib"]
    if a is not None and b is not None and b - a > growth:
        failures.append(f"{op}: peak RSS grew by {b - a} KiB from {small_mib} to {big_mib} MiB (limit {growth} KiB)")
print()
if failures:
    print("FAIL")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print(f"PASS: every peak under {limit // 1024} MiB, growth from {small_mib} to {big_mib} MiB under {growth // 1024} MiB")
EOF
exit "$rc"
