//! Restore of crafted archives: canonical order, hard links, holes,
//! damaged databases (refused, or restored on purpose), and a cancelled
//! restore that leaves nothing behind.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::craft::{craft, Entry};
use common::*;
use rvm_backup::crypto::KeyRing;
use rvm_backup::format::{sidecar, EntryKind};
use rvm_backup::progress::Progress;
use rvm_backup::store::{Listed, Store};
use rvm_backup::strategy::Strategy;

fn file(p: PathBuf, content: &[u8]) -> Entry {
    (EntryKind::File, p, content.to_vec())
}

fn dir(p: PathBuf) -> Entry {
    (EntryKind::Dir, p, Vec::new())
}

fn link(p: PathBuf, to: &Path) -> Entry {
    (EntryKind::HardLink, p, to.as_os_str().as_bytes().to_vec())
}

fn listed(b: &Board, id: &str) -> (Listed, KeyRing) {
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let listing = Store::new(&b.backups).list(None, Some(&key));
    let a = listing
        .archives
        .into_iter()
        .find(|a| a.meta.id == id)
        .unwrap();
    (a, key)
}

fn refused(b: &Board, id: &str, strategy: &str, target: &Path, expect: &str) {
    let before = snapshot(target);
    let err = b.fails(&[
        "restore",
        strategy,
        id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(
        snapshot(target),
        before,
        "a refused restore changed the target"
    );
}

#[test]
fn entries_out_of_canonical_order_or_repeated_are_refused() {
    let b = Board::new("order");
    let src = b.root.join("etc/myrvm");
    let target = b.tmp.path().join("t");
    fs::create_dir_all(&target).unwrap();
    let c = Strategy::Config;
    let swapped = craft(
        &b,
        c,
        &[&src],
        &[file(src.join("b"), b"1"), file(src.join("a"), b"2")],
        None,
    );
    refused(&b, &swapped, "config", &target, "out of order");
    // Bytewise "a b" < "a/x", but a directory's contents come first.
    let bytewise = craft(
        &b,
        c,
        &[&src],
        &[
            dir(src.join("a")),
            file(src.join("a b"), b"1"),
            file(src.join("a/x"), b"2"),
        ],
        None,
    );
    refused(&b, &bytewise, "config", &target, "out of order");
    let child_first = craft(
        &b,
        c,
        &[&src],
        &[file(src.join("d/x"), b"1"), dir(src.join("d"))],
        None,
    );
    refused(&b, &child_first, "config", &target, "out of order");
    let twice = craft(
        &b,
        c,
        &[&src],
        &[dir(src.join("d")), dir(src.join("d"))],
        None,
    );
    refused(&b, &twice, "config", &target, "twice");
    let canonical = craft(
        &b,
        c,
        &[&src],
        &[
            dir(src.clone()),
            dir(src.join("a")),
            file(src.join("a/x"), b"2"),
            file(src.join("a b"), b"1"),
        ],
        None,
    );
    b.ok(&[
        "restore",
        "config",
        &canonical,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(b.in_target(&target, &src.join("a b"))).unwrap(),
        b"1"
    );
}

#[test]
fn hard_links_restore_as_links_to_the_earlier_file() {
    let b = Board::new("hardlink");
    let src = b.root.join("etc/myrvm");
    let target = b.tmp.path().join("t");
    let first = src.join("a/first");
    let id = craft(
        &b,
        Strategy::Config,
        &[&src],
        &[
            dir(src.clone()),
            dir(src.join("a")),
            file(first.clone(), b"shared content"),
            link(src.join("b"), &first),
            dir(src.join("c")),
            link(src.join("c/third"), &first),
        ],
        None,
    );
    b.ok(&[
        "restore",
        "config",
        &id,
        "--target",
        target.to_str().unwrap(),
    ]);
    let m1 = fs::metadata(b.in_target(&target, &first)).unwrap();
    let m2 = fs::metadata(b.in_target(&target, &src.join("b"))).unwrap();
    let m3 = fs::metadata(b.in_target(&target, &src.join("c/third"))).unwrap();
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!(m1.ino(), m3.ino());
    assert_eq!(m1.nlink(), 3);
    assert_eq!(
        fs::read(b.in_target(&target, &src.join("c/third"))).unwrap(),
        b"shared content"
    );
    // In place too, over existing files.
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("b"), b"old").unwrap();
    b.ok(&["restore", "config", &id]);
    assert_eq!(
        fs::metadata(src.join("b")).unwrap().ino(),
        fs::metadata(&first).unwrap().ino()
    );
    // One file: a hard link comes back as a copy of its file's content.
    let one = b.tmp.path().join("one");
    b.ok(&[
        "restore",
        "config",
        &id,
        "--file",
        src.join("b").to_str().unwrap(),
        "--target",
        one.to_str().unwrap(),
    ]);
    let copy = b.in_target(&one, &src.join("b"));
    assert_eq!(fs::read(&copy).unwrap(), b"shared content");
    assert_eq!(fs::metadata(&copy).unwrap().nlink(), 1);
    assert!(!b.in_target(&one, &first).exists());
}

#[test]
fn hard_links_to_anything_but_an_earlier_file_are_refused() {
    let b = Board::new("badlink");
    let src = b.root.join("etc/myrvm");
    let target = b.tmp.path().join("t");
    fs::create_dir_all(&target).unwrap();
    let c = Strategy::Config;
    let later = craft(
        &b,
        c,
        &[&src],
        &[
            link(src.join("a"), &src.join("b")),
            file(src.join("b"), b"x"),
        ],
        None,
    );
    refused(&b, &later, "config", &target, "not a file stored earlier");
    let to_dir = craft(
        &b,
        c,
        &[&src],
        &[dir(src.join("d")), link(src.join("e"), &src.join("d"))],
        None,
    );
    refused(&b, &to_dir, "config", &target, "not a file stored earlier");
    let outside = craft(
        &b,
        c,
        &[&src],
        &[link(src.join("e"), Path::new("/etc/shadow"))],
        None,
    );
    refused(
        &b,
        &outside,
        "config",
        &target,
        "outside the archive's sources",
    );
    let unsafe_target = craft(
        &b,
        c,
        &[&src],
        &[
            file(src.join("a"), b"x"),
            link(src.join("e"), &src.join("x/../a")),
        ],
        None,
    );
    refused(&b, &unsafe_target, "config", &target, "unsafe path");
}

#[test]
fn runs_of_zeros_restore_as_holes() {
    let b = Board::new("sparse");
    let cfg = b.root.join("etc/myrvm");
    fs::create_dir_all(&cfg).unwrap();
    let big = cfg.join("disk.img");
    let len: u64 = 256 << 20;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&big).unwrap();
        f.write_all(b"start").unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[9u8; 10_000]).unwrap();
        f.set_len(len).unwrap();
    }
    b.ok(&["backup", "config"]);
    let target = b.tmp.path().join("t");
    b.ok(&["restore", "config", "--target", target.to_str().unwrap()]);
    let restored = b.in_target(&target, &big);
    let m = fs::metadata(&restored).unwrap();
    assert_eq!(m.len(), len);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes on disk for a file of 15 KB data",
        m.blocks() * 512
    );
    assert_same_tree(&cfg, &b.in_target(&target, &cfg));
}

