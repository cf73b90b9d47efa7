//! Restore: stage everything, verify everything, then publish.
//!
//! Phase 1 (stage) reads the archive and writes each file to a temporary
//! name beside its destination (`.NAME.rvm-restore-PID-N.tmp`), creating
//! missing directories and remembering which. Content is checked against its
//! SHA-256 as it is read, and a database image must pass
//! `PRAGMA integrity_check`. Phase 1 ends only when the whole archive has
//! been authenticated (final frame, index, footer, tail). Any failure removes
//! every temporary file and every directory phase 1 created: the target is
//! left exactly as it was.
//!
//! Phase 2 (publish) renames each staged file over its destination (atomic
//! per file), then symlinks, fsyncs the directories, and sets directory
//! modes and times. A live database is first saved as
//! `NAME.pre-restore-<time>` (with its WAL folded in) before the new one is
//! renamed into place, so nothing is lost even by a mistaken restore.
//!
//! Paths are refused when they are unsafe (checked by the format reader),
//! outside the archive's recorded sources, or when a directory on the way
//! below the restore root is a symlink.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::MasterKey;
use crate::error::{msg, Error, IoContext, Result};
use crate::format::record::STATUS_CHANGED;
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::fsutil::{parent, sync_dir};
use crate::progress::Progress;
use crate::store::parts::PartReader;
use crate::store::Listed;
use crate::strategy::Strategy;

/// Which archive of a strategy to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Id(String),
    /// The newest archive created at or before this Unix time.
    At(i64),
}

#[derive(Debug, Default)]
pub struct Restored {
    pub id: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub changed_while_read: u64,
    pub previous_database: Option<PathBuf>,
}

/// Pick the archive to restore from a listing (oldest first).
pub fn select<'a>(
    archives: &'a [Listed],
    strategy: Strategy,
    sel: &Selector,
) -> Result<&'a Listed> {
    let of: Vec<Listed> = archives
        .iter()
        .filter(|a| a.meta.strategy == strategy)
        .cloned()
        .collect();
    let none = || {
        msg(format!(
            "there is no {strategy} archive; run `rvm-backup backup {strategy}` first"
        ))
    };
    let chosen_id = match sel {
        Selector::Latest => of.last().ok_or_else(none)?.meta.id.clone(),
        Selector::Id(prefix) => crate::store::resolve(&of, prefix)?.meta.id.clone(),
        Selector::At(t) => match of.iter().rev().find(|a| a.meta.created <= *t) {
            Some(a) => a.meta.id.clone(),
            None => {
                let oldest = of.first().ok_or_else(none)?;
                return Err(msg(format!(
                    "no {strategy} archive from {} or before; the oldest is {} from {}",
                    crate::timefmt::rfc3339(*t),
                    oldest.meta.id,
                    crate::timefmt::rfc3339(oldest.meta.created)
                )));
            }
        },
    };
    archives
        .iter()
        .find(|a| a.meta.id == chosen_id)
        .ok_or_else(none)
}

struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    header: EntryHeader,
}

/// Everything phase 1 put on disk, so it can be published or undone.
struct Stage {
    target: Option<PathBuf>,
    sources: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    files: Vec<Staged>,
    links: Vec<Staged>,
    dirs: Vec<(PathBuf, EntryHeader)>,
    /// Every archive path staged so far and whether it was a directory:
    /// an entry below a staged non-directory (say, below a symlink the
    /// archive itself creates) or a repeated path is refused.
    seen: std::collections::HashMap<Vec<u8>, bool>,
    counter: u64,
}

impl Drop for Stage {
    /// A restore abandoned in phase 1 (error, or its task dropped by a
    /// cancel or shutdown) leaves nothing; after `publish` there is nothing
    /// left to undo.
    fn drop(&mut self) {
        self.undo();
    }
}

/// Restore `archive` (all of it, or only the entry at `only`) into `target`,
/// or in place when `target` is `None`.
pub async fn run(
    archive: &Listed,
    key: Option<&MasterKey>,
    target: Option<&Path>,
    only: Option<&Path>,
    _accept_damaged: bool,
    progress: &mut Progress,
) -> Result<Restored> {
    let mut stage = Stage {
        target: target.map(Path::to_path_buf),
        sources: archive.meta.sources.iter().map(PathBuf::from).collect(),
        created_dirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        seen: std::collections::HashMap::new(),
        counter: 0,
    };
    let mut done = Restored {
        id: archive.meta.id.clone(),
        ..Restored::default()
    };
    progress.start(
        &format!("restore {}", archive.meta.id),
        Some(archive.meta.content_bytes),
    );
    let staged = match only {
        None => stage_all(archive, key, &mut stage, &mut done, progress).await,
        Some(path) => stage_one(archive, key, path, &mut stage, &mut done, progress).await,
    };
    progress.finish();
    staged?;
    done.previous_database = stage.publish()?;
    Ok(done)
}

