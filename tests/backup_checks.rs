//! Backup-side checks: the source database's quick_check, busy detection by
//! error code, excluded roots, and the backup directory reached by another
//! name.

mod archive_read;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rvm_backup::format::EntryKind;
use rvm_backup::strategy::Strategy;

/// A config with one database path and one application tree.
fn write_config(b: &Board, backup_dir: &Path, db: &Path, app: &Path, exclude: &[&str]) {
    let ex: Vec<String> = exclude.iter().map(|e| format!("{e:?}")).collect();
    let text = format!(
        "backup_dir = {:?}\nkey_file = {:?}\n\n[database]\npath = {:?}\n\n[application]\npaths = [{:?}]\nexclude = [{}]\n",
        backup_dir.display().to_string(),
        b.key.display().to_string(),
        db.display().to_string(),
        app.display().to_string(),
        ex.join(", ")
    );
    std::fs::write(&b.config, text).unwrap();
}

/// A rollback-journal database with an index whose page header is damaged
/// (its fragmented-bytes count): quick_check reports it, every page reads.
fn corrupt_db(path: &Path) -> String {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(x TEXT); CREATE INDEX ix ON t(x);")
        .unwrap();
    for i in 0..100 {
        c.execute("INSERT INTO t VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    let root: i64 = c
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'ix'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(c);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[((root - 1) * page_size + 7) as usize] = 50;
    std::fs::write(path, &bytes).unwrap();
    format!("Fragmentation of 0 bytes reported as 50 on page {root}")
}

#[test]
fn a_damaged_source_database_is_archived_and_marked() {
    let b = Board::new("dbcheck");
    let db = b.db_path();
    let problem = corrupt_db(&db);
    let source = std::fs::read(&db).unwrap();
    let out = b.run(&["backup", "database"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quick_check") && stderr.contains(&problem),
        "no warning naming the problem: {stderr}"
    );
    let (meta, entries) = archive_read::newest(&b.backups, &b.key, Strategy::Database);
    let check = meta.db_check.expect("db_check is recorded");
    assert!(check.contains(&problem), "{check}");
    assert_eq!(entries.len(), 2, "the image and its page digests");
    assert_eq!(entries[0].header.kind, EntryKind::Database);
    assert_eq!(entries[1].header.kind, EntryKind::DbDigests);
    assert_eq!(entries[0].content, source, "every page is kept as it was");

    // The command says so: exit 1, naming the problem and the way out.
    assert!(
        !out.status.success(),
        "a damaged source must fail the backup"
    );
    assert!(stderr.contains("--accept-damaged"), "{stderr}");
    let listed = b.list();
    assert!(
        listed[0]["db_check"]
            .as_str()
            .is_some_and(|c| c.contains(&problem)),
        "list --json shows db_check: {listed:?}"
    );
    // Restoring it needs the operator's explicit word.
    let target = b.tmp.path().join("restored");
    let t = target.to_str().unwrap();
    let err = b.fails(&["restore", "database", "--target", t]);
    assert!(
        err.contains("--accept-damaged") && err.contains(&problem),
        "{err}"
    );
    b.ok(&["restore", "database", "--target", t, "--accept-damaged"]);
    let restored = target.join(db.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(&restored).unwrap(), source);

    // A healthy database says "ok".
    std::fs::remove_file(&db).unwrap();
    make_db(&db, 50);
    b.ok(&["backup", "database"]);
    let (meta, _) = archive_read::newest(&b.backups, &b.key, Strategy::Database);
    assert_eq!(meta.db_check.as_deref(), Some("ok"));
}

#[test]
fn a_damaged_file_named_like_a_lock_message_fails_at_once() {
    // Busy used to be detected by searching the message for "database is
    // locked": this file was retried for 30 s before the error came.
    let b = Board::new("dbname");
    let dir = b.root.join("db");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("database is locked");
    std::fs::write(&db, vec![0x55u8; 8192]).unwrap();
    let app = b.root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    write_config(&b, &b.backups, &db, &app, &[]);
    let t = Instant::now();
    let err = b.fails(&["backup", "database"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("not a database"), "{err}");
}

#[test]
fn an_exclude_matching_a_whole_root_is_reported() {
    let b = Board::new("rootexcl");
    let app = b.root.join("opt/myrvm");
    let other = b.root.join("srv/keep");
    make_tree(&app, 3);
    make_tree(&other, 4);
    let text = format!(
        "backup_dir = {:?}\nkey_file = {:?}\n\n[application]\npaths = [{:?}, {:?}]\nexclude = [\"*.pyc\", \"myrv?\"]\n",
        b.backups.display().to_string(),
        b.key.display().to_string(),
        app.display().to_string(),
        other.display().to_string(),
    );
    std::fs::write(&b.config, text).unwrap();
    let out = b.run(&["backup", "application"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&app.display().to_string()) && stderr.contains("\"myrv?\""),
        "no warning naming the root and the pattern: {stderr}"
    );
    let (meta, entries) = archive_read::newest(&b.backups, &b.key, Strategy::Application);
    assert_eq!(meta.skipped, 1, "the excluded root is counted");
    assert!(entries.iter().all(|e| e
        .header
        .display_path()
        .starts_with(&other.display().to_string())));
    assert!(!entries.is_empty());
}

/// Back up a tree that holds the real backup directory, configured by
/// `backup_dir` (another name for it); returns false if the config was
/// refused up front (also a correct answer).
fn backup_dir_not_stored(b: &Board, backup_dir: &Path, app: &Path) -> bool {
    let db = b.db_path();
    make_db(&db, 10);
    write_config(b, backup_dir, &db, app, &[]);
    let out = b.run(&["backup", "database"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("backup_dir"), "{err}");
        return false;
    }
    b.ok(&["backup", "application"]);
    let (_, entries) = archive_read::newest(backup_dir, &b.key, Strategy::Application);
    let inside: Vec<String> = entries
        .iter()
        .map(|e| e.header.display_path())
        .filter(|p| p.contains("/archives"))
        .collect();
    assert!(inside.is_empty(), "the backup dir was stored: {inside:?}");
    assert!(entries.len() > 5);
    true
}

#[test]
fn the_backup_dir_is_never_entered_through_a_symlinked_name() {
    // backup_dir is configured through a symlink to a directory inside the
    // source tree: path comparison cannot see it, device+inode does (or the
    // config check refuses it).
    let b = Board::new("bkinside");
    let app = b.root.join("opt/myrvm");
    make_tree(&app, 5);
    let real = app.join("archives");
    std::fs::create_dir_all(&real).unwrap();
    let link = b.tmp.path().join("bk");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    backup_dir_not_stored(&b, &link, &app);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_backup_dir_is_never_entered_through_a_bind_mount() {
    // No path check can see this one: only device+inode.
    let b = Board::new("bkbind");
    let app = b.root.join("opt/myrvm");
    make_tree(&app, 6);
    let real = app.join("archives");
    std::fs::create_dir_all(&real).unwrap();
    let mnt = b.tmp.path().join("bk");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&real)
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // Under CI (root) a failed bind mount is a failure, not a skip.
        assert!(
            !require_root("the_backup_dir_is_never_entered_through_a_bind_mount"),
            "cannot bind-mount {} as root",
            real.display()
        );
        return;
    }
    let _guard = Unmount(mnt.clone());
    assert!(backup_dir_not_stored(&b, &mnt, &app));
}
