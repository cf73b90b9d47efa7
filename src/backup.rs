//! One backup run of one strategy: source → archive parts → sidecar.
//!
//! The data flows one way: a source hands out entries and bounded chunks,
//! the archive writer hashes, deflates, encrypts and frames them, the part
//! writer spreads them over files under temporary names. Only when all of
//! that succeeded are the parts published and, last, the sidecar; a failure
//! or a kill at any point leaves no listed archive and earlier archives
//! untouched. The driver yields to the executor after every chunk so a
//! daemon stays responsive while it runs.

use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, SourceSpec};
use crate::crypto::{KeyId, MasterKey};
use crate::error::{msg, Error, IoContext, Result};
use crate::format::header::{Header, DEFAULT_FRAME_SIZE, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use crate::format::record::{STATUS_CHANGED, STATUS_CLEAN};
use crate::format::sidecar::{self, DatabaseInfo, Meta};
use crate::format::{ArchiveWriter, EntryHeader, EntryKind, FormatError};
use crate::fsutil::write_atomic;
use crate::progress::Progress;
use crate::sources::database::DbSnapshot;
use crate::sources::exclude::Excludes;
use crate::sources::tree::{Found, Walker};
use crate::store::parts::PartWriter;
use crate::store::{new_id, Store, StoreLock, SIDECAR_EXT};
use crate::strategy::Strategy;

const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    skipped: u64,
    changed: u64,
    content_bytes: u64,
    database: Option<DatabaseInfo>,
}

type Writer = ArchiveWriter<PartWriter>;

/// Back up `strategy` now. Needs the store lock; returns the new sidecar.
pub async fn run(
    cfg: &Config,
    store: &Store,
    _lock: &StoreLock,
    strategy: Strategy,
    key: Option<&MasterKey>,
    progress: &mut Progress,
) -> Result<Meta> {
    let spec = cfg.source(strategy).ok_or_else(|| {
        msg(format!(
            "strategy {strategy} is not configured: add a [{strategy}] section to {}",
            cfg.file.display()
        ))
    })?;
    let started = Instant::now();
    let (created, created_nanos) = crate::timefmt::now_precise();
    let id = new_id(strategy, created)?;
    let header = new_header(cfg, key, created)?;
    let archive_err = |source: FormatError| Error::Archive {
        id: id.clone(),
        source,
    };
    let protection = header.protection(key).map_err(archive_err)?;
    let dir = store.strategy_dir(strategy);
    let parts = PartWriter::new(&dir, &id, cfg.max_part_size);
    let level = cfg.compression_enabled.then_some(cfg.compression_level);
    let mut w = ArchiveWriter::new(parts, &header, protection, level).map_err(archive_err)?;
    w.spill_index_to(crate::fsutil::tmp_path(&dir.join(format!("{id}.index"))));
    let mut counts = Counts::default();
    progress.start(&format!("backup {strategy}"), None);
    let sources = match &spec {
        SourceSpec::Tree { paths, exclude } => {
            write_tree(
                &mut w,
                paths,
                exclude,
                &cfg.backup_dir,
                &mut counts,
                progress,
            )
            .await?;
            paths.clone()
        }
        SourceSpec::Database { path } => {
            write_database(&mut w, path, &mut counts, progress).await?;
            vec![path.clone()]
        }
    };
    progress.finish();
    let (parts, summary) = w.finish().map_err(archive_err)?;
    let parts = parts.finish()?;
    let meta = Meta {
        id: id.clone(),
        strategy,
        created,
        created_nanos,
        duration_ms: started.elapsed().as_millis() as u64,
        host: hostname(),
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
        hardlinks: 0,
        db_check: None,
    };
    let bytes = sidecar::encode(
        &meta,
        &header,
        &header.protection(key).map_err(archive_err)?,
    );
    write_atomic(&dir.join(format!("{id}{SIDECAR_EXT}")), &bytes, 0o644)?;
    Ok(meta)
}

fn new_header(cfg: &Config, key: Option<&MasterKey>, created: i64) -> Result<Header> {
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
        frame_size: DEFAULT_FRAME_SIZE,
        key_id,
        salt,
        created,
    })
}

