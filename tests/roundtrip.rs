//! Backup, verify and restore of every strategy through the real binary
//! reproduce the board byte for byte.

mod common;

use std::fs;
use std::path::Path;

use common::*;

#[test]
fn every_strategy_roundtrips_into_a_target() {
    let b = Board::new("roundtrip");
    b.populate();
    b.ok(&["backup", "--all"]);
    let listed = b.list();
    assert_eq!(listed.len(), 4);
    for v in &listed {
        for key in ["id", "strategy", "created", "bytes", "files", "path"] {
            assert!(!v[key].is_null(), "list --json lacks {key}: {v}");
        }
        assert!(v["created"].as_str().unwrap().ends_with('Z'));
        let id = v["id"].as_str().unwrap();
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{id}"
        );
        assert!(Path::new(v["path"].as_str().unwrap()).is_file());
    }
    let out = b.ok(&["verify", "--all"]);
    assert!(out.is_empty(), "--quiet prints nothing: {out}");
    let target = b.tmp.path().join("restored");
    let t = target.to_str().unwrap();
    for s in ["database", "config", "logs", "application"] {
        b.ok(&["restore", s, "latest", "--target", t]);
    }
    for tree in ["etc/myrvm", "var/log/myrvm", "opt/myrvm"] {
        let src = b.root.join(tree);
        assert_same_tree(&src, &b.in_target(&target, &src));
    }
    assert_eq!(
        db_dump(&b.db_path()),
        db_dump(&b.in_target(&target, &b.db_path()))
    );
    // Nothing staged is left behind.
    let leftovers: Vec<_> = snapshot(&target)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".rvm-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn in_place_restore_brings_back_changed_and_deleted_files() {
    let b = Board::new("inplace");
    b.populate();
    b.ok(&["backup", "config", "application"]);
    let cfg = b.root.join("etc/myrvm");
    let before = snapshot(&cfg);
    fs::write(cfg.join("plain.env"), b"tampered").unwrap();
    fs::remove_file(cfg.join("sub dir/ünïcødé/çafé.txt")).unwrap();
    fs::remove_file(cfg.join("link-relative")).unwrap();
    b.ok(&["restore", "config"]);
    assert_eq!(snapshot(&cfg), before);
}

