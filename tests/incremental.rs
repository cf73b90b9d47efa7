//! Incremental chains of the tree strategies, through the real binary:
//! what an incremental stores, that every link restores byte for byte,
//! that a damaged link fails verify and restore naming it, that prune
//! keeps chains whole, `backup --full`, and re-reading a replaced inode.

mod archive_read;
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::daemon::Daemon;
use common::{pseudo_random, snapshot, Board};
use rvm_backup::format::EntryKind;
use rvm_backup::strategy::Strategy;

const FILES: usize = 200;

/// `etc/myrvm` with `FILES` small files (the config strategy).
fn board(name: &str, extra: &str) -> (Board, PathBuf) {
    let b = Board::with_config(name, extra);
    let src = b.root.join("etc/myrvm");
    let many = src.join("many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..FILES {
        fs::write(
            many.join(format!("f{i:03}")),
            pseudo_random(1000 + i, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("a.env"), b"A=1\n").unwrap();
    (b, src)
}

fn backup(b: &Board, args: &[&str]) -> String {
    // A file changed less than RACY_MARGIN_NS before a backup started is
    // read again by the next one (its ctime could hide a change in the
    // same clock tick): let changes settle, so that what a test expects
    // to be unchanged is. Not a timing assertion.
    std::thread::sleep(std::time::Duration::from_millis(
        (rvm_backup::backup::RACY_MARGIN_NS / 1_000_000) as u64 * 2,
    ));
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    all.push("config");
    b.ok(&all);
    b.ids("config").pop().unwrap()
}

fn parent_of(b: &Board, id: &str) -> serde_json::Value {
    b.list()
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"))["parent"]
        .clone()
}

/// (path, kind) of every entry of archive `id`, and its archive bytes.
fn kinds(b: &Board, id: &str) -> (Vec<(String, EntryKind)>, u64) {
    let all = archive_read::read_all(&b.backups, &b.key, Strategy::Config);
    let (meta, entries) = all.into_iter().find(|(m, _)| m.id == id).unwrap();
    let k = entries
        .iter()
        .map(|e| (e.header.display_path(), e.header.kind))
        .collect();
    (k, meta.archive_bytes)
}

fn files_of(kinds: &[(String, EntryKind)], kind: EntryKind) -> Vec<String> {
    kinds
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn restored(b: &Board, id: &str, src: &Path, name: &str) -> BTreeMap<PathBuf, String> {
    let target = b.tmp.path().join(name);
    b.ok(&[
        "restore",
        "config",
        id,
        "--target",
        target.to_str().unwrap(),
    ]);
    snapshot(&b.in_target(&target, src))
}

fn flip_middle_byte(b: &Board, id: &str) {
    let part = common::archive_files(&b.backups, id)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".000.rvb"))
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&part, bytes).unwrap();
}

