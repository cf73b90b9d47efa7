//! What the front ends owe an operator whatever happens around them: a
//! closed or full stdout never aborts work, ids name the key an archive
//! needs, `ctl` sends exactly one request line, the daemon never deletes a
//! file its `socket` key points at, and `demo` cleans only what it made.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use common::*;

#[test]
fn a_closed_stdout_never_stops_backup_all() {
    let b = Board::new("closedout");
    b.populate();
    // Not --quiet: every strategy prints a line into the closed pipe.
    let mut child = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["backup", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before any output
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
    assert!(out.status.success(), "{err}");
    for s in ["database", "config", "logs", "application"] {
        assert_eq!(b.ids(s).len(), 1, "{s} was not backed up: {err}");
    }
}

#[test]
fn a_full_stdout_is_an_error_not_an_abort() {
    let b = Board::new("fullout");
    b.populate();
    b.ok(&["backup", "config"]);
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["list"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // And a backup whose output cannot be written still stores everything.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["backup", "--all"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), None);
    for s in ["database", "config", "logs", "application"] {
        assert!(!b.ids(s).is_empty(), "{s} was not backed up");
    }
}

#[test]
fn an_id_made_with_another_key_names_that_key() {
    let b = Board::new("idkey");
    b.populate();
    b.ok(&["backup", "config"]);
    let a = &b.list()[0];
    let (id, needed) = (a["id"].as_str().unwrap(), a["key_id"].as_str().unwrap());
    fs::remove_file(&b.key).unwrap();
    b.ok(&["keygen", "--out", b.key.to_str().unwrap()]);
    for prefix in [id, &id[..id.len() - 3]] {
        let err = b.fails(&["verify", prefix]);
        assert!(err.contains(needed), "verify {prefix}: {err}");
        assert!(
            !err.contains("no archive with id"),
            "verify {prefix}: {err}"
        );
    }
    let err = b.fails(&["restore", "config", id, "--target", "/tmp/rvb-never"]);
    assert!(err.contains(needed), "{err}");
}

#[test]
fn ctl_refuses_a_second_line_smuggled_into_an_argument() {
    let b = Board::new("ctlnl");
    for word in ["PING\nRESTORE config", "STATUS\r", "caf\u{e9}"] {
        let out = b.run(&["ctl", "--socket", "/nonexistent/sock", word]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{word:?}: {err}");
        assert!(err.contains("control character"), "{word:?}: {err}");
    }
}

#[test]
fn the_daemon_never_deletes_what_its_socket_key_names() {
    let b = Board::new("sockfile");
    b.populate();
    // The classic slip: `socket` set to the live database's path.
    let db = b.db_path();
    let before = fs::read(&db).unwrap();
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(&b.config, format!("socket = \"{}\"\n{text}", db.display())).unwrap();
    let out = b.run(&["daemon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(fs::read(&db).unwrap(), before, "the database was touched");
}

#[test]
fn demo_runs_and_cleans_only_its_own_directory() {
    let tmp = TempDir::new("demo");
    let dir = tmp.path().join("d");
    let run = |dir: &std::path::Path| {
        bin()
            .args(["--quiet", "demo", "--dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("restored").is_dir() && dir.join("backups").is_dir());
    // A rerun replaces its own trees.
    let out = run(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A directory with someone else's `backups` is refused, untouched.
    let other = tmp.path().join("mine");
    fs::create_dir_all(other.join("backups")).unwrap();
    fs::write(other.join("backups/precious"), b"x").unwrap();
    let out = run(&other);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by the demo"));
    assert_eq!(fs::read(other.join("backups/precious")).unwrap(), b"x");
}

#[test]
fn restore_works_from_a_read_only_backup_directory() {
    if !require_root("restore_works_from_a_read_only_backup_directory") {
        return;
    }
    let b = Board::new("rostore");
    b.populate();
    b.ok(&["backup", "config"]);
    // The store as a write-protected stick: a read-only bind mount.
    let ro = b.tmp.path().join("stick");
    fs::create_dir_all(&ro).unwrap();
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let (src, dst) = (b.backups.to_str().unwrap(), ro.to_str().unwrap());
    assert!(mount(&["--bind", src, dst]), "cannot bind-mount as root");
    assert!(
        mount(&["-o", "remount,bind,ro", dst]),
        "cannot remount read-only"
    );
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(&b.config, text.replace(src, dst)).unwrap();
    let target = b.tmp.path().join("restored");
    let out = b.run(&["restore", "config", "--target", target.to_str().unwrap()]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(target
        .join(b.root.strip_prefix("/").unwrap())
        .join("etc/myrvm")
        .is_dir());
}