/// A database file whose third page is garbage.
fn damaged_db(b: &Board) -> Vec<u8> {
    let p = b.tmp.path().join("scratch.sqlite");
    make_db(&p, 3000);
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .unwrap();
    drop(c);
    let mut bytes = fs::read(&p).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() > 4 * page);
    for x in &mut bytes[2 * page..3 * page] {
        *x = 0x55;
    }
    bytes
}

#[test]
fn damaged_databases_need_accept_damaged() {
    let b = Board::new("damaged");
    b.populate();
    b.ok(&["backup", "database"]);
    let key = rvm_backup::keys::load(&b.key).unwrap();
    // The sidecar says the source failed its quick_check at backup time.
    let id = b.ids("database")[0].clone();
    let sidecar_path = b.backups.join("database").join(format!("{id}.meta"));
    let (header, mut meta) =
        sidecar::decode(&fs::read(&sidecar_path).unwrap(), Some(&key)).unwrap();
    meta.db_check = Some("row 17 missing from index deposits_barcode".into());
    fs::write(
        &sidecar_path,
        sidecar::encode(&meta, &header, &header.protection(Some(&key)).unwrap()),
    )
    .unwrap();
    let target = b.tmp.path().join("t");
    fs::create_dir_all(&target).unwrap();
    let err = b.fails(&[
        "restore",
        "database",
        &id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains("row 17 missing"), "{err}");
    assert!(err.contains("--accept-damaged"), "{err}");
    assert!(
        snapshot(&target).len() <= 1,
        "refused restore wrote something"
    );
    let (a, key) = listed(&b, &id);
    let r = smol::block_on(rvm_backup::restore::run(
        &a,
        &[],
        Some(&key),
        Some(&target),
        None,
        true,
        &mut Progress::silent(),
    ))
    .unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(
        db_dump(&b.db_path()),
        db_dump(&b.in_target(&target, &b.db_path()))
    );

    // An image that fails PRAGMA integrity_check: an error, or with
    // accept_damaged a warning.
    let db = b.db_path();
    let image = damaged_db(&b);
    let bad = craft(
        &b,
        Strategy::Database,
        &[&db],
        &[(EntryKind::Database, db.clone(), image.clone())],
        Some("ok"),
    );
    let t2 = b.tmp.path().join("t2");
    let err = b.fails(&[
        "restore",
        "database",
        &bad,
        "--target",
        t2.to_str().unwrap(),
    ]);
    assert!(err.contains("integrity check"), "{err}");
    assert!(!b.in_target(&t2, &db).exists());
    let leftovers: Vec<_> = snapshot(&t2)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".rvm-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (a, key) = listed(&b, &bad);
    smol::block_on(rvm_backup::restore::run(
        &a,
        &[],
        Some(&key),
        Some(&t2),
        None,
        true,
        &mut Progress::silent(),
    ))
    .unwrap();
    assert!(fs::read(b.in_target(&t2, &db)).unwrap() == image);
}

#[test]
fn a_dropped_restore_leaves_nothing_behind() {
    let b = Board::new("cancel");
    let cfg = b.root.join("etc/myrvm");
    for d in 0..10 {
        let sub = cfg.join(format!("d{d}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..30 {
            fs::write(sub.join(format!("f{f}")), vec![b'x'; 3000]).unwrap();
        }
    }
    b.ok(&["backup", "config"]);
    let id = b.ids("config")[0].clone();
    let (a, key) = listed(&b, &id);
    for polls in [1, 5, 40, 200, 330] {
        let target = b.tmp.path().join(format!("t{polls}/deeper"));
        let mut progress = Progress::silent();
        let mut fut = Box::pin(rvm_backup::restore::run(
            &a,
            &[],
            Some(&key),
            Some(&target),
            None,
            false,
            &mut progress,
        ));
        smol::block_on(async {
            for _ in 0..polls {
                assert!(
                    smol::future::poll_once(&mut fut).await.is_none(),
                    "restore finished before it could be cancelled"
                );
            }
        });
        drop(fut);
        assert!(
            !b.tmp.path().join(format!("t{polls}")).exists(),
            "a cancelled restore left {:?}",
            snapshot(&b.tmp.path().join(format!("t{polls}")))
        );
    }
    // In place: the live tree is exactly as it was.
    fs::write(cfg.join("d3/f7"), b"changed").unwrap();
    let before = snapshot(&b.root);
    let mut progress = Progress::silent();
    let mut fut = Box::pin(rvm_backup::restore::run(
        &a,
        &[],
        Some(&key),
        None,
        None,
        false,
        &mut progress,
    ));
    smol::block_on(async {
        for _ in 0..100 {
            assert!(smol::future::poll_once(&mut fut).await.is_none());
        }
    });
    drop(fut);
    assert_eq!(snapshot(&b.root), before);
}

#[test]
fn a_directory_replaced_between_staging_and_publishing_is_refused() {
    let b = Board::new("swapped");
    let cfg = b.root.join("etc/myrvm");
    for d in 0..10 {
        let sub = cfg.join(format!("d{d}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..30 {
            fs::write(sub.join(format!("f{f:02}")), format!("{d} {f}")).unwrap();
        }
    }
    b.ok(&["backup", "config"]);
    let id = b.ids("config")[0].clone();
    let (a, key) = listed(&b, &id);
    let target = b.tmp.path().join("t");
    let first = b.in_target(&target, &cfg.join("d0/f00"));
    let late = b.in_target(&target, &cfg.join("d9"));
    let mut progress = Progress::silent();
    let mut fut = Box::pin(rvm_backup::restore::run(
        &a,
        &[],
        Some(&key),
        Some(&target),
        None,
        false,
        &mut progress,
    ));
    let result = smol::block_on(async {
        // Run until publishing has begun (the first file is in place)…
        loop {
            if let Some(r) = smol::future::poll_once(&mut fut).await {
                return r;
            }
            if first.exists() {
                break;
            }
        }
        // …then put another directory where a staged one was.
        fs::rename(&late, late.with_file_name("d9.away")).unwrap();
        fs::create_dir(&late).unwrap();
        fut.as_mut().await
    });
    drop(fut);
    let err = result.expect_err("publish went on into a replaced directory");
    assert!(err.to_string().contains("replaced"), "{err}");
    assert_eq!(
        fs::read_dir(&late).unwrap().count(),
        0,
        "something was published into the impostor directory"
    );
    assert!(first.exists());
}

/// The live database replaced by a symlink (its directory belongs to the
/// platform's user): an in-place restore must not make root open or
/// create the symlink's target.
#[test]
fn a_symlinked_live_database_is_not_followed() {
    if !require_root("a_symlinked_live_database_is_not_followed") {
        return;
    }
    let b = Board::new("dblink");
    b.populate();
    b.ok(&["backup", "database"]);
    let db = b.db_path();
    let victim = b.tmp.path().join("created-by-root");
    fs::remove_file(&db).unwrap();
    std::os::unix::fs::symlink(&victim, &db).unwrap();
    b.ok(&["restore", "database"]);
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "root created {} through the symlink",
        victim.display()
    );
    // The restored database is a real file again, with its rows.
    assert!(fs::symlink_metadata(&db).unwrap().is_file());
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM deposits", [], |r| r.get(0))
        .unwrap();
    assert!(rows > 0);
}

/// `restore --all` whose newest database archive holds an image that fails
/// `PRAGMA integrity_check` (the check runs on its own thread while the
/// logs stage after it): the restore fails naming the check, and nothing
/// of any strategy is published, in a target or in place.
#[test]
fn restore_all_publishes_nothing_when_the_database_image_fails_its_check() {
    let b = Board::new("rall-badimage");
    b.populate();
    b.ok(&["backup", "--all"]);
    let db = b.db_path();
    let image = damaged_db(&b);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bad = craft(
        &b,
        Strategy::Database,
        &[&db],
        &[(EntryKind::Database, db.clone(), image)],
        Some("ok"),
    );
    let target = b.tmp.path().join("all");
    let err = b.fails(&["restore", "--all", "--target", target.to_str().unwrap()]);
    assert!(
        err.contains(&bad) && err.contains("integrity check"),
        "{err}"
    );
    assert!(err.contains("nothing was restored"), "{err}");
    assert!(!target.exists(), "something was left in {target:?}");
    let before = snapshot(&b.root);
    let err = b.fails(&["restore", "--all"]);
    assert!(err.contains("integrity check"), "{err}");
    assert_eq!(snapshot(&b.root), before, "the live board was touched");
}
