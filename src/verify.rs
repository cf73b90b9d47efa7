//! Verification: read every byte of an archive and check everything.
//!
//! Checks, in one sequential pass: the sidecar's tag (done when listing),
//! that the archive header is the one the sidecar copied, every frame tag,
//! decompression, every entry's SHA-256, index and footer against the
//! entries, the tail, each part's size and SHA-256, and the sidecar's counts.
//! A hard link's target must be a path stored earlier as a file entry: the
//! verifier remembers file paths up to the same bound as the writer's
//! hard-link map ([`HARDLINK_MAP_ENTRIES`] paths, [`HARDLINK_MAP_BYTES`]
//! bytes); past that bound, links to files it no longer remembers are not
//! checked (memory stays fixed), and a debug line says so. A database
//! archive's page digests (kind 9) must match the pages its image stores,
//! page for page (`chain::db::DigestCheck`).

use std::collections::HashSet;

use crate::backup::{HARDLINK_MAP_BYTES, HARDLINK_MAP_ENTRIES};
use crate::chain::db_check::{DigestCheck, PageFeed};
use crate::chain::holders::{read_reference, Holders};
use crate::crypto::KeyRing;
use crate::error::{Error, Result};
use crate::format::record::STATUS_CHANGED;
use crate::format::{ArchiveReader, EntryKind, FormatError};
use crate::progress::Progress;
use crate::store::parts::PartReader;
use crate::store::Listed;

#[derive(Debug, Default)]
pub struct Verified {
    pub entries: u64,
    pub content_bytes: u64,
    pub changed_while_read: u64,
}

/// Verify one archive by itself: its kind 5 entries are checked for form,
/// not against the archives they name (see [`verify_chain`]).
pub async fn verify(
    archive: &Listed,
    key: Option<&KeyRing>,
    progress: &mut Progress,
) -> Result<Verified> {
    verify_with(archive, key, None, progress).await
}

/// Verify an archive and what it refers to: every archive that holds the
/// content of one of its kind 5 entries must be listed in `archives`,
/// hold that path as a file of that size and SHA-256 (by its index), and
/// itself pass a full verification. Errors name the failing archive.
pub async fn verify_chain(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    progress: &mut Progress,
) -> Result<Verified> {
    verify_chain_memo(archive, archives, key, &mut HashSet::new(), progress).await
}

/// [`verify_chain`], skipping the full verification of holders whose ids
/// are in `passed` (archives that passed earlier in the same run); every
/// holder that passes is added, so `verify --all` reads each archive of a
/// chain once, not once per incremental built on it.
pub async fn verify_chain_memo(
    archive: &Listed,
    archives: &[Listed],
    key: Option<&KeyRing>,
    passed: &mut HashSet<String>,
    progress: &mut Progress,
) -> Result<Verified> {
    let mut holders = Holders::new(archive, archives, key);
    let v = verify_with(archive, key, Some(&mut holders), progress).await?;
    if archive.meta.strategy == crate::strategy::Strategy::Database && archive.meta.parent.is_some()
    {
        let chain = crate::chain::db::links(archives, archive)?;
        for link in chain.iter().filter(|l| l.meta.id != archive.meta.id) {
            if passed.contains(&link.meta.id) {
                continue;
            }
            Box::pin(verify_with(link, key, None, progress))
                .await
                .map_err(|e| {
                    crate::error::msg(format!(
                        "archive {} is incremental on archive {}, which fails verification: {e}",
                        archive.meta.id, link.meta.id
                    ))
                })?;
            passed.insert(link.meta.id.clone());
        }
        crate::chain::db::ChainDigests::open(&chain, key)?;
    }
    for holder in holders.used() {
        if passed.contains(&holder.meta.id) {
            continue;
        }
        Box::pin(verify_with(holder, key, None, progress))
            .await
            .map_err(|e| {
                crate::error::msg(format!(
                    "archive {} keeps file contents in archive {}, which fails verification: {e}",
                    archive.meta.id, holder.meta.id
                ))
            })?;
        passed.insert(holder.meta.id.clone());
    }
    Ok(v)
}

