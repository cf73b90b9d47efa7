//! Incremental chains of the database strategy, through the real binary:
//! what an incremental stores (only changed pages; nothing at all when the
//! database's fingerprint is unchanged), that every link restores the page
//! image and the rows byte for byte, that a change made right after a
//! backup is never taken for "unchanged", that a damaged link fails verify
//! and restore, that prune keeps chains whole, and `backup --full`.

mod archive_read;
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{db_dump, make_db, Board};
use rvm_backup::format::EntryKind;
use rvm_backup::strategy::Strategy;

/// Let the racy margin pass, so that a fingerprint can vouch for the
/// files (see `sources::fingerprint`). Not a timing assertion.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(
        (rvm_backup::backup::RACY_MARGIN_NS / 1_000_000) as u64 * 2,
    ));
}

fn backup(b: &Board, args: &[&str]) -> String {
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    all.push("database");
    b.ok(&all);
    b.ids("database").pop().unwrap()
}

/// A backup with the log at info level (no `--quiet`): its id and log.
fn backup_logged(b: &Board) -> (String, String) {
    let out = common::bin()
        .arg("--config")
        .arg(&b.config)
        .args(["backup", "database"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    (b.ids("database").pop().unwrap(), log)
}

fn parent_of(b: &Board, id: &str) -> serde_json::Value {
    b.list()
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"))["parent"]
        .clone()
}

/// The kinds and content sizes of archive `id`'s entries, and its bytes.
fn entries(b: &Board, id: &str) -> (Vec<(EntryKind, usize)>, u64) {
    let all = archive_read::read_all(&b.backups, &b.key, Strategy::Database);
    let (meta, entries) = all.into_iter().find(|(m, _)| m.id == id).unwrap();
    let k = entries
        .iter()
        .map(|e| (e.header.kind, e.content.len()))
        .collect();
    (k, meta.archive_bytes)
}

/// The database's page image as SQLite shows it (WAL included).
fn image(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT data FROM sqlite_dbpage ORDER BY pgno")
        .unwrap();
    let mut out = Vec::new();
    let mut rows = s.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        out.extend_from_slice(r.get_ref(0).unwrap().as_blob().unwrap());
    }
    out
}

fn restored(b: &Board, id: &str, name: &str) -> PathBuf {
    let target = b.tmp.path().join(name);
    b.ok(&[
        "restore",
        "database",
        id,
        "--target",
        target.to_str().unwrap(),
    ]);
    b.in_target(&target, &b.db_path())
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

fn exec(db: &Path, sql: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[test]
fn a_database_chain_stores_changed_pages_and_every_link_restores_exactly() {
    let b = Board::with_config("dbincr-chain", "log_level = \"info\"");
    let db = b.db_path();
    // Small pages, and over 3,300 of them, so the full archive's digest
    // list is longer than what a chain cursor reads whole (it streams it).
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    exec(
        &db,
        "PRAGMA page_size = 512; CREATE TABLE big(b);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO big SELECT randomblob(400) FROM n;",
    );
    make_db(&db, 20_000);
    settle();
    let full = backup(&b, &[]);
    assert_eq!(parent_of(&b, &full), serde_json::Value::Null);
    let (k0, full_bytes) = entries(&b, &full);
    assert_eq!(
        k0.iter().map(|k| k.0).collect::<Vec<_>>(),
        vec![EntryKind::Database, EntryKind::DbDigests]
    );
    assert!(k0[1].1 > 64 * 1024, "a digest list of {} bytes", k0[1].1);
    let mut expect = vec![(full.clone(), image(&db), db_dump(&db))];

    // A few rows change and some are added, through a connection that
    // stays open (the pages stay in the WAL).
    let app = rusqlite::Connection::open(&db).unwrap();
    app.execute_batch(
        "UPDATE deposits SET cents = 99 WHERE id IN (5, 9000, 19999);
         INSERT INTO deposits(barcode, grams, cents, blob) VALUES ('new', 1.5, 7, x'00ff');",
    )
    .unwrap();
    let (i1, log) = backup_logged(&b);
    assert!(log.contains("pages changed since archive"), "{log}");
    assert_eq!(parent_of(&b, &i1), full.as_str());
    let (k1, i1_bytes) = entries(&b, &i1);
    assert_eq!(
        k1.iter().map(|k| k.0).collect::<Vec<_>>(),
        vec![EntryKind::DbPages, EntryKind::DbDigests]
    );
    assert!(
        i1_bytes * 20 < full_bytes,
        "a few changed rows wrote {i1_bytes} bytes, the full archive {full_bytes}"
    );
    expect.push((i1.clone(), image(&db), db_dump(&db)));

    // Nothing changed (once the racy margin passed): no page is stored.
    drop(app);
    settle();
    let i2 = backup(&b, &[]);
    expect.push((i2.clone(), image(&db), db_dump(&db)));
    let (i3, log) = backup_logged(&b);
    assert!(
        log.contains("no page read"),
        "not the unchanged path: {log}"
    );
    assert_eq!(parent_of(&b, &i3), i2.as_str());
    let (k3, i3_bytes) = entries(&b, &i3);
    assert_eq!(k3[0], (EntryKind::DbPages, 8), "an empty delta: {k3:?}");
    assert!(i3_bytes < 2048, "nothing changed, yet {i3_bytes} bytes");
    expect.push((i3.clone(), image(&db), db_dump(&db)));

    // The database shrinks (rows deleted, VACUUM), then grows again.
    exec(&db, "DELETE FROM deposits WHERE id > 5000; VACUUM;");
    let i4 = backup(&b, &[]);
    expect.push((i4.clone(), image(&db), db_dump(&db)));
    make_db(&db, 3000);
    let i5 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i5), i4.as_str());
    expect.push((i5.clone(), image(&db), db_dump(&db)));

    for (n, (id, img, dump)) in expect.iter().enumerate() {
        let got = restored(&b, id, &format!("r{n}"));
        assert!(fs::read(&got).unwrap() == *img, "page image of {id}");
        assert_eq!(db_dump(&got), *dump, "rows of {id}");
    }
    b.ok(&["verify", "--all"]);

    // A damaged middle link: verify and restore of later links fail and
    // name it, nothing is published; earlier links still restore.
    flip_middle_byte(&b, &i1);
    let err = b.fails(&["verify", &i5]);
    assert!(err.contains(&i1), "{err}");
    let target = b.tmp.path().join("r-bad");
    let err = b.fails(&[
        "restore",
        "database",
        &i5,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains(&i1), "{err}");
    assert!(
        !b.in_target(&target, &db).exists(),
        "a failed restore published a database"
    );
    let got = restored(&b, &full, "r-full-again");
    assert!(fs::read(&got).unwrap() == expect[0].1);
}

#[test]
fn a_change_right_after_a_backup_is_never_taken_for_unchanged() {
    let b = Board::new("dbincr-racy");
    let db = b.db_path();
    make_db(&db, 2000);
    settle();
    backup(&b, &[]);
    // Same size, same second: an in-place update through the WAL, then
    // with the WAL folded in (the file changes in place), then in
    // rollback-journal mode.
    let steps = [
        "UPDATE deposits SET cents = 1 WHERE id = 7;",
        "UPDATE deposits SET cents = 2 WHERE id = 7; PRAGMA wal_checkpoint(TRUNCATE);",
        "PRAGMA journal_mode = DELETE; UPDATE deposits SET cents = 3 WHERE id = 7;",
        "UPDATE deposits SET cents = 4 WHERE id = 7;",
    ];
    for (n, sql) in steps.iter().enumerate() {
        exec(&db, sql);
        let id = backup(&b, &[]);
        assert!(parent_of(&b, &id).is_string(), "step {n} made a full");
        let got = restored(&b, &id, &format!("s{n}"));
        assert_eq!(db_dump(&got), db_dump(&db), "step {n}: {sql}");
    }
}

#[test]
fn backup_full_and_prune_keep_database_chains_whole() {
    let b = Board::with_config("dbincr-prune", "keep_last = 1\nretention_days = 0");
    let db = b.db_path();
    make_db(&db, 1000);
    let full = backup(&b, &[]);
    make_db(&db, 10);
    let i1 = backup(&b, &[]);
    make_db(&db, 10);
    let i2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i2), i1.as_str());
    b.ok(&["prune"]);
    assert_eq!(b.ids("database"), vec![full, i1, i2.clone()]);
    let dump = db_dump(&db);
    assert_eq!(db_dump(&restored(&b, &i2, "after-prune")), dump);

    let f2 = backup(&b, &["--full"]);
    assert_eq!(parent_of(&b, &f2), serde_json::Value::Null);
    let (k, _) = entries(&b, &f2);
    assert_eq!(k[0].0, EntryKind::Database);
    b.ok(&["prune"]);
    assert_eq!(b.ids("database"), vec![f2.clone()]);
    assert_eq!(db_dump(&restored(&b, &f2, "after-full")), dump);
}

