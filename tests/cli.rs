//! The command line's error paths: every bad input gets one clear line and
//! a non-zero exit, never a panic.

mod common;

use std::fs;

use common::*;

fn run_with_config(text: &str) -> String {
    let t = TempDir::new("cfg");
    let cfg = t.path().join("c.toml");
    fs::write(&cfg, text).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("list")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn config_errors_name_the_key_and_line() {
    let err = run_with_config(
        "backup_dir = \"/tmp/x\"\n\n[config]\npaths = [\"/etc\"]\nexclud = [\"*.pyc\"]\n",
    );
    assert!(err.contains("exclud") && err.contains("line 5"), "{err}");
    let err = run_with_config("backup_interval = 10\n");
    assert!(
        err.contains("backup_interval") || err.contains("line 1"),
        "{err}"
    );
    let err = run_with_config("environment = \"prod\"\n");
    assert!(
        err.contains("line 1") && err.contains("production"),
        "{err}"
    );
    let err = run_with_config("[database\npath = 1");
    assert!(err.contains("line 1"), "{err}");
    let err = run_with_config("compression_level = 42\n");
    assert!(err.contains("compression_level"), "{err}");
}

#[test]
fn missing_config_says_where_it_looked() {
    let out = bin()
        .args(["--config", "/nonexistent/rvm.toml", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("/nonexistent/rvm.toml") && err.contains("not found"),
        "{err}"
    );
    let out = bin()
        .env("RVM_BACKUP_CONFIG", "/nonexistent/env.toml")
        .arg("list")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let b = Board::new("usage");
    for args in [
        &["frobnicate"][..],
        &["backup", "everything"],
        &["restore"],
        &["list", "--bogus"],
        &["restore", "config", "x", "--at", "2026-01-01"],
    ] {
        let out = b.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = b.fails(&["restore", "config", "--at", "last tuesday"]);
    assert!(err.contains("invalid time"), "{err}");
}

#[test]
fn unconfigured_or_empty_sources_are_clear_errors() {
    let b = Board::new("unconf");
    let err = b.fails(&["backup", "config"]);
    assert!(err.contains("none of the configured paths exist"), "{err}");
    let err = b.fails(&["restore", "logs"]);
    assert!(err.contains("no logs archive"), "{err}");
    let t = TempDir::new("nosections");
    let cfg = t.path().join("c.toml");
    fs::write(
        &cfg,
        format!(
            "backup_dir = \"{}\"\nencryption_enabled = false\n",
            t.path().display()
        ),
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["backup", "logs"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not configured") && err.contains("[logs]"),
        "{err}"
    );
}

/// A full disk fails the backup cleanly: one error line, nothing left
/// behind, earlier archives intact. Needs root to mount a tiny tmpfs.
#[test]
fn full_disk_fails_cleanly() {
    if !require_root("full_disk_fails_cleanly") {
        return;
    }
    let b = Board::new("full");
    b.populate();
    let small = b.tmp.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "cannot mount a tmpfs on {} as root",
        small.display()
    );
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        text.replace(
            &b.backups.display().to_string(),
            &small.display().to_string(),
        ),
    )
    .unwrap();
    b.ok(&["backup", "config"]);
    let before = backup_files(&small);
    let err = b.fails(&["backup", "application"]);
    let after = backup_files(&small);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(err.contains("disk is full"), "{err}");
    assert_eq!(after, before, "a failed backup left files behind");
}

/// The hang report that `output_within` prints names each thread of the
/// hung program with its state and system call, and its command line.
#[test]
fn a_hang_report_shows_every_thread_and_the_command_line() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    // Wait until the child has reached `sleep` (its command line says so).
    let deadline = std::time::Instant::now() + run_limit();
    let report = loop {
        let r = thread_states(child.id());
        if r.contains("command line: sleep 30") && r.contains("state S") {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(report.contains("\"sleep\""), "{report}");
    assert!(report.contains("syscall "), "{report}");
    // A process that is gone is reported as such, not a panic.
    assert!(thread_states(child.id()).contains("no threads"));
}
