//! Restore: stage everything, verify everything, then publish.
//!
//! Phase 1 ([`stage`]) reads the archive and writes each entry under a
//! temporary name beside its destination (`.rvm-restore-PID-N.tmp`),
//! creating missing directories, all relative to open directory
//! descriptors ([`crate::safefs`]) and journaled ([`journal`]) so memory
//! stays fixed for any number of entries. Content is checked against its
//! SHA-256 as it is read, runs of zeros become holes ([`sparse`]), and a
//! database image must pass `PRAGMA integrity_check` ([`database`]).
//! Entries must come in canonical order ([`order`]). Phase 1 ends only when
//! the whole archive has been authenticated (final frame, index, footer,
//! tail, part hashes). Any failure, or dropping the future (cancel),
//! removes every temporary name and every directory phase 1 created: the
//! target is left as it was.
//!
//! Phase 2 ([`publish`]) flushes the file systems once ([`durable`]: one
//! `syncfs` each, no `fsync` per file), reopens every
//! directory from the root descriptors and checks it is the one phase 1
//! used, renames each staged name over its destination, sets directory
//! owners, modes and times, and flushes again. A live database is first
//! kept as `NAME.pre-restore-<time>` (with its WAL folded in).
//!
//! Paths are refused when they are unsafe (checked by the format reader),
//! outside the archive's recorded sources, repeated or out of order, below
//! a non-directory entry, or when a directory on the way below the restore
//! root is a symlink.

mod database;
mod durable;
mod journal;
mod order;
mod publish;
mod sparse;
mod stage;

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::chain::holders::{read_reference, Holders};
use crate::crypto::KeyRing;
use crate::error::{msg, Error, Result};
use crate::format::record::Reference;
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::progress::Progress;
use crate::store::parts::PartReader;
use crate::store::Listed;
use crate::strategy::Strategy;

/// Swap a staged database image in (the point-in-time restore's publish).
pub(crate) use database::swap as swap_database;
pub use stage::Stage;

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
    /// Hard links made (second names of files restored earlier).
    pub hardlinks: u64,
    pub bytes: u64,
    pub changed_while_read: u64,
    pub previous_database: Option<PathBuf>,
    /// A point-in-time restore: which commit was reached (for the operator).
    pub pitr: Option<String>,
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

/// Restore `archive` (all of it, or only the entry at `only`) into `target`,
/// or in place when `target` is `None`. A database archive whose source
/// failed its integrity check at backup time is refused unless
/// `accept_damaged`, which also turns a failed check of the restored image
/// into a warning.
/// `archives`: the store's listing, where the archives that hold the
/// content of an incremental archive's kind 5 entries are found.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    target: Option<&Path>,
    only: Option<&Path>,
    accept_damaged: bool,
    progress: &mut Progress,
) -> Result<Restored> {
    let flush = Box::new(durable::Kernel);
    run_with(
        archive,
        archives,
        key,
        target,
        only,
        accept_damaged,
        progress,
        flush,
    )
    .await
}

/// [`run`] with every sync going through `flush` (tests count and fail them).
#[allow(clippy::too_many_arguments)]
async fn run_with(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    target: Option<&Path>,
    only: Option<&Path>,
    accept_damaged: bool,
    progress: &mut Progress,
    flush: Box<dyn durable::Flush>,
) -> Result<Restored> {
    stage_with(
        archive,
        archives,
        key,
        target,
        only,
        accept_damaged,
        progress,
        flush,
    )
    .await?
    .publish()
    .await
}

/// An archive staged and checked (phase 1 done: every byte authenticated
/// and hashed, a database image integrity-checked), with nothing of the
/// live target replaced yet. [`Staged::publish`] puts it in place;
/// dropping it removes everything it staged.
pub(crate) struct Staged {
    stage: Stage,
    done: Restored,
}

impl Staged {
    /// Wait for the checks still running on what was staged (a database
    /// image's `integrity_check`, on its own thread while the next archive
    /// stages): `restore --all` calls this for every archive before it
    /// publishes any; [`Staged::publish`] does it too.
    pub(crate) async fn checked(&mut self) -> Result<()> {
        self.stage.checked().await
    }

    /// Phase 2: put the staged archive in place.
    pub(crate) async fn publish(mut self) -> Result<Restored> {
        self.done.previous_database = self.stage.publish().await?;
        Ok(std::mem::take(&mut self.done))
    }
}

