//! One backup run of one strategy: source → archive parts → sidecar.
//!
//! The data flows one way: a source hands out entries and bounded chunks,
//! the archive writer hashes, deflates, encrypts and frames them, the part
//! writer spreads them over files under temporary names. Only when all of
//! that succeeded are the parts published and, last, the sidecar; a failure
//! or a kill at any point leaves no listed archive and earlier archives
//! untouched. The driver yields to the executor after every entry and every
//! chunk so a daemon stays responsive while it runs.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::chain::cursor::IndexCursor;
use crate::config::{Config, SourceSpec};
use crate::crypto::{KeyId, MasterKey};
use crate::error::{msg, Error, IoContext, Result};
use crate::format::header::{Header, DEFAULT_FRAME_SIZE, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use crate::format::record::{IndexRecord, IndexStat, Reference, STATUS_CHANGED, STATUS_CLEAN};
use crate::format::sidecar::{self, DatabaseInfo, Meta};

mod database;
use crate::format::{ArchiveWriter, EntryHeader, EntryKind, FormatError};
use crate::fsutil::write_atomic;
use crate::progress::Progress;
use crate::sources::exclude::Excludes;
use crate::sources::tree::{exists_nofollow, Found, Info, Walker};
use crate::store::parts::PartWriter;
use crate::store::{new_id, Store, StoreLock, SIDECAR_EXT};
use crate::strategy::Strategy;
pub use database::DbParent;

const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    skipped: u64,
    changed: u64,
    content_bytes: u64,
    hardlinks: u64,
    database: Option<DatabaseInfo>,
    db_check: Option<String>,
    schema_sha256: Option<[u8; 32]>,
    tables: Vec<(String, u64)>,
    /// Files stored as references into earlier archives (kind 5).
    unchanged: u64,
    /// Why the parent could not be read to the end (the run is then
    /// abandoned and redone as a full backup).
    parent_failed: Option<String>,
}

/// The archive an incremental backup is made against: a cursor over its
/// index (which must have stat blocks), and when its backup started.
pub struct Parent {
    pub cursor: IndexCursor,
    /// Unix nanoseconds when the parent's backup started (its sidecar's
    /// `created`, `created_nanos`).
    pub started_ns: i128,
}

/// What an incremental backup is made against.
pub enum Base {
    /// A tree strategy's parent archive.
    Tree(Box<Parent>),
    /// The database strategy's parent chain.
    Database(Box<DbParent>),
}

/// A file whose ctime is less than this before the parent's backup
/// started is read again even when its stat matches ("racily clean"):
/// file times come from a coarse clock (one tick is at most 10 ms), so a
/// change made in the same tick as the parent read the file could carry
/// the very ctime the parent recorded. Changes to a file bump its ctime,
/// and nothing can set it back, so older ctimes are safe to trust.
pub const RACY_MARGIN_NS: i128 = 200_000_000;

/// How a run ended.
pub enum Outcome {
    Done(Box<Meta>),
    /// The parent could not be read (damaged, tampered with): nothing was
    /// published; make a full backup instead.
    ParentFailed(String),
}

type Writer = ArchiveWriter<PartWriter>;