#[test]
fn a_key_rotation_starts_a_new_database_chain() {
    let b = Board::new("dbincr-rotate");
    let db = b.db_path();
    make_db(&db, 200);
    let full = backup(&b, &[]);
    make_db(&db, 5);
    let i1 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i1), full.as_str());
    b.ok(&["keygen", "--rotate"]);
    make_db(&db, 5);
    let f2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &f2), serde_json::Value::Null);
    assert_eq!(db_dump(&restored(&b, &f2, "after-rotate")), db_dump(&db));
}

#[test]
fn full_every_count_bounds_database_chains() {
    let b = Board::with_config("dbincr-count", "full_every_count = 1");
    let db = b.db_path();
    make_db(&db, 500);
    let full = backup(&b, &[]);
    make_db(&db, 5);
    let i1 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &i1), full.as_str());
    make_db(&db, 5);
    let f2 = backup(&b, &[]);
    assert_eq!(parent_of(&b, &f2), serde_json::Value::Null);
}

#[test]
fn page_digests_that_do_not_match_the_image_fail_verify() {
    use rvm_backup::chain::db::digest;
    use rvm_backup::format::pages::DigestsHead;
    let b = Board::new("dbincr-digests");
    let db = b.db_path();
    make_db(&db, 300);
    let image = fs::read(&db).unwrap();
    let ps: u32 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let pc = (image.len() / ps as usize) as u32;
    assert!(pc >= 3, "{pc} pages");
    let key = [9u8; 32];
    let digests = |bad: Option<u32>| {
        let mut d = DigestsHead {
            page_size: ps,
            page_count: pc,
            key,
            fingerprint: [0; 32],
        }
        .encode()
        .to_vec();
        for (i, page) in image.chunks(ps as usize).enumerate() {
            let pgno = i as u32 + 1;
            let mut g = digest(&key, page);
            if bad == Some(pgno) {
                g[0] ^= 1;
            }
            d.extend_from_slice(&pgno.to_le_bytes());
            d.extend_from_slice(&g);
        }
        d
    };
    let craft = |d: Vec<u8>| {
        common::craft::craft(
            &b,
            Strategy::Database,
            &[&db],
            &[
                (EntryKind::Database, db.clone(), image.clone()),
                (EntryKind::DbDigests, db.clone(), d),
            ],
            Some("ok"),
        )
    };
    let bad = craft(digests(Some(2)));
    let err = b.fails(&["verify", &bad]);
    assert!(err.contains("do not match page 2"), "{err}");
    // The same archive with true digests gets past that check (the crafted
    // sidecar's counts are zero, which verify reports next).
    let good = craft(digests(None));
    let err = b.fails(&["verify", &good]);
    assert!(!err.contains("digest"), "{err}");
}
