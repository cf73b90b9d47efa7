//! Records inside the payload: entries, the index and the footer.
//!
//! All integers are little-endian. Paths are the raw bytes of an absolute
//! Unix path; every decoder runs [`check_path`], so no reader ever hands out
//! a path with `..`, `.`, empty components or NUL bytes.

use super::{FormatError, Location};

/// Kind byte that starts the index section of the payload.
pub const INDEX_MARKER: u8 = 0xFE;
/// Kind byte that starts an index whose records carry an [`IndexStat`]
/// (archives of the tree strategies since incremental backups; an older
/// reader refuses it as "unknown entry kind 253").
pub const INDEX_MARKER_STAT: u8 = 0xFD;
pub const FOOTER_MAGIC: [u8; 8] = *b"RVBFOOT1";
pub const FOOTER_LEN: usize = 48;
pub const TAIL_MAGIC: [u8; 8] = *b"RVBTAIL1";
pub const TAIL_LEN: usize = 24;
pub const MAX_PATH_LEN: usize = 4096;
/// Most directories an archive path may hold, counting every component of
/// the absolute path (`/a/b` is 2). Shared by backup and restore so every
/// archive written can be restored: the backup walker skips (with a warning,
/// counted in `skipped`) a directory with more components, and restore keeps
/// one open directory per level below its restore root, which is at most this
/// many both with `--target` (every component of the path lies below the
/// target) and in place (the root is the parent of the source root, so fewer
/// components lie below it).
pub const MAX_DIR_DEPTH: usize = 256;

/// Size of an entry header without its path.
const ENTRY_FIXED_LEN: usize = 1 + 2 + 4 + 4 + 4 + 8 + 4 + 8;
pub const TRAILER_LEN: usize = 1 + 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    /// A consistent page image of an SQLite database.
    Database = 4,
    /// A batch of committed SQLite WAL frames (point-in-time recovery):
    /// the only entry of a WAL segment archive (`pitr::segment`).
    WalSegment = 6,
    /// A regular file whose content is stored in an earlier archive of the
    /// same strategy: the content is a [`Reference`] to it, the trailer
    /// hash the SHA-256 of the file's content (see `docs/format.md` §5).
    Stored = 5,
    /// A second name for a regular file stored earlier in the same archive:
    /// the content is that earlier entry's archive path (like a symlink's
    /// target), and restore makes a hard link to it.
    HardLink = 7,
    /// The pages of an SQLite database that changed since its parent
    /// archive's chain state (an incremental database archive's image,
    /// see `format::pages`).
    DbPages = 8,
    /// The keyed digest of each page a database archive stores, what the
    /// next incremental backup compares against (`format::pages`).
    DbDigests = 9,
}

impl EntryKind {
    pub fn from_byte(b: u8) -> Result<EntryKind, FormatError> {
        match b {
            1 => Ok(EntryKind::File),
            2 => Ok(EntryKind::Dir),
            3 => Ok(EntryKind::Symlink),
            4 => Ok(EntryKind::Database),
            5 => Ok(EntryKind::Stored),
            6 => Ok(EntryKind::WalSegment),
            7 => Ok(EntryKind::HardLink),
            8 => Ok(EntryKind::DbPages),
            9 => Ok(EntryKind::DbDigests),
            _ => Err(FormatError::Corrupt(format!("unknown entry kind {b}"))),
        }
    }
}

/// Status byte in an entry trailer.
pub const STATUS_CLEAN: u8 = 0;
/// The file changed while it was read; its content may mix old and new.
pub const STATUS_CHANGED: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub kind: EntryKind,
    pub path: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Content bytes that follow (symlinks: the target; directories: 0).
    pub size: u64,
}