async fn verify_with(
    archive: &Listed,
    key: Option<&KeyRing>,
    mut holders: Option<&mut Holders<'_>>,
    progress: &mut Progress,
) -> Result<Verified> {
    let id = &archive.meta.id;
    let arch = |source: FormatError| Error::Archive {
        id: id.clone(),
        source,
    };
    let parts = PartReader::open(&archive.dir, &archive.meta.parts)?;
    let mut r = ArchiveReader::open(parts, key).map_err(arch)?;
    if r.header() != &archive.header {
        return Err(arch(FormatError::HeaderMismatch));
    }
    r.read_ahead();
    progress.start(&format!("verify {id}"), Some(archive.meta.content_bytes));
    let mut v = Verified::default();
    let (mut files, mut dirs, mut symlinks, mut hardlinks) = (0u64, 0u64, 0u64, 0u64);
    let mut stored_files = FilePaths::default();
    let mut db = DbLayout::default();
    // Database archives with page digests: every page stored is checked
    // against its digest as it is read (a second reader walks the digests).
    let mut digests = if archive.meta.strategy == crate::strategy::Strategy::Database {
        DigestCheck::open(archive, key)?
    } else {
        None
    };
    while let Some(h) = r.next_entry().map_err(arch)? {
        db.saw(h.kind).map_err(arch)?;
        if matches!(h.kind, EntryKind::DbPages | EntryKind::DbDigests) {
            let check = if h.kind == EntryKind::DbPages {
                digests.as_mut()
            } else {
                None
            };
            let (page_size, page_count) =
                crate::chain::db_check::check_entry(&mut r, &h, id, check).await?;
            db.size(page_size, page_count).map_err(arch)?;
            r.end_entry().map_err(arch)?;
            v.entries += 1;
            if h.kind == EntryKind::DbPages {
                files += 1;
                let restores = u64::from(page_size) * u64::from(page_count);
                v.content_bytes += restores;
                progress.add(restores);
            }
            smol::future::yield_now().await;
            continue;
        }
        if h.kind == EntryKind::Stored {
            let (reference, t) = read_reference(&mut r).map_err(arch)?;
            if let Some(holders) = holders.as_deref_mut() {
                holders.check(&h.path, &reference, &t.sha256)?;
            }
            v.entries += 1;
            files += 1;
            v.content_bytes += reference.file_size;
            progress.add(reference.file_size);
            smol::future::yield_now().await;
            continue;
        }
        let mut target = Vec::new();
        let mut feed = match (&digests, h.kind) {
            (Some(d), EntryKind::Database) => Some(PageFeed::new(d.page_size())),
            _ => None,
        };
        while let Some(chunk) = r.content_chunk().map_err(arch)? {
            if h.kind == EntryKind::HardLink {
                // At most 4096 bytes: the reader checks the declared size.
                target.extend_from_slice(chunk);
            }
            if let (Some(f), Some(d)) = (feed.as_mut(), digests.as_mut()) {
                f.feed(chunk, d)?;
            }
            progress.add(chunk.len() as u64);
            smol::future::yield_now().await;
        }
        if let (Some(f), Some(d)) = (&feed, &digests) {
            f.finish(d)?;
        }
        let t = r.end_entry().map_err(arch)?;
        v.entries += 1;
        match h.kind {
            EntryKind::File | EntryKind::Database => {
                files += 1;
                v.content_bytes += h.size;
                if h.kind == EntryKind::File {
                    stored_files.add(&h.path);
                }
            }
            EntryKind::Dir => dirs += 1,
            EntryKind::Symlink => symlinks += 1,
            EntryKind::Stored => {}
            EntryKind::HardLink => {
                hardlinks += 1;
                stored_files.check_link(&h.path, &target).map_err(arch)?;
            }
            EntryKind::WalSegment => {
                return Err(arch(FormatError::Corrupt(
                    "a WAL segment entry inside a backup archive".into(),
                )))
            }
            EntryKind::DbPages | EntryKind::DbDigests => {}
        }
        smol::future::yield_now().await;
        if t.status == STATUS_CHANGED {
            v.changed_while_read += 1;
        }
    }
    progress.finish();
    db.finish(archive.meta.parent.is_some()).map_err(arch)?;
    if let Some(d) = digests.as_mut() {
        d.finish()?;
    }
    let parts = r.into_inner();
    for (info, hash) in archive.meta.parts.iter().zip(parts.part_hashes()) {
        if hash != Some(info.sha256) {
            return Err(arch(FormatError::PartMismatch(info.name.clone())));
        }
    }
    let m = &archive.meta;
    if (files, dirs, symlinks, hardlinks, v.content_bytes)
        != (m.files, m.dirs, m.symlinks, m.hardlinks, m.content_bytes)
    {
        return Err(arch(FormatError::CountsMismatch));
    }
    Ok(v)
}

