//! A transactionally consistent page image of the live SQLite database.
//!
//! Why this way: the database is in WAL mode and the platform keeps
//! committing. We open our own connection, start one read transaction and
//! read every page through the `sqlite_dbpage` virtual table (compiled into
//! the bundled SQLite, see `.cargo/config.toml`). Inside that transaction
//! SQLite shows us the database exactly as of one commit, merging the main
//! file and the WAL, while the writer goes on appending to the WAL unblocked
//! (readers never block a WAL writer). Pages are streamed into the archive
//! from one statement scanning `sqlite_dbpage` ([`Pages`]): no temporary
//! copy on the SD card, no copy in memory beyond the archive's frame.
//!
//! The page image is a valid database file: page 1 carries the header, and
//! the restore runs `PRAGMA integrity_check` before using it.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Rows, Statement};
use sha2::{Digest, Sha256};

use super::db_facts::Twin;

/// Every page of the database in page-number order (the virtual table's
/// own scan order, checked page by page in [`Pages`]).
const PAGES_SQL: &str = "SELECT pgno, data FROM sqlite_dbpage";
/// SQLite's page cache per connection of ours: 512 KiB.
const CACHE_SIZE: &str = "PRAGMA cache_size = -512";
/// One page by number (an incremental backup's second pass).
const PAGE_SQL: &str = "SELECT data FROM sqlite_dbpage WHERE pgno = ?1";

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
        Ok(DbSnapshot::open_inner(path, false)?.0)
    }

    /// [`DbSnapshot::open`], and a second connection whose read transaction
    /// sees the very same commit (a [`Twin`], for the checks of
    /// `sources::db_facts` to run beside the page scan). Both read
    /// transactions begin while a third connection holds the write lock
    /// (`BEGIN IMMEDIATE`, given up at once afterwards), so no commit can
    /// fall between them; a writer waits for that instant only (its own busy
    /// timeout covers it). When the lock cannot be had within the short
    /// busy wait, or the file is read-only, there is no twin: `None`, and
    /// the snapshot is as [`DbSnapshot::open`] gives it.
    pub fn open_with_twin(path: &Path) -> Result<(DbSnapshot, Option<Twin>), DbError> {
        DbSnapshot::open_inner(path, true)
    }

    fn open_inner(path: &Path, twin: bool) -> Result<(DbSnapshot, Option<Twin>), DbError> {
        if !path.is_file() {
            return Err(DbError::Other(format!(
                "database {} does not exist or is not a file; check [database] path",
                path.display()
            )));
        }
        let sql_err = |e: rusqlite::Error| DbError::Sqlite {
            what: format!("database {}", path.display()),
            source: e,
        };
        let conn = connect(path).map_err(sql_err)?;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(sql_err)?;
        if journal_mode != "wal" {
            log::warn!(
                "database {} is in {journal_mode} mode, not WAL: writers wait while the snapshot is read",
                path.display()
            );
        }
        let lock = if twin { write_lock(path) } else { None };
        begin_read(&conn).map_err(sql_err)?;
        let twin = match lock {
            Some(lock) => {
                let twin = twin_of(path);
                // Given up before anything else happens: writers go on.
                let _ = lock.execute_batch("ROLLBACK");
                drop(lock);
                twin
            }
            None => None,
        };
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err)?;
        let page_count: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(sql_err)?;
        conn.prepare(PAGES_SQL)
            .map_err(|e| DbError::Sqlite {
                what: "this rvm-backup was built without the sqlite_dbpage table; build it with the repository's .cargo/config.toml".into(),
                source: e,
            })?;
        Ok((
            DbSnapshot {
                conn,
                page_size,
                page_count,
                journal_mode,
            },
            twin,
        ))
    }

    /// The connection, in the snapshot's read transaction.
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
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

    /// The statement [`read_page`] reads single pages with.
    pub fn page_lookup(&self) -> Result<Statement<'_>, DbError> {
        self.conn.prepare(PAGE_SQL).map_err(|e| DbError::Sqlite {
            what: "cannot prepare the page lookup".into(),
            source: e,
        })
    }

    /// The one statement that steps over every page of the snapshot in
    /// page-number order; read it with [`Pages`].
    pub fn page_statement(&self) -> Result<Statement<'_>, DbError> {
        self.conn.prepare(PAGES_SQL).map_err(|e| DbError::Sqlite {
            what: "cannot prepare the page query".into(),
            source: e,
        })
    }
}

/// A connection of ours: read-write without CREATE (a WAL reader may need
/// to create the -shm file; nothing is ever written through it), with a
/// short busy wait.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(100))?;
    // Each page is read about once (the scan, the check's b-tree walk); the
    // kernel's page cache holds the file. SQLite's own stays small, for the
    // daemon's 8 MiB bound.
    conn.execute_batch(CACHE_SIZE)?;
    Ok(conn)
}

/// Begin a read transaction: the first read fixes the commit every later
/// query of this connection sees.
fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN DEFERRED")?;
    let _: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    Ok(())
}