fn open_reader(archive: &Listed, key: Option<&MasterKey>) -> Result<ArchiveReader<PartReader>> {
    let parts = PartReader::open(&archive.dir, &archive.meta.parts)?;
    let r = ArchiveReader::open(parts, key).map_err(|source| Error::Archive {
        id: archive.meta.id.clone(),
        source,
    })?;
    if r.header() != &archive.header {
        return Err(msg(format!(
            "archive {}: its header does not match its sidecar",
            archive.meta.id
        )));
    }
    Ok(r)
}

async fn stage_all(
    archive: &Listed,
    key: Option<&MasterKey>,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let arch = |source: FormatError| Error::Archive {
        id: archive.meta.id.clone(),
        source,
    };
    let mut r = open_reader(archive, key)?;
    while let Some(h) = r.next_entry().map_err(arch)? {
        stage
            .entry(&mut r, h, done, progress, &archive.meta.id)
            .await?;
    }
    // Reaching here means index, footer and tail were checked too.
    let parts = r.into_inner();
    for (info, hash) in archive.meta.parts.iter().zip(parts.part_hashes()) {
        if hash != Some(info.sha256) {
            return Err(msg(format!(
                "archive {}: part {} does not match its sidecar",
                archive.meta.id, info.name
            )));
        }
    }
    Ok(())
}

async fn stage_one(
    archive: &Listed,
    key: Option<&MasterKey>,
    path: &Path,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let arch = |source: FormatError| Error::Archive {
        id: archive.meta.id.clone(),
        source,
    };
    let mut r = open_reader(archive, key)?;
    let wanted = path.as_os_str().as_bytes();
    let index = r.read_index().map_err(arch)?;
    let rec = index.iter().find(|rec| rec.path == wanted).ok_or_else(|| {
        msg(format!(
            "archive {} holds no entry {}",
            archive.meta.id,
            path.display()
        ))
    })?;
    r.seek_to(rec.at).map_err(arch)?;
    let h = r
        .next_entry()
        .map_err(arch)?
        .ok_or_else(|| arch(FormatError::Corrupt("index points at the end".into())))?;
    if h.path != rec.path || h.kind != rec.kind || h.size != rec.size {
        return Err(arch(FormatError::Corrupt(
            "index points at another entry".into(),
        )));
    }
    let sha = stage
        .entry(&mut r, h, done, progress, &archive.meta.id)
        .await?;
    if sha != rec.sha256 {
        return Err(arch(FormatError::ContentMismatch(
            path.display().to_string(),
        )));
    }
    Ok(())
}