/// The entries of a database archive: a full image (kind 4, with or
/// without its kind 9 digests, which archives written before incremental
/// database backups lack), or a delta (kind 8) and its digests; kinds 8
/// and 9 nowhere else, and with one page size.
#[derive(Default)]
struct DbLayout {
    kinds: Vec<EntryKind>,
    size: Option<(u32, u32)>,
}

impl DbLayout {
    fn saw(&mut self, k: EntryKind) -> std::result::Result<(), FormatError> {
        let db = matches!(
            k,
            EntryKind::Database | EntryKind::DbPages | EntryKind::DbDigests
        );
        if db || !self.kinds.is_empty() {
            if self.kinds.len() >= 2 {
                return Err(FormatError::Corrupt(
                    "a database archive holds more than its image and digests".into(),
                ));
            }
            self.kinds.push(k);
        }
        Ok(())
    }

    fn size(&mut self, page_size: u32, page_count: u32) -> std::result::Result<(), FormatError> {
        match self.size {
            Some(s) if s != (page_size, page_count) => Err(FormatError::Corrupt(
                "the page digests describe another database size than the image".into(),
            )),
            _ => {
                self.size = Some((page_size, page_count));
                Ok(())
            }
        }
    }

    fn finish(&self, incremental: bool) -> std::result::Result<(), FormatError> {
        use EntryKind::{Database, DbDigests, DbPages};
        let ok = matches!(
            (self.kinds.as_slice(), incremental),
            ([], _) | ([Database] | [Database, DbDigests], false) | ([DbPages, DbDigests], true)
        );
        if ok {
            Ok(())
        } else {
            Err(FormatError::Corrupt(format!(
                "a database archive ({}) holds entries of kinds {:?}",
                if incremental { "incremental" } else { "full" },
                self.kinds.iter().map(|k| *k as u8).collect::<Vec<_>>()
            )))
        }
    }
}

/// Paths of the file entries seen so far, bounded (see the module doc).
#[derive(Default)]
struct FilePaths {
    paths: HashSet<Vec<u8>>,
    bytes: usize,
    full: bool,
}

impl FilePaths {
    fn add(&mut self, path: &[u8]) {
        if self.paths.len() >= HARDLINK_MAP_ENTRIES || self.bytes + path.len() > HARDLINK_MAP_BYTES
        {
            self.full = true;
            return;
        }
        self.bytes += path.len();
        self.paths.insert(path.to_vec());
    }

    fn check_link(&self, link: &[u8], target: &[u8]) -> std::result::Result<(), FormatError> {
        if self.paths.contains(target) {
            return Ok(());
        }
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        if self.full {
            log::debug!(
                "hard link {} -> {}: not checked (more files than the verifier remembers)",
                show(link),
                show(target)
            );
            return Ok(());
        }
        Err(FormatError::Corrupt(format!(
            "hard link {} names {}, which is not a file stored before it",
            show(link),
            show(target)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_link_targets_must_be_earlier_files() {
        let mut f = FilePaths::default();
        f.add(b"/a/x");
        assert!(f.check_link(b"/a/y", b"/a/x").is_ok());
        assert!(f.check_link(b"/a/y", b"/a/z").is_err());
        for i in 0..HARDLINK_MAP_ENTRIES + 1 {
            f.add(format!("/b/{i}").as_bytes());
        }
        assert!(f.full);
        assert!(
            f.check_link(b"/a/y", b"/a/z").is_ok(),
            "past the bound, unknown targets are not checked"
        );
    }
}
