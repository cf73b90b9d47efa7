//! Restore of many files through the real binary: peak memory does not
//! grow with the number of files. (That the daemon keeps answering while it
//! restores 100,000 of them is in `tests/daemon.rs`.)

mod common;

use std::fs;
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

/// 10,000 against 100,000 files in an optimised native build (what CI's
/// `cargo test --release` runs); 2,000 against 20,000 in a debug build or
/// under the emulator, where 110,000 files take minutes.
#[test]
fn restore_memory_does_not_grow_with_file_count() {
    let slow = cfg!(debug_assertions) || std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some();
    if slow {
        compare(2_000, 20_000);
    } else {
        compare(10_000, 100_000);
    }
}
