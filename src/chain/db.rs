//! Incremental chains of the database strategy (docs/format.md §12).
//!
//! A database archive holds its image (kind 4, every page; or kind 8, the
//! pages that differ from the parent chain's state) followed by a kind 9
//! entry: the keyed digest of each page it stores. The state of a chain
//! at link N is the full archive's pages overlaid by links 1..=N in order,
//! cut to link N's page count. This module owns:
//!
//! - [`digest`]: HMAC-SHA256 under the chain's random key, cut to 16
//!   bytes (a row writer who cannot read the archives cannot aim at a
//!   collision);
//! - [`links`]: a chain as a list, full archive first;
//! - [`ChainDigests`]: the digest of page p in a chain's state, asked for in
//!   rising page order, by one forward cursor per link over its kind 9
//!   entry (a k-way merge: memory is one reader per link, or at most
//!   64 KiB for a short list read whole, whatever the number of pages);
//! - [`apply_links`]: writing the links' pages over a staged full image;
//! - `db_check` (a sibling module): verify's checks of these entries.
//!
//! Invariants: every link of a chain has the same sources; a chain is at
//! most [`super::MAX_CHAIN`] archives; every kind 9 entry of a chain
//! carries the same key and page size.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::crypto::KeyRing;
use crate::error::{msg, Result};
use crate::format::pages::{
    Content, DigestsHead, PagesHead, PgnoOrder, DIGESTS_HEAD_LEN, DIGEST_LEN, DIGEST_REC_LEN,
    PAGES_HEAD_LEN,
};
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::store::parts::PartReader;
use crate::store::Listed;

use super::cursor::{archive_err, open_reader};

pub type Digest = [u8; DIGEST_LEN];

/// The digest of one page under the chain's key.
pub fn digest(key: &[u8; 32], page: &[u8]) -> Digest {
    let mut m = crate::crypto::hmac_tagger(key);
    m.update(page);
    let full = m.finish();
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&full[..DIGEST_LEN]);
    d
}

/// The chain of `a` as a list, its full archive first and `a` last, or
/// why it cannot be resolved (a link missing, of other sources, not
/// older than its child, or more than [`super::MAX_CHAIN`] archives).
pub fn links<'a>(archives: &'a [Listed], a: &'a Listed) -> Result<Vec<&'a Listed>> {
    let mut out = vec![a];
    let mut cur = a;
    while let Some(parent) = &cur.meta.parent {
        if out.len() >= super::MAX_CHAIN {
            return Err(msg(format!(
                "archive {} has a chain of more than {} archives; refusing it",
                a.meta.id,
                super::MAX_CHAIN
            )));
        }
        let Some(p) = archives
            .iter()
            .find(|x| &x.meta.id == parent && x.meta.strategy == a.meta.strategy)
        else {
            return Err(msg(format!(
                "archive {} is incremental and needs archive {parent}, which is missing or unreadable; restore another archive (or put {parent} back)",
                cur.meta.id
            )));
        };
        if p.meta.sources != a.meta.sources
            || (p.meta.created, p.meta.created_nanos) >= (cur.meta.created, cur.meta.created_nanos)
        {
            return Err(msg(format!(
                "archive {} names {parent} as its parent, which backs up another database or is not older; refusing it",
                cur.meta.id
            )));
        }
        out.push(p);
        cur = p;
    }
    out.reverse();
    Ok(out)
}

/// Position `r` at the entry of `kind` (through the index) and return its
/// header; the index must list exactly an image entry and a kind 9 entry.
fn open_entry(
    r: &mut ArchiveReader<PartReader>,
    kind: EntryKind,
) -> std::result::Result<EntryHeader, FormatError> {
    let index = r.read_index()?;
    let rec = match index.as_slice() {
        [img, dig] if dig.kind == EntryKind::DbDigests && img.path == dig.path => {
            if kind == EntryKind::DbDigests {
                dig
            } else {
                img
            }
        }
        _ => {
            return Err(FormatError::Corrupt(
                "a database archive of a chain must hold an image and its page digests".into(),
            ))
        }
    };
    if rec.kind != kind {
        return Err(FormatError::Corrupt(format!(
            "expected an entry of kind {}, found kind {}",
            kind as u8, rec.kind as u8
        )));
    }
    let at = rec.at;
    r.seek_to(at)?;
    let h = r
        .next_entry()?
        .ok_or_else(|| FormatError::Corrupt("index points at the end".into()))?;
    if h.kind != rec.kind || h.path != rec.path || h.size != rec.size {
        return Err(FormatError::Corrupt("index points at another entry".into()));
    }
    Ok(h)
}