fn entry_header(kind: EntryKind, path: &Path, m: &Metadata, size: u64) -> EntryHeader {
    EntryHeader {
        kind,
        path: path.as_os_str().as_bytes().to_vec(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32,
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

async fn write_tree(
    w: &mut Writer,
    roots: &[PathBuf],
    exclude: &[String],
    backup_dir: &Path,
    counts: &mut Counts,
    progress: &mut Progress,
) -> Result<()> {
    if !roots.iter().any(|r| fs::symlink_metadata(r).is_ok()) {
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
                w.begin_entry(&entry_header(
                    EntryKind::Symlink,
                    &p,
                    &m,
                    target.len() as u64,
                ))
                .map_err(write_err(&p))?;
                w.write_content(&target).map_err(write_err(&p))?;
                w.end_entry(STATUS_CLEAN).map_err(write_err(&p))?;
                counts.symlinks += 1;
            }
            Found::File(p, m) => write_file(w, &p, &m, &mut buf, counts, progress).await?,
            Found::Skipped(p, why) => {
                log::warn!("skipping {}: {why}", p.display());
                counts.skipped += 1;
            }
        }
    }
    Ok(())
}

/// Store one regular file. The size is taken when the file is opened; if the
/// file changes while it is read (size, mtime, ctime or inode differ
/// afterwards, or it ends early), the entry is stored marked "changed while
/// read" and a warning names it: never silently torn.
async fn write_file(
    w: &mut Writer,
    path: &Path,
    listed: &Metadata,
    buf: &mut [u8],
    counts: &mut Counts,
    progress: &mut Progress,
) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("skipping {}: cannot open: {e}", path.display());
            counts.skipped += 1;
            return Ok(());
        }
    };
    let before = file.metadata().at("stat", path)?;
    if !before.is_file() {
        log::warn!(
            "skipping {}: it was replaced by something else while the tree was walked",
            path.display()
        );
        counts.skipped += 1;
        return Ok(());
    }
    let size = before.len();
    w.begin_entry(&entry_header(EntryKind::File, path, &before, size))
        .map_err(write_err(path))?;
    let mut left = size;
    let mut ended_early = false;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        // A read error (a bad SD sector) must not sink the whole strategy:
        // the rest of this file is stored as zeros and marked.
        let n = file.read(&mut buf[..want]).unwrap_or_else(|e| {
            log::warn!(
                "cannot read {} at byte {}: {e}; the rest is stored as zeros, marked",
                path.display(),
                size - left
            );
            0
        });
        if n == 0 {
            ended_early = true;
            buf[..want].fill(0);
        }
        let n = if n == 0 { want } else { n };
        w.write_content(&buf[..n]).map_err(write_err(path))?;
        left -= n as u64;
        progress.add(n as u64);
        smol::future::yield_now().await;
    }
    let after = file.metadata().at("stat", path)?;
    let changed = ended_early || !same_version(&before, &after) || before.ino() != listed.ino();
    if changed {
        log::warn!(
            "{} changed while it was read; stored and marked as changed",
            path.display()
        );
        counts.changed += 1;
    }
    w.end_entry(if changed {
        STATUS_CHANGED
    } else {
        STATUS_CLEAN
    })
    .map_err(write_err(path))?;
    counts.files += 1;
    counts.content_bytes += size;
    Ok(())
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

async fn write_database(
    w: &mut Writer,
    path: &Path,
    counts: &mut Counts,
    progress: &mut Progress,
) -> Result<()> {
    let mut snap = open_snapshot(path).await?;
    let m = fs::metadata(path).at("stat", path)?;
    let total = snap.total_bytes();
    progress.start("backup database", Some(total));
    w.begin_entry(&entry_header(EntryKind::Database, path, &m, total))
        .map_err(write_err(path))?;
    let mut batch = Vec::with_capacity(CHUNK + snap.page_size as usize);
    loop {
        let more = snap.read_page(&mut batch).map_err(msg)?;
        if batch.len() >= CHUNK || (!more && !batch.is_empty()) {
            w.write_content(&batch).map_err(write_err(path))?;
            progress.add(batch.len() as u64);
            batch.clear();
            smol::future::yield_now().await;
        }
        if !more {
            break;
        }
    }
    w.end_entry(STATUS_CLEAN).map_err(write_err(path))?;
    counts.files += 1;
    counts.content_bytes += total;
    counts.database = Some(DatabaseInfo {
        page_size: snap.page_size,
        page_count: snap.page_count,
        journal_mode: snap.journal_mode.clone(),
    });
    Ok(())
}

/// Open the snapshot, waiting up to 30 s (cooperatively) while another
/// connection holds a lock that keeps readers out (recovery, exclusive mode).
async fn open_snapshot(path: &Path) -> Result<DbSnapshot> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match DbSnapshot::open(path) {
            Ok(s) => return Ok(s),
            Err(e) if crate::sources::database::is_busy(&e) && Instant::now() < deadline => {
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(msg(e)),
        }
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
