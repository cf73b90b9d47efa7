//! A fingerprint of a SQLite database's files, taken without reading its
//! pages: if it is the same as the one recorded before the parent
//! archive's snapshot, nothing was committed since, and the next backup
//! stores no page (docs/format.md §12, "nothing changed").
//!
//! What it covers, and why that catches every commit:
//! - the database file's device, inode, size, mtime and ctime (with
//!   nanoseconds), and its first 100 bytes (the header: the change counter
//!   a rollback-journal commit bumps, the page count);
//! - the `-wal` file's device, inode, size, mtime, ctime and its 32-byte
//!   header (salts and checkpoint sequence): a WAL commit appends frames
//!   (the size grows) or restarts the WAL (new salts); an absent and an
//!   empty WAL read the same (neither holds a frame);
//! - no fingerprint at all while a `-journal` exists (a hot journal means
//!   the file is mid-transaction or needs recovery).
//!
//! Racy times: file times come from a coarse clock, so a write in the same
//! tick as the fingerprint could leave every time unchanged. A fingerprint
//! whose newest ctime is less than [`crate::backup::RACY_MARGIN_NS`]
//! before it was taken is not given (`None`); any write after it was
//! taken then moves a ctime past the recorded one. Correctness over
//! speed: when unsure, `None`, and the backup reads the pages.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn ctime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

fn stat_into(h: &mut Sha256, m: &fs::Metadata) {
    for v in [m.dev(), m.ino(), m.len()] {
        h.update(v.to_le_bytes());
    }
    for v in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
        h.update(v.to_le_bytes());
    }
}

/// Read the first `n` bytes of a regular file (fewer if it is shorter),
/// never following a symlink nor opening anything but a regular file.
fn head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let f = File::options()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut v = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut v)?;
    Ok(v)
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// The fingerprint of the database at `path` now, or `None` when it cannot
/// vouch for "unchanged" (see the module doc).
pub fn take(path: &Path) -> Option<[u8; 32]> {
    let now = crate::timefmt::now_precise();
    let now_ns = i128::from(now.0) * 1_000_000_000 + i128::from(now.1);
    let mut h = Sha256::new();
    h.update(b"rvm-backup database fingerprint v1");
    let db = fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
    let mut newest = ctime_ns(&db);
    stat_into(&mut h, &db);
    let db_head = head(path, 100).ok()?;
    h.update((db_head.len() as u64).to_le_bytes());
    h.update(&db_head);
    let journal = side(path, "-journal");
    match fs::symlink_metadata(&journal) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return None,
    }
    let wal = side(path, "-wal");
    match fs::symlink_metadata(&wal) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => h.update([0u8]),
        Ok(m) if m.is_file() && m.len() == 0 => h.update([0u8]),
        Ok(m) if m.is_file() => {
            h.update([1u8]);
            stat_into(&mut h, &m);
            newest = newest.max(ctime_ns(&m));
            let wal_head = head(&wal, 32).ok()?;
            h.update((wal_head.len() as u64).to_le_bytes());
            h.update(&wal_head);
            // The header was read after the stat: a WAL restarted in
            // between shows in a second stat.
            let again = fs::symlink_metadata(&wal).ok()?;
            if (again.len(), ctime_ns(&again)) != (m.len(), ctime_ns(&m)) {
                return None;
            }
        }
        _ => return None,
    }
    if newest >= now_ns - crate::backup::RACY_MARGIN_NS {
        return None;
    }
    let again = fs::symlink_metadata(path).ok()?;
    if (again.len(), ctime_ns(&again), again.ino()) != (db.len(), ctime_ns(&db), db.ino()) {
        return None;
    }
    let out: [u8; 32] = h.finalize().into();
    // All zeros means "none" in the format; a real hash never is.
    (out != [0u8; 32]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-fp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn age(p: &Path) {
        // ctime cannot be set back; wait out the racy margin instead.
        let _ = p;
        std::thread::sleep(std::time::Duration::from_millis(
            (crate::backup::RACY_MARGIN_NS / 1_000_000) as u64 + 50,
        ));
    }

    #[test]
    fn fresh_files_give_none_then_commits_change_it() {
        let d = scratch("commits");
        let db = d.join("x.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(take(&db), None, "just written: racy");
        age(&db);
        let a = take(&db).expect("old enough");
        assert_eq!(take(&db), Some(a), "nothing changed");
        c.execute_batch("INSERT INTO t VALUES (2);").unwrap();
        age(&db);
        let b = take(&db).unwrap();
        assert_ne!(a, b, "a WAL commit changes it");
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t VALUES (3);")
            .unwrap();
        age(&db);
        assert_ne!(take(&db).unwrap(), b, "a restarted WAL changes it");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn rollback_journal_commits_change_it() {
        let d = scratch("rollback");
        let db = d.join("x.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        age(&db);
        let a = take(&db).unwrap();
        c.execute_batch("UPDATE t SET x = 2;").unwrap();
        age(&db);
        assert_ne!(take(&db).unwrap(), a);
        fs::write(d.join("x.sqlite-journal"), b"hot").unwrap();
        assert_eq!(take(&db), None, "a journal: no fingerprint");
        let _ = fs::remove_dir_all(&d);
    }
}