/// Digest lists up to this many bytes are read whole when opened and
/// their reader closed: an incremental's list is short, and a chain of
/// them then costs a few kilobytes each instead of a reader's frame
/// buffers each.
const SLURP_BYTES: u64 = 64 * 1024;

/// Where a cursor's records come from.
enum Records {
    Reader(Box<ArchiveReader<PartReader>>, Content),
    Memory(Vec<u8>, usize),
}

/// A forward cursor over one archive's page digests.
pub(super) struct DigestCursor {
    pub(super) id: String,
    records: Records,
    left: u64,
    order: PgnoOrder,
    pub(super) head: DigestsHead,
    current: Option<(u32, Digest)>,
}

impl DigestCursor {
    pub(super) fn open(a: &Listed, key: Option<&KeyRing>) -> Result<Self> {
        let id = &a.meta.id;
        let mut reader = open_reader(a, key)?;
        let h = open_entry(&mut reader, EntryKind::DbDigests).map_err(|e| archive_err(id, e))?;
        let mut content = Content::default();
        let mut hb = [0u8; DIGESTS_HEAD_LEN];
        if !content
            .read_exact(&mut reader, &mut hb)
            .map_err(|e| archive_err(id, e))?
        {
            return Err(archive_err(id, FormatError::Truncated));
        }
        let (head, left) = DigestsHead::decode(&hb, h.size).map_err(|e| archive_err(id, e))?;
        let records = if left * (DIGEST_REC_LEN as u64) <= SLURP_BYTES {
            let mut all = vec![0u8; left as usize * DIGEST_REC_LEN];
            if !all.is_empty()
                && !content
                    .read_exact(&mut reader, &mut all)
                    .map_err(|e| archive_err(id, e))?
            {
                return Err(archive_err(id, FormatError::Truncated));
            }
            // Read whole: the entry's SHA-256 is checked too.
            reader.end_entry().map_err(|e| archive_err(id, e))?;
            Records::Memory(all, 0)
        } else {
            Records::Reader(Box::new(reader), content)
        };
        Ok(DigestCursor {
            id: id.clone(),
            records,
            left,
            order: PgnoOrder::new(head.page_count),
            head,
            current: None,
        })
    }

    /// The digest this archive records for page `p`, if any; `p` must
    /// not go backwards between calls.
    fn at(&mut self, p: u32) -> Result<Option<Digest>> {
        loop {
            match self.current {
                Some((q, d)) if q == p => return Ok(Some(d)),
                Some((q, _)) if q > p => return Ok(None),
                _ => {}
            }
            self.current = self.next_record()?;
            if self.current.is_none() {
                return Ok(None);
            }
        }
    }

    /// The next record, `None` after the last.
    pub(super) fn next_record(&mut self) -> Result<Option<(u32, Digest)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut rec = [0u8; DIGEST_REC_LEN];
        let got = match &mut self.records {
            Records::Reader(r, content) => content
                .read_exact(r, &mut rec)
                .map_err(|e| archive_err(&self.id, e))?,
            Records::Memory(all, pos) => match all.get(*pos..*pos + DIGEST_REC_LEN) {
                Some(b) => {
                    rec.copy_from_slice(b);
                    *pos += DIGEST_REC_LEN;
                    true
                }
                None => false,
            },
        };
        if !got {
            return Err(archive_err(&self.id, FormatError::Truncated));
        }
        self.left -= 1;
        let q = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let q = self.order.check(q).map_err(|e| archive_err(&self.id, e))?;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&rec[4..]);
        Ok(Some((q, d)))
    }
}

/// The page digests of a chain's state, for the next incremental.
pub struct ChainDigests {
    /// Full archive first.
    cursors: Vec<DigestCursor>,
    key: [u8; 32],
    page_size: u32,
    page_count: u32,
    fingerprint: [u8; 32],
}