#[test]
fn in_place_database_restore_keeps_the_previous_database() {
    let b = Board::new("dbinplace");
    b.populate();
    b.ok(&["backup", "database"]);
    let original = db_dump(&b.db_path());
    make_db(&b.db_path(), 10); // ten more rows, some of them in the WAL
    b.ok(&["restore", "database"]);
    assert_eq!(db_dump(&b.db_path()), original);
    let kept: Vec<_> = fs::read_dir(b.db_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("rvm.sqlite.pre-restore-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let previous = db_dump(&b.db_path().with_file_name(&kept[0]));
    assert_eq!(
        previous.len(),
        original.len() + 10,
        "the replaced database must be kept whole"
    );
}

#[test]
fn one_file_restores_through_the_index() {
    let b = Board::new("onefile");
    b.populate();
    b.ok(&["backup", "application"]);
    let file = b.root.join("opt/myrvm/sub dir/random.bin");
    let original = fs::read(&file).unwrap();
    let target = b.tmp.path().join("one");
    b.ok(&[
        "restore",
        "application",
        "--file",
        file.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(b.in_target(&target, &file)).unwrap(), original);
    let restored = snapshot(&target);
    assert_eq!(
        restored.values().filter(|d| d.starts_with("file")).count(),
        1,
        "{restored:?}"
    );
    let err = b.fails(&[
        "restore",
        "application",
        "--file",
        "/not/in/archive",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains("no entry"), "{err}");
}

#[test]
fn archives_are_chosen_by_id_prefix_and_time() {
    let b = Board::new("select");
    b.populate();
    b.ok(&["backup", "config"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(b.root.join("etc/myrvm/plain.env"), b"second version").unwrap();
    b.ok(&["backup", "config"]);
    let ids = b.ids("config");
    assert_eq!(ids.len(), 2);
    let created: Vec<String> = b
        .list()
        .iter()
        .map(|v| v["created"].as_str().unwrap().to_string())
        .collect();
    let target = b.tmp.path().join("t1");
    let t = target.to_str().unwrap();
    let prefix = &ids[0][..ids[0].len() - 2];
    b.ok(&["restore", "config", prefix, "--target", t]);
    let plain = b.in_target(&target, &b.root.join("etc/myrvm/plain.env"));
    assert_eq!(fs::read(&plain).unwrap(), b"A=1\nB=2\n");
    b.ok(&["restore", "config", "--at", &created[1], "--target", t]);
    assert_eq!(fs::read(&plain).unwrap(), b"second version");
    let err = b.fails(&[
        "restore",
        "config",
        "--at",
        "2001-01-01T00:00:00Z",
        "--target",
        t,
    ]);
    assert!(err.contains("oldest"), "{err}");
    let err = b.fails(&["restore", "config", "config-", "--target", t]);
    assert!(err.contains("matches 2 archives"), "{err}");
}

#[test]
fn unencrypted_and_uncompressed_archives_still_verify() {
    let b = Board::with_config(
        "plain",
        "encryption_enabled = false\ncompression_enabled = false",
    );
    b.populate();
    b.ok(&["backup", "config"]);
    let v = &b.list()[0];
    assert_eq!(v["encrypted"], false);
    assert_eq!(v["compressed"], false);
    b.ok(&["verify"]);
    let target = b.tmp.path().join("r");
    b.ok(&["restore", "config", "--target", target.to_str().unwrap()]);
    let src = b.root.join("etc/myrvm");
    assert_same_tree(&src, &b.in_target(&target, &src));
}

#[test]
fn large_archives_are_split_into_parts() {
    let b = Board::with_config("parts", "max_part_size = \"64K\"");
    b.populate();
    b.ok(&["backup", "application"]);
    let v = &b.list()[0];
    assert!(v["parts"].as_u64().unwrap() >= 3, "{v}");
    for f in archive_files(&b.backups, v["id"].as_str().unwrap()) {
        assert!(fs::metadata(&f).unwrap().len() <= 64 * 1024);
    }
    b.ok(&["verify", "--all"]);
    let target = b.tmp.path().join("r");
    b.ok(&[
        "restore",
        "application",
        "--target",
        target.to_str().unwrap(),
    ]);
    let src = b.root.join("opt/myrvm");
    assert_same_tree(&src, &b.in_target(&target, &src));
    let file = b.root.join("opt/myrvm/sub dir/random.bin");
    let one = b.tmp.path().join("one");
    b.ok(&[
        "restore",
        "application",
        "--file",
        file.to_str().unwrap(),
        "--target",
        one.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(b.in_target(&one, &file)).unwrap(),
        fs::read(&file).unwrap()
    );
}

#[test]
fn prune_applies_the_policy_and_keeps_the_newest() {
    let b = Board::with_config("prune", "keep_last = 2\nretention_days = 0");
    b.populate();
    // Full archives: an incremental chain is kept whole (tests/incremental.rs).
    for _ in 0..4 {
        b.ok(&["backup", "--full", "config"]);
    }
    b.ok(&["backup", "logs"]);
    let ids = b.ids("config");
    assert_eq!(ids.len(), 4);
    let dry = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["prune", "--dry-run"])
        .output()
        .unwrap();
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    for old in &ids[..2] {
        assert!(
            dry.lines()
                .any(|l| l.starts_with("would delete") && l.contains(old.as_str())),
            "{dry}"
        );
    }
    assert!(
        dry.lines()
            .any(|l| l.starts_with("keep") && l.contains(&ids[3]) && l.contains("newest archive")),
        "{dry}"
    );
    assert_eq!(b.ids("config"), ids, "a dry run deletes nothing");
    b.ok(&["prune"]);
    assert_eq!(b.ids("config"), ids[2..].to_vec());
    assert_eq!(
        b.ids("logs").len(),
        1,
        "the only logs archive is the newest: kept"
    );
    for name in backup_files(&b.backups) {
        assert!(
            !ids[..2].iter().any(|id| name.starts_with(id.as_str())),
            "{name} was not deleted"
        );
    }
    b.ok(&["verify", "--all"]);
}

#[test]
fn a_symlinked_source_root_is_stored_as_a_link_with_a_warning() {
    let b = Board::new("rootlink");
    let real = b.root.join("opt/myrvm-1.2.3");
    make_tree(&real, 3);
    std::os::unix::fs::symlink("myrvm-1.2.3", b.root.join("opt/myrvm")).unwrap();
    let out = b.run(&["backup", "application"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a symlink") && err.contains("configure the real directory"),
        "{err}"
    );
    assert_eq!(b.list()[0]["symlinks"], 1);
}

#[test]
fn many_files_spill_the_index_and_still_roundtrip() {
    let b = Board::new("manyfiles");
    let app = b.root.join("opt/myrvm");
    for d in 0..30 {
        let dir = app.join(format!("package-with-a-longish-name-{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(
                dir.join(format!("module_{f:04}_with_a_long_file_name.py")),
                format!("x = {d} * {f}\n"),
            )
            .unwrap();
        }
    }
    // 3000 index records of ~150 bytes: more than the 256 KiB kept in memory.
    b.ok(&["backup", "application"]);
    assert!(
        backup_files(&b.backups)
            .iter()
            .all(|n| !n.ends_with(".tmp")),
        "{:?}",
        backup_files(&b.backups)
    );
    assert_eq!(b.list()[0]["files"], 3000);
    b.ok(&["verify", "--all"]);
    let target = b.tmp.path().join("r");
    b.ok(&[
        "restore",
        "application",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&app, &b.in_target(&target, &app));
    let one = app.join("package-with-a-longish-name-029/module_0099_with_a_long_file_name.py");
    let t1 = b.tmp.path().join("one");
    b.ok(&[
        "restore",
        "application",
        "--file",
        one.to_str().unwrap(),
        "--target",
        t1.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(b.in_target(&t1, &one)).unwrap(), b"x = 29 * 99\n");
}

#[test]
fn long_names_and_setuid_bits_survive_a_restore() {
    use std::os::unix::fs::PermissionsExt;
    let b = Board::new("longname");
    let cfg = b.root.join("etc/myrvm");
    fs::create_dir_all(&cfg).unwrap();
    let long = cfg.join("n".repeat(240));
    fs::write(&long, b"long").unwrap();
    let suid = cfg.join("helper");
    fs::write(&suid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    b.ok(&["backup", "config"]);
    let target = b.tmp.path().join("r");
    b.ok(&["restore", "config", "--target", target.to_str().unwrap()]);
    assert_same_tree(&cfg, &b.in_target(&target, &cfg));
    let mode = fs::metadata(b.in_target(&target, &suid))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
}

#[test]
fn unencrypted_archives_are_refused_once_encryption_is_on() {
    let b = Board::with_config("downgrade", "encryption_enabled = false");
    b.populate();
    b.ok(&["backup", "config"]);
    b.write_config(""); // encryption back on (the default)
    let err = b.fails(&["list"]);
    assert!(err.contains("not encrypted"), "{err}");
    let target = b.tmp.path().join("r");
    let err = b.fails(&["restore", "config", "--target", target.to_str().unwrap()]);
    assert!(err.contains("not encrypted"), "{err}");
    assert!(!target.exists());
}
