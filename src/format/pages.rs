//! The contents of the database chain entries (docs/format.md §5, kinds 8
//! and 9): a page delta and a page digest list, both a fixed head followed
//! by fixed-size records in strictly increasing page-number order.
//!
//! This module owns the byte layout and its checks only: heads are decoded
//! against the entry's declared size (so a record count never comes from
//! anywhere but that arithmetic), and [`Content`] hands out one record at a
//! time from an entry's content chunks, whatever the frame boundaries, in
//! fixed memory (one chunk copy).

use std::io::{Read, Seek};

use super::{ArchiveReader, FormatError};

/// Bytes of a page digest.
pub const DIGEST_LEN: usize = 16;
/// Bytes of the kind 8 head: page_size, page_count.
pub const PAGES_HEAD_LEN: usize = 8;
/// Bytes of the kind 9 head: page_size, page_count, key, fingerprint.
pub const DIGESTS_HEAD_LEN: usize = 8 + 32 + 32;
/// Bytes of one kind 9 record: pgno, digest.
pub const DIGEST_REC_LEN: usize = 4 + DIGEST_LEN;

fn corrupt(why: impl Into<String>) -> FormatError {
    FormatError::Corrupt(why.into())
}

/// SQLite's page sizes: a power of two from 512 to 65536.
pub fn valid_page_size(n: u32) -> bool {
    (512..=65536).contains(&n) && n.is_power_of_two()
}

/// Head of a kind 8 entry (pages changed since the parent chain state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesHead {
    pub page_size: u32,
    /// Pages of the database in this snapshot (the image is cut or
    /// extended to `page_count × page_size` bytes).
    pub page_count: u32,
}

impl PagesHead {
    pub fn encode(&self) -> [u8; PAGES_HEAD_LEN] {
        let mut b = [0u8; PAGES_HEAD_LEN];
        b[..4].copy_from_slice(&self.page_size.to_le_bytes());
        b[4..].copy_from_slice(&self.page_count.to_le_bytes());
        b
    }

    /// Entry size of a delta with `n` pages.
    pub fn entry_size(&self, n: u64) -> u64 {
        PAGES_HEAD_LEN as u64 + n * (4 + u64::from(self.page_size))
    }

    /// Decode the head of an entry of `size` bytes; returns the head and
    /// its number of page records.
    pub fn decode(b: &[u8; PAGES_HEAD_LEN], size: u64) -> Result<(Self, u64), FormatError> {
        let page_size = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let page_count = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if !valid_page_size(page_size) {
            return Err(corrupt(format!("page delta: bad page size {page_size}")));
        }
        let rec = 4 + u64::from(page_size);
        let body = size
            .checked_sub(PAGES_HEAD_LEN as u64)
            .ok_or_else(|| corrupt("page delta: shorter than its head"))?;
        if body % rec != 0 || body / rec > u64::from(page_count) {
            return Err(corrupt("page delta: size does not match its records"));
        }
        Ok((
            PagesHead {
                page_size,
                page_count,
            },
            body / rec,
        ))
    }
}

/// Head of a kind 9 entry (page digests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestsHead {
    pub page_size: u32,
    pub page_count: u32,
    /// The chain's digest key (the same in every archive of a chain).
    pub key: [u8; 32],
    /// What the database files looked like before this snapshot was
    /// taken; all zeros when unknown (then a next backup reads the pages).
    pub fingerprint: [u8; 32],
}

impl DigestsHead {
    pub fn encode(&self) -> [u8; DIGESTS_HEAD_LEN] {
        let mut b = [0u8; DIGESTS_HEAD_LEN];
        b[..4].copy_from_slice(&self.page_size.to_le_bytes());
        b[4..8].copy_from_slice(&self.page_count.to_le_bytes());
        b[8..40].copy_from_slice(&self.key);
        b[40..].copy_from_slice(&self.fingerprint);
        b
    }

    pub fn entry_size(n: u64) -> u64 {
        DIGESTS_HEAD_LEN as u64 + n * DIGEST_REC_LEN as u64
    }