impl ChainDigests {
    /// Open the digests of every link of `chain` (full archive first).
    pub fn open(chain: &[&Listed], key: Option<&KeyRing>) -> Result<Self> {
        let mut cursors = Vec::with_capacity(chain.len());
        for a in chain {
            cursors.push(DigestCursor::open(a, key)?);
        }
        let newest = cursors
            .last()
            .map(|c| c.head)
            .ok_or_else(|| msg("internal error: an empty chain"))?;
        if let Some(c) = cursors
            .iter()
            .find(|c| c.head.key != newest.key || c.head.page_size != newest.page_size)
        {
            return Err(msg(format!(
                "archive {} does not belong to the chain of {} (another digest key or page size)",
                c.id,
                chain.last().map(|a| a.meta.id.as_str()).unwrap_or_default()
            )));
        }
        Ok(ChainDigests {
            cursors,
            key: newest.key,
            page_size: newest.page_size,
            page_count: newest.page_count,
            fingerprint: newest.fingerprint,
        })
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    pub fn page_count(&self) -> u32 {
        self.page_count
    }

    /// The fingerprint recorded with the chain's newest archive (zeros:
    /// none).
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The digest of page `p` in the chain's state (`None`: the state has
    /// no such page, or no digest for it). Pages must be asked for in
    /// rising order.
    pub fn lookup(&mut self, p: u32) -> Result<Option<Digest>> {
        if p > self.page_count {
            return Ok(None);
        }
        let mut found = None;
        for c in &mut self.cursors {
            if let Some(d) = c.at(p)? {
                found = Some(d);
            }
        }
        Ok(found)
    }
}

/// Write the pages of every incremental link over the image of their
/// chain's full archive, staged in `file`, in chain order, cutting or
/// extending the file to each link's page count. Each link is read to its
/// end (every frame, the index, the tail and its part hashes are checked).
/// Returns the newest link's image entry header (its path, owner, mode and
/// time are what the restored file gets).
pub async fn apply_links(
    links: &[&Listed],
    key: Option<&KeyRing>,
    file: &File,
    page_size: u32,
) -> Result<Option<EntryHeader>> {
    let mut last = None;
    let mut page = vec![0u8; page_size as usize];
    for a in links {
        let id = &a.meta.id;
        let err = |e| archive_err(id, e);
        let mut r = open_reader(a, key)?;
        let mut content = Content::default();
        let h = r.next_entry().map_err(err)?;
        let h = match h {
            Some(h) if h.kind == EntryKind::DbPages => h,
            _ => {
                return Err(err(FormatError::Corrupt(
                    "an incremental database archive must start with its changed pages".into(),
                )))
            }
        };
        let mut hb = [0u8; PAGES_HEAD_LEN];
        if !content.read_exact(&mut r, &mut hb).map_err(err)? {
            return Err(err(FormatError::Truncated));
        }
        let (head, n) = PagesHead::decode(&hb, h.size).map_err(err)?;
        if head.page_size != page_size {
            return Err(err(FormatError::Corrupt(format!(
                "page size {} where its chain has {page_size}",
                head.page_size
            ))));
        }
        let mut order = PgnoOrder::new(head.page_count);
        let mut pg = [0u8; 4];
        for _ in 0..n {
            if !content.read_exact(&mut r, &mut pg).map_err(err)?
                || !content.read_exact(&mut r, &mut page).map_err(err)?
            {
                return Err(err(FormatError::Truncated));
            }
            let p = order.check(u32::from_le_bytes(pg)).map_err(err)?;
            file.write_all_at(&page, u64::from(p - 1) * u64::from(page_size))
                .map_err(|e| msg(format!("cannot write the staged database: {e}")))?;
            smol::future::yield_now().await;
        }
        r.end_entry().map_err(err)?;
        file.set_len(u64::from(head.page_count) * u64::from(page_size))
            .map_err(|e| msg(format!("cannot size the staged database: {e}")))?;
        // The rest (the kind 9 entry, index, footer, tail) is read so that
        // the whole link is authenticated.
        while let Some(h) = r.next_entry().map_err(err)? {
            if h.kind != EntryKind::DbDigests {
                return Err(err(FormatError::Corrupt(format!(
                    "unexpected entry of kind {} in a database archive",
                    h.kind as u8
                ))));
            }
            r.end_entry().map_err(err)?;
        }
        let parts = r.into_inner();
        for (info, hash) in a.meta.parts.iter().zip(parts.part_hashes()) {
            if hash != Some(info.sha256) {
                return Err(err(FormatError::PartMismatch(info.name.clone())));
            }
        }
        last = Some(h);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_and_cut() {
        let page = vec![3u8; 4096];
        let a = digest(&[1; 32], &page);
        assert_ne!(a, digest(&[2; 32], &page), "another key, another digest");
        assert_ne!(a, digest(&[1; 32], &[4u8; 4096]));
        assert_eq!(a, digest(&[1; 32], &page));
    }
}
