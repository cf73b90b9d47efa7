#!/usr/bin/env python3
"""Socket responsiveness while a big backup runs (issue: p99 <= 20 ms).

Starts `rvm-backup daemon` on a fresh config whose application tree is one
large file (default 1600 MiB, half random, half text), queues BACKUP
application, and while it runs: ten hostile clients (1 MiB without a
newline, half lines, binary garbage, silence) and one honest client sending
STATUS 500 times, timing each reply. Prints p50/p99/max latency and the
daemon's peak RSS; exits 1 if p99 > 20 ms, peak RSS > 16 MiB, or the
backup did not overlap the measurement.

usage: benches/socket-latency.py [SIZE_MIB]   (RVM_BACKUP_BIN, WORK, KEEP=1)"""
import json, os, shutil, socket, subprocess, sys, tempfile, threading, time

size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1600
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("RVM_BACKUP_BIN", os.path.join(repo, "target/release/rvm-backup"))
if "RVM_BACKUP_BIN" not in os.environ:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=repo, check=True)
work = os.environ.get("WORK") or tempfile.mkdtemp(prefix="rvm-latency.")
app, run = os.path.join(work, "app"), os.path.join(work, "run")
os.makedirs(app, exist_ok=True)
big = os.path.join(app, "big.bin")
if not os.path.exists(big) or os.path.getsize(big) != size_mib << 20:
    line = b"2026-11-24 10:00:00 INFO deposit accepted id=123456 weight=512.3g\n"
    text = (line * ((1 << 20) // len(line) + 1))[: 1 << 20]
    with open(big, "wb") as f:
        for i in range(size_mib):
            f.write(os.urandom(1 << 20) if i % 2 else text)
cfg = os.path.join(work, "rvm-backup.toml")
sock = os.path.join(run, "control.sock")
with open(cfg, "w") as f:
    f.write(f'backup_dir = "{work}/backups"\nkey_file = "{work}/master.key"\nsocket = "{sock}"\n'
            f'backup_enabled = false\n[application]\npaths = ["{app}"]\n')
if not os.path.exists(os.path.join(work, "master.key")):
    subprocess.run([binary, "keygen", "--out", os.path.join(work, "master.key")], check=True, stdout=subprocess.DEVNULL)
shutil.rmtree(os.path.join(work, "backups"), ignore_errors=True)
daemon = subprocess.Popen([binary, "--config", cfg, "daemon"], stderr=subprocess.DEVNULL)
peak_rss = [0]

def watch_rss():
    while daemon.poll() is None:
        try:
            for l in open(f"/proc/{daemon.pid}/status"):
                if l.startswith("VmHWM:"):
                    peak_rss[0] = max(peak_rss[0], int(l.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)

def request(line, timeout=5):
    s = socket.socket(socket.AF_UNIX); s.settimeout(timeout); s.connect(sock)
    s.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode()

for _ in range(500):
    if os.path.exists(sock):
        try:
            request("PING"); break
        except OSError:
            pass
    time.sleep(0.01)
threading.Thread(target=watch_rss, daemon=True).start()
stop = threading.Event()

def hostile(kind):
    while not stop.is_set():
        try:
            s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sock)
            if kind == 0:
                s.sendall(b"A" * (1 << 20))
            elif kind == 1:
                s.sendall(b"STAT")
            elif kind == 2:
                s.sendall(os.urandom(4096))
            time.sleep(0.5)
            s.close()
        except OSError:
            time.sleep(0.05)

threads = [threading.Thread(target=hostile, args=(i % 4,), daemon=True) for i in range(10)]
for t in threads:
    t.start()
job = json.loads(request("BACKUP application")[3:])["jobs"][0]
lat, overlapped = [], 0
for _ in range(500):
    t0 = time.perf_counter()
    reply = request("STATUS")
    lat.append((time.perf_counter() - t0) * 1000)
    assert reply.startswith("OK"), reply
    overlapped += json.loads(reply[3:])["state"] == "running"
    time.sleep(0.002)
stop.set()
while json.loads(request(f"JOB {job}")[3:])["state"] in ("queued", "running"):
    time.sleep(0.2)
outcome = json.loads(request(f"JOB {job}")[3:])
daemon.terminate(); daemon.wait()
lat.sort()
p50, p99, mx = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], lat[-1]
print(f"file {size_mib} MiB; backup job: {outcome['state']} ({outcome['outcome']})")
print(f"STATUS x500 with 10 hostile clients: p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {mx:.2f} ms; "
      f"{overlapped}/500 answered while the backup ran")
print(f"daemon peak RSS: {peak_rss[0] / 1024:.1f} MiB")
if os.environ.get("KEEP") != "1":
    shutil.rmtree(work, ignore_errors=True)
ok = p99 <= 20 and peak_rss[0] <= 16 * 1024 and overlapped >= 250 and outcome["state"] == "done"
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