/// Back up `strategy` now. Needs the store lock; returns the new sidecar.
pub async fn run(
    cfg: &Config,
    store: &Store,
    _lock: &StoreLock,
    strategy: Strategy,
    key: Option<&MasterKey>,
    base: Option<Base>,
    progress: &mut Progress,
) -> Result<Outcome> {
    let (mut parent, mut db_parent) = match base {
        None => (None, None),
        Some(Base::Tree(p)) => (Some(*p), None),
        Some(Base::Database(p)) => (None, Some(*p)),
    };
    let spec = cfg.source(strategy).ok_or_else(|| {
        msg(format!(
            "strategy {strategy} is not configured: add a [{strategy}] section to {}",
            cfg.file.display()
        ))
    })?;
    let started = Instant::now();
    let (created, created_nanos) = crate::timefmt::now_precise();
    let id = new_id(strategy, created)?;
    let header = new_header(cfg, key, created, DEFAULT_FRAME_SIZE)?;
    let archive_err = |source: FormatError| Error::Archive {
        id: id.clone(),
        source,
    };
    let protection = header.protection_with_key(key).map_err(archive_err)?;
    let dir = store.strategy_dir(strategy);
    let parts = PartWriter::new(&dir, &id, cfg.max_part_size);
    let level = cfg.compression_enabled.then_some(cfg.compression_level);
    let mut w = ArchiveWriter::new(parts, &header, protection, level).map_err(archive_err)?;
    w.spill_index_with(crate::store::spill::index_spill(&dir, &id));
    let mut counts = Counts::default();
    progress.start(&format!("backup {strategy}"), None);
    let (written, sources) = match &spec {
        SourceSpec::Tree { paths, exclude } => {
            w.index_stats();
            let written = write_tree(
                &mut w,
                paths,
                exclude,
                &cfg.backup_dir,
                &mut counts,
                parent.as_mut(),
                progress,
            )
            .await;
            (written, paths.clone())
        }
        SourceSpec::Database { path } => {
            let spill_at = database::SpillAt { dir: &dir, id: &id };
            let written = database::write_database(
                &mut w,
                path,
                &mut counts,
                db_parent.as_mut(),
                spill_at,
                progress,
            )
            .await;
            (written, vec![path.clone()])
        }
    };
    // A parent that could not be used comes first: the caller redoes the
    // run as a full backup, whatever error it caused.
    if let Some(why) = counts.parent_failed.take() {
        progress.finish();
        return Ok(Outcome::ParentFailed(why));
    }
    written?;
    progress.finish();
    let (parts, summary) = w.finish().map_err(archive_err)?;
    let parts = parts.finish()?;
    let meta = Meta {
        id: id.clone(),
        strategy,
        created,
        created_nanos,
        duration_ms: started.elapsed().as_millis() as u64,
        host: crate::recovery_set::board::hostname(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        sources: sources.iter().map(|p| p.display().to_string()).collect(),
        files: counts.files,
        dirs: counts.dirs,
        symlinks: counts.symlinks,
        skipped: counts.skipped,
        changed_while_read: counts.changed,
        content_bytes: counts.content_bytes,
        archive_bytes: summary.archive_bytes,
        compressed: header.compressed(),
        encrypted: header.encrypted(),
        key_id: header.key_id,
        parts,
        database: counts.database,
        hardlinks: counts.hardlinks,
        db_check: counts.db_check,
        schema_sha256: counts.schema_sha256,
        tables: counts.tables,
        parent: parent
            .map(|p| p.cursor.id().to_string())
            .or_else(|| db_parent.map(|p| p.meta.id)),
    };
    if meta.parent.is_some() && strategy != Strategy::Database {
        log::info!(
            "{id}: {} of {} files unchanged since {}, stored as references",
            counts.unchanged,
            meta.files,
            meta.parent.as_deref().unwrap_or_default()
        );
    }
    let bytes = sidecar::encode(
        &meta,
        &header,
        &header.protection_with_key(key).map_err(archive_err)?,
    );
    write_atomic(&dir.join(format!("{id}{SIDECAR_EXT}")), &bytes, 0o644)?;
    Ok(Outcome::Done(Box::new(meta)))
}

/// A fresh archive header for `cfg`'s compression and encryption: a new
/// random salt, the key's id, frames of at most `frame_size` bytes.
/// Backups and WAL segments (`pitr::segment`) both start from it.
pub(crate) fn new_header(
    cfg: &Config,
    key: Option<&MasterKey>,
    created: i64,
    frame_size: u32,
) -> Result<Header> {
    let mut salt = [0u8; 32];
    crate::crypto::fill_random(&mut salt).ctx(|| "cannot get random bytes".into())?;
    let mut flags = 0;
    if cfg.compression_enabled {
        flags |= FLAG_COMPRESSED;
    }
    let key_id = if cfg.encryption_enabled {
        flags |= FLAG_ENCRYPTED;
        key.ok_or_else(|| msg("encryption_enabled is on but no key was loaded"))?
            .id()
    } else {
        KeyId::default()
    };
    Ok(Header {
        flags,
        frame_size,
        key_id,
        salt,
        created,
    })
}

fn entry_header(kind: EntryKind, path: &Path, m: &Info, size: u64) -> EntryHeader {
    EntryHeader {
        kind,
        path: path.as_os_str().as_bytes().to_vec(),
        mode: m.mode & 0o7777,
        uid: m.uid,
        gid: m.gid,
        mtime: m.mtime,
        mtime_nsec: m.mtime_nsec,
        size,
    }
}

fn write_err(path: &Path) -> impl Fn(FormatError) -> Error + '_ {
    move |e| match e {
        FormatError::Io(source) => Error::Io {
            what: format!("cannot write the archive (at {})", path.display()),
            source,
        },
        other => msg(format!("while storing {}: {other}", path.display())),
    }
}

/// At most this many first names of multiply linked files are remembered
/// per archive (with at most [`HARDLINK_MAP_BYTES`] of paths); further
/// names of files not remembered are stored as full copies.
pub const HARDLINK_MAP_ENTRIES: usize = 10_000;
pub const HARDLINK_MAP_BYTES: usize = 4 << 20;

