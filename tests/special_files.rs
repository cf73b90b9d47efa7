//! Files that are not what they claim: a key file, config file or sidecar
//! that is a FIFO or leads to a device must fail at once with a clear
//! error, never hang or read until out of memory; impossible `--at` dates
//! are refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, require_root, Board};

/// Run with a deadline: a run that blocks is a failure, not a hung suite.
fn run_bounded(mut cmd: std::process::Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rvm-backup did not finish in time: it blocked on a special file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(p: &Path) {
    let _ = fs::remove_file(p);
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

fn run(b: &Board, args: &[&str]) -> Output {
    let mut c = bin();
    c.arg("--config").arg(&b.config).arg("--quiet").args(args);
    run_bounded(c)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn key_file_fifo_or_device_fails_fast() {
    let b = Board::new("special-key");
    b.populate();
    fs::remove_file(&b.key).unwrap();
    mkfifo(&b.key);
    // Mode 0600, so only the kind of file can be what is refused.
    fs::set_permissions(&b.key, fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(&b, &["list"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("key file") && e.contains("FIFO") && e.contains("regular file"),
        "{e}"
    );
    fs::remove_file(&b.key).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &b.key).unwrap();
    let o = run(&b, &["backup", "config"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("key file") && e.contains("character device"),
        "{e}"
    );
    // A private (0600) copy of /dev/zero passes the mode check: only the
    // file type check stops an endless read. Making one needs root.
    fs::remove_file(&b.key).unwrap();
    let made = std::process::Command::new("mknod")
        .args(["-m", "600"])
        .arg(&b.key)
        .args(["c", "1", "5"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let o = run(&b, &["list"]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{e}");
        assert!(
            e.contains("key file") && e.contains("character device"),
            "{e}"
        );
    } else {
        // Only root may mknod: under CI (root) not making it is a failure.
        assert!(
            !require_root("the private /dev/zero node case"),
            "mknod of a character device failed as root"
        );
    }
}

#[test]
fn config_file_fifo_or_device_fails_fast() {
    let b = Board::new("special-config");
    fs::remove_file(&b.config).unwrap();
    mkfifo(&b.config);
    let o = run(&b, &["list"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("FIFO"), "{e}");
    let mut c = bin();
    c.args(["--config", "/dev/zero", "list"]);
    let o = run_bounded(c);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("character device"), "{e}");
}

#[test]
fn special_sidecars_are_a_per_file_problem_in_list() {
    let b = Board::new("special-sidecar");
    b.populate();
    b.ok(&["backup", "config"]);
    let dir = b.backups.join("config");
    let fifo = dir.join("config-20260101T000000Z-000001.meta");
    mkfifo(&fifo);
    let zero = dir.join("config-20260101T000000Z-000002.meta");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let o = run(&b, &["list"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error:") && l.contains("000001.meta") && l.contains("FIFO")),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.contains("error:")
            && l.contains("000002.meta")
            && l.contains("symbolic link")),
        "{e}"
    );
    // The good archive is still listed.
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

#[test]
fn impossible_at_dates_are_refused() {
    let b = Board::new("special-at");
    b.populate();
    b.ok(&["backup", "config"]);
    let target = b.tmp.path().join("r");
    for at in ["2026-02-30", "2026-11-24T24:00:00Z", "2025-02-29"] {
        let e = b.fails(&[
            "restore",
            "config",
            "--at",
            at,
            "--target",
            target.to_str().unwrap(),
        ]);
        assert!(e.contains("invalid time") && e.contains(at), "{at}: {e}");
    }
    assert!(!target.exists());
}

/// The FIFO half of roundtrip.rs's `fifos_are_skipped_and_the_backup_dir_
/// is_not_backed_up`, whose other half (backup_dir inside a source) is
/// now refused at config load (see tests/config_overlap.rs).
#[test]
fn fifos_in_a_source_are_skipped() {
    let b = Board::new("special-fifo-source");
    b.populate();
    mkfifo(&b.root.join("opt/myrvm/control.fifo"));
    b.ok(&["backup", "application"]);
    let o = run(&b, &["backup", "application"]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("control.fifo") && e.contains("skipping"), "{e}");
    let listed = b.list();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["skipped"], 1);
    assert_eq!(listed[0]["files"], listed[1]["files"]);
}
