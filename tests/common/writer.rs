//! A writer committing numbered rows into a WAL-mode test database, one
//! transaction each: what the point-in-time tests restore to a time and
//! count (`t(n INTEGER PRIMARY KEY, pad BLOB)`, `n` = 1, 2, 3, …).

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::Connection;

pub struct Writer {
    /// The writer's own connection (a test may checkpoint through it).
    pub conn: Connection,
    next: i64,
}

impl Writer {
    pub fn open(db: &Path) -> Writer {
        let conn = Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, pad BLOB);",
        )
        .unwrap();
        let next: i64 = conn
            .query_row("SELECT coalesce(max(n), 0) + 1 FROM t", [], |r| r.get(0))
            .unwrap();
        Writer { conn, next }
    }

    /// Commit `count` numbered rows, one transaction each.
    pub fn commit(&mut self, count: i64) {
        for _ in 0..count {
            self.conn
                .execute(
                    "INSERT INTO t(n, pad) VALUES (?1, randomblob(1500))",
                    [self.next],
                )
                .unwrap();
            self.next += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Commit `n` rows into `db` (this writer's database), the last one
    /// alone after a pause longer than a tick of the kernel's coarse clock,
    /// and return the WAL's modification time then (ms): the clock the
    /// shipper dates its batches by. A batch dated at or after it was read
    /// after the last commit; one read before is dated earlier (the pause),
    /// so a wait on it cannot end with rows unshipped.
    pub fn commit_and_date(&mut self, db: &Path, n: i64) -> i64 {
        self.commit(n - 1);
        std::thread::sleep(Duration::from_millis(50));
        self.commit(1);
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        std::fs::metadata(&wal)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    pub fn last(&self) -> i64 {
        self.next - 1
    }
}
