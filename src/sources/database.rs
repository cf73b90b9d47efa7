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

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sha2::{Digest, Sha256};

/// At most this many tables' row counts are recorded per archive (the
/// first ones by name); the schema hash still covers every table.
pub const MAX_TABLES: usize = 1000;
/// Tables with longer names (in bytes) are not counted.
pub const MAX_TABLE_NAME: usize = 256;

/// SHA-256 of the schema: the rows of `sqlite_schema` ordered by `type`,
/// then `name` (binary collation), and for each row its columns `type`,
/// `name`, `tbl_name`, `sql` in that order, each as one byte `0` (NULL) or
/// `1` followed by its length (u32 little-endian) and its UTF-8 bytes.
/// The same function hashes the source at backup time and the restored
/// image in a drill.
pub fn schema_sha256(conn: &Connection) -> rusqlite::Result<[u8; 32]> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name, tbl_name, sql",
    )?;
    let mut rows = stmt.query([])?;
    let mut h = Sha256::new();
    while let Some(row) = rows.next()? {
        for i in 0..4 {
            match row.get_ref(i)? {
                ValueRef::Null => h.update([0u8]),
                ValueRef::Text(b) | ValueRef::Blob(b) => {
                    h.update([1u8]);
                    h.update(u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
                    h.update(b);
                }
                ValueRef::Integer(n) => {
                    let t = n.to_string();
                    h.update([1u8]);
                    h.update(u32::try_from(t.len()).unwrap_or(u32::MAX).to_le_bytes());
                    h.update(t.as_bytes());
                }
                ValueRef::Real(f) => {
                    let t = f.to_string();
                    h.update([1u8]);
                    h.update(u32::try_from(t.len()).unwrap_or(u32::MAX).to_le_bytes());
                    h.update(t.as_bytes());
                }
            }
        }
    }
    Ok(h.finalize().into())
}

/// The ordinary tables whose rows are counted: by name, virtual tables
/// left out (counting one needs its module), names longer than
/// [`MAX_TABLE_NAME`] left out, at most [`MAX_TABLES`].
pub fn countable_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND coalesce(upper(substr(ltrim(sql), 1, 14)), '') != 'CREATE VIRTUAL' \
         AND length(CAST(name AS BLOB)) <= ?1 ORDER BY name LIMIT ?2",
    )?;
    let mut names = Vec::new();
    for name in stmt.query_map([MAX_TABLE_NAME as i64, MAX_TABLES as i64], |r| {
        r.get::<_, String>(0)
    })? {
        names.push(name?);
    }
    Ok(names)
}

/// `SELECT count(*)` of one table (its name quoted as an identifier).
pub fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    let sql = format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\""));
    let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub struct DbSnapshot {
    conn: Connection,
    pub page_size: u32,
    pub page_count: u64,
    pub journal_mode: String,
    next_page: u64,
}

/// Why a snapshot could not be taken or read. SQLite's own errors keep
/// their code, so "locked right now, try again" is told apart from every
/// other failure by [`DbError::is_busy`], never by message text.
#[derive(Debug)]
pub enum DbError {
    /// An SQLite call failed; `what` says which step, for the operator.
    Sqlite {
        what: String,
        source: rusqlite::Error,
    },
    /// Anything else (not a file, a page of the wrong size, ...).
    Other(String),
}

impl DbError {
    /// SQLite's primary error code, if this came from SQLite.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            DbError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => Some(e.code),
            _ => None,
        }
    }

    /// True if this only means "locked right now, try again": another
    /// connection holds a lock that keeps readers out (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED`).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite { what, source } => write!(f, "{what}: {source}"),
            DbError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sqlite { source, .. } => Some(source),
            DbError::Other(_) => None,
        }
    }
}