/// Phase 1 of [`run`] for a whole archive: stage and check it, replacing
/// nothing. `restore --all` stages every strategy this way before it
/// publishes any, so a damaged archive (or a full disk) leaves every live
/// tree as it was.
pub(crate) async fn stage(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    target: Option<&Path>,
    accept_damaged: bool,
    progress: &mut Progress,
) -> Result<Staged> {
    stage_with(
        archive,
        archives,
        key,
        target,
        None,
        accept_damaged,
        progress,
        Box::new(durable::Kernel),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn stage_with(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    target: Option<&Path>,
    only: Option<&Path>,
    accept_damaged: bool,
    progress: &mut Progress,
    flush: Box<dyn durable::Flush>,
) -> Result<Staged> {
    database::refuse_damaged_source(&archive.meta, accept_damaged)?;
    for s in &archive.meta.sources {
        crate::format::record::check_path(s.as_bytes()).map_err(arch(archive))?;
    }
    let mut stage = Stage::new(
        &archive.meta.id,
        &archive.meta.sources,
        target,
        accept_damaged,
    )?;
    stage.flush = flush;
    let mut done = Restored {
        id: archive.meta.id.clone(),
        ..Restored::default()
    };
    progress.start(
        &format!("restore {}", archive.meta.id),
        Some(archive.meta.content_bytes),
    );
    let mut holders = Holders::new(archive, archives, key);
    let chained = archive.meta.strategy == Strategy::Database && archive.meta.parent.is_some();
    let staged = match only {
        _ if chained => {
            stage_db_chain(
                archive, archives, key, only, &mut stage, &mut done, progress,
            )
            .await
        }
        None => stage_all(archive, key, &mut holders, &mut stage, &mut done, progress).await,
        Some(path) => {
            stage_one(
                archive,
                key,
                &mut holders,
                path,
                &mut stage,
                &mut done,
                progress,
            )
            .await
        }
    };
    progress.finish();
    staged?;
    Ok(Staged { stage, done })
}

fn arch(archive: &Listed) -> impl Fn(FormatError) -> Error + '_ {
    move |source| Error::Archive {
        id: archive.meta.id.clone(),
        source,
    }
}

fn open_reader(archive: &Listed, key: Option<&KeyRing>) -> Result<ArchiveReader<PartReader>> {
    let parts = PartReader::open(&archive.dir, &archive.meta.parts)?;
    let r = ArchiveReader::open(parts, key).map_err(arch(archive))?;
    if r.header() != &archive.header {
        return Err(arch(archive)(FormatError::HeaderMismatch));
    }
    Ok(r)
}

async fn stage_all(
    archive: &Listed,
    key: Option<&KeyRing>,
    holders: &mut Holders<'_>,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let mut r = open_reader(archive, key)?;
    // Frames are opened on other threads while this one hashes and
    // writes (format::ahead).
    r.read_ahead();
    while let Some(h) = r.next_entry().map_err(arch(archive))? {
        if h.kind == EntryKind::Stored {
            let (reference, t) = read_reference(&mut r).map_err(arch(archive))?;
            stage_stored(
                holders, &h, &reference, &t.sha256, true, stage, done, progress,
            )
            .await?;
        } else if h.kind == EntryKind::DbDigests {
            // What the next incremental compares against; nothing to put
            // on disk (its hash is checked as it is read past).
            r.end_entry().map_err(arch(archive))?;
        } else {
            stage.entry(&mut r, &h, true, done, progress).await?;
        }
        smol::future::yield_now().await;
    }
    // Reaching here means index, footer and tail were checked too.
    let parts = r.into_inner();
    for (info, hash) in archive.meta.parts.iter().zip(parts.part_hashes()) {
        if hash != Some(info.sha256) {
            return Err(arch(archive)(FormatError::PartMismatch(info.name.clone())));
        }
    }
    Ok(())
}

/// Stage an incremental database archive: its chain's full image, then
/// the changed pages of every link up to it (`chain::db`), checked with
/// `integrity_check` once complete. Every link is read to its end.
async fn stage_db_chain(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    only: Option<&Path>,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let chain = crate::chain::db::links(archives, archive)?;
    let (root, rest) = chain
        .split_first()
        .ok_or_else(|| msg("internal error: an empty chain"))?;
    let page_size = root
        .meta
        .database
        .as_ref()
        .map(|d| d.page_size)
        .ok_or_else(|| msg(format!("archive {} is not a database image", root.meta.id)))?;
    if let Some(p) = only {
        if archive.meta.sources.first().map(String::as_str) != p.to_str() {
            return Err(msg(format!(
                "archive {} holds no entry {}",
                archive.meta.id,
                p.display()
            )));
        }
    }
    let mut r = open_reader(root, key)?;
    // The chain's full image is read through from its first frame: its
    // frames are opened on other threads (format::ahead), as in stage_all.
    r.read_ahead();
    let mut images = 0;
    while let Some(h) = r.next_entry().map_err(arch(root))? {
        match h.kind {
            EntryKind::Database if images == 0 => {
                images += 1;
                let links = stage::Links {
                    links: rest,
                    key,
                    page_size,
                };
                stage
                    .entry_with(&mut r, &h, true, Some(links), done, progress)
                    .await?;
            }
            EntryKind::DbDigests => {
                r.end_entry().map_err(arch(root))?;
            }
            _ => {
                return Err(arch(root)(FormatError::Corrupt(
                    "the full archive of a database chain holds other entries".into(),
                )))
            }
        }
    }
    if images != 1 {
        return Err(arch(root)(FormatError::Corrupt(
            "the full archive of a database chain holds no image".into(),
        )));
    }
    let parts = r.into_inner();
    for (info, hash) in root.meta.parts.iter().zip(parts.part_hashes()) {
        if hash != Some(info.sha256) {
            return Err(arch(root)(FormatError::PartMismatch(info.name.clone())));
        }
    }
    Ok(())
}

/// Stage a kind 5 entry: its content from the archive that holds it
/// (found through that archive's index), under this entry's path and
/// metadata; the content must hash to the entry's SHA-256. Errors in the
/// holder's bytes name the holder.
#[allow(clippy::too_many_arguments)]
async fn stage_stored(
    holders: &mut Holders<'_>,
    h: &EntryHeader,
    reference: &Reference,
    sha256: &[u8; 32],
    ordered: bool,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let (r, holder) = holders.locate(&h.path, reference, sha256)?;
    let file = EntryHeader {
        kind: EntryKind::File,
        size: reference.file_size,
        ..h.clone()
    };
    let own = std::mem::replace(&mut stage.id, holder.clone());
    let staged = stage.entry(r, &file, ordered, done, progress).await;
    stage.id = own;
    if !crate::crypto::ct_eq(&staged?, sha256) {
        return Err(Error::Archive {
            id: holder,
            source: FormatError::ContentMismatch(h.display_path()),
        });
    }
    Ok(())
}

/// Restore one entry through the index. A hard link restores as a copy of
/// the file it names (its other names are not part of a one-file restore).
async fn stage_one(
    archive: &Listed,
    key: Option<&KeyRing>,
    holders: &mut Holders<'_>,
    path: &Path,
    stage: &mut Stage,
    done: &mut Restored,
    progress: &mut Progress,
) -> Result<()> {
    let mut r = open_reader(archive, key)?;
    let wanted = path.as_os_str().as_bytes();
    let index = r.read_index().map_err(arch(archive))?;
    let pos = index
        .iter()
        .position(|rec| rec.path == wanted)
        .ok_or_else(|| {
            msg(format!(
                "archive {} holds no entry {}",
                archive.meta.id,
                path.display()
            ))
        })?;
    let mut rec = &index[pos];
    if rec.kind == EntryKind::Stored {
        r.seek_to(rec.at).map_err(arch(archive))?;
        let h = r
            .next_entry()
            .map_err(arch(archive))?
            .ok_or_else(|| arch(archive)(FormatError::Corrupt("index points at the end".into())))?;
        if h.path != rec.path || h.kind != rec.kind || h.size != rec.size {
            return Err(arch(archive)(FormatError::Corrupt(
                "index points at another entry".into(),
            )));
        }
        let (reference, t) = read_reference(&mut r).map_err(arch(archive))?;
        if !crate::crypto::ct_eq(&t.sha256, &rec.sha256) {
            return Err(arch(archive)(FormatError::ContentMismatch(
                path.display().to_string(),
            )));
        }
        return stage_stored(
            holders, &h, &reference, &t.sha256, false, stage, done, progress,
        )
        .await;
    }
    let mut link = None;
    if rec.kind == EntryKind::HardLink {
        // Its content names the file; read it, then restore that file's
        // content under this name.
        r.seek_to(rec.at).map_err(arch(archive))?;
        let h = r
            .next_entry()
            .map_err(arch(archive))?
            .ok_or_else(|| arch(archive)(FormatError::Corrupt("index points at the end".into())))?;
        if h.path != rec.path || h.kind != rec.kind {
            return Err(arch(archive)(FormatError::Corrupt(
                "index points at another entry".into(),
            )));
        }
        let mut target = Vec::new();
        while let Some(c) = r.content_chunk().map_err(arch(archive))? {
            target.extend_from_slice(c);
        }
        let t = r.end_entry().map_err(arch(archive))?;
        if t.sha256 != rec.sha256 {
            return Err(arch(archive)(FormatError::ContentMismatch(
                path.display().to_string(),
            )));
        }
        rec = index[..pos]
            .iter()
            .find(|f| f.path == target && f.kind == EntryKind::File)
            .ok_or_else(|| {
                msg(format!(
                    "archive entry {} is a hard link to {}, which is not a file stored earlier in this archive; refusing it",
                    path.display(),
                    String::from_utf8_lossy(&target)
                ))
            })?;
        link = Some(h);
    }
    r.seek_to(rec.at).map_err(arch(archive))?;
    let mut h = r
        .next_entry()
        .map_err(arch(archive))?
        .ok_or_else(|| arch(archive)(FormatError::Corrupt("index points at the end".into())))?;
    if h.path != rec.path || h.kind != rec.kind || h.size != rec.size {
        return Err(arch(archive)(FormatError::Corrupt(
            "index points at another entry".into(),
        )));
    }
    if let Some(l) = link {
        h.path = l.path;
    }
    let sha = stage.entry(&mut r, &h, false, done, progress).await?;
    if sha != rec.sha256 {
        return Err(arch(archive)(FormatError::ContentMismatch(
            path.display().to_string(),
        )));
    }
    Ok(())
}

/// True if `p` has no `..` (used for `--file` arguments).
pub fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}