/// (device, inode) → archive path of the first name stored, for regular
/// files with more than one link. Bounded; see [`HARDLINK_MAP_ENTRIES`].
#[derive(Default)]
struct HardLinks {
    first: HashMap<(u64, u64), Vec<u8>>,
    bytes: usize,
    full_warned: bool,
}

impl HardLinks {
    fn get(&self, m: &Info) -> Option<&[u8]> {
        if m.nlink < 2 {
            return None;
        }
        self.first.get(&(m.dev, m.ino)).map(Vec::as_slice)
    }

    fn remember(&mut self, m: &Info, path: &Path) {
        if m.nlink < 2 {
            return;
        }
        let path = path.as_os_str().as_bytes();
        if self.first.len() >= HARDLINK_MAP_ENTRIES || self.bytes + path.len() > HARDLINK_MAP_BYTES
        {
            if !self.full_warned {
                log::warn!(
                    "more than {HARDLINK_MAP_ENTRIES} hard-linked files: further names of files not yet seen (from {}) are stored as full copies",
                    path_display(path)
                );
                self.full_warned = true;
            }
            return;
        }
        self.bytes += path.len();
        self.first.insert((m.dev, m.ino), path.to_vec());
    }
}

fn path_display(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

async fn write_tree(
    w: &mut Writer,
    roots: &[PathBuf],
    exclude: &[String],
    backup_dir: &Path,
    counts: &mut Counts,
    mut parent: Option<&mut Parent>,
    progress: &mut Progress,
) -> Result<()> {
    if !roots.iter().any(|r| exists_nofollow(r)) {
        let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(msg(format!(
            "none of the configured paths exist: {}",
            list.join(", ")
        )));
    }
    for root in roots
        .iter()
        .filter(|r| fs::symlink_metadata(r).is_ok_and(|m| m.file_type().is_symlink()))
    {
        let to = fs::read_link(root)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        log::warn!(
            "configured path {} is a symlink to {to}: only the link is stored, not what it points to; configure the real directory instead",
            root.display()
        );
    }
    let mut buf = vec![0u8; CHUNK];
    let mut links = HardLinks::default();
    for found in Walker::new(
        roots,
        Excludes::new(exclude),
        vec![backup_dir.to_path_buf()],
    ) {
        match found {
            Found::Dir(p, m) => {
                w.begin_entry(&entry_header(EntryKind::Dir, &p, &m, 0))
                    .map_err(write_err(&p))?;
                w.end_entry(STATUS_CLEAN).map_err(write_err(&p))?;
                counts.dirs += 1;
            }
            Found::Symlink(p, m, target) => {
                write_small(w, EntryKind::Symlink, &p, &m, &target)?;
                counts.symlinks += 1;
            }
            Found::File(p, m, file) => match links.get(&m) {
                Some(first) => {
                    let first = first.to_vec();
                    write_small(w, EntryKind::HardLink, &p, &m, &first)?;
                    counts.hardlinks += 1;
                }
                None => {
                    let same = match parent.as_deref_mut() {
                        Some(par) if m.nlink < 2 => match unchanged(par, &p, &m) {
                            Ok(same) => same,
                            Err(why) => {
                                counts.parent_failed = Some(why);
                                return Err(msg("the parent archive cannot be read"));
                            }
                        },
                        _ => None,
                    };
                    match same {
                        Some((reference, sha256)) => {
                            let header = entry_header(EntryKind::Stored, &p, &m, 0);
                            let stat = stat_of(&m, reference.holder.as_bytes());
                            w.stored_entry(&header, &reference, sha256, stat)
                                .map_err(write_err(&p))?;
                            counts.files += 1;
                            counts.unchanged += 1;
                            counts.content_bytes += m.size;
                        }
                        None => {
                            write_file(w, &p, file, &m, &mut buf, counts, progress).await?;
                            links.remember(&m, &p);
                        }
                    }
                }
            },
            Found::Skipped(p, why) => {
                log::warn!("skipping {}: {why}", p.display());
                counts.skipped += 1;
            }
            Found::RootExcluded(p, pattern) => {
                log::warn!(
                    "configured path {} matches the exclude pattern {pattern:?}: nothing under it is stored; remove the pattern or the path from the config",
                    p.display()
                );
                counts.skipped += 1;
            }
        }
        // Per entry, not only per content chunk: a tree of many empty files
        // must not hold the executor.
        smol::future::yield_now().await;
    }
    Ok(())
}

/// The index's stat block for a file described by `m`.
fn stat_of(m: &Info, holder: &[u8]) -> IndexStat {
    IndexStat {
        dev: m.dev,
        ino: m.ino,
        mtime: m.mtime,
        mtime_nsec: m.mtime_nsec,
        ctime: m.ctime,
        ctime_nsec: m.ctime_nsec,
        file_size: m.size,
        holder: holder.to_vec(),
    }
}

/// If the file at `p` (described by `m`) is unchanged since the parent
/// stored it (same device, inode, size, mtime and ctime, stored clean):
/// where its content is and its SHA-256. `Err`: the parent's index cannot
/// be read (damaged or tampered with).
fn unchanged(
    parent: &mut Parent,
    p: &Path,
    m: &Info,
) -> std::result::Result<Option<(Reference, [u8; 32])>, String> {
    let id = parent.cursor.id().to_string();
    let rec = parent
        .cursor
        .seek(p.as_os_str().as_bytes())
        .map_err(|e| format!("archive {id}: {e}"))?;
    let Some(rec) = rec else {
        return Ok(None);
    };
    let ctime_ns = i128::from(m.ctime) * 1_000_000_000 + i128::from(m.ctime_nsec);
    if ctime_ns >= parent.started_ns - RACY_MARGIN_NS {
        return Ok(None);
    }
    Ok(same_file(rec, m).map(|holder| {
        (
            Reference {
                holder: holder.unwrap_or(id),
                file_size: m.size,
            },
            rec.sha256,
        )
    }))
}

/// `Some(holder)` when `rec` describes the same version of the file as
/// `m`: `Some(None)` for content in the parent itself, `Some(Some(id))`
/// for content the parent references in `id`.
fn same_file(rec: &IndexRecord, m: &Info) -> Option<Option<String>> {
    let st = rec.stat.as_ref()?;
    let same = rec.status == STATUS_CLEAN
        && st.dev == m.dev
        && st.ino == m.ino
        && st.file_size == m.size
        && st.mtime == m.mtime
        && st.mtime_nsec == m.mtime_nsec
        && st.ctime == m.ctime
        && st.ctime_nsec == m.ctime_nsec;
    if !same {
        return None;
    }
    match rec.kind {
        EntryKind::File if rec.size == m.size => Some(None),
        EntryKind::Stored if !st.holder.is_empty() => {
            String::from_utf8(st.holder.clone()).ok().map(Some)
        }
        _ => None,
    }
}

/// An entry whose content is a short byte string (a symlink's target, a
/// hard link's first name).
fn write_small(w: &mut Writer, kind: EntryKind, p: &Path, m: &Info, content: &[u8]) -> Result<()> {
    w.begin_entry(&entry_header(kind, p, m, content.len() as u64))
        .map_err(write_err(p))?;
    w.write_content(content).map_err(write_err(p))?;
    w.end_entry(STATUS_CLEAN).map_err(write_err(p))?;
    Ok(())
}

/// Where the next data starts at or after `pos`, and where it ends (the
/// next hole): `Ok(None)` if only a hole is left. `Err` if the file system
/// cannot tell (then the file is read as all data).
fn next_data(file: &File, pos: u64) -> std::io::Result<Option<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let start = match seek(file, SeekFrom::Data(pos)) {
        Ok(d) => d,
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let end = seek(file, SeekFrom::Hole(start))?;
    if end <= start {
        // Only a racing hole punch could say so; read the rest as data
        // rather than ask again (which could loop).
        return Err(std::io::Error::other("SEEK_HOLE went backwards"));
    }
    Ok(Some((start, end)))
}

/// Store one regular file, already opened by the walker (and checked to be
/// the inode it listed). The size is taken when the file is opened; if the
/// file changes while it is read (size, mtime or ctime differ afterwards,
/// or it ends early), the entry is stored marked "changed while read" and a
/// warning names it: never silently torn. Holes of sparse files are found
/// with `SEEK_DATA`/`SEEK_HOLE` and stored as the zeros they read as,
/// without reading them.
async fn write_file(
    w: &mut Writer,
    path: &Path,
    file: File,
    before: &Info,
    buf: &mut [u8],
    counts: &mut Counts,
    progress: &mut Progress,
) -> Result<()> {
    let size = before.size;
    w.begin_entry(&entry_header(EntryKind::File, path, before, size))
        .map_err(write_err(path))?;
    let mut pos = 0u64;
    // Known data up to here (exclusive); past it, ask for the next data.
    let mut data_end = 0u64;
    let mut sparse_aware = true;
    let mut ended_early = false;
    while pos < size {
        if pos >= data_end {
            match next_data(&file, pos).ok().filter(|_| sparse_aware) {
                Some(next) => {
                    let (start, end) = next.unwrap_or((size, size));
                    let start = start.min(size);
                    while pos < start {
                        // The read buffer, zeroed, stands for the hole (a
                        // static zero chunk would cost the board binary 64 KiB).
                        let n = (start - pos).min(buf.len() as u64) as usize;
                        let zeros = &mut buf[..n];
                        zeros.fill(0);
                        w.write_content(zeros).map_err(write_err(path))?;
                        pos += n as u64;
                        progress.add(n as u64);
                        smol::future::yield_now().await;
                    }
                    data_end = end;
                    continue;
                }
                None => {
                    sparse_aware = false;
                    data_end = u64::MAX;
                }
            }
        }
        let want = (buf.len() as u64).min(data_end - pos).min(size - pos) as usize;
        // A read error (a bad SD sector) must not sink the whole strategy:
        // this piece is stored as zeros and the file marked.
        let n = file.read_at(&mut buf[..want], pos).unwrap_or_else(|e| {
            log::warn!(
                "cannot read {} at byte {pos}: {e}; stored as zeros, marked",
                path.display(),
            );
            0
        });
        let n = if n == 0 {
            ended_early = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        w.write_content(&buf[..n]).map_err(write_err(path))?;
        pos += n as u64;
        progress.add(n as u64);
        smol::future::yield_now().await;
    }
    let after = Info::of(&file).at("stat", path)?;
    let changed = ended_early || !same_version(before, &after);
    if changed {
        log::warn!(
            "{} changed while it was read; stored and marked as changed",
            path.display()
        );
        counts.changed += 1;
    }
    let status = if changed {
        STATUS_CHANGED
    } else {
        STATUS_CLEAN
    };
    w.end_entry_stat(status, stat_of(before, b""))
        .map_err(write_err(path))?;
    counts.files += 1;
    counts.content_bytes += size;
    Ok(())
}

fn same_version(a: &Info, b: &Info) -> bool {
    a.size == b.size
        && a.mtime == b.mtime
        && a.mtime_nsec == b.mtime_nsec
        && a.ctime == b.ctime
        && a.ctime_nsec == b.ctime_nsec
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-backup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_tree_walk_yields_per_entry() {
        // Empty files have no content chunks: before, a tree of them never
        // let another task of the executor run until the backup ended.
        let d = scratch("yield");
        let src = d.join("src");
        fs::create_dir_all(&src).unwrap();
        let n = 3000;
        for i in 0..n {
            File::create(src.join(format!("f{i:05}"))).unwrap();
        }
        let text = format!(
            "backup_dir = {:?}\nencryption_enabled = false\n[application]\npaths = [{:?}]\n",
            d.join("backups").display().to_string(),
            src.display().to_string()
        );
        let cfg = Config::parse(&text, &d.join("c.toml")).unwrap();
        let store = Store::for_config(&cfg);
        let lock = store.lock().unwrap();
        let ex = smol::LocalExecutor::new();
        let ticks = Rc::new(Cell::new(0u64));
        let done = Rc::new(Cell::new(false));
        let (t, dn) = (ticks.clone(), done.clone());
        ex.spawn(async move {
            while !dn.get() {
                t.set(t.get() + 1);
                smol::future::yield_now().await;
            }
        })
        .detach();
        let mut progress = Progress::silent();
        let meta = smol::block_on(ex.run(async {
            let r = run(
                &cfg,
                &store,
                &lock,
                Strategy::Application,
                None,
                None,
                &mut progress,
            )
            .await;
            done.set(true);
            r
        }))
        .unwrap();
        let Outcome::Done(meta) = meta else {
            panic!("no parent, yet the parent failed")
        };
        assert_eq!(meta.files, n);
        assert!(
            ticks.get() >= n,
            "the other task ran {} times during {n} entries",
            ticks.get()
        );
        drop(lock);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_hard_link_map_is_bounded() {
        let mut links = HardLinks::default();
        let info = |ino: u64| Info {
            dev: 1,
            ino,
            mode: 0o100644,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
        };
        for i in 0..HARDLINK_MAP_ENTRIES as u64 + 5 {
            links.remember(&info(i), Path::new(&format!("/t/{i}")));
        }
        assert_eq!(links.first.len(), HARDLINK_MAP_ENTRIES);
        assert!(links.full_warned);
        assert_eq!(links.get(&info(7)), Some(&b"/t/7"[..]));
        assert_eq!(links.get(&info(HARDLINK_MAP_ENTRIES as u64 + 1)), None);
        let single = Info {
            nlink: 1,
            ..info(7)
        };
        assert_eq!(links.get(&single), None, "one link: never a hard link");
    }
}
