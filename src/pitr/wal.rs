//! The SQLite write-ahead log, read as SQLite itself validates it.
//!
//! A WAL file is a 32-byte header followed by frames, each a 24-byte frame
//! header and one page. The header holds a magic number (its last bit
//! names the byte order of the checksum words), the format version
//! 3007000, the page size, the checkpoint sequence, two salts and a
//! checksum of its first 24 bytes. Each frame header holds the page number,
//! the database size in pages after a commit (non-zero only in a commit
//! frame), the two salts of the header (a frame with other salts belongs to
//! an earlier WAL and is not valid) and a cumulative checksum over the
//! first 8 bytes of every frame header and every page so far, seeded with
//! the header's checksum.
//!
//! Invariants: a frame counts only when its salts match and its checksum
//! continues the chain; only frames up to the last valid commit frame are
//! ever reported as shippable (a torn or uncommitted tail is not); memory
//! is one frame's buffer whatever the file's size; nothing here panics on
//! any input (property-tested).

use std::io;

pub(crate) const WAL_HEADER_LEN: usize = 32;
pub(crate) const FRAME_HEADER_LEN: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

/// The running checksum pair.
pub(crate) type Cksum = (u32, u32);

/// A parsed, checksum-valid WAL header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalHeader {
    pub big_endian: bool,
    pub page_size: u32,
    pub ckpt_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub cksum: Cksum,
}

impl WalHeader {
    /// Bytes of one frame (header and page).
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.page_size)
    }

    /// File offset of frame `index` (0-based).
    pub fn frame_offset(&self, index: u64) -> Option<u64> {
        index
            .checked_mul(self.frame_len())
            .and_then(|o| o.checked_add(WAL_HEADER_LEN as u64))
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

/// The WAL checksum of `data` (a multiple of 8 bytes) continuing from `s`.
pub(crate) fn checksum(big_endian: bool, data: &[u8], s: Cksum) -> Cksum {
    let (mut s0, mut s1) = s;
    for chunk in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(chunk, 0), be32(chunk, 4))
        } else {
            (
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// Parse and validate the 32-byte header; `None` when it is not a valid
/// WAL header (wrong magic or version, bad page size, bad checksum).
pub(crate) fn parse_header(b: &[u8]) -> Option<WalHeader> {
    if b.len() < WAL_HEADER_LEN {
        return None;
    }
    let big_endian = match be32(b, 0) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return None,
    };
    if be32(b, 4) != VERSION {
        return None;
    }
    let page_size = be32(b, 8);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let cksum = checksum(big_endian, &b[..24], (0, 0));
    if cksum != (be32(b, 24), be32(b, 28)) {
        return None;
    }
    Some(WalHeader {
        big_endian,
        page_size,
        ckpt_seq: be32(b, 12),
        salt1: be32(b, 16),
        salt2: be32(b, 20),
        cksum,
    })
}

/// One valid frame's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub pgno: u32,
    /// Database size in pages after this commit; 0: not a commit frame.
    pub db_size: u32,
}

/// Check one frame (`bytes` = frame header then page) against the header
/// and the running checksum `prev`; returns its fields and the new
/// checksum, or `None` when it is not a valid continuation.
pub(crate) fn check_frame(h: &WalHeader, prev: Cksum, bytes: &[u8]) -> Option<(Frame, Cksum)> {
    if bytes.len() as u64 != h.frame_len() {
        return None;
    }
    let pgno = be32(bytes, 0);
    if pgno == 0 || be32(bytes, 8) != h.salt1 || be32(bytes, 12) != h.salt2 {
        return None;
    }
    let s = checksum(h.big_endian, &bytes[..8], prev);
    let s = checksum(h.big_endian, &bytes[FRAME_HEADER_LEN..], s);
    if s != (be32(bytes, 16), be32(bytes, 20)) {
        return None;
    }
    Some((
        Frame {
            pgno,
            db_size: be32(bytes, 4),
        },
        s,
    ))
}

/// Random-access reads: a file, or a byte slice in tests.
pub(crate) trait ReadAt {
    /// Fill `buf` from `offset`; `Ok(false)` when the source ends first.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool>;
}