#[test]
fn a_chain_stores_only_changes_and_every_link_restores_exactly() {
    let (b, src) = board("incr-chain", "");
    let many = src.join("many");

    let full = backup(&b, &[]);
    assert_eq!(parent_of(&b, &full), serde_json::Value::Null);
    let snap0 = snapshot(&src);
    let (k0, full_bytes) = kinds(&b, &full);
    assert_eq!(files_of(&k0, EntryKind::File).len(), FILES + 1);
    assert!(files_of(&k0, EntryKind::Stored).is_empty());

    // 1% of the files change.
    fs::write(many.join("f010"), b"changed ten").unwrap();
    fs::write(many.join("f150"), pseudo_random(1150, 99)).unwrap();
    let i1 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i1), full.as_str());
    let snap1 = snapshot(&src);
    let (k1, _) = kinds(&b, &i1);
    assert_eq!(files_of(&k1, EntryKind::File), vec!["f010", "f150"]);
    assert_eq!(files_of(&k1, EntryKind::Stored).len(), FILES - 1);

    // One new, one removed, one changed again.
    fs::write(many.join("new"), b"new file").unwrap();
    fs::remove_file(many.join("f020")).unwrap();
    fs::write(many.join("f010"), b"changed ten again").unwrap();
    let i2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i2), i1.as_str());
    let snap2 = snapshot(&src);
    let (k2, _) = kinds(&b, &i2);
    assert_eq!(files_of(&k2, EntryKind::File), vec!["f010", "new"]);

    // Nothing changed: nothing is stored again.
    let i3 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i3), i2.as_str());
    let (k3, i3_bytes) = kinds(&b, &i3);
    assert!(files_of(&k3, EntryKind::File).is_empty(), "{k3:?}");
    assert!(
        i3_bytes * 4 < full_bytes,
        "a run with nothing changed wrote {i3_bytes} bytes, the full one {full_bytes}"
    );

    // Every link restores exactly the tree of its time.
    assert_eq!(restored(&b, &full, &src, "r0"), snap0);
    assert_eq!(restored(&b, &i1, &src, "r1"), snap1);
    assert_eq!(restored(&b, &i2, &src, "r2"), snap2);
    assert_eq!(restored(&b, &i3, &src, "r3"), snap2);
    // One file of a kind 5 entry, through the index.
    let one = b.tmp.path().join("one");
    let f150 = many.join("f150");
    b.ok(&[
        "restore",
        "config",
        &i3,
        "--target",
        one.to_str().unwrap(),
        "--file",
        f150.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(b.in_target(&one, &f150)).unwrap(),
        fs::read(&f150).unwrap()
    );
    b.ok(&["verify", "--all"]);

    // A damaged middle link: verify and restore of later links fail and
    // name it; nothing is written.
    flip_middle_byte(&b, &i1);
    let err = b.fails(&["verify", &i3]);
    assert!(err.contains(&i1), "{err}");
    let target = b.tmp.path().join("r-bad");
    let err = b.fails(&[
        "restore",
        "config",
        &i3,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains(&i1), "{err}");
    assert!(snapshot(&target).len() <= 1, "a failed restore wrote files");
    // Links that do not use it still restore.
    assert_eq!(restored(&b, &full, &src, "r0b"), snap0);
}

#[test]
fn backup_full_makes_a_parentless_archive_and_prune_keeps_chains_whole() {
    let (b, src) = board("incr-prune", "keep_last = 1\nretention_days = 0");
    let full = backup(&b, &[]);
    fs::write(src.join("a.env"), b"A=2\n").unwrap();
    let i1 = backup(&b, &[]);
    fs::write(src.join("a.env"), b"A=3\n").unwrap();
    let i2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i2), i1.as_str());
    b.ok(&["prune"]);
    assert_eq!(b.ids("config"), vec![full.clone(), i1.clone(), i2.clone()]);
    let snap = snapshot(&src);
    assert_eq!(restored(&b, &i2, &src, "after-prune"), snap);

    let f2 = backup(&b, &["--full"]);
    assert_eq!(parent_of(&b, &f2), serde_json::Value::Null);
    let (k, _) = kinds(&b, &f2);
    assert!(files_of(&k, EntryKind::Stored).is_empty());
    b.ok(&["prune"]);
    assert_eq!(b.ids("config"), vec![f2.clone()]);
    assert_eq!(restored(&b, &f2, &src, "after-full"), snap);
    // The human list marks incrementals.
    let i3 = backup(&b, &[]);
    let human = b.ok(&["list", "config"]);
    let line = human.lines().find(|l| l.starts_with(&i3)).unwrap();
    assert!(line.contains(&format!("incremental on {f2}")), "{human}");
}

#[test]
fn the_backup_verb_makes_incrementals_and_full_on_request() {
    let tmp = common::TempDir::new("incr-verb-sock");
    let socket = tmp.path().join("control.sock");
    let (b, src) = board(
        "incr-verb",
        &format!("socket = \"{}\"\nbackup_enabled = false", socket.display()),
    );
    let full = backup(&b, &[]);
    let d = Daemon::start(&b, &socket);
    let settle = || {
        std::thread::sleep(std::time::Duration::from_millis(
            (rvm_backup::backup::RACY_MARGIN_NS / 1_000_000) as u64 * 2,
        ))
    };
    let run = |line: &str| {
        settle();
        let v = d.json(line);
        let id = v["jobs"][0].as_u64().unwrap_or_else(|| panic!("{v}"));
        let job = d.wait_job(id);
        assert_eq!(job["state"], "done", "{job}");
        b.ids("config").pop().unwrap()
    };
    fs::write(src.join("a.env"), b"A=2\n").unwrap();
    let inc = run("BACKUP config");
    assert_eq!(parent_of(&b, &inc), full.as_str());
    let f2 = run("BACKUP config full");
    assert_eq!(parent_of(&b, &f2), serde_json::Value::Null);
    let (k, _) = kinds(&b, &f2);
    assert!(files_of(&k, EntryKind::Stored).is_empty());
    let bad = d.try_request("BACKUP full nosuch").unwrap_or_default();
    assert!(bad.starts_with("ERR 400"), "{bad}");
    d.terminate();
}

