//! The database strategy's archive: a full page image (kind 4) or the
//! pages changed since the parent chain (kind 8), then the keyed digest of
//! every page stored (kind 9), what the next incremental compares against
//! (docs/format.md §5 and §12; `chain::db` reads chains back).
//!
//! Three ways a run goes:
//! - **unchanged**: the database's fingerprint (`sources::fingerprint`,
//!   taken before anything is opened) equals the one recorded with the
//!   parent: no page is read; the archive holds an empty delta, and the
//!   parent's `quick_check` verdict, schema hash and row counts are carried
//!   over (the log says so);
//! - **incremental**: one pass over every page (one `sqlite_dbpage` scan,
//!   in page order) digests each page and compares it with the chain's
//!   digest of that page (a forward merge, fixed memory); the numbers and
//!   digests of the pages that differ go to two spills (memory up to
//!   `format::spill::IN_MEMORY_LIMIT` each, then unlinked temporary
//!   files); then those pages are read again by number, in the same read
//!   transaction, into the kind 8 entry;
//! - **full**: every page into a kind 4 entry, its digest to the spill.
//!
//! In the last two, the `quick_check` verdict, schema hash and row counts
//! are read by `sources::db_facts` on a thread of its own, beside the page
//! scan when a second connection could be pinned to the same commit.
//!
//! The fingerprint is taken before the snapshot's read transaction starts:
//! a commit between the two makes the stored pages newer than the
//! fingerprint, never older, so a later run that sees the same fingerprint
//! has nothing the archive lacks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use super::{entry_header, write_err, Counts, Writer, CHUNK};
use crate::chain::db::{digest, ChainDigests};
use crate::error::{msg, Result};
use crate::format::pages::{DigestsHead, PagesHead};
use crate::format::record::STATUS_CLEAN;
use crate::format::sidecar::{DatabaseInfo, Meta};
use crate::format::spill::IndexSpill;
use crate::format::EntryKind;
use crate::progress::Progress;
use crate::sources::database::{read_page, DbSnapshot, Pages};
use crate::sources::db_facts::{FactsJob, Twin};
use crate::sources::tree::Info;

/// The chain a database backup is made against.
pub struct DbParent {
    /// The parent's sidecar (the newest link of the chain).
    pub meta: Meta,
    /// The digests of the chain's state.
    pub digests: ChainDigests,
}

/// Where the digest and page-number spills go: beside the archive's parts.
pub(super) struct SpillAt<'a> {
    pub dir: &'a Path,
    pub id: &'a str,
}

fn info_of(path: &Path) -> Result<Info> {
    use crate::error::IoContext;
    let m = fs::metadata(path).at("stat", path)?;
    Ok(Info {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec().clamp(0, 999_999_999) as u32,
    })
}

fn spill_err(e: std::io::Error) -> crate::error::Error {
    crate::error::Error::Io {
        what: "cannot spill the page digests (a temporary file beside the archive)".into(),
        source: e,
    }
}

/// An error while a spill is drained: reading the spill back, or the sink.
enum Drain {
    Spill(std::io::Error),
    Sink(crate::error::Error),
}

impl From<std::io::Error> for Drain {
    fn from(e: std::io::Error) -> Self {
        Drain::Spill(e)
    }
}

impl From<Drain> for crate::error::Error {
    fn from(d: Drain) -> Self {
        match d {
            Drain::Spill(e) => spill_err(e),
            Drain::Sink(e) => e,
        }
    }
}

/// Write the kind 9 entry: `head`, then the spilled records.
fn write_digests(
    w: &mut Writer,
    path: &Path,
    info: &Info,
    head: &DigestsHead,
    spill: IndexSpill,
) -> Result<()> {
    let size = DigestsHead::entry_size(spill.records());
    let mut h = entry_header(EntryKind::DbDigests, path, info, size);
    h.mode = 0o600;
    w.begin_entry(&h).map_err(write_err(path))?;
    w.write_content(&head.encode()).map_err(write_err(path))?;
    spill
        .drain(|b| {
            w.write_content(b)
                .map_err(|e| Drain::Sink(write_err(path)(e)))
        })
        .map_err(crate::error::Error::from)?;
    w.end_entry(STATUS_CLEAN).map_err(write_err(path))?;
    Ok(())
}