impl ReadAt for std::fs::File {
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            let at = offset.checked_add(done as u64).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "offset out of range")
            })?;
            match self.read_at(&mut buf[done..], at) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl ReadAt for [u8] {
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(false);
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Read the header of a WAL source; `None` when it is absent or invalid.
pub(crate) fn read_header<R: ReadAt + ?Sized>(src: &R) -> io::Result<Option<WalHeader>> {
    let mut b = [0u8; WAL_HEADER_LEN];
    if !src.read_full_at(&mut b, 0)? {
        return Ok(None);
    }
    Ok(parse_header(&b))
}

/// What a scan found after its starting frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Index just past the last valid commit frame (= the start when none).
    pub commit_end: u64,
    /// The running checksum after that commit frame.
    pub commit_cksum: Cksum,
    /// Commit frames in `[start, commit_end)`.
    pub commits: u64,
    /// Database size in pages after the last commit (0 when none).
    pub db_size: u32,
    /// Index just past the last valid frame, committed or not.
    pub valid_end: u64,
}

/// Walk the valid frames from index `start` (whose predecessor left the
/// checksum `prev`), at most `max_frames` of them, with `buf` as the one
/// frame buffer. Stops at the first frame that is missing or invalid.
pub(crate) fn scan<R: ReadAt + ?Sized>(
    src: &R,
    h: &WalHeader,
    start: u64,
    prev: Cksum,
    max_frames: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Scan> {
    let mut out = Scan {
        commit_end: start,
        commit_cksum: prev,
        valid_end: start,
        ..Scan::default()
    };
    buf.resize(h.frame_len() as usize, 0);
    let mut s = prev;
    let mut i = start;
    let mut pending_commits = 0;
    while i - start < max_frames {
        let Some(off) = h.frame_offset(i) else { break };
        if !src.read_full_at(buf, off)? {
            break;
        }
        let Some((frame, next)) = check_frame(h, s, buf) else {
            break;
        };
        s = next;
        i += 1;
        out.valid_end = i;
        if frame.db_size != 0 {
            pending_commits += 1;
            out.commit_end = i;
            out.commit_cksum = s;
            out.commits = pending_commits;
            out.db_size = frame.db_size;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Build a WAL image: header plus frames `(pgno, db_size, page byte)`.
    pub(crate) fn build(
        big: bool,
        ps: u32,
        salts: (u32, u32),
        frames: &[(u32, u32, u8)],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(if big { MAGIC_BE } else { MAGIC_LE }).to_be_bytes());
        v.extend_from_slice(&VERSION.to_be_bytes());
        v.extend_from_slice(&ps.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&salts.0.to_be_bytes());
        v.extend_from_slice(&salts.1.to_be_bytes());
        let c = checksum(big, &v, (0, 0));
        v.extend_from_slice(&c.0.to_be_bytes());
        v.extend_from_slice(&c.1.to_be_bytes());
        let mut s = c;
        for &(pgno, db, byte) in frames {
            let mut f = Vec::new();
            f.extend_from_slice(&pgno.to_be_bytes());
            f.extend_from_slice(&db.to_be_bytes());
            f.extend_from_slice(&salts.0.to_be_bytes());
            f.extend_from_slice(&salts.1.to_be_bytes());
            let page = vec![byte; ps as usize];
            s = checksum(big, &f[..8], s);
            s = checksum(big, &page, s);
            f.extend_from_slice(&s.0.to_be_bytes());
            f.extend_from_slice(&s.1.to_be_bytes());
            f.extend_from_slice(&page);
            v.extend_from_slice(&f);
        }
        v
    }

    fn scan_all(v: &[u8]) -> Option<Scan> {
        let h = read_header(v).unwrap()?;
        Some(scan(v, &h, 0, h.cksum, u64::MAX, &mut Vec::new()).unwrap())
    }

    #[test]
    fn stops_at_the_last_commit_and_at_damage() {
        for big in [false, true] {
            let frames = [(1, 0, 1), (2, 3, 2), (3, 0, 3), (1, 4, 4), (2, 0, 5)];
            let v = build(big, 512, (11, 22), &frames);
            let s = scan_all(&v).unwrap();
            assert_eq!(
                (s.commit_end, s.commits, s.db_size, s.valid_end),
                (4, 2, 4, 5)
            );
            // A torn tail: the last commit frame cut short.
            let torn = &v[..v.len() - 536 - 10];
            let s = scan_all(torn).unwrap();
            assert_eq!((s.commit_end, s.valid_end), (2, 3));
            // One flipped page byte in frame 3: the chain ends before it.
            let mut bad = v.clone();
            let at = 32 + 2 * 536 + 24 + 100;
            bad[at] ^= 1;
            assert_eq!(scan_all(&bad).unwrap().commit_end, 2);
            // A frame with other salts (an older WAL) ends it too.
            let mut other = v.clone();
            other[32 + 536 + 8] ^= 0x80;
            assert_eq!(scan_all(&other).unwrap().commit_end, 0);
            // A damaged header is no WAL.
            let mut h = v.clone();
            h[13] ^= 1;
            assert!(scan_all(&h).is_none());
        }
    }

    #[test]
    fn real_wal_files_from_sqlite() {
        let dir = std::env::temp_dir().join(format!("rvb-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(n INTEGER);",
        )
        .unwrap();
        for n in 0..20 {
            c.execute("INSERT INTO t(n) VALUES (?1)", [n]).unwrap();
        }
        let wal = std::fs::read(dir.join("t.db-wal")).unwrap();
        let h = read_header(&wal[..]).unwrap().unwrap();
        let s = scan(&wal[..], &h, 0, h.cksum, u64::MAX, &mut Vec::new()).unwrap();
        assert_eq!(s.commits, 21, "one commit per statement and the CREATE");
        assert_eq!(s.commit_end, s.valid_end);
        let ours = h.frame_offset(s.commit_end).unwrap();
        assert_eq!(ours, wal.len() as u64);
        // Resuming from the middle gives the same end.
        let mid = scan(&wal[..], &h, 0, h.cksum, 5, &mut Vec::new()).unwrap();
        let rest = scan(
            &wal[..],
            &h,
            mid.commit_end,
            mid.commit_cksum,
            u64::MAX,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(rest.commit_end, s.commit_end);
        // A restarted WAL (after a full checkpoint) has new salts and the
        // older frames beyond its end no longer count.
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        c.execute("INSERT INTO t(n) VALUES (99)", []).unwrap();
        let wal2 = std::fs::read(dir.join("t.db-wal")).unwrap();
        let h2 = read_header(&wal2[..]).unwrap().unwrap();
        assert_ne!((h2.salt1, h2.salt2), (h.salt1, h.salt2));
        assert_eq!(h2.salt1, h.salt1.wrapping_add(1));
        let s2 = scan(&wal2[..], &h2, 0, h2.cksum, u64::MAX, &mut Vec::new()).unwrap();
        assert_eq!((s2.commits, s2.valid_end), (1, 1));
        // The old frames left in the file do not continue the new chain,
        // and with the old header they still validate up to the overwrite.
        assert!(check_frame(
            &h,
            s.commit_cksum,
            &wal2[h.frame_offset(s.commit_end).unwrap() as usize..]
        )
        .is_none());
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000), start in 0u64..10, max in 0u64..20) {
            if let Ok(Some(h)) = read_header(&bytes[..]) {
                let s = scan(&bytes[..], &h, start, h.cksum, max, &mut Vec::new()).unwrap();
                prop_assert!(s.commit_end <= s.valid_end);
                prop_assert!(s.valid_end - start <= max);
            }
        }

        #[test]
        fn any_single_byte_flip_is_caught(seed in any::<u64>(), flip in 0usize..(32 + 3 * 536)) {
            let frames = [(1, 0, seed as u8), (2, 2, (seed >> 8) as u8), (3, 3, (seed >> 16) as u8)];
            let v = build(seed & 1 == 1, 512, (seed as u32, (seed >> 32) as u32), &frames);
            let mut bad = v.clone();
            bad[flip] ^= 1 << (seed % 8);
            let good = scan_all(&v).unwrap();
            prop_assert_eq!(good.commit_end, 3);
            // Damage anywhere makes the scan stop before the damaged frame
            // (or find no header): never more committed frames.
            let frame_of = if flip < 32 { 0 } else { (flip as u64 - 32) / 536 };
            match scan_all(&bad) {
                None => prop_assert!(flip < 32),
                Some(s) => prop_assert!(s.valid_end <= frame_of, "flip {} scan {:?}", flip, s),
            }
        }
    }
}
