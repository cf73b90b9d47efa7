//! The facts a database archive records about its snapshot: SQLite's
//! `quick_check` verdict, the schema hash and the row count of each table
//! (what a recovery drill later checks a restored image against).
//!
//! They are gathered on a thread of their own, so that the check's b-tree
//! walk (as long as the whole page scan, more on a cold SD card) neither
//! adds to the backup's wall time nor stalls the daemon's one executor
//! thread. The thread reads through a connection that sees exactly the
//! commit the archive stores: either the snapshot's own connection, handed
//! over once its pages are written, or its [`Twin`], a second connection
//! whose read transaction began on the same commit (see
//! [`DbSnapshot::open_with_twin`](super::database::DbSnapshot::open_with_twin)),
//! which lets the check run while the pages are still being read. In the
//! daemon, which keeps to one thread (`crate::workers`), they are read on
//! the snapshot's connection after its pages, on the caller's thread.
//!
//! Invariant: whatever the thread reads, it reads inside a read
//! transaction that began on the archive's commit; the result reaches the
//! caller through a channel, and a thread that dies reports "could not
//! run", never "ok".

use std::time::Instant;

use rusqlite::Connection;

use super::database::{count_rows, countable_tables, schema_sha256, DbError, DbSnapshot};

/// A connection in a read transaction on the snapshot's commit.
pub struct Twin {
    pub(super) conn: Connection,
}

impl Drop for Twin {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

/// The schema hash and the row count of each table, by name.
pub type DrillFacts = ([u8; 32], Vec<(String, u64)>);

/// What was found.
pub struct Facts {
    /// `"ok"`, SQLite's first problem, or why the check could not run.
    pub check: String,
    /// The schema hash and the row counts, or why they could not be read.
    pub drill: Result<DrillFacts, DbError>,
    /// How long the check and the counting took, for the debug log.
    pub check_ms: u128,
    pub drill_ms: u128,
}

/// Where the thread reads from.
enum Source {
    Twin(Twin),
    Snapshot(DbSnapshot),
}

impl Source {
    fn conn(&self) -> &Connection {
        match self {
            Source::Twin(t) => &t.conn,
            Source::Snapshot(s) => s.connection(),
        }
    }
}

/// The facts being gathered; [`FactsJob::wait`] gives them.
pub struct FactsJob {
    rx: smol::channel::Receiver<Facts>,
}

impl FactsJob {
    /// Start on the twin: the snapshot's pages can be read meanwhile.
    pub fn on_twin(twin: Twin) -> FactsJob {
        FactsJob::spawn(Source::Twin(twin))
    }

    /// Start on the snapshot's own connection, once nothing else reads it.
    pub fn on_snapshot(snap: DbSnapshot) -> FactsJob {
        FactsJob::spawn(Source::Snapshot(snap))
    }

    /// On a thread of its own; where `crate::workers` forbids threads (the
    /// daemon), right here, before returning.
    fn spawn(source: Source) -> FactsJob {
        let (tx, rx) = smol::channel::bounded(1);
        if !crate::workers::allowed() {
            let _ = tx.try_send(gather(source.conn()));
            return FactsJob { rx };
        }
        let started = std::thread::Builder::new()
            .name("rvb-db-facts".into())
            .spawn(move || {
                let facts = gather(source.conn());
                drop(source);
                let _ = tx.send_blocking(facts);
            });
        if let Err(e) = started {
            // The closure, and with it the sender, is gone: wait() reports it.
            log::warn!("cannot start a thread to check the database: {e}");
        }
        FactsJob { rx }
    }

    /// The facts, waiting cooperatively.
    pub async fn wait(self) -> Facts {
        match self.rx.recv().await {
            Ok(f) => f,
            Err(_) => Facts {
                check: "the check could not run: its thread did not start or ended early".into(),
                drill: Err(DbError::Other(
                    "the thread reading the row counts did not start or ended early".into(),
                )),
                check_ms: 0,
                drill_ms: 0,
            },
        }
    }
}

/// The check, then the schema hash and the row counts, on `conn`.
fn gather(conn: &Connection) -> Facts {
    let started = Instant::now();
    let check = match conn.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0)) {
        Ok(verdict) => verdict,
        Err(e) => format!("the check could not run: PRAGMA quick_check: {e}"),
    };
    let check_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let drill = drill_facts(conn);
    Facts {
        check,
        drill,
        check_ms,
        drill_ms: started.elapsed().as_millis(),
    }
}

fn drill_facts(conn: &Connection) -> Result<DrillFacts, DbError> {
    let sql = |what: String| move |e| DbError::Sqlite { what, source: e };
    let schema = schema_sha256(conn).map_err(sql("cannot read the schema".into()))?;
    let mut tables = Vec::new();
    for name in countable_tables(conn).map_err(sql("cannot list the tables".into()))? {
        let n = count_rows(conn, &name)
            .map_err(sql(format!("cannot count the rows of table {name:?}")))?;
        tables.push((name, n));
    }
    Ok((schema, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-facts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn seed(db: &std::path::Path) -> Connection {
        let c = Connection::open(db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT randomblob(100) FROM n;",
        )
        .unwrap();
        c
    }

    #[test]
    fn the_twin_sees_the_snapshots_commit_not_later_ones() {
        let d = scratch("twin");
        let db = d.join("x.sqlite");
        let c = seed(&db);
        let (snap, twin) = DbSnapshot::open_with_twin(&db).unwrap();
        let twin = twin.expect("a twin on a writable WAL database");
        c.execute_batch("INSERT INTO t VALUES (1); CREATE TABLE later(y);")
            .unwrap();
        let facts = smol::block_on(FactsJob::on_twin(twin).wait());
        assert_eq!(facts.check, "ok");
        let (schema, tables) = facts.drill.unwrap();
        assert_eq!(tables, vec![("t".to_string(), 500)]);
        assert_eq!(schema, snap.schema_sha256().unwrap());
        // The snapshot itself sees the same commit.
        assert_eq!(snap.count_rows("t").unwrap(), 500);
        drop(snap);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn on_the_snapshot_the_facts_are_the_snapshots() {
        let d = scratch("snap");
        let db = d.join("x.sqlite");
        let c = seed(&db);
        let snap = DbSnapshot::open(&db).unwrap();
        c.execute_batch("INSERT INTO t VALUES (1);").unwrap();
        let facts = smol::block_on(FactsJob::on_snapshot(snap).wait());
        assert_eq!(facts.check, "ok");
        assert_eq!(facts.drill.unwrap().1, vec![("t".to_string(), 500)]);
        // The thread ended the read transaction: a checkpoint can now
        // take every frame.
        let (busy, _, _): (i64, i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_busy_writer_means_no_twin_not_an_error() {
        let d = scratch("busy");
        let db = d.join("x.sqlite");
        let c = seed(&db);
        // Another connection holds the write lock: the twin cannot be
        // pinned, the snapshot still opens (WAL readers are not blocked).
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2);")
            .unwrap();
        let (snap, twin) = DbSnapshot::open_with_twin(&db).unwrap();
        assert!(twin.is_none());
        assert_eq!(snap.count_rows("t").unwrap(), 500);
        c.execute_batch("COMMIT").unwrap();
        drop(snap);
        let _ = std::fs::remove_dir_all(&d);
    }
}
