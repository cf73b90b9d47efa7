//! The database snapshot is transactionally consistent while a writer keeps
//! committing, and does not stall that writer.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn snapshots_under_a_busy_writer_are_consistent() {
    let b = Board::new("busydb");
    let db = b.db_path();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE deposits(id INTEGER PRIMARY KEY, batch INT, payload TEXT);",
        )
        .unwrap();
    }
    // Start with some bulk so each snapshot takes a while to stream.
    make_db(&b.root.join("bulk.sqlite"), 0);
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN").unwrap();
        for i in 0..20_000 {
            c.execute(
                "INSERT INTO deposits(batch, payload) VALUES (-1, ?1)",
                [format!("{i:0>400}")],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            c.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
            let mut worst = Duration::ZERO;
            let mut batch = 0i64;
            // Bounded whatever happens to the backups: a writer that
            // outlived a failed assertion would keep the test alive.
            let give_up = Instant::now() + common::run_limit() * 3;
            while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                let t = Instant::now();
                let tx = c.unchecked_transaction().unwrap();
                for i in 0..100 {
                    tx.execute(
                        "INSERT INTO deposits(batch, payload) VALUES (?1, ?2)",
                        rusqlite::params![batch, format!("row {i}")],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                worst = worst.max(t.elapsed());
                batch += 1;
            }
            (worst, batch)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        b.ok(&["backup", "database"]);
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, batches) = writer.join().unwrap();
    assert!(
        batches > 3,
        "the writer made no progress during the backups"
    );
    assert!(
        worst < Duration::from_millis(500),
        "the writer's worst commit took {worst:?}"
    );

    let ids = b.ids("database");
    assert_eq!(ids.len(), 3);
    let mut counts = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let target = b.tmp.path().join(format!("r{n}"));
        b.ok(&[
            "restore",
            "database",
            id,
            "--target",
            target.to_str().unwrap(),
        ]);
        let c = rusqlite::Connection::open(b.in_target(&target, &db)).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let partial: i64 = c
            .query_row(
                "SELECT count(*) FROM (SELECT batch FROM deposits WHERE batch >= 0 GROUP BY batch HAVING count(*) != 100)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(partial, 0, "snapshot {id} holds part of a transaction");
        let gaps: i64 = c
            .query_row("SELECT ifnull(max(batch) + 1 - count(DISTINCT batch), 0) FROM deposits WHERE batch >= 0", [], |r| r.get(0))
            .unwrap();
        assert_eq!(gaps, 0, "snapshot {id} misses an earlier transaction");
        counts.push(
            c.query_row("SELECT count(*) FROM deposits", [], |r| r.get::<_, i64>(0))
                .unwrap(),
        );
    }
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "later snapshots hold fewer rows: {counts:?}"
    );
    eprintln!("writer: {batches} commits, worst {worst:?}; snapshot rows {counts:?}");
}

#[test]
fn missing_database_is_a_clear_error() {
    let b = Board::new("nodb");
    let err = b.fails(&["backup", "database"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !b.db_path().exists(),
        "the backup must not create the database"
    );
}
