//! The daemon's peak RSS with monitoring on stays under 8 MiB (issue 8):
//! a daemon with `backup_monitoring_enabled`, the shortest monitoring
//! interval the config allows (1s), a node_exporter textfile and a webhook
//! sink whose receiver holds every request a while (so the outbox and the
//! HTTP client are busy while alerts, raised with `TEST-ALERT`, wait their
//! turn) backs up every strategy a few times and answers `METRICS`,
//! `STATUS` and `HEALTH` in between; once the receiver has every alert,
//! its `VmHWM` (peak resident set, from `/proc/PID/status`) is read.
//!
//! What the bound is checked on. The 8 MiB are the board's: its daemon is
//! the stripped `board` build (opt-level "z", fat LTO, no unwind tables),
//! whose size CI holds to 3.5 MiB. Its whole peak is measured on the
//! emulated board (`board/accept/guest/harness`, healthy boot). This
//! test runs the host's `--release` build, whose code is twice that size
//! (no LTO, unwind tables, every dependency's generic code) and, being
//! in the page cache, is mapped 64 KiB around every instruction the
//! daemon touches; so here the bound is split the way it adds up on the
//! board: everything but the executable's own clean pages (heap, stack,
//! data, the C library) must stay under 8 MiB less the board binary's
//! 3.5 MiB, however large the host's code is. The total is printed too.
//! A debug build gets twice the bound; under the emulator
//! (`RVM_BACKUP_TEST_RUNNER`) the process measured is qemu itself, so
//! there the figures are only printed and the rest of the test (every
//! job done, every reply `OK`) still has to pass.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const LIMIT_KIB: u64 = 8 << 10;
/// The stripped board binary's budget (`.ci/run`'s `MAX_BOARD_BYTES`): on
/// the board, at most this much of the peak is the executable's own pages.
const BOARD_BINARY_KIB: u64 = 3584;

fn patience() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(20)
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request(socket: &std::path::Path, line: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(patience())).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    Some(reply)
}

fn ok_json(socket: &std::path::Path, line: &str) -> serde_json::Value {
    let r = request(socket, line).unwrap_or_default();
    let body = r
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{line}: {r}"));
    serde_json::from_str(body).unwrap()
}

/// An HTTP receiver that holds every request `hold` before it answers
/// 200; counts the requests it answered. Stops when dropped.
struct SlowReceiver {
    port: u16,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SlowReceiver {
    fn start(hold: Duration) -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let a = a.clone();
                std::thread::spawn(move || {
                    if common::http::read_request(&mut conn).is_none() {
                        return;
                    }
                    std::thread::sleep(hold);
                    if conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .is_ok()
                    {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        SlowReceiver {
            port,
            answered,
            stop,
        }
    }
}

impl Drop for SlowReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Peak resident set of `pid`, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resident KiB of `pid`'s clean pages of its own executable file: its
/// code and constants as read from the file (pages it wrote, such as
/// relocated data, are dirty and stay in the rest). These only grow while
/// the process runs, so read at the end they are at least what they were
/// at the peak, and `peak - this` does not understate the rest.
fn own_clean_file_kib(pid: u32) -> u64 {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let exe = exe.to_str().unwrap().to_owned();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let kib = |l: &str, key: &str| -> Option<u64> {
        l.strip_prefix(key)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let (mut ours, mut total, mut dirty) = (false, 0u64, 0u64);
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = l.split_whitespace().nth(5) == Some(exe.as_str());
        } else if ours {
            if let Some(k) = kib(l, "Rss:") {
                total += k;
            } else if let Some(k) = kib(l, "Private_Dirty:").or_else(|| kib(l, "Shared_Dirty:")) {
                dirty += k;
            }
        }
    }
    total - dirty
}

#[test]
fn daemon_peak_rss_stays_under_8_mib_with_monitoring_on() {
    let b = Board::new("monitor-rss");
    let socket = b.tmp.path().join("run/control.sock");
    let prom = b.tmp.path().join("prom");
    fs::create_dir_all(&prom).unwrap();
    let rx = SlowReceiver::start(Duration::from_secs(2));
    b.write_config(&format!(
        "socket = \"{}\"\nbackup_monitoring_enabled = true\nbackup_monitoring_interval = \"1s\"\ntextfile_dir = \"{}\"\n",
        socket.display(),
        prom.display()
    ));
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(&format!(
        "\n[[alert]]\ntype = \"webhook\"\nname = \"slow\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
        rx.port
    ));
    fs::write(&b.config, text).unwrap();
    b.populate();
    let log = fs::File::create(b.tmp.path().join("daemon.log")).unwrap();
    let child = bin()
        .arg("--config")
        .arg(&b.config)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let daemon = Running(child);
    let deadline = Instant::now() + patience();
    while !request(&socket, "PING").is_some_and(|r| r.starts_with("OK")) {
        assert!(
            Instant::now() < deadline,
            "daemon did not start: {}",
            fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut raised = 0;
    for round in 0..3 {
        // Alerts for the slow receiver: they wait in the outbox while one
        // is being sent.
        for sev in ["warning", "critical"] {
            ok_json(&socket, &format!("TEST-ALERT {sev}"));
            raised += 1;
        }
        let ids = ok_json(&socket, "BACKUP all")["jobs"].clone();
        for id in ids.as_array().unwrap() {
            let deadline = Instant::now() + patience() * 3;
            loop {
                // Reads between and during the jobs.
                ok_json(&socket, "STATUS");
                let m = ok_json(&socket, "METRICS");
                assert!(m["text"].as_str().unwrap().contains("rvm_backup_up 1"));
                let j = ok_json(&socket, &format!("JOB {id}"));
                match j["state"].as_str() {
                    Some("queued" | "running") => {}
                    Some("done") => break,
                    _ => panic!("round {round}: job {id} did not succeed: {j}"),
                }
                assert!(Instant::now() < deadline, "job {id} never ended: {j}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        ok_json(&socket, "HEALTH");
        ok_json(&socket, "LIST");
    }
    // Every alert delivered (the HTTP path ran), the outbox drained.
    let deadline = Instant::now() + patience() * 3;
    while rx.answered.load(Ordering::SeqCst) < raised {
        ok_json(&socket, "STATUS");
        assert!(
            Instant::now() < deadline,
            "the slow receiver got {} of {raised} alerts",
            rx.answered.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = fs::read_to_string(prom.join("rvm_backup.prom")).unwrap();
    assert!(
        text.contains("rvm_backup_archives{strategy=\"database\"}"),
        "{text}"
    );
    let peak = vm_hwm_kib(pid);
    let code = own_clean_file_kib(pid);
    let rest = peak.saturating_sub(code);
    drop(daemon);
    let emulated = std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some();
    let limit = if cfg!(debug_assertions) {
        2 * (LIMIT_KIB - BOARD_BINARY_KIB)
    } else {
        LIMIT_KIB - BOARD_BINARY_KIB
    };
    eprintln!(
        "daemon peak RSS with monitoring on: {peak} KiB, of which {code} KiB this build's own code and constants; \
         the rest {rest} KiB (limit {limit} KiB, plus at most {BOARD_BINARY_KIB} KiB of board binary makes 8 MiB){}",
        if emulated {
            "; not checked: this is the emulator's own RSS"
        } else {
            ""
        }
    );
    if !emulated {
        assert!(
            rest < limit,
            "the daemon's peak RSS less its own code was {rest} KiB with monitoring on; the limit is {limit} KiB \
             (peak {peak} KiB, code {code} KiB)"
        );
    }
}
