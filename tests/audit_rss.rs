//! `audit verify` of a 50 MB log in fixed memory. Alone in its own test
//! binary, so the peak RSS (VmHWM) it reads belongs to this test only.

use std::fs;
use std::io::{BufWriter, Write};

use sha2::{Digest, Sha256};

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_50_mb_log_verifies_in_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("rvb-audit-rss-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.log");
    // Write a valid chain of 50 MB, streaming.
    let mut w = BufWriter::new(fs::File::create(&path).unwrap());
    let mut prev = "0".repeat(64);
    let mut seq = 0u64;
    let mut written = 0usize;
    let pad = "x".repeat(150);
    while written < 50 << 20 {
        seq += 1;
        let line = serde_json::json!({
            "prev": prev,
            "result": format!("refused 403 {pad}"),
            "seq": seq,
            "time": "2026-11-25T20:31:02Z",
            "what": "BACKUP config",
            "who": {"pid": 1, "uid": 4104},
        })
        .to_string();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        written += line.len() + 1;
        prev = Sha256::digest(line.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    }
    w.flush().unwrap();
    drop(w);
    fs::write(dir.join("audit.log.head"), format!("{seq} {prev}\n")).unwrap();
    let before = vm_hwm_kib();
    let state = rvm_backup::audit::verify(&path).unwrap();
    let grown = vm_hwm_kib().saturating_sub(before);
    assert_eq!(state.records, seq);
    assert_eq!(state.last_hash, prev);
    assert!(grown < 8 << 10, "verify grew the peak RSS by {grown} KiB");
    // Opening reads only the tail (and verifies streaming); the next
    // record rotates the oversized log and the chain goes on.
    let mut log = rvm_backup::audit::AuditLog::open_with(
        &path,
        rvm_backup::audit::Limits {
            max_bytes: 4 << 20,
            keep: 3,
        },
    )
    .unwrap();
    log.record(&rvm_backup::audit::Actor::Daemon, "start", "ok")
        .unwrap();
    let grown = vm_hwm_kib().saturating_sub(before);
    assert!(grown < 8 << 10, "open grew the peak RSS by {grown} KiB");
    assert!(rvm_backup::audit::rotated_path(&path, 1).exists());
    let state = rvm_backup::audit::verify(&path).unwrap();
    assert_eq!(state.last_seq, seq + 1);
    fs::remove_dir_all(&dir).unwrap();
}