impl EntryHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&path_len_field(&self.path));
        out.extend_from_slice(&self.path);
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    /// Decode the rest of an entry header whose kind byte was already read.
    pub fn decode_after_kind(
        kind: EntryKind,
        r: &mut impl ByteSource,
    ) -> Result<Self, FormatError> {
        let path = read_path(r)?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let mtime = r.u64()? as i64;
        let mtime_nsec = r.u32()?;
        if mtime_nsec >= 1_000_000_000 {
            return Err(FormatError::Corrupt(
                "mtime nanoseconds out of range".into(),
            ));
        }
        let size = r.u64()?;
        let h = EntryHeader {
            kind,
            path,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
        };
        if h.kind == EntryKind::Dir && h.size != 0
            || matches!(h.kind, EntryKind::Symlink | EntryKind::HardLink)
                && h.size > MAX_PATH_LEN as u64
            || h.kind == EntryKind::Stored && h.size > MAX_REFERENCE_LEN as u64
        {
            return Err(FormatError::Corrupt(format!(
                "entry {} has an impossible size",
                h.display_path()
            )));
        }
        Ok(h)
    }

    pub fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.path.len()
    }

    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// One line of the index: where an entry is and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRecord {
    pub kind: EntryKind,
    pub path: Vec<u8>,
    pub size: u64,
    pub at: Location,
    pub status: u8,
    pub sha256: [u8; 32],
    /// Present in an index marked [`INDEX_MARKER_STAT`] (every record),
    /// absent in a version-1 index.
    pub stat: Option<IndexStat>,
}

impl IndexRecord {
    /// The version-1 record (without the stat block), which is also what
    /// an entry seen in the payload is checked against.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&path_len_field(&self.path));
        out.extend_from_slice(&self.path);
        out.extend_from_slice(&self.size.to_le_bytes());
        encode_location(&self.at, out);
        out.push(self.status);
        out.extend_from_slice(&self.sha256);
    }

    /// The record of an index marked [`INDEX_MARKER_STAT`]: the version-1
    /// record, then the stat block (zeros when `stat` is `None`).
    pub fn encode_with_stat(&self, out: &mut Vec<u8>) {
        self.encode(out);
        self.stat.clone().unwrap_or_default().encode(out);
    }

    pub fn decode(r: &mut impl ByteSource) -> Result<Self, FormatError> {
        let kind = EntryKind::from_byte(r.u8()?)?;
        let path = read_path(r)?;
        let size = r.u64()?;
        let at = decode_location(r)?;
        let status = r.u8()?;
        let mut sha256 = [0u8; 32];
        r.bytes(&mut sha256)?;
        Ok(IndexRecord {
            kind,
            path,
            size,
            at,
            status,
            sha256,
            stat: None,
        })
    }

    /// A record of an index marked [`INDEX_MARKER_STAT`].
    pub fn decode_with_stat(r: &mut impl ByteSource) -> Result<Self, FormatError> {
        let mut rec = Self::decode(r)?;
        rec.stat = Some(IndexStat::decode(r)?);
        Ok(rec)
    }
}

/// What an incremental backup compares a file with (the index's stat
/// block): the file's identity and version when it was stored, and where
/// its content is. Zero for entries other than kinds 1 and 5.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStat {
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    /// Bytes of the file's content (for kind 5: the referenced content).
    pub file_size: u64,
    /// Kind 5: the id of the archive holding the content (its kind 1
    /// entry); empty otherwise.
    pub holder: Vec<u8>,
}

/// Fixed part of the stat block: dev, ino, mtime, mtime_nsec, ctime,
/// ctime_nsec, file_size, holder_len.
pub const STAT_FIXED_LEN: usize = 8 + 8 + 8 + 4 + 8 + 4 + 8 + 1;
/// Longest archive id a reference or a stat block may name.
pub const MAX_ID_LEN: usize = 200;
/// Longest kind 5 content: id_len, id, file_size.
pub const MAX_REFERENCE_LEN: usize = 1 + MAX_ID_LEN + 8;

