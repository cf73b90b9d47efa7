//! The database strategy's extra rules: refuse an archive whose source
//! failed its check unless told otherwise, check the staged image, and
//! swap it for the live database while keeping the old one.
//!
//! Invariants: SQLite only ever sees a path into a directory we hold open
//! (`/proc/self/fd/N/NAME`); the staged image is opened immutable (SQLite
//! creates no side files next to it); the live database is kept as
//! `NAME.pre-restore-<time>` (a hard link, with its `-wal`, `-shm` and
//! `-journal` moved beside it) before the new image is renamed over it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::sidecar::Meta;
use crate::format::FormatError;
use crate::safefs::Dir;

fn damaged(id: &str, why: String) -> Error {
    Error::Archive {
        id: id.to_string(),
        source: FormatError::DatabaseDamaged(why),
    }
}

/// Refuse an archive whose source database failed `quick_check` at backup
/// time, unless `accept_damaged`.
pub fn refuse_damaged_source(meta: &Meta, accept_damaged: bool) -> Result<()> {
    match &meta.db_check {
        Some(problem) if problem != "ok" => {
            if accept_damaged {
                log::warn!(
                    "archive {}: the database was already damaged when it was backed up ({problem}); restoring it as asked",
                    meta.id
                );
                Ok(())
            } else {
                Err(damaged(
                    &meta.id,
                    format!(
                        "{problem}; the source database was already damaged when it was backed up. \
                         Restore an older archive, or restore this one deliberately with \
                         `rvm-backup restore {} {} --accept-damaged`",
                        meta.strategy, meta.id
                    ),
                ))
            }
        }
        _ => Ok(()),
    }
}

fn with_suffix(name: &[u8], suffix: &str) -> Vec<u8> {
    let mut v = name.to_vec();
    v.extend_from_slice(suffix.as_bytes());
    v
}

/// `PRAGMA integrity_check` of the staged image `name` in `dir`. A failure
/// is an error, or only a warning with `accept_damaged`.
pub fn check_staged(dir: &Dir, name: &[u8], accept_damaged: bool, id: &str) -> Result<()> {
    check_image(&dir.proc_path(name), accept_damaged, id)
}

/// [`check_staged`] on a thread of its own (where `crate::workers` allows
/// threads; else right here), so that staging goes on meanwhile: the
/// check's result is waited for with [`PendingCheck::wait`] before anything
/// staged is published. `dir` must stay open until then (the thread reads
/// the image through it).
pub fn check_staged_soon(
    dir: &Dir,
    name: &[u8],
    accept_damaged: bool,
    id: &str,
) -> Result<Option<PendingCheck>> {
    if !crate::workers::allowed() {
        return check_staged(dir, name, accept_damaged, id).map(|()| None);
    }
    let path = dir.proc_path(name);
    let id_owned = id.to_string();
    let (tx, rx) = smol::channel::bounded(1);
    let started = std::thread::Builder::new()
        .name("rvb-image-check".into())
        .spawn(move || {
            let _ = tx.send_blocking(check_image(&path, accept_damaged, &id_owned));
        });
    match started {
        Ok(_) => Ok(Some(PendingCheck {
            rx,
            id: id.to_string(),
        })),
        // No thread: check here and now.
        Err(_) => check_staged(dir, name, accept_damaged, id).map(|()| None),
    }
}

/// A staged image's check running on its own thread.
pub struct PendingCheck {
    rx: smol::channel::Receiver<Result<()>>,
    id: String,
}

impl PendingCheck {
    /// The check's verdict (waiting cooperatively); a thread that ended
    /// without one is an error, never a pass.
    pub async fn wait(self) -> Result<()> {
        match self.rx.recv().await {
            Ok(r) => r,
            Err(_) => Err(damaged(
                &self.id,
                "the integrity check of the restored image did not finish; nothing was restored"
                    .into(),
            )),
        }
    }
}

fn check_image(path: &Path, accept_damaged: bool, id: &str) -> Result<()> {
    let uri = format!("file:{}?immutable=1", path.display());
    let check = || -> rusqlite::Result<String> {
        let conn = rusqlite::Connection::open_with_flags(
            &uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
    };
    let problem = match check() {
        Ok(s) if s == "ok" => return Ok(()),
        Ok(s) => s,
        Err(e) => format!("it cannot be opened: {e}"),
    };
    if accept_damaged {
        log::warn!("archive {id}: the restored database fails PRAGMA integrity_check ({problem}); restoring it as asked");
        Ok(())
    } else {
        Err(damaged(
            id,
            format!(
                "{problem}; nothing was restored. Restore another archive, or this one \
                 deliberately with `--accept-damaged`"
            ),
        ))
    }
}

/// Put the staged image `tmp` in place of the live database `live` (both
/// in `dir`), keeping the live one (WAL folded in where possible) as
/// `NAME.pre-restore-<time>`. `shown`: the live database's path, for
/// messages. Returns where the old database was kept.
pub fn swap(dir: &Dir, tmp: &[u8], live: &[u8], shown: &Path) -> Result<Option<PathBuf>> {
    let mut previous = None;
    if let Some(st) = dir.stat(live).at("inspect", shown)? {
        // Fold the WAL in only when the live name is a regular file, and
        // open it without CREATE: whoever owns the database directory could
        // have put a symlink there to make root create a file elsewhere.
        // (SQLite's own NOFOLLOW refuses the /proc/self/fd path itself, so
        // the check is ours; a swap between it and the open can still make
        // root open, never create, another database: a known limit.)
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        let opened = regular.then(|| {
            rusqlite::Connection::open_with_flags(
                dir.proc_path(live),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        });
        match opened {
            Some(Ok(conn)) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                    log::warn!("could not fold the WAL of {} into it: {e}", shown.display());
                }
            }
            Some(Err(e)) => {
                log::warn!("could not open {} to fold its WAL in: {e}", shown.display())
            }
            None => log::warn!(
                "{} is not a regular file; keeping it aside as it is, without folding a WAL in",
                shown.display()
            ),
        }
        let saved = with_suffix(
            live,
            &format!(
                ".pre-restore-{}",
                crate::timefmt::compact(crate::timefmt::now_unix())
            ),
        );
        let saved_shown = shown.with_file_name(OsStr::from_bytes(&saved));
        dir.link_from(dir, live, &saved)
            .ctx(|| format!("cannot save the live database as {}", saved_shown.display()))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = with_suffix(live, suffix);
            if dir.stat(&side).at("inspect", shown)?.is_some() {
                dir.rename(&side, &with_suffix(&saved, suffix)).ctx(|| {
                    format!("cannot move aside the {suffix} file of {}", shown.display())
                })?;
            }
        }
        log::warn!("the previous database is kept as {}", saved_shown.display());
        previous = Some(saved_shown);
    }
    dir.rename(tmp, live)
        .ctx(|| format!("cannot move the restored database into {}", shown.display()))?;
    dir.fsync()
        .ctx(|| format!("cannot sync the directory of {}", shown.display()))?;
    Ok(previous)
}
