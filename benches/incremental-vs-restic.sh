#!/usr/bin/env bash
# Benchmark: incremental backups against restic on the same RVM-board-like data set, in
# one run (issue 9, "Benchmarks", first two bullets).
# Not part of CI: it needs restic, minutes of time, and about 4 times the data set in
# free space.
#
# usage: benches/incremental-vs-restic.sh [SCALE] [RUNS]  (SCALE defaults to 1.0, RUNS to 5)
# env:   WORK=DIR             scratch directory (default: a new mktemp dir under /tmp);
#                             a given WORK must be missing or empty
#        KEEP=1               keep WORK afterwards (it is removed otherwise)
#        RVM_BACKUP_BIN=PATH  benchmark this binary instead of building target/release/rvm-backup
#
# Warm page cache throughout (nothing is dropped): these are the runs a board makes every
# few hours over data it has just read. Every figure is the median of RUNS runs, each
# measured by benches/measure.py. "Bytes written" is the growth of the backup dir (du -sb)
# and of the restic repository (du -sb; restic's cache lives outside it) over one run.
#
# Before any measured run, each tool makes a first (full) backup and a second one (our
# incremental, restic's with a parent), so that both have a chain to compare against.
#
# 1. Nothing changed: `rvm-backup backup --all` against `restic backup` of the same paths
#    (restic picks the previous snapshot of the same host and paths as parent). Also
#    `rvm-backup backup config logs application` and `rvm-backup backup database` alone: the
#    database's incremental sees an unchanged fingerprint (files, WAL and headers as recorded
#    with its parent) and reads no page.
# 2. 1% changed: in each run, a fixed seed (the run number) picks 1% of the files of
#    config/, logs/ and app/; each gets 64 bytes overwritten at a random offset and a 64-byte
#    line appended. And 1% of the database's pages are changed: UPDATEs of rows spread
#    evenly over the deposits table (same-length values, so each row stays in its page),
#    committed, then checkpointed (TRUNCATE) so restic sees the change in the main file too.
#    Then `backup --all` and `restic backup`. Then a second change of the same kind (seed
#    1000 + run) and `backup config logs application` alone (the tree-only figure; restic
#    backs that change up too, unmeasured, so that its parent stays current, and so does
#    `backup database`, so that the next run's database incremental holds that run's
#    change only, the one its yardstick measures).
#
#    "Compressed size of what changed" (the bytes target's yardstick) is defined as: the
#    zlib level-1 (deflate) size of the whole content of each changed file, compressed
#    file by file, plus the zlib level-1 size of each changed database page (4096 bytes,
#    found by comparing the main database file page by page before and after), compressed
#    page by page. The script also prints the narrower "changed bytes only" size (the 128
#    new bytes per file plus the changed pages), for information.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${1:-1.0}
runs=${2:-5}
measure=(python3 "$repo/benches/measure.py")
mkdata="$repo/../shared/bench/mkdata.py"

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $scale =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SCALE must be a number like 1.0, not '$scale'"
# Each run adds 4 incrementals to each tree chain; full_every_count = 63 is the most a chain holds.
[[ $runs =~ ^([1-9]|1[0-5])$ ]] || die "RUNS must be 1..15, not '$runs'"
[ -f "$mkdata" ] || die "data set generator not found: $mkdata"
for tool in python3 restic du df; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# ---- scratch space --------------------------------------------------------------
if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d /tmp/rvm-incbench.XXXXXX)
fi
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Two full copies of the data, the restic repository, and the incrementals (small).
need_mib=$(awk -v s="$scale" -v r="$runs" 'BEGIN { printf "%d", (1400 + 60 * r) * s + 100 }')
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
cat >"$cfg" <<EOF
backup_dir = "$WORK/rvb"
key_file = "$WORK/master.key"
full_every_count = 63

[database]
path = "$WORK/data/db/rvm.sqlite"

[config]
paths = ["$WORK/data/config"]

[logs]
paths = ["$WORK/data/logs"]

[application]
paths = ["$WORK/data/app"]
EOF
"$bin" --config "$cfg" keygen --out "$WORK/master.key" >/dev/null

export RESTIC_REPOSITORY="$WORK/restic"
export RESTIC_PASSWORD="benchmark-only-not-a-secret"
export RESTIC_CACHE_DIR="$WORK/restic-cache"
restic init -q
restic_backup=(restic backup -q --host bench "$WORK/data")

# ---- the change generator -------------------------------------------------------------
cat >"$WORK/mutate.py" <<'EOF'
"""mutate.py DATA SEED OUT.json: change 1% of the files and 1% of the database pages."""
import hashlib, json, os, random, sqlite3, sys, zlib

data, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
PAGE = 4096

files = []
for top in ("config", "logs", "app"):
    for d, _, names in os.walk(os.path.join(data, top)):
        files += [os.path.join(d, n) for n in names]