/// A connection holding the write lock (no commit can happen while it
/// does), or `None` if it cannot be had within the busy wait.
fn write_lock(path: &Path) -> Option<Connection> {
    let conn = connect(path).ok()?;
    match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => Some(conn),
        Err(e) => {
            log::debug!(
                "no second connection for the checks of {} ({e}): they run after the page scan",
                path.display()
            );
            None
        }
    }
}

/// The twin, begun while the write lock is held.
fn twin_of(path: &Path) -> Option<Twin> {
    let conn = connect(path).ok()?;
    begin_read(&conn).ok()?;
    Some(Twin { conn })
}

/// Every page of the image, in order, from one running statement
/// (`sqlite_dbpage` scanned once) instead of one query per page. Each page
/// is handed out as a borrowed slice of SQLite's own buffer: no copy here.
///
/// Invariants: pages come numbered 1, 2, ... up to the snapshot's page
/// count, each exactly `page_size` bytes, or reading fails; nothing past
/// the page count is read.
pub struct Pages<'s> {
    rows: Rows<'s>,
    next: u64,
    count: u64,
    size: u32,
}

impl<'s> Pages<'s> {
    pub fn new(snap: &DbSnapshot, stmt: &'s mut Statement<'_>) -> Result<Pages<'s>, DbError> {
        let rows = stmt.query([]).map_err(|e| DbError::Sqlite {
            what: "cannot start reading the database pages".into(),
            source: e,
        })?;
        Ok(Pages {
            rows,
            next: 1,
            count: snap.page_count,
            size: snap.page_size,
        })
    }

    /// The next page, or `None` when all pages were read.
    pub fn next_page(&mut self) -> Result<Option<&[u8]>, DbError> {
        if self.next > self.count {
            return Ok(None);
        }
        let pgno = self.next;
        let sql = |e: rusqlite::Error| DbError::Sqlite {
            what: format!("cannot read database page {pgno}"),
            source: e,
        };
        let row = self.rows.next().map_err(sql)?.ok_or_else(|| {
            DbError::Other(format!(
                "the database ended at page {} of {}",
                pgno - 1,
                self.count
            ))
        })?;
        let got: i64 = row.get(0).map_err(sql)?;
        if u64::try_from(got).ok() != Some(pgno) {
            return Err(DbError::Other(format!(
                "the database gave page {got} where page {pgno} was expected"
            )));
        }
        let data = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| sql(e.into()))?;
        if data.len() != self.size as usize {
            return Err(DbError::Other(format!(
                "database page {pgno} has {} bytes, not {}",
                data.len(),
                self.size
            )));
        }
        self.next += 1;
        Ok(Some(data))
    }
}

/// Page `pgno` of the snapshot into `out` (exactly `size` bytes, or an
/// error), through a statement from [`DbSnapshot::page_lookup`].
pub fn read_page(
    stmt: &mut Statement<'_>,
    pgno: u32,
    size: u32,
    out: &mut Vec<u8>,
) -> Result<(), DbError> {
    let sql = |e: rusqlite::Error| DbError::Sqlite {
        what: format!("cannot read database page {pgno}"),
        source: e,
    };
    let mut rows = stmt.query([pgno]).map_err(sql)?;
    let row = rows
        .next()
        .map_err(sql)?
        .ok_or_else(|| DbError::Other(format!("the database has no page {pgno}")))?;
    let data = row
        .get_ref(0)
        .map_err(sql)?
        .as_blob()
        .map_err(|e| sql(e.into()))?;
    if data.len() != size as usize {
        return Err(DbError::Other(format!(
            "database page {pgno} has {} bytes, not {size}",
            data.len()
        )));
    }
    out.clear();
    out.extend_from_slice(data);
    Ok(())
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
    fn pages_stream_in_order_as_of_the_snapshot() {
        let d = scratch("pages");
        let db = d.join("x.sqlite");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT randomblob(300) FROM n;",
        )
        .unwrap();
        let snap = DbSnapshot::open(&db).unwrap();
        let count = snap.page_count;
        assert!(count > 100, "{count} pages");
        // Commits after the snapshot began grow the file; the image must
        // not see them.
        c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT randomblob(300) FROM n;",
        )
        .unwrap();
        let mut stmt = snap.page_statement().unwrap();
        let mut pages = Pages::new(&snap, &mut stmt).unwrap();
        let mut image = Vec::new();
        let mut n = 0u64;
        while let Some(p) = pages.next_page().unwrap() {
            assert_eq!(p.len(), snap.page_size as usize);
            image.extend_from_slice(p);
            n += 1;
        }
        assert_eq!(n, count);
        assert!(pages.next_page().unwrap().is_none(), "a page past the end");
        drop(pages);
        drop(stmt);
        drop(snap);
        let copy = d.join("copy.sqlite");
        std::fs::write(&copy, &image).unwrap();
        let r = Connection::open(&copy).unwrap();
        let check: String = r
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        assert_eq!(count_rows(&r, "t").unwrap(), 2000);
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
