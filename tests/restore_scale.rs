//! Restore of many files through the real binary: peak memory does not
//! grow with the number of files, and the daemon keeps answering while it
//! restores 100,000 of them.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `n` empty files, 1000 per directory, below the config tree.
fn many_files(name: &str, n: usize, extra_config: &str) -> Board {
    let b = Board::with_config(name, extra_config);
    let cfg = b.root.join("etc/myrvm");
    for i in 0..n {
        let dir = cfg.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("file-{i:07}")), b"").unwrap();
    }
    b.ok(&["backup", "config"]);
    b
}

/// Run `cmd` and return its peak resident set size (KiB, from `VmHWM`,
/// polled while it runs) and its wall time.
fn peak_rss(mut cmd: Command) -> (u64, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Ok(s) = fs::read_to_string(&status_file) {
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(status.success(), "restore failed: {err}");
    (peak, start.elapsed())
}

fn restore_peak(b: &Board, n: usize) -> (u64, Duration) {
    let target = b.tmp.path().join("t");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(&b.config)
        .arg("--quiet")
        .args(["restore", "config", "--target"])
        .arg(&target);
    let (peak, took) = peak_rss(cmd);
    let last = b.in_target(
        &target,
        &b.root.join(format!(
            "etc/myrvm/d{:04}/file-{:07}",
            (n - 1) / 1000,
            n - 1
        )),
    );
    assert!(last.exists(), "{} not restored", last.display());
    (peak, took)
}

fn compare(small: usize, large: usize) {
    let a = many_files("rss-small", small, "");
    let (peak_small, t_small) = restore_peak(&a, small);
    drop(a);
    let b = many_files("rss-large", large, "");
    let (peak_large, t_large) = restore_peak(&b, large);
    eprintln!(
        "restore peak RSS: {small} files {peak_small} KiB ({t_small:?}), {large} files {peak_large} KiB ({t_large:?})"
    );
    assert!(
        peak_large * 2 < peak_small * 3 + 4096,
        "peak RSS grows with the file count: {peak_small} KiB for {small} files, {peak_large} KiB for {large}"
    );
}

#[test]
fn restore_memory_does_not_grow_with_file_count_small() {
    compare(2_000, 20_000);
}

#[test]
#[ignore = "creates, backs up and restores 110,000 files (about a minute in a debug build); run with --ignored"]
fn restore_memory_does_not_grow_with_file_count() {
    compare(10_000, 100_000);
}

fn ping_ms(socket: &Path) -> Option<u128> {
    let start = Instant::now();
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"PING\n").ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    reply.starts_with("OK").then(|| start.elapsed().as_millis())
}

fn daemon_answers_during_restore(n: usize) {
    let b = Board::new("ping");
    let socket = b.tmp.path().join("run/control.sock");
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\nbackup_enabled = false",
        socket.display()
    ));
    let cfg = b.root.join("etc/myrvm");
    for i in 0..n {
        let dir = cfg.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("file-{i:07}")), b"").unwrap();
    }
    b.ok(&["backup", "config"]);
    let log = fs::File::create(b.tmp.path().join("daemon.log")).unwrap();
    let mut child = bin()
        .arg("--config")
        .arg(&b.config)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ping_ms(&socket).is_none() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = b.tmp.path().join("t");
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(format!("RESTORE config latest target={}\n", target.display()).as_bytes())
        .unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("OK"), "{reply}");
    let job: serde_json::Value = serde_json::from_str(&reply[3..]).unwrap();
    let job = job["job"].as_u64().unwrap();
    let (mut worst, mut pings) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    let state = loop {
        let ms = ping_ms(&socket).expect("daemon stopped answering PING");
        worst = worst.max(ms);
        pings += 1;
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(format!("JOB {job}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        let j: serde_json::Value = serde_json::from_str(&reply[3..]).unwrap();
        let state = j["state"].as_str().unwrap_or("").to_string();
        if state != "queued" && state != "running" {
            break j;
        }
        assert!(Instant::now() < deadline, "restore never ended");
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("{pings} PINGs during the restore of {n} files, slowest {worst} ms");
    assert_eq!(state["state"], "done", "{state}");
    assert!(
        pings >= 3,
        "the restore was too quick to test ({pings} pings)"
    );
    assert!(worst < 1000, "a PING took {worst} ms during the restore");
}

#[test]
fn the_daemon_answers_while_restoring_many_files_small() {
    daemon_answers_during_restore(10_000);
}

#[test]
#[ignore = "backs up and restores 100,000 files through the daemon (about a minute in a debug build); run with --ignored"]
fn the_daemon_answers_while_restoring_100k_files() {
    daemon_answers_during_restore(100_000);
}