    pub fn decode(b: &[u8; DIGESTS_HEAD_LEN], size: u64) -> Result<(Self, u64), FormatError> {
        let page_size = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let page_count = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if !valid_page_size(page_size) {
            return Err(corrupt(format!("page digests: bad page size {page_size}")));
        }
        let body = size
            .checked_sub(DIGESTS_HEAD_LEN as u64)
            .ok_or_else(|| corrupt("page digests: shorter than their head"))?;
        let rec = DIGEST_REC_LEN as u64;
        if body % rec != 0 || body / rec > u64::from(page_count) {
            return Err(corrupt("page digests: size does not match the records"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&b[8..40]);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&b[40..]);
        Ok((
            DigestsHead {
                page_size,
                page_count,
                key,
                fingerprint,
            },
            body / rec,
        ))
    }
}

/// Checks that record page numbers rise strictly within `1..=page_count`.
#[derive(Debug)]
pub struct PgnoOrder {
    last: u32,
    page_count: u32,
}

impl PgnoOrder {
    pub fn new(page_count: u32) -> Self {
        PgnoOrder {
            last: 0,
            page_count,
        }
    }

    pub fn check(&mut self, pgno: u32) -> Result<u32, FormatError> {
        if pgno <= self.last || pgno > self.page_count {
            return Err(corrupt(format!(
                "page record {pgno} out of order (after {}, of {} pages)",
                self.last, self.page_count
            )));
        }
        self.last = pgno;
        Ok(pgno)
    }
}

/// Exact reads from the open entry of an [`ArchiveReader`], across content
/// chunks. Holds one chunk (at most one frame's plaintext).
#[derive(Default)]
pub struct Content {
    buf: Vec<u8>,
    pos: usize,
}

impl Content {
    /// Fill `out` from the entry's content; `Ok(false)` if the content
    /// ended before any byte of `out`, an error if it ended inside it.
    pub fn read_exact<R: Read + Seek>(
        &mut self,
        r: &mut ArchiveReader<R>,
        out: &mut [u8],
    ) -> Result<bool, FormatError> {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                match r.content_chunk()? {
                    Some(c) => {
                        self.buf.clear();
                        self.buf.extend_from_slice(c);
                        self.pos = 0;
                    }
                    None if done == 0 => return Ok(false),
                    None => return Err(corrupt("an entry ends inside a page record")),
                }
            }
            let n = (self.buf.len() - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        Ok(true)
    }

    /// Forget what is buffered (before the next entry).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heads_round_trip_and_count_records() {
        let h = PagesHead {
            page_size: 4096,
            page_count: 10,
        };
        assert_eq!(
            PagesHead::decode(&h.encode(), h.entry_size(3)).unwrap(),
            (h, 3)
        );
        assert!(PagesHead::decode(&h.encode(), h.entry_size(3) + 1).is_err());
        assert!(PagesHead::decode(&h.encode(), h.entry_size(11)).is_err());
        assert!(PagesHead::decode(&h.encode(), 7).is_err());
        let d = DigestsHead {
            page_size: 1024,
            page_count: 5,
            key: [7; 32],
            fingerprint: [9; 32],
        };
        let size = DigestsHead::entry_size(5);
        assert_eq!(DigestsHead::decode(&d.encode(), size).unwrap(), (d, 5));
        assert!(DigestsHead::decode(&d.encode(), DigestsHead::entry_size(6)).is_err());
        let bad = DigestsHead {
            page_size: 1000,
            ..d
        };
        assert!(DigestsHead::decode(&bad.encode(), size).is_err());
    }

    #[test]
    fn page_numbers_must_rise_within_the_count() {
        let mut o = PgnoOrder::new(5);
        assert!(o.check(0).is_err());
        assert_eq!(o.check(2).unwrap(), 2);
        assert!(o.check(2).is_err());
        assert_eq!(o.check(5).unwrap(), 5);
        assert!(PgnoOrder::new(5).check(6).is_err());
    }

    proptest! {
        #[test]
        fn any_head_bytes_decode_or_fail_cleanly(
            b in proptest::collection::vec(any::<u8>(), DIGESTS_HEAD_LEN),
            size in any::<u64>(),
        ) {
            let mut p = [0u8; PAGES_HEAD_LEN];
            p.copy_from_slice(&b[..PAGES_HEAD_LEN]);
            if let Ok((h, n)) = PagesHead::decode(&p, size) {
                prop_assert!(valid_page_size(h.page_size));
                prop_assert_eq!(h.entry_size(n), size);
                prop_assert!(n <= u64::from(h.page_count));
            }
            let mut d = [0u8; DIGESTS_HEAD_LEN];
            d.copy_from_slice(&b);
            if let Ok((h, n)) = DigestsHead::decode(&d, size) {
                prop_assert_eq!(DigestsHead::entry_size(n), size);
                prop_assert!(n <= u64::from(h.page_count));
                prop_assert_eq!(h.encode(), d);
            }
        }
    }
}
