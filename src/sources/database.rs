//! A transactionally consistent page image of the live SQLite database.
//!
//! Why this way: the database is in WAL mode and the platform keeps
//! committing. We open our own connection, start one read transaction and
//! read every page through the `sqlite_dbpage` virtual table (compiled into
//! the bundled SQLite, see `.cargo/config.toml`). Inside that transaction
//! SQLite shows us the database exactly as of one commit, merging the main
//! file and the WAL, while the writer goes on appending to the WAL unblocked
//! (readers never block a WAL writer). Pages are streamed one at a time into
//! the archive: no temporary copy on the SD card, memory of one page.
//!
//! The page image is a valid database file: page 1 carries the header, and
//! the restore runs `PRAGMA integrity_check` before using it.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub struct DbSnapshot {
    conn: Connection,
    pub page_size: u32,
    pub page_count: u64,
    pub journal_mode: String,
    next_page: u64,
}

impl DbSnapshot {
    /// Open the database and pin a snapshot (a read transaction). SQLite's
    /// own busy wait is kept short: the caller retries cooperatively (see
    /// [`is_busy`]) so a locked database never stalls the daemon's thread.
    pub fn open(path: &Path) -> Result<DbSnapshot, String> {
        if !path.is_file() {
            return Err(format!(
                "database {} does not exist or is not a file",
                path.display()
            ));
        }
        // Read-write without CREATE: a WAL reader may need to create the
        // -shm file; nothing is ever written by this connection.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sql_err = |e: rusqlite::Error| format!("database {}: {e}", path.display());
        let conn = Connection::open_with_flags(path, flags).map_err(sql_err)?;
        conn.busy_timeout(Duration::from_millis(100))
            .map_err(sql_err)?;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(sql_err)?;
        if journal_mode != "wal" {
            log::warn!(
                "database {} is in {journal_mode} mode, not WAL: writers wait while the snapshot is read",
                path.display()
            );
        }
        conn.execute_batch("BEGIN DEFERRED").map_err(sql_err)?;
        // The first read starts the transaction: from here on every query
        // sees the same commit.
        let _: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sql_err)?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err)?;
        let page_count: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(sql_err)?;
        conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1").map_err(|e| {
            format!("this rvm-backup was built without the sqlite_dbpage table ({e}); build it with the repository's .cargo/config.toml")
        })?;
        Ok(DbSnapshot {
            conn,
            page_size,
            page_count,
            journal_mode,
            next_page: 1,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.page_count * u64::from(self.page_size)
    }

    /// Append the next page to `out`; false when all pages were read.
    pub fn read_page(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        if self.next_page > self.page_count {
            return Ok(false);
        }
        let pgno = self.next_page;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
            .map_err(|e| e.to_string())?;
        let before = out.len();
        stmt.query_row([pgno as i64], |r| {
            out.extend_from_slice(r.get_ref(0)?.as_blob()?);
            Ok(())
        })
        .map_err(|e| format!("cannot read database page {pgno}: {e}"))?;
        if out.len() - before != self.page_size as usize {
            return Err(format!(
                "database page {pgno} has {} bytes, not {}",
                out.len() - before,
                self.page_size
            ));
        }
        self.next_page += 1;
        Ok(true)
    }
}

/// True if an `open` error only means "locked right now, try again".
pub fn is_busy(error: &str) -> bool {
    error.contains("database is locked") || error.contains("database is busy")
}

impl Drop for DbSnapshot {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}
