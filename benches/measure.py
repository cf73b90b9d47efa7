#!/usr/bin/env python3
"""Run one command; report its wall time, peak RSS and I/O as one JSON line.

usage: measure.py [-o FILE] [--interval SECONDS] -- CMD [ARG...]

The JSON line goes to FILE (or to stdout without -o). The command's own stdout and
stderr pass through unchanged. measure.py exits with the command's exit status
(128 + N if signal N killed it).

Fields:
  wall_s            wall-clock seconds from spawn to exit
  rss_kib           peak resident set (VmHWM of /proc/PID/status), sampled every
                    --interval seconds (default 0.02) while the command runs. VmHWM is
                    a high-water mark, so a sample misses only growth in the final
                    interval before exit. It counts the whole process, all threads.
  rss_samples       how many VmHWM samples were read (0: the command was too quick)
  wait4_maxrss_kib  ru_maxrss from wait4(). Linux folds the pre-exec memory of the
                    forked launcher (this Python process, ~10 MiB) into it, so it is only
                    an upper bound. Use rss_kib.
  user_s, sys_s     CPU time of the command (and of children it reaped)
  rchar, wchar      bytes passed to read()/write()-like syscalls (/proc/PID/io)
  read_bytes, write_bytes, cancelled_write_bytes
                    storage-layer bytes from /proc/PID/io

The final /proc/PID/io is read after the command exits, before it is reaped:
os.waitid(..., WEXITED | WNOWAIT) leaves it a zombie, and the kernel still serves
/proc/PID/io for a zombie. VmHWM is gone by then (the address space is freed at exit),
which is why it is sampled while the command runs.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time


def usage(msg=None):
    if msg:
        print(f"measure.py: {msg}", file=sys.stderr)
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
    out, interval = None, 0.02
    if "--" not in argv:
        usage("missing -- before the command")
    split = argv.index("--")
    opts, cmd = argv[:split], argv[split + 1:]
    i = 0
    while i < len(opts):
        a = opts[i]
        if a in ("-o", "--output") and i + 1 < len(opts):
            out = opts[i + 1]
            i += 2
        elif a == "--interval" and i + 1 < len(opts):
            try:
                interval = float(opts[i + 1])
            except ValueError:
                usage(f"bad --interval {opts[i + 1]!r}")
            if interval <= 0:
                usage("--interval must be positive")
            i += 2
        elif a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            usage(f"unknown option {a!r}")
    if not cmd:
        usage("no command given")
    return out, interval, cmd


def read_io(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except (OSError, ValueError):
        return None


def read_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def exited(pid):
    """True once the child has exited; it stays an unreaped zombie."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None


def main():
    out, interval, cmd = parse_args(sys.argv[1:])
    start = time.monotonic()
    try:
        child = subprocess.Popen(cmd)
    except OSError as e:
        print(f"measure.py: cannot run {cmd[0]!r}: {e.strerror}", file=sys.stderr)
        sys.exit(127)
    pid = child.pid
    # Ctrl-C reaches the child through the terminal; stay alive to report and reap it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # A pidfd turns readable the moment the child exits, so the wall time is exact
    # and sampling stops without waiting out the rest of an interval.
    try:
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pidfd, poller = None, None

    hwm, samples, io = 0, 0, None
    while True:
        if exited(pid):
            end = time.monotonic()
            break
        h = read_hwm_kib(pid)
        if h is not None:
            hwm = max(hwm, h)
            samples += 1
        io = read_io(pid) or io
        if poller is not None:
            poller.poll(interval * 1000)
        else:
            time.sleep(interval)
    wall = end - start
    io = read_io(pid) or io or {}
    _, status, ru = os.wait4(pid, 0)
    if pidfd is not None:
        os.close(pidfd)
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code  # reaped here; keep Popen from waiting again
    exit_status = 128 - code if code < 0 else code

    report = {
        "cmd": cmd,
        "exit": exit_status,
        "wall_s": round(wall, 3),
        "rss_kib": hwm if samples else None,
        "rss_samples": samples,
        "wait4_maxrss_kib": ru.ru_maxrss,
        "user_s": round(ru.ru_utime, 3),
        "sys_s": round(ru.ru_stime, 3),
    }
    for k in ("rchar", "wchar", "read_bytes", "write_bytes", "cancelled_write_bytes"):
        report[k] = io.get(k)
    line = json.dumps(report)
    if out:
        with open(out, "w") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)
    sys.exit(exit_status)


if __name__ == "__main__":
    main()