pub(super) async fn write_database(
    w: &mut Writer,
    path: &Path,
    counts: &mut Counts,
    parent: Option<&mut DbParent>,
    spill_at: SpillAt<'_>,
    progress: &mut Progress,
) -> Result<()> {
    let fingerprint = crate::sources::fingerprint::take(path);
    if let Some(par) = &parent {
        if fingerprint.as_ref() == Some(par.digests.fingerprint()) {
            if let Some(check) = par.meta.db_check.clone() {
                return write_unchanged(
                    w,
                    path,
                    counts,
                    par,
                    check,
                    fingerprint.unwrap_or_default(),
                );
            }
        }
    }
    let (snap, twin) = open_snapshot(path).await?;
    // The check and the row counts run beside the page scan when a twin
    // connection could be pinned to the snapshot's commit, else on the
    // snapshot's own connection once its pages are written.
    let early = twin.map(FactsJob::on_twin);
    let info = info_of(path)?;
    let page_count = u32::try_from(snap.page_count).map_err(|_| {
        msg(format!(
            "database {} has more pages than SQLite allows",
            path.display()
        ))
    })?;
    if let Some(par) = &parent {
        if par.digests.page_size() != snap.page_size {
            counts.parent_failed = Some(format!(
                "the page size of {} changed since archive {} ({} to {} bytes)",
                path.display(),
                par.meta.id,
                par.digests.page_size(),
                snap.page_size
            ));
            return Err(msg("the parent archive cannot be used"));
        }
    }
    let key = match &parent {
        Some(par) => *par.digests.key(),
        None => {
            let mut k = [0u8; 32];
            crate::crypto::fill_random(&mut k).map_err(|e| crate::error::Error::Io {
                what: "cannot get random bytes".into(),
                source: e,
            })?;
            k
        }
    };
    let spill = |what: &str| {
        IndexSpill::new(Some(crate::store::spill::index_spill(
            spill_at.dir,
            &format!("{}.{what}", spill_at.id),
        )))
    };
    let mut digests = spill("digests");
    let total = snap.total_bytes();
    progress.start("backup database", Some(total));
    let stored = match parent {
        None => {
            write_full(w, path, &info, &snap, &key, &mut digests, progress).await?;
            total
        }
        Some(par) => {
            let mut changed = spill("pgnos");
            let scan_started = Instant::now();
            let read = compare(
                &snap,
                &key,
                &mut par.digests,
                &mut digests,
                &mut changed,
                progress,
            )
            .await;
            if let Err(e) = read {
                if let Some(why) = e.parent {
                    counts.parent_failed = Some(why);
                    return Err(msg("the parent archive cannot be read"));
                }
                return Err(e.other);
            }
            let n = changed.records();
            log::debug!(
                "digesting and comparing the pages of {} took {} ms",
                path.display(),
                scan_started.elapsed().as_millis()
            );
            log::info!(
                "{}: {n} of {page_count} pages changed since archive {}",
                path.display(),
                par.meta.id
            );
            write_changed(w, path, &info, &snap, page_count, changed).await?;
            total
        }
    };
    let head = DigestsHead {
        page_size: snap.page_size,
        page_count,
        key,
        fingerprint: fingerprint.unwrap_or_default(),
    };
    write_digests(w, path, &info, &head, digests)?;
    let database = DatabaseInfo {
        page_size: snap.page_size,
        page_count: snap.page_count,
        journal_mode: snap.journal_mode.clone(),
    };
    // Without a twin the facts are read after the pages: the sequential
    // scan has just brought the file into the page cache, and from a cold
    // cache quick_check's reads in b-tree order cost about ten times the
    // whole scan (1.2 s against 0.1 s for a 42 MB database; more on an SD
    // card). Either way they describe exactly the pages stored. A damaged
    // source is still backed up (it may be the best copy there is); the
    // sidecar records the verdict.
    let job = match early {
        Some(job) => {
            drop(snap);
            job
        }
        None => FactsJob::on_snapshot(snap),
    };
    let facts = job.wait().await;
    log::debug!(
        "quick_check of {} took {} ms: {}; schema and row counts {} ms",
        path.display(),
        facts.check_ms,
        facts.check,
        facts.drill_ms
    );
    if facts.check != "ok" {
        log::warn!(
            "database {} fails SQLite's quick_check ({}); it is backed up anyway, marked as damaged: repair or replace it, and keep older archives",
            path.display(),
            facts.check
        );
    }
    counts.db_check = Some(facts.check);
    match facts.drill {
        Ok((schema, tables)) => {
            counts.schema_sha256 = Some(schema);
            counts.tables = tables;
        }
        Err(e) => log::warn!(
            "cannot record the schema and row counts of {} for recovery drills: {e}; the archive is made without them",
            path.display()
        ),
    }
    counts.files += 1;
    counts.content_bytes += stored;
    counts.database = Some(database);
    Ok(())
}