files.sort()
chosen = rnd.sample(files, max(1, round(len(files) / 100)))
whole_z = narrow_z = 0
for path in chosen:
    size = os.path.getsize(path)
    binary = path.endswith(".bin")
    if binary:
        patch = rnd.randbytes(64)
        line = rnd.randbytes(64)
    else:
        patch = ("%064x" % rnd.getrandbits(256)).encode()
        line = ("# changed %052x\n" % rnd.getrandbits(208)).encode()
    with open(path, "r+b") as f:
        f.seek(rnd.randrange(0, max(1, size - 64)))
        f.write(patch)
        f.seek(0, os.SEEK_END)
        f.write(line)
    with open(path, "rb") as f:
        whole_z += len(zlib.compress(f.read(), 1))
    narrow_z += len(zlib.compress(patch + line, 1))

db = os.path.join(data, "db", "rvm.sqlite")
def pages():
    with open(db, "rb") as f:
        return [hashlib.blake2b(f.read(PAGE), digest_size=16).digest() for _ in range(os.path.getsize(db) // PAGE)]
c = sqlite3.connect(db)
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
before = pages()
total = len(before)
n = c.execute("select max(id) from deposits").fetchone()[0]
k = max(1, total // 100 - 1)  # page 1 (the header) changes too
step = n // k
for i in range(k):
    c.execute("update deposits set user_token = ?, weight_g = ? where id = ?",
              ("%032x" % rnd.getrandbits(128), round(rnd.uniform(10, 900), 1), 1 + i * step + rnd.randrange(step)))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
after = pages()
changed = [i for i in range(min(len(before), len(after))) if before[i] != after[i]]
changed += list(range(len(before), len(after)))
pages_z = 0
with open(db, "rb") as f:
    for i in changed:
        f.seek(i * PAGE)
        pages_z += len(zlib.compress(f.read(PAGE), 1))
json.dump({"files": len(chosen), "files_total": len(files), "files_z": whole_z, "files_narrow_z": narrow_z,
           "pages": len(changed), "pages_total": total, "pages_z": pages_z}, open(out, "w"))
print(f"changed {len(chosen)} of {len(files)} files ({whole_z} bytes deflated whole), "
      f"{len(changed)} of {total} database pages ({pages_z} bytes deflated)")
EOF

# ---- measurement helpers -----------------------------------------------------------
# run NAME DIR CMD...: measure CMD into $WORK/m-NAME.json, DIR's growth into $WORK/g-NAME
run() {
    local name=$1 dir=$2 before after
    shift 2
    echo "+ $*"
    before=$(du -sb "$dir" | cut -f1)
    "${measure[@]}" -o "$WORK/m-$name.json" -- "$@"
    after=$(du -sb "$dir" | cut -f1)
    echo $((after - before)) >"$WORK/g-$name"
}
# newest archive bytes per strategy (from list --json) into $WORK/s-NAME.json
sizes() {
    "$bin" --config "$cfg" list --json >"$WORK/s-$1.json"
}

# ---- the chains ---------------------------------------------------------------------
section "first backups (full) and second ones (incremental / with parent), unmeasured"
"$bin" --quiet --config "$cfg" backup --all
"${restic_backup[@]}"
"$bin" --quiet --config "$cfg" backup --all
"${restic_backup[@]}"
"$bin" --config "$cfg" list

# ---- 1. nothing changed --------------------------------------------------------------------
for i in $(seq "$runs"); do
    section "nothing changed, run $i of $runs"
    run "nc-all-$i" "$WORK/rvb" "$bin" --quiet --config "$cfg" backup --all
    run "nc-trees-$i" "$WORK/rvb" "$bin" --quiet --config "$cfg" backup config logs application
    run "nc-db-$i" "$WORK/rvb" "$bin" --quiet --config "$cfg" backup database
    run "nc-restic-$i" "$WORK/restic" "${restic_backup[@]}"
done

# ---- 2. 1% changed ---------------------------------------------------------------------------
for i in $(seq "$runs"); do
    section "1% changed, run $i of $runs"
    python3 "$WORK/mutate.py" "$WORK/data" "$i" "$WORK/c-$i.json"
    run "ch-all-$i" "$WORK/rvb" "$bin" --quiet --config "$cfg" backup --all
    sizes "ch-all-$i"
    run "ch-restic-$i" "$WORK/restic" "${restic_backup[@]}"
    python3 "$WORK/mutate.py" "$WORK/data" "$((1000 + i))" "$WORK/c2-$i.json"
    run "ch-trees-$i" "$WORK/rvb" "$bin" --quiet --config "$cfg" backup config logs application
    "${restic_backup[@]}"
    "$bin" --quiet --config "$cfg" backup database
done
"$bin" --config "$cfg" list | tail -n 8

# ---- report ------------------------------------------------------------------------------
section "results"
python3 - "$WORK" "$scale" "$runs" "$data_bytes" "$data_files" "$(restic version | head -n 1)" \
    "$(nproc)" <<'EOF'
import json, statistics, sys

work, scale, runs, data_bytes, data_files, restic_version, ncpu = sys.argv[1:]
runs = int(runs)
m = lambda n: json.load(open(f"{work}/m-{n}.json"))
g = lambda n: int(open(f"{work}/g-{n}").read())
med = statistics.median
wall = lambda n: med(m(f"{n}-{i}")["wall_s"] for i in range(1, runs + 1))
grow = lambda n: med(g(f"{n}-{i}") for i in range(1, runs + 1))
mib = lambda b: f"{b / 1048576:.2f} MiB"
kb = lambda b: f"{b / 1000:.1f} kB"
verdict = lambda ok: "PASS" if ok else "FAIL"

print(f"data set: scale {scale}, {data_bytes} bytes in {data_files} files; {restic_version}; "
      f"{ncpu} CPUs; warm page cache; median of {runs} runs")

print("\n1. nothing changed since the last backup")
nc_all, nc_trees, nc_db, nc_r = wall("nc-all"), wall("nc-trees"), wall("nc-db"), wall("nc-restic")
print(f"  rvm-backup backup --all                        {nc_all:6.3f} s wall, wrote {mib(grow('nc-all'))}")
print(f"  rvm-backup backup config logs application      {nc_trees:6.3f} s wall, wrote {mib(grow('nc-trees'))}")
print(f"  rvm-backup backup database                    {nc_db:6.3f} s wall, wrote {mib(grow('nc-db'))}")
print(f"  restic backup (with parent)                    {nc_r:6.3f} s wall, wrote {mib(grow('nc-restic'))}")

print("\n2. 1% of the files and 1% of the database pages changed")
ch = [json.load(open(f"{work}/c-{i}.json")) for i in range(1, runs + 1)]
files_z = med(c["files_z"] for c in ch)
pages_z = med(c["pages_z"] for c in ch)
narrow = med(c["files_narrow_z"] + c["pages_z"] for c in ch)
changed_z = med(c["files_z"] + c["pages_z"] for c in ch)
c0 = ch[0]
print(f"  change: {c0['files']} of {c0['files_total']} files, {c0['pages']} of {c0['pages_total']} pages (run 1)")
print(f"  compressed size of what changed: {kb(changed_z)} (changed files whole {kb(files_z)} + changed pages "
      f"{kb(pages_z)}); changed bytes only: {kb(narrow)}")
# per-strategy bytes of the archives the --all run made, from list --json
tree_bytes, db_bytes = [], []
for i in range(1, runs + 1):
    newest = {}
    for line in open(f"{work}/s-ch-all-{i}.json"):
        a = json.loads(line)
        if a["strategy"] not in newest or a["created"] > newest[a["strategy"]]["created"]:
            newest[a["strategy"]] = a
    tree_bytes.append(sum(a["bytes"] for s, a in newest.items() if s != "database"))
    db_bytes.append(newest["database"]["bytes"] if "database" in newest else 0)
tree_b, db_b = med(tree_bytes), med(db_bytes)
ch_all, ch_trees, ch_r = wall("ch-all"), wall("ch-trees"), wall("ch-restic")
all_b, r_b = grow("ch-all"), grow("ch-restic")
print(f"  rvm-backup backup --all                        {ch_all:6.3f} s wall, wrote {mib(all_b)} "
      f"(tree archives {kb(tree_b)}, database archive {kb(db_b)})")
print(f"  rvm-backup backup config logs application      {ch_trees:6.3f} s wall, wrote {kb(grow('ch-trees'))}")
print(f"  restic backup (with parent)                    {ch_r:6.3f} s wall, wrote {mib(r_b)}")

print("\nsummary (targets of issue 9)")
rows = [
    ("nothing changed, backup --all <= 0.2 s", f"{nc_all:.3f} s", nc_all <= 0.2),
    ("  trees alone (config logs application) <= 0.2 s", f"{nc_trees:.3f} s", nc_trees <= 0.2),
    ("  database alone <= 0.2 s", f"{nc_db:.3f} s", nc_db <= 0.2),
    ("1% changed, backup --all wall <= 1/4 restic's", f"{ch_all / ch_r:.2f} of restic's", ch_all <= ch_r / 4),
    ("  trees alone wall <= 1/4 restic's --all", f"{ch_trees / ch_r:.2f} of restic's", ch_trees <= ch_r / 4),
    ("1% changed, bytes written <= 1.5x changed, compressed", f"{all_b / changed_z:.1f}x", all_b <= 1.5 * changed_z),
    ("  trees alone: tree archives <= 1.5x changed files", f"{tree_b / files_z:.2f}x", tree_b <= 1.5 * files_z),
    ("  database alone: its archive <= 1.5x changed pages", f"{db_b / pages_z:.2f}x", db_b <= 1.5 * pages_z),
    ("  (restic's bytes written against the same yardstick)", f"{r_b / changed_z:.1f}x", None),
]
for what, fig, ok in rows:
    print(f"  {what:<58} {fig:>20}  {'' if ok is None else verdict(ok)}")
EOF