impl IndexStat {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
        out.extend_from_slice(&self.ctime.to_le_bytes());
        out.extend_from_slice(&self.ctime_nsec.to_le_bytes());
        out.extend_from_slice(&self.file_size.to_le_bytes());
        // Writers only name valid ids; anything else is written as none.
        let holder: &[u8] = if self.holder.len() <= MAX_ID_LEN {
            &self.holder
        } else {
            &[]
        };
        out.push(holder.len() as u8);
        out.extend_from_slice(holder);
    }

    pub fn decode(r: &mut impl ByteSource) -> Result<Self, FormatError> {
        let dev = r.u64()?;
        let ino = r.u64()?;
        let mtime = r.u64()? as i64;
        let mtime_nsec = r.u32()?;
        let ctime = r.u64()? as i64;
        let ctime_nsec = r.u32()?;
        if mtime_nsec >= 1_000_000_000 || ctime_nsec >= 1_000_000_000 {
            return Err(FormatError::Corrupt(
                "index stat nanoseconds out of range".into(),
            ));
        }
        let file_size = r.u64()?;
        let len = r.u8()? as usize;
        let mut holder = vec![0u8; len];
        r.bytes(&mut holder)?;
        if !holder.is_empty() {
            check_id(&holder)?;
        }
        Ok(IndexStat {
            dev,
            ino,
            mtime,
            mtime_nsec,
            ctime,
            ctime_nsec,
            file_size,
            holder,
        })
    }
}

/// The content of a kind 5 entry: which archive holds the file's content
/// (as a kind 1 entry under the same path) and how long that content is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub holder: String,
    pub file_size: u64,
}

impl Reference {
    pub fn encode(&self) -> Vec<u8> {
        let id = self.holder.as_bytes();
        let mut out = Vec::with_capacity(1 + id.len() + 8);
        out.push(u8::try_from(id.len()).unwrap_or(0));
        out.extend_from_slice(id);
        out.extend_from_slice(&self.file_size.to_le_bytes());
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, FormatError> {
        let len = b.u8()? as usize;
        let mut id = vec![0u8; len];
        b.bytes(&mut id)?;
        check_id(&id)?;
        let file_size = b.u64()?;
        if !b.is_empty() {
            return Err(FormatError::Corrupt(
                "a reference to an earlier archive has trailing bytes".into(),
            ));
        }
        let holder = String::from_utf8(id)
            .map_err(|_| FormatError::Corrupt("archive id is not text".into()))?;
        Ok(Reference { holder, file_size })
    }
}

/// An archive id named inside an archive: 1 to [`MAX_ID_LEN`] bytes of
/// `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_id(id: &[u8]) -> Result<(), FormatError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id[0] != b'.'
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FormatError::Corrupt(format!(
            "{:?} is not an archive id",
            String::from_utf8_lossy(id)
        )))
    }
}

/// The plaintext of the final frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub entry_count: u64,
    pub payload_len: u64,
    pub index_at: Location,
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        out.extend_from_slice(&FOOTER_MAGIC);
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        encode_location(&self.index_at, &mut out);
        out.resize(FOOTER_LEN, 0);
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, FormatError> {
        if b.len() != FOOTER_LEN || b[..8] != FOOTER_MAGIC {
            return Err(FormatError::Corrupt("final frame is not a footer".into()));
        }
        b = &b[8..];
        let entry_count = b.u64()?;
        let payload_len = b.u64()?;
        let index_at = decode_location(&mut b)?;
        Ok(Footer {
            entry_count,
            payload_len,
            index_at,
        })
    }
}

/// The 24 plaintext bytes after the final frame: where that frame is.
pub fn encode_tail(final_offset: u64, final_index: u64) -> [u8; TAIL_LEN] {
    let mut t = [0u8; TAIL_LEN];
    t[0..8].copy_from_slice(&final_offset.to_le_bytes());
    t[8..16].copy_from_slice(&final_index.to_le_bytes());
    t[16..24].copy_from_slice(&TAIL_MAGIC);
    t
}

pub fn decode_tail(t: &[u8; TAIL_LEN]) -> Result<(u64, u64), FormatError> {
    if t[16..24] != TAIL_MAGIC {
        return Err(FormatError::Truncated);
    }
    let mut b = &t[..16];
    Ok((b.u64()?, b.u64()?))
}

fn encode_location(at: &Location, out: &mut Vec<u8>) {
    out.extend_from_slice(&at.frame_index.to_le_bytes());
    out.extend_from_slice(&at.frame_offset.to_le_bytes());
    out.extend_from_slice(&at.offset_in_frame.to_le_bytes());
}