impl DbSnapshot {
    /// Open the database and pin a snapshot (a read transaction). SQLite's
    /// own busy wait is kept short: the caller retries cooperatively while
    /// [`DbError::is_busy`] holds, so a locked database never stalls the
    /// daemon's thread.
    pub fn open(path: &Path) -> Result<DbSnapshot, DbError> {
        if !path.is_file() {
            return Err(DbError::Other(format!(
                "database {} does not exist or is not a file; check [database] path",
                path.display()
            )));
        }
        // Read-write without CREATE: a WAL reader may need to create the
        // -shm file; nothing is ever written by this connection.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sql_err = |e: rusqlite::Error| DbError::Sqlite {
            what: format!("database {}", path.display()),
            source: e,
        };
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
        conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
            .map_err(|e| DbError::Sqlite {
                what: "this rvm-backup was built without the sqlite_dbpage table; build it with the repository's .cargo/config.toml".into(),
                source: e,
            })?;
        Ok(DbSnapshot {
            conn,
            page_size,
            page_count,
            journal_mode,
            next_page: 1,
        })
    }

    /// `PRAGMA quick_check(1)` inside the snapshot's read transaction: the
    /// pages being backed up. `Ok("ok")`, or `Ok(first problem)`; SQLite
    /// stops at the first problem, and only that one row is read. An `Err`
    /// means the check itself could not run (SQLite gave up on a damaged
    /// file).
    pub fn quick_check(&self) -> Result<String, DbError> {
        self.conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0))
            .map_err(|e| DbError::Sqlite {
                what: "PRAGMA quick_check".into(),
                source: e,
            })
    }

    /// [`schema_sha256`] inside the snapshot's read transaction.
    pub fn schema_sha256(&self) -> Result<[u8; 32], DbError> {
        schema_sha256(&self.conn).map_err(|e| DbError::Sqlite {
            what: "cannot read the schema".into(),
            source: e,
        })
    }

    /// [`countable_tables`] inside the snapshot's read transaction.
    pub fn tables(&self) -> Result<Vec<String>, DbError> {
        countable_tables(&self.conn).map_err(|e| DbError::Sqlite {
            what: "cannot list the tables".into(),
            source: e,
        })
    }

    /// [`count_rows`] inside the snapshot's read transaction.
    pub fn count_rows(&self, table: &str) -> Result<u64, DbError> {
        count_rows(&self.conn, table).map_err(|e| DbError::Sqlite {
            what: format!("cannot count the rows of table {table:?}"),
            source: e,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.page_count * u64::from(self.page_size)
    }

    /// Append the next page to `out`; false when all pages were read.
    pub fn read_page(&mut self, out: &mut Vec<u8>) -> Result<bool, DbError> {
        if self.next_page > self.page_count {
            return Ok(false);
        }
        let pgno = self.next_page;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
            .map_err(|e| DbError::Sqlite {
                what: "cannot prepare the page query".into(),
                source: e,
            })?;
        let before = out.len();
        stmt.query_row([pgno as i64], |r| {
            out.extend_from_slice(r.get_ref(0)?.as_blob()?);
            Ok(())
        })
        .map_err(|e| DbError::Sqlite {
            what: format!("cannot read database page {pgno}"),
            source: e,
        })?;
        if out.len() - before != self.page_size as usize {
            return Err(DbError::Other(format!(
                "database page {pgno} has {} bytes, not {}",
                out.len() - before,
                self.page_size
            )));
        }
        self.next_page += 1;
        Ok(true)
    }
}

impl Drop for DbSnapshot {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-db-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_locked_database_is_busy_by_code() {
        let d = scratch("locked");
        let db = d.join("x.sqlite");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1);
             PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);",
        )
        .unwrap();
        let e = DbSnapshot::open(&db).err().unwrap();
        assert!(e.is_busy(), "{e}");
        drop(c);
        assert!(DbSnapshot::open(&db).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn schema_hash_and_counts_see_the_snapshot_not_later_commits() {
        let d = scratch("facts");
        let db = d.join("x.sqlite");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE \"we\"\"ird\"(x); CREATE TABLE b(y);
             CREATE INDEX bi ON b(y); INSERT INTO b VALUES (1), (2);",
        )
        .unwrap();
        let snap = DbSnapshot::open(&db).unwrap();
        let before = snap.schema_sha256().unwrap();
        c.execute_batch("INSERT INTO b VALUES (3); CREATE TABLE c(z);")
            .unwrap();
        assert_eq!(snap.tables().unwrap(), vec!["b", "we\"ird"]);
        assert_eq!(snap.count_rows("b").unwrap(), 2);
        assert_eq!(snap.count_rows("we\"ird").unwrap(), 0);
        assert_eq!(snap.schema_sha256().unwrap(), before);
        drop(snap);
        // A new table changes the hash; the same schema hashes the same.
        let now = schema_sha256(&c).unwrap();
        assert_ne!(now, before);
        assert_eq!(schema_sha256(&c).unwrap(), now);
        assert_eq!(count_rows(&c, "b").unwrap(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_message_mentioning_a_lock_is_not_busy() {
        // The old check searched the message text: a damaged file whose
        // path says "database is locked" was retried for 30 s.
        let d = scratch("text");
        let db = d.join("database is locked");
        std::fs::write(&db, vec![0x55u8; 8192]).unwrap();
        let e = DbSnapshot::open(&db).err().unwrap();
        assert!(e.to_string().contains("database is locked"), "{e}");
        assert!(!e.is_busy(), "{e}");
        assert_eq!(e.code(), Some(ErrorCode::NotADatabase));
        let _ = std::fs::remove_dir_all(&d);
    }
}