/// Nothing changed since the parent: an empty delta, the parent's facts.
fn write_unchanged(
    w: &mut Writer,
    path: &Path,
    counts: &mut Counts,
    par: &DbParent,
    check: String,
    fingerprint: [u8; 32],
) -> Result<()> {
    let info = info_of(path)?;
    let d = &par.digests;
    let pages = PagesHead {
        page_size: d.page_size(),
        page_count: d.page_count(),
    };
    w.begin_entry(&entry_header(
        EntryKind::DbPages,
        path,
        &info,
        pages.entry_size(0),
    ))
    .map_err(write_err(path))?;
    w.write_content(&pages.encode()).map_err(write_err(path))?;
    w.end_entry(STATUS_CLEAN).map_err(write_err(path))?;
    let head = DigestsHead {
        page_size: d.page_size(),
        page_count: d.page_count(),
        key: *d.key(),
        fingerprint,
    };
    write_digests(w, path, &info, &head, IndexSpill::new(None))?;
    log::info!(
        "{}: unchanged since archive {} (same files, WAL and header): no page read; its quick_check result ({check}), schema hash and row counts are carried over from it",
        path.display(),
        par.meta.id
    );
    counts.db_check = Some(check);
    counts.schema_sha256 = par.meta.schema_sha256;
    counts.tables = par.meta.tables.clone();
    counts.database = par.meta.database.clone();
    counts.files += 1;
    counts.content_bytes += u64::from(d.page_count()) * u64::from(d.page_size());
    Ok(())
}

/// Every page into a kind 4 entry; each page's digest to `digests`.
async fn write_full(
    w: &mut Writer,
    path: &Path,
    info: &Info,
    snap: &DbSnapshot,
    key: &[u8; 32],
    digests: &mut IndexSpill,
    progress: &mut Progress,
) -> Result<()> {
    w.begin_entry(&entry_header(
        EntryKind::Database,
        path,
        info,
        snap.total_bytes(),
    ))
    .map_err(write_err(path))?;
    // Each page goes straight from SQLite's buffer into the archive's frame.
    let mut rec = [0u8; 20];
    each_page(
        snap,
        progress,
        |e| e,
        |pgno, page| {
            w.write_content(page).map_err(write_err(path))?;
            rec[..4].copy_from_slice(&pgno.to_le_bytes());
            rec[4..].copy_from_slice(&digest(key, page));
            digests.push(&rec).map_err(spill_err)
        },
    )
    .await?;
    w.end_entry(STATUS_CLEAN).map_err(write_err(path))?;
    Ok(())
}

/// Why the comparison stopped: the parent chain (then the run is redone
/// as a full backup) or anything else.
struct CompareError {
    parent: Option<String>,
    other: crate::error::Error,
}

/// Digest every page and compare it with the chain's: the numbers and
/// digests of those that differ go to `changed` and `digests`.
async fn compare(
    snap: &DbSnapshot,
    key: &[u8; 32],
    chain: &mut ChainDigests,
    digests: &mut IndexSpill,
    changed: &mut IndexSpill,
    progress: &mut Progress,
) -> std::result::Result<(), CompareError> {
    let other = |e: crate::error::Error| CompareError {
        parent: None,
        other: e,
    };
    let mut rec = [0u8; 20];
    each_page(snap, progress, other, |pgno, page| {
        let d = digest(key, page);
        let before = chain.lookup(pgno).map_err(|e| CompareError {
            parent: Some(e.to_string()),
            other: msg("the parent chain cannot be read"),
        })?;
        if before != Some(d) {
            rec[..4].copy_from_slice(&pgno.to_le_bytes());
            rec[4..].copy_from_slice(&d);
            digests.push(&rec).map_err(|e| other(spill_err(e)))?;
            changed
                .push(&pgno.to_le_bytes())
                .map_err(|e| other(spill_err(e)))?;
        }
        Ok(())
    })
    .await
}