fn decode_location(r: &mut impl ByteSource) -> Result<Location, FormatError> {
    Ok(Location {
        frame_index: r.u64()?,
        frame_offset: r.u64()?,
        offset_in_frame: r.u32()?,
    })
}

/// The 16-bit length field of a path. The writer refuses a path longer than
/// [`MAX_PATH_LEN`] before encoding; saturate rather than wrap if one ever
/// got here (the reader then refuses the record instead of misparsing it).
fn path_len_field(path: &[u8]) -> [u8; 2] {
    u16::try_from(path.len()).unwrap_or(u16::MAX).to_le_bytes()
}

fn read_path(r: &mut impl ByteSource) -> Result<Vec<u8>, FormatError> {
    let len = r.u16()? as usize;
    if len == 0 || len > MAX_PATH_LEN {
        return Err(FormatError::Corrupt(format!(
            "path length {len} out of range"
        )));
    }
    let mut path = vec![0u8; len];
    r.bytes(&mut path)?;
    check_path(&path)?;
    Ok(path)
}

/// An archive path must be absolute and normal: `/a/b`, never `/a/../b`,
/// `/a/./b`, `/a//b`, `/a/` or anything with a NUL byte.
pub fn check_path(path: &[u8]) -> Result<(), FormatError> {
    let bad = || FormatError::UnsafePath(String::from_utf8_lossy(path).into_owned());
    if path.first() != Some(&b'/') || path.contains(&0) {
        return Err(bad());
    }
    if path == b"/" {
        return Ok(());
    }
    for comp in path[1..].split(|&c| c == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(bad());
        }
    }
    Ok(())
}

/// Little-endian reads from the payload; an early end is a format error.
pub trait ByteSource {
    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError>;