#[test]
fn a_replaced_inode_is_read_again_and_full_every_count_bounds_chains() {
    let (b, src) = board("incr-inode", "full_every_count = 2");
    let a = src.join("many/f005");
    backup(&b, &[]);
    // Same size and mtime, other content, another inode.
    let before = fs::metadata(&a).unwrap();
    let tmp = src.join("many/f005.new");
    let mut other = fs::read(&a).unwrap();
    other[0] ^= 0xFF;
    fs::write(&tmp, &other).unwrap();
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    fs::rename(&tmp, &a).unwrap();
    let i1 = backup(&b, &[]);
    let (k, _) = kinds(&b, &i1);
    assert_eq!(files_of(&k, EntryKind::File), vec!["f005"]);
    let snap = snapshot(&src);
    assert_eq!(restored(&b, &i1, &src, "r"), snap);
    // full_every_count = 2: two incrementals, then a full one.
    let i2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i2), i1.as_str());
    let f = backup(&b, &[]);
    assert_eq!(parent_of(&b, &f), serde_json::Value::Null);
}

#[test]
fn a_damaged_parent_index_makes_a_full_backup() {
    let (b, _src) = board("incr-bad-parent", "");
    let full = backup(&b, &[]);
    // The last bytes before the final frame and the tail: the index.
    let part = common::archive_files(&b.backups, &full)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".000.rvb"))
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    let at = bytes.len() - 24 - 89 - 40;
    bytes[at] ^= 1;
    fs::write(&part, bytes).unwrap();
    let out = b.run(&["backup", "config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&full) && err.contains("full backup instead"),
        "no warning: {err}"
    );
    let id = b.ids("config").pop().unwrap();
    assert_ne!(id, full);
    assert_eq!(parent_of(&b, &id), serde_json::Value::Null);
}

#[test]
fn a_file_changed_just_before_its_backup_is_read_again() {
    let (b, src) = board("incr-racy", "");
    let f = src.join("many/f001");
    backup(&b, &[]);
    // Changed right before a backup: stored whole, and read again by the
    // next backup (its ctime is too close to when the first one started).
    fs::write(&f, b"racy 1").unwrap();
    b.ok(&["backup", "config"]);
    b.ok(&["backup", "config"]);
    let all = archive_read::read_all(&b.backups, &b.key, Strategy::Config);
    let first = &all[all.len() - 2].0;
    let started = i128::from(first.created) * 1_000_000_000 + i128::from(first.created_nanos);
    let m = fs::metadata(&f).unwrap();
    let ctime = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
    let last = b.ids("config").pop().unwrap();
    let (k, _) = kinds(&b, &last);
    let reread = files_of(&k, EntryKind::File).contains(&"f001".to_string());
    if ctime >= started - rvm_backup::backup::RACY_MARGIN_NS {
        assert!(reread, "{k:?}");
    } else {
        // A slow machine (qemu) started the backup later than the margin.
        eprintln!("note: the change was older than the margin; not judged");
        assert!(!reread, "{k:?}");
    }
    assert_eq!(restored(&b, &last, &src, "r"), snapshot(&src));
}

#[test]
fn chain_settings_are_checked_with_clear_errors() {
    for (line, key) in [
        ("full_every_count = 64", "full_every_count"),
        ("full_every_count = -1", "full_every_count"),
        ("full_every = \"soon\"", "full_every"),
        ("full_every = \"0s\"", "full_every"),
    ] {
        let b = Board::with_config("incr-config", line);
        let err = b.fails(&["list"]);
        assert!(err.contains(key), "{line}: {err}");
    }
    // full_every_count = 0: every backup is a full one.
    let (b, _src) = board("incr-off", "full_every_count = 0");
    backup(&b, &[]);
    let second = backup(&b, &[]);
    assert_eq!(parent_of(&b, &second), serde_json::Value::Null);
}