impl Stage {
    /// Stage one entry whose header was just read; returns its checked hash.
    async fn entry(
        &mut self,
        r: &mut ArchiveReader<PartReader>,
        h: EntryHeader,
        done: &mut Restored,
        progress: &mut Progress,
        id: &str,
    ) -> Result<[u8; 32]> {
        let arch = |source: FormatError| Error::Archive {
            id: id.to_string(),
            source,
        };
        self.check_unique_and_below_dirs(&h)?;
        let (dest, root) = self.destination(&h.path)?;
        self.ensure_dirs(parent(&dest), &root)?;
        let existing = fs::symlink_metadata(&dest).ok();
        let is_dir = existing.as_ref().is_some_and(|m| m.is_dir());
        if (h.kind == EntryKind::Dir) != is_dir && existing.is_some() {
            return Err(msg(format!(
                "{} exists as a {} but the archive holds a {:?} there; move it away and restore again",
                dest.display(),
                if is_dir { "directory" } else { "non-directory" },
                h.kind
            )));
        }
        let trailer = match h.kind {
            EntryKind::Dir => {
                if existing.is_none() {
                    fs::create_dir(&dest).at("create directory", &dest)?;
                    self.created_dirs.push(dest.clone());
                }
                done.dirs += 1;
                let t = r.end_entry().map_err(arch)?;
                self.dirs.push((dest, h.clone()));
                t
            }
            EntryKind::Symlink => {
                let mut target = Vec::new();
                while let Some(c) = r.content_chunk().map_err(arch)? {
                    target.extend_from_slice(c);
                }
                let t = r.end_entry().map_err(arch)?;
                let tmp = self.tmp_name(&dest);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &tmp)
                    .at("create symlink", &tmp)?;
                self.links.push(Staged {
                    tmp,
                    dest,
                    header: h.clone(),
                });
                done.symlinks += 1;
                t
            }
            EntryKind::HardLink => {
                return Err(msg(format!(
                    "archive entry {} is a hard link, which this restore cannot make yet",
                    h.display_path()
                )));
            }
            EntryKind::File | EntryKind::Database => {
                let tmp = self.tmp_name(&dest);
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .at("create", &tmp)?;
                self.files.push(Staged {
                    tmp: tmp.clone(),
                    dest,
                    header: h.clone(),
                });
                while let Some(c) = r.content_chunk().map_err(arch)? {
                    f.write_all(c).at("write", &tmp)?;
                    progress.add(c.len() as u64);
                    done.bytes += c.len() as u64;
                    smol::future::yield_now().await;
                }
                let t = r.end_entry().map_err(arch)?;
                f.sync_all().at("sync", &tmp)?;
                if h.kind == EntryKind::Database {
                    check_database(&tmp)?;
                }
                // Times, owner, then mode (a chown clears setuid bits), all
                // through the open descriptor: nothing here follows a
                // symlink someone might swap in.
                f.set_times(FileTimes::new().set_modified(to_system_time(h.mtime, h.mtime_nsec)))
                    .at("set time of", &tmp)?;
                if let Err(e) = std::os::unix::fs::fchown(&f, Some(h.uid), Some(h.gid)) {
                    log::debug!("keeping owner of {}: {e}", tmp.display());
                }
                f.set_permissions(fs::Permissions::from_mode(h.mode))
                    .at("set mode of", &tmp)?;
                f.sync_all().at("sync", &tmp)?;
                done.files += 1;
                t
            }
        };
        if trailer.status == STATUS_CHANGED {
            log::warn!(
                "{} changed while it was backed up; its content may be inconsistent",
                h.display_path()
            );
            done.changed_while_read += 1;
        }
        Ok(trailer.sha256)
    }

    fn check_unique_and_below_dirs(&mut self, h: &EntryHeader) -> Result<()> {
        let path = Path::new(std::ffi::OsStr::from_bytes(&h.path));
        if self.seen.contains_key(&h.path) {
            return Err(msg(format!(
                "archive holds {} twice; refusing it",
                path.display()
            )));
        }
        for a in path.ancestors().skip(1) {
            if self.seen.get(a.as_os_str().as_bytes()) == Some(&false) {
                return Err(msg(format!(
                    "archive entry {} lies below {}, which is not a directory (a symlink trick?); refusing it",
                    path.display(),
                    a.display()
                )));
            }
        }
        self.seen.insert(h.path.clone(), h.kind == EntryKind::Dir);
        Ok(())
    }

    /// Where an archive path lands, and the root below which no directory
    /// may be a symlink.
    fn destination(&self, path: &[u8]) -> Result<(PathBuf, PathBuf)> {
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        let Some(source) = self.sources.iter().find(|s| p.starts_with(s)) else {
            return Err(msg(format!(
                "archive entry {} is outside the archive's sources; refusing it",
                p.display()
            )));
        };
        Ok(match &self.target {
            Some(t) => (t.join(p.strip_prefix("/").unwrap_or(p)), t.clone()),
            None => (p.to_path_buf(), parent(source).to_path_buf()),
        })
    }

    /// Make sure every directory from `root` down to `dir` exists and none
    /// below `root` is a symlink; record the ones created.
    fn ensure_dirs(&mut self, dir: &Path, root: &Path) -> Result<()> {
        let mut chain: Vec<&Path> = dir.ancestors().collect();
        chain.reverse();
        for d in chain {
            match fs::symlink_metadata(d) {
                Ok(m) if m.file_type().is_symlink() && d.starts_with(root) && d != root => {
                    return Err(msg(format!(
                        "{} is a symlink; refusing to restore through it",
                        d.display()
                    )));
                }
                Ok(_) if d.is_dir() => {}
                Ok(_) => {
                    return Err(msg(format!(
                        "{} is in the way: it is not a directory",
                        d.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(d).at("create directory", d)?;
                    self.created_dirs.push(d.to_path_buf());
                }
                Err(e) => return Err(e).at("inspect", d),
            }
        }
        Ok(())
    }

    /// A short temporary name beside `dest` (a name derived from a long
    /// file name could exceed the 255-byte limit).
    fn tmp_name(&mut self, dest: &Path) -> PathBuf {
        self.counter += 1;
        parent(dest).join(format!(
            ".rvm-restore-{}-{}.tmp",
            std::process::id(),
            self.counter
        ))
    }

    /// Remove everything phase 1 wrote.
    fn undo(&mut self) {
        for s in self.files.drain(..).chain(self.links.drain(..)) {
            let _ = fs::remove_file(&s.tmp);
        }
        for d in self.created_dirs.drain(..).rev() {
            let _ = fs::remove_dir(d);
        }
    }

    /// Phase 2: rename staged files into place, then links, then fix up
    /// directories. Returns where a replaced live database was saved.
    fn publish(mut self) -> Result<Option<PathBuf>> {
        // From here on the new tree stays. If a rename fails, dropping the
        // stage removes the temporaries not yet renamed (removing the
        // renamed ones' old names is a no-op).
        self.created_dirs.clear();
        let mut touched = BTreeSet::new();
        let mut previous = None;
        for s in &self.files {
            if s.header.kind == EntryKind::Database {
                previous = swap_database(&s.tmp, &s.dest)?;
            } else {
                fs::rename(&s.tmp, &s.dest)
                    .ctx(|| format!("cannot move restored file into {}", s.dest.display()))?;
            }
            touched.insert(parent(&s.dest).to_path_buf());
        }
        for s in &self.links {
            chown_if_root(&s.tmp, &s.header); // lchown: does not follow the link
            fs::rename(&s.tmp, &s.dest)
                .ctx(|| format!("cannot move restored link into {}", s.dest.display()))?;
            touched.insert(parent(&s.dest).to_path_buf());
        }
        self.files.clear();
        self.links.clear();
        for (dir, h) in self.dirs.iter().rev() {
            // Only a real directory (never through a symlink swapped in).
            if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let d = File::open(dir).at("open", dir)?;
            if let Err(e) = std::os::unix::fs::fchown(&d, Some(h.uid), Some(h.gid)) {
                log::debug!("keeping owner of {}: {e}", dir.display());
            }
            d.set_permissions(fs::Permissions::from_mode(h.mode))
                .at("set mode of", dir)?;
            d.set_times(FileTimes::new().set_modified(to_system_time(h.mtime, h.mtime_nsec)))
                .at("set time of", dir)?;
            touched.insert(parent(dir).to_path_buf());
        }
        for dir in &touched {
            sync_dir(dir)?;
        }
        Ok(previous)
    }
}

fn to_system_time(secs: i64, nsec: u32) -> SystemTime {
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    base + Duration::from_nanos(u64::from(nsec))
}

/// Give the file its recorded owner when we may (running as root); a
/// non-root restore keeps the restoring user as owner.
fn chown_if_root(path: &Path, h: &EntryHeader) {
    if let Err(e) = std::os::unix::fs::lchown(path, Some(h.uid), Some(h.gid)) {
        log::debug!("keeping owner of {}: {e}", path.display());
    }
}

/// A restored database image must be a sound SQLite database.
fn check_database(path: &Path) -> Result<()> {
    let check = || -> rusqlite::Result<String> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )?;
        conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
    };
    let result = check();
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(with_suffix(path, suffix));
    }
    match result {
        Ok(s) if s == "ok" => Ok(()),
        Ok(s) => Err(msg(format!(
            "restored database fails PRAGMA integrity_check: {s}"
        ))),
        Err(e) => Err(msg(format!("restored database cannot be opened: {e}"))),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Put a verified database image in place of the live one, keeping the
/// live one (WAL folded in where possible) as `NAME.pre-restore-<time>`.
fn swap_database(staged: &Path, live: &Path) -> Result<Option<PathBuf>> {
    let mut previous = None;
    if live.exists() {
        if let Ok(conn) = rusqlite::Connection::open(live) {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                log::warn!("could not fold the WAL of {} into it: {e}", live.display());
            }
        }
        let saved = with_suffix(
            live,
            &format!(
                ".pre-restore-{}",
                crate::timefmt::compact(crate::timefmt::now_unix())
            ),
        );
        fs::hard_link(live, &saved)
            .ctx(|| format!("cannot save the live database as {}", saved.display()))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = with_suffix(live, suffix);
            if side.exists() {
                fs::rename(&side, with_suffix(&saved, suffix)).at("move aside", &side)?;
            }
        }
        log::warn!("the previous database is kept as {}", saved.display());
        previous = Some(saved);
    }
    fs::rename(staged, live)
        .ctx(|| format!("cannot move the restored database into {}", live.display()))?;
    sync_dir(parent(live))?;
    Ok(previous)
}

/// True if `p` has no `..` (used for `--file` arguments).
pub fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}