/// Every page of the snapshot in page order, from one statement, handed
/// to `f` with its number; progress and a yield to the other tasks come
/// once per CHUNK. `wrap` turns a failed read into the caller's error.
async fn each_page<E>(
    snap: &DbSnapshot,
    progress: &mut Progress,
    wrap: impl Fn(crate::error::Error) -> E,
    mut f: impl FnMut(u32, &[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let read_err = |e: crate::sources::database::DbError| wrap(msg(e.to_string()));
    let mut stmt = snap.page_statement().map_err(read_err)?;
    let mut pages = Pages::new(snap, &mut stmt).map_err(read_err)?;
    let mut since_yield = 0usize;
    let mut pgno = 0u32;
    while let Some(page) = pages.next_page().map_err(read_err)? {
        pgno += 1;
        f(pgno, page)?;
        since_yield += page.len();
        if since_yield >= CHUNK {
            progress.add(since_yield as u64);
            since_yield = 0;
            smol::future::yield_now().await;
        }
    }
    progress.add(since_yield as u64);
    Ok(())
}

/// The kind 8 entry: the pages numbered in `changed`, read again by number
/// in the snapshot's transaction.
async fn write_changed(
    w: &mut Writer,
    path: &Path,
    info: &Info,
    snap: &DbSnapshot,
    page_count: u32,
    changed: IndexSpill,
) -> Result<()> {
    let head = PagesHead {
        page_size: snap.page_size,
        page_count,
    };
    let size = head.entry_size(changed.records());
    w.begin_entry(&entry_header(EntryKind::DbPages, path, info, size))
        .map_err(write_err(path))?;
    w.write_content(&head.encode()).map_err(write_err(path))?;
    let mut stmt = snap.page_lookup().map_err(|e| msg(e.to_string()))?;
    let mut page = Vec::with_capacity(snap.page_size as usize);
    let mut carry: Vec<u8> = Vec::with_capacity(4);
    let mut written = 0u64;
    changed
        .drain(|b| {
            for &byte in b {
                carry.push(byte);
                if carry.len() < 4 {
                    continue;
                }
                let pgno = u32::from_le_bytes([carry[0], carry[1], carry[2], carry[3]]);
                carry.clear();
                read_page(&mut stmt, pgno, snap.page_size, &mut page)
                    .map_err(|e| Drain::Sink(msg(e.to_string())))?;
                w.write_content(&pgno.to_le_bytes())
                    .map_err(|e| Drain::Sink(write_err(path)(e)))?;
                w.write_content(&page)
                    .map_err(|e| Drain::Sink(write_err(path)(e)))?;
                written += 1;
            }
            Ok::<(), Drain>(())
        })
        .map_err(crate::error::Error::from)?;
    if !carry.is_empty() || written != (size - 8) / (4 + u64::from(snap.page_size)) {
        return Err(msg(
            "internal error: the changed pages were not all written",
        ));
    }
    w.end_entry(STATUS_CLEAN).map_err(write_err(path))?;
    smol::future::yield_now().await;
    Ok(())
}

/// Open the snapshot, waiting up to 30 s (cooperatively) while another
/// connection holds a lock that keeps readers out (recovery, exclusive mode).
/// Busy is told by SQLite's error code, never by message text.
async fn open_snapshot(path: &Path) -> Result<(DbSnapshot, Option<Twin>)> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let opened = if crate::workers::allowed() {
            DbSnapshot::open_with_twin(path)
        } else {
            DbSnapshot::open(path).map(|s| (s, None))
        };
        match opened {
            Ok(s) => return Ok(s),
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
            }
            Err(e) if e.is_busy() => {
                return Err(msg(format!(
                    "{e} (still locked after 30 s: another program holds the database exclusively; try again later)"
                )))
            }
            Err(e) => return Err(msg(e.to_string())),
        }
    }
}