    fn u8(&mut self) -> Result<u8, FormatError> {
        let mut b = [0u8; 1];
        self.bytes(&mut b)?;
        Ok(b[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        let mut b = [0u8; 2];
        self.bytes(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl ByteSource for &[u8] {
    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        if self.len() < buf.len() {
            return Err(FormatError::Corrupt("record ends early".into()));
        }
        let (head, rest) = self.split_at(buf.len());
        buf.copy_from_slice(head);
        *self = rest;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            &b"relative"[..],
            b"/a/../b",
            b"/a/./b",
            b"/a//b",
            b"/a/",
            b"/..",
            b"/a\0b",
            b"",
        ] {
            assert!(check_path(p).is_err(), "{:?}", String::from_utf8_lossy(p));
        }
        for p in [
            &b"/"[..],
            b"/etc/myrvm/a b.env",
            "/opt/é".as_bytes(),
            b"/a/..b",
        ] {
            assert!(check_path(p).is_ok());
        }
    }

    #[test]
    fn entry_header_roundtrip() {
        let h = EntryHeader {
            kind: EntryKind::File,
            path: b"/x/y".to_vec(),
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: -5,
            mtime_nsec: 7,
            size: 99,
        };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        assert_eq!(buf.len(), h.encoded_len());
        let mut r = &buf[1..];
        assert_eq!(
            EntryHeader::decode_after_kind(EntryKind::File, &mut r).unwrap(),
            h
        );
    }

    #[test]
    fn footer_roundtrip() {
        let f = Footer {
            entry_count: 3,
            payload_len: 77,
            index_at: Location {
                frame_index: 1,
                frame_offset: 2,
                offset_in_frame: 3,
            },
        };
        assert_eq!(Footer::decode(&f.encode()).unwrap(), f);
    }

    fn sample_record(holder: &[u8]) -> IndexRecord {
        IndexRecord {
            kind: if holder.is_empty() {
                EntryKind::File
            } else {
                EntryKind::Stored
            },
            path: b"/etc/myrvm/a.env".to_vec(),
            size: 21,
            at: Location {
                frame_index: 4,
                frame_offset: 5,
                offset_in_frame: 6,
            },
            status: STATUS_CLEAN,
            sha256: [7; 32],
            stat: Some(IndexStat {
                dev: 0x801,
                ino: 42,
                mtime: -3,
                mtime_nsec: 999_999_999,
                ctime: 1_795_532_400,
                ctime_nsec: 1,
                file_size: 5100,
                holder: holder.to_vec(),
            }),
        }
    }

    #[test]
    fn index_record_with_stat_roundtrip_and_tamper() {
        for holder in [&b""[..], b"config-20261124T140000Z-0a1b2c"] {
            let rec = sample_record(holder);
            let mut buf = Vec::new();
            rec.encode_with_stat(&mut buf);
            assert_eq!(IndexRecord::decode_with_stat(&mut &buf[..]).unwrap(), rec);
            // Every cut is an error, never a panic or a shorter record.
            for cut in 0..buf.len() {
                assert!(IndexRecord::decode_with_stat(&mut &buf[..cut]).is_err());
            }
            // The v1 encoding is the same record without the stat block.
            let mut v1 = Vec::new();
            rec.encode(&mut v1);
            assert_eq!(&buf[..v1.len()], &v1[..]);
        }
        // Out-of-range nanoseconds and a bad holder id are refused.
        let rec = sample_record(b"x");
        let mut buf = Vec::new();
        rec.encode_with_stat(&mut buf);
        let last = buf.len() - 1;
        buf[last] = b'/';
        assert!(IndexRecord::decode_with_stat(&mut &buf[..]).is_err());
        let mut bad = sample_record(b"");
        if let Some(st) = bad.stat.as_mut() {
            st.ctime_nsec = 1_000_000_000;
        }
        let mut buf = Vec::new();
        bad.encode_with_stat(&mut buf);
        assert!(IndexRecord::decode_with_stat(&mut &buf[..]).is_err());
    }

    #[test]
    fn reference_roundtrip_and_tamper() {
        let r = Reference {
            holder: "logs-20261124T140000Z-0a1b2c".into(),
            file_size: 1 << 40,
        };
        let enc = r.encode();
        assert!(enc.len() <= MAX_REFERENCE_LEN);
        assert_eq!(Reference::decode(&enc).unwrap(), r);
        let mut long = enc.clone();
        long.push(0);
        assert!(Reference::decode(&long).is_err(), "trailing bytes");
        for cut in 0..enc.len() {
            assert!(Reference::decode(&enc[..cut]).is_err());
        }
        for id in [&b""[..], b".hidden", b"a/b", b"a\0b", &[b'a'; 201][..]] {
            let mut v = vec![id.len().min(255) as u8];
            v.extend_from_slice(id);
            v.extend_from_slice(&0u64.to_le_bytes());
            assert!(Reference::decode(&v).is_err(), "{id:?}");
        }
        assert!(EntryKind::from_byte(5).is_ok());
        assert!(EntryKind::from_byte(6).is_ok());
        assert!(EntryKind::from_byte(8).is_ok());
        assert!(EntryKind::from_byte(9).is_ok());
        assert!(EntryKind::from_byte(10).is_err());
    }

    proptest::proptest! {
        #[test]
        fn stat_records_and_references_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            let _ = IndexRecord::decode_with_stat(&mut &bytes[..]);
            let _ = Reference::decode(&bytes);
        }

        #[test]
        fn stat_records_roundtrip(
            dev in proptest::prelude::any::<u64>(),
            ino in proptest::prelude::any::<u64>(),
            mtime in proptest::prelude::any::<i64>(),
            nsec in 0u32..1_000_000_000,
            size in proptest::prelude::any::<u64>(),
            holder in "[a-z0-9_-][a-zA-Z0-9._-]{0,199}",
        ) {
            let mut rec = sample_record(holder.as_bytes());
            rec.stat = Some(IndexStat {
                dev,
                ino,
                mtime,
                mtime_nsec: nsec,
                ctime: mtime,
                ctime_nsec: nsec,
                file_size: size,
                holder: holder.into_bytes(),
            });
            let mut buf = Vec::new();
            rec.encode_with_stat(&mut buf);
            let mut r = &buf[..];
            proptest::prop_assert_eq!(IndexRecord::decode_with_stat(&mut r).unwrap(), rec);
            proptest::prop_assert!(r.is_empty());
        }
    }
}
