//! Verify's checks of the database chain entries (docs/format.md §5,
//! kinds 8 and 9): each entry's form ([`check_entry`]), and that a kind 9
//! entry holds exactly the digest of every page its archive's image
//! stores ([`DigestCheck`], with [`PageFeed`] cutting a kind 4 image into
//! pages). Memory is one page, one chunk and a second reader over the
//! digests, whatever the database size.

use crate::crypto::KeyRing;
use crate::error::Result;
use crate::format::pages::{
    Content, DigestsHead, PagesHead, PgnoOrder, DIGESTS_HEAD_LEN, DIGEST_LEN, PAGES_HEAD_LEN,
};
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::store::Listed;

use super::cursor::{archive_err, open_reader};
use super::db::{digest, DigestCursor};

/// Feeds a kind 4 image's content chunks, page by page, to a
/// [`DigestCheck`]: one page of buffer.
pub struct PageFeed {
    buf: Vec<u8>,
    size: usize,
    pgno: u32,
}

impl PageFeed {
    pub fn new(page_size: u32) -> Self {
        PageFeed {
            buf: Vec::with_capacity(page_size as usize),
            size: page_size as usize,
            pgno: 0,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8], check: &mut DigestCheck) -> Result<()> {
        while !chunk.is_empty() {
            let n = (self.size - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.buf.len() == self.size {
                self.pgno = self.pgno.saturating_add(1);
                check.page(self.pgno, &self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// The image ended: whole pages, as many as the digests say.
    pub fn finish(&self, check: &DigestCheck) -> Result<()> {
        if !self.buf.is_empty() || self.pgno != check.page_count() {
            return Err(archive_err(
                &check.cursor.id,
                FormatError::Corrupt(format!(
                    "the image holds {} whole pages, the page digests say {}",
                    self.pgno,
                    check.page_count()
                )),
            ));
        }
        Ok(())
    }
}

/// Verify's check that an archive's kind 9 entry holds exactly the digest
/// of every page its image stores, in order: a second reader walks the
/// digests while the first reads the image (fixed memory).
pub struct DigestCheck {
    cursor: DigestCursor,
}

impl DigestCheck {
    /// `None` for an archive without a kind 9 entry (a database archive
    /// written before incremental database backups).
    pub fn open(a: &Listed, key: Option<&KeyRing>) -> Result<Option<Self>> {
        let mut r = open_reader(a, key)?;
        let index = r.read_index().map_err(|e| archive_err(&a.meta.id, e))?;
        if !index.iter().any(|x| x.kind == EntryKind::DbDigests) {
            return Ok(None);
        }
        Ok(Some(DigestCheck {
            cursor: DigestCursor::open(a, key)?,
        }))
    }

    pub fn page_size(&self) -> u32 {
        self.cursor.head.page_size
    }

    pub fn page_count(&self) -> u32 {
        self.cursor.head.page_count
    }

    /// The image's next stored page is `pgno` with these bytes.
    pub fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        let want = digest(&self.cursor.head.key, page);
        match self.cursor.next_record()? {
            Some((q, d)) if q == pgno && crate::crypto::ct_eq(&d, &want) => Ok(()),
            _ => Err(archive_err(
                &self.cursor.id,
                FormatError::Corrupt(format!(
                    "the page digests do not match page {pgno} of the image"
                )),
            )),
        }
    }

    /// Every digest was matched by a page.
    pub fn finish(&mut self) -> Result<()> {
        match self.cursor.next_record()? {
            None => Ok(()),
            Some((q, _)) => Err(archive_err(
                &self.cursor.id,
                FormatError::Corrupt(format!("a page digest for page {q}, which the image lacks")),
            )),
        }
    }
}

/// Read a kind 8 or kind 9 entry's content (just opened by `next_entry`)
/// of archive `id` and check its form: the head against the size, page
/// numbers rising within the page count; with `digests`, each page of a
/// kind 8 entry against its digest. Returns the head's page size and
/// count. The caller ends the entry (which checks its SHA-256).
pub async fn check_entry<R: std::io::Read + std::io::Seek>(
    r: &mut ArchiveReader<R>,
    h: &EntryHeader,
    id: &str,
    mut digests: Option<&mut DigestCheck>,
) -> Result<(u32, u32)> {
    check_entry_inner(r, h, &mut digests)
        .await
        .map_err(|e| match e {
            Checked::Format(f) => archive_err(id, f),
            Checked::Other(e) => e,
        })
}

enum Checked {
    Format(FormatError),
    Other(crate::error::Error),
}

impl From<FormatError> for Checked {
    fn from(e: FormatError) -> Self {
        Checked::Format(e)
    }
}

async fn check_entry_inner<R: std::io::Read + std::io::Seek>(
    r: &mut ArchiveReader<R>,
    h: &EntryHeader,
    digests: &mut Option<&mut DigestCheck>,
) -> std::result::Result<(u32, u32), Checked> {
    let mut content = Content::default();
    let truncated = || FormatError::Corrupt("a page record is cut short".into());
    let (page_size, page_count, n, skip) = match h.kind {
        EntryKind::DbPages => {
            let mut hb = [0u8; PAGES_HEAD_LEN];
            if !content.read_exact(r, &mut hb)? {
                return Err(truncated().into());
            }
            let (head, n) = PagesHead::decode(&hb, h.size)?;
            (head.page_size, head.page_count, n, head.page_size as usize)
        }
        EntryKind::DbDigests => {
            let mut hb = [0u8; DIGESTS_HEAD_LEN];
            if !content.read_exact(r, &mut hb)? {
                return Err(truncated().into());
            }
            let (head, n) = DigestsHead::decode(&hb, h.size)?;
            (head.page_size, head.page_count, n, DIGEST_LEN)
        }
        _ => return Err(FormatError::Corrupt("not a database chain entry".into()).into()),
    };
    let mut order = PgnoOrder::new(page_count);
    let mut pg = [0u8; 4];
    let mut body = vec![0u8; skip];
    for i in 0..n {
        if !content.read_exact(r, &mut pg)? || !content.read_exact(r, &mut body)? {
            return Err(truncated().into());
        }
        let p = order.check(u32::from_le_bytes(pg))?;
        if let (EntryKind::DbPages, Some(d)) = (h.kind, digests.as_deref_mut()) {
            d.page(p, &body).map_err(Checked::Other)?;
        }
        if i % 64 == 63 {
            smol::future::yield_now().await;
        }
    }
    Ok((page_size, page_count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::Header;
    use crate::format::ArchiveWriter;
    use proptest::prelude::*;

    /// An unencrypted archive holding one entry of `kind` with `content`.
    fn archive(kind: EntryKind, content: &[u8]) -> Vec<u8> {
        let header = Header {
            flags: 0,
            frame_size: 4096,
            key_id: Default::default(),
            salt: [1; 32],
            created: 0,
        };
        let mut w = ArchiveWriter::new(Vec::new(), &header, header.protection(None).unwrap(), None)
            .unwrap();
        let h = EntryHeader {
            kind,
            path: b"/db".to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: content.len() as u64,
        };
        w.begin_entry(&h).unwrap();
        w.write_content(content).unwrap();
        w.end_entry(0).unwrap();
        w.finish().unwrap().0
    }

    fn check(kind: EntryKind, content: &[u8]) -> Result<(u32, u32)> {
        let bytes = archive(kind, content);
        let mut r = ArchiveReader::open(std::io::Cursor::new(bytes), None).unwrap();
        let h = r.next_entry().unwrap().unwrap();
        let out = smol::block_on(check_entry(&mut r, &h, "x", None));
        if out.is_ok() {
            r.end_entry().unwrap();
        }
        out
    }

    #[test]
    fn well_formed_entries_pass_and_disordered_ones_fail() {
        let head = PagesHead {
            page_size: 512,
            page_count: 4,
        };
        let mut ok = head.encode().to_vec();
        for p in [1u32, 4] {
            ok.extend_from_slice(&p.to_le_bytes());
            ok.extend_from_slice(&[p as u8; 512]);
        }
        assert_eq!(check(EntryKind::DbPages, &ok).unwrap(), (512, 4));
        let mut bad = head.encode().to_vec();
        for p in [4u32, 1] {
            bad.extend_from_slice(&p.to_le_bytes());
            bad.extend_from_slice(&[0; 512]);
        }
        assert!(check(EntryKind::DbPages, &bad).is_err());
        assert!(check(EntryKind::File, &ok).is_err(), "not a chain entry");
    }

    proptest! {
        #[test]
        fn any_delta_or_digest_bytes_check_without_panic(
            page_count in 0u32..8,
            pgnos in proptest::collection::vec(0u32..10, 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            digests in any::<bool>(),
        ) {
            let (kind, mut content, rec) = if digests {
                let head = DigestsHead { page_size: 512, page_count, key: [3; 32], fingerprint: [0; 32] };
                (EntryKind::DbDigests, head.encode().to_vec(), DIGEST_LEN)
            } else {
                let head = PagesHead { page_size: 512, page_count };
                (EntryKind::DbPages, head.encode().to_vec(), 512)
            };
            for p in &pgnos {
                content.extend_from_slice(&p.to_le_bytes());
                content.extend(std::iter::repeat_n(7u8, rec));
            }
            content.extend_from_slice(&tail);
            let valid = tail.is_empty()
                && pgnos.iter().all(|p| (1..=page_count).contains(p))
                && pgnos.windows(2).all(|w| w[0] < w[1]);
            prop_assert_eq!(check(kind, &content).is_ok(), valid);
        }
    }
}
