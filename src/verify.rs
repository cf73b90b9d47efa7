//! Verification: read every byte of an archive and check everything.
//!
//! Checks, in one sequential pass: the sidecar's tag (done when listing),
//! that the archive header is the one the sidecar copied, every frame tag,
//! decompression, every entry's SHA-256, index and footer against the
//! entries, the tail, each part's size and SHA-256, and the sidecar's counts.

use crate::crypto::MasterKey;
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

pub async fn verify(
    archive: &Listed,
    key: Option<&MasterKey>,
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
    progress.start(&format!("verify {id}"), Some(archive.meta.content_bytes));
    let mut v = Verified::default();
    let (mut files, mut dirs, mut symlinks, mut hardlinks) = (0u64, 0u64, 0u64, 0u64);
    while let Some(h) = r.next_entry().map_err(arch)? {
        while let Some(chunk) = r.content_chunk().map_err(arch)? {
            progress.add(chunk.len() as u64);
            smol::future::yield_now().await;
        }
        let t = r.end_entry().map_err(arch)?;
        v.entries += 1;
        match h.kind {
            EntryKind::File | EntryKind::Database => {
                files += 1;
                v.content_bytes += h.size;
            }
            EntryKind::Dir => dirs += 1,
            EntryKind::Symlink => symlinks += 1,
            EntryKind::HardLink => hardlinks += 1,
        }
        if t.status == STATUS_CHANGED {
            v.changed_while_read += 1;
        }
    }
    progress.finish();
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
