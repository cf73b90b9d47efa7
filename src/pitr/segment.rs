//! One WAL segment: a batch of committed WAL frames as an archive of its own.
//!
//! A segment is an ordinary archive (header, deflate, AES-CTR, HMAC, index,
//! footer, tail: `docs/format.md`) holding exactly one entry of kind 6
//! (`EntryKind::WalSegment`) whose path is the database's path. Its
//! content is a 4-byte little-endian length, that many bytes of the
//! postcard-encoded [`SegmentMeta`], then one record per WAL frame: the
//! page number and the database size after the frame (both u32
//! big-endian, as in the WAL) followed by the page. Segments need no
//! sidecar: what `list` shows comes from the first frame of a generation's
//! first and last segments.
//!
//! Chaining: a segment names its generation (the id of the database
//! archive it starts from), its sequence number (0, 1, 2, … without gaps)
//! and the SHA-256 of the complete file of the segment before it, so a
//! missing, reordered or substituted segment is found before anything is
//! restored. Segment 0 of a generation carries the frames found in the WAL
//! right after its snapshot (possibly none); its time is where the
//! generation's restorable range starts.
//!
//! Invariants: a segment is published complete or not at all (temporary
//! name, fsync, rename, fsync of the directory); memory is one WAL frame
//! whatever the batch's size; every frame is checked again against the WAL
//! checksum chain while it is copied.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wal::{self, Cksum, ReadAt, WalHeader, FRAME_HEADER_LEN};
use crate::config::Config;
use crate::crypto::{KeyRing, MasterKey};
use crate::error::{msg, Error, IoContext, Result};
use crate::format::header::DEFAULT_FRAME_SIZE;
use crate::format::record::STATUS_CLEAN;
use crate::format::{ArchiveReader, ArchiveWriter, EntryHeader, EntryKind, FormatError};

/// File name suffix of a segment.
pub(crate) const SEGMENT_EXT: &str = ".rvw";
/// Largest encoded [`SegmentMeta`] accepted.
const MAX_META_LEN: usize = 64 * 1024;
/// Bytes before each page in a segment's frame records.
pub(crate) const RECORD_HEADER_LEN: usize = 8;

/// What a segment says about itself (authenticated with its content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    /// Layout version of this struct (1).
    pub version: u8,
    /// The database archive id this generation starts from.
    pub generation: String,
    pub seq: u64,
    /// SHA-256 of the whole previous segment file; zeros for segment 0.
    pub prev_sha256: [u8; 32],
    pub page_size: u32,
    /// The WAL salts the frames were read under.
    pub wal_salts: (u32, u32),
    /// Index in that WAL of the first frame here.
    pub first_frame: u64,
    pub frames: u64,
    pub commits: u64,
    /// Database size in pages after the last commit here (0: no frames).
    pub db_size: u32,
    /// When this batch was observed (Unix seconds and nanoseconds, UTC):
    /// every commit here was made at or before it (see `shipper`).
    pub time: i64,
    pub time_nanos: u32,
}

impl SegmentMeta {
    /// The batch's time as (seconds, nanoseconds), for comparisons.
    pub fn when(&self) -> (i64, u32) {
        (self.time, self.time_nanos)
    }
}

/// The name of segment `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:012}{SEGMENT_EXT}")
}

/// The sequence number a segment file name stands for.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A writer that hashes everything it passes on.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where a batch's frames come from.
pub(crate) struct Source<'a> {
    pub wal: &'a File,
    pub header: &'a WalHeader,
    /// Running checksum before `meta.first_frame`.
    pub prev: Cksum,
    /// The database's path (the entry's path).
    pub db_path: &'a [u8],
}

/// Write segment `meta` with its frames read from `src` into `dir`
/// (crash-safely); returns the SHA-256 of the published file.
pub(crate) fn write(
    dir: &Path,
    meta: &SegmentMeta,
    src: &Source<'_>,
    cfg: &Config,
    key: Option<&MasterKey>,
    buf: &mut Vec<u8>,
) -> Result<[u8; 32]> {
    let to = dir.join(file_name(meta.seq));
    let tmp = dir.join(format!(".{}.tmp", file_name(meta.seq)));
    let _ = std::fs::remove_file(&tmp);
    let result = write_tmp(&tmp, meta, src, cfg, key, buf).and_then(|hash| {
        crate::fsutil::publish(&tmp, &to)?;
        Ok(hash)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(
    tmp: &Path,
    meta: &SegmentMeta,
    src: &Source<'_>,
    cfg: &Config,
    key: Option<&MasterKey>,
    buf: &mut Vec<u8>,
) -> Result<[u8; 32]> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(tmp)
        .at("create", tmp)?;
    let id = format!("{}/{}", meta.generation, file_name(meta.seq));
    let arch = |source: FormatError| Error::Archive {
        id: id.clone(),
        source,
    };
    // Segments are small: a small frame keeps the writer's buffer small.
    let header = crate::backup::new_header(cfg, key, meta.time, DEFAULT_FRAME_SIZE.min(64 * 1024))?;
    let protection = header.protection_with_key(key).map_err(arch)?;
    let level = cfg.compression_enabled.then_some(cfg.compression_level);
    let out = Hashing {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
    };
    let mut w = ArchiveWriter::new(out, &header, protection, level).map_err(arch)?;
    let encoded = postcard::to_allocvec(meta).map_err(|e| msg(format!("segment meta: {e}")))?;
    let page = u64::from(meta.page_size);
    let size = 4 + encoded.len() as u64 + meta.frames * (RECORD_HEADER_LEN as u64 + page);
    w.begin_entry(&EntryHeader {
        kind: EntryKind::WalSegment,
        path: src.db_path.to_vec(),
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: meta.time,
        mtime_nsec: meta.time_nanos,
        size,
    })
    .map_err(arch)?;
    w.write_content(&(encoded.len() as u32).to_le_bytes())
        .map_err(arch)?;
    w.write_content(&encoded).map_err(arch)?;
    buf.resize(src.header.frame_len() as usize, 0);
    let mut s = src.prev;
    for i in meta.first_frame..meta.first_frame + meta.frames {
        let off = src
            .header
            .frame_offset(i)
            .ok_or_else(|| msg("WAL offset out of range"))?;
        let full = src
            .wal
            .read_full_at(buf, off)
            .ctx(|| "cannot read the WAL".into())?;
        let checked = if full {
            wal::check_frame(src.header, s, buf)
        } else {
            None
        };
        let Some((_, next)) = checked else {
            return Err(msg(format!(
                "WAL frame {i} changed while it was copied (the WAL was reset under us)"
            )));
        };
        s = next;
        w.write_content(&buf[..RECORD_HEADER_LEN]).map_err(arch)?;
        w.write_content(&buf[FRAME_HEADER_LEN..]).map_err(arch)?;
    }
    w.end_entry(STATUS_CLEAN).map_err(arch)?;
    let (mut out, _) = w.finish().map_err(arch)?;
    out.flush().at("write", tmp)?;
    let hash: [u8; 32] = out.hash.finalize().into();
    let file = out
        .inner
        .into_inner()
        .map_err(|e| e.into_error())
        .at("write", tmp)?;
    file.sync_all().at("sync", tmp)?;
    Ok(hash)
}

/// SHA-256 of a whole file.
pub(crate) fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let (mut f, _) =
        crate::fsutil::open_regular(path, crate::fsutil::Follow::No).at("open", path)?;
    let mut h = Sha256::new();
    let mut b = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut b).at("read", path)?;
        if n == 0 {
            break;
        }
        h.update(&b[..n]);
    }
    Ok(h.finalize().into())
}

/// An open segment, positioned at its first frame record.
pub(crate) struct Opened {
    pub meta: SegmentMeta,
    reader: ArchiveReader<File>,
    /// Bytes of the current archive chunk not consumed yet.
    pending: Vec<u8>,
    left: u64,
    path: PathBuf,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    msg(format!(
        "WAL segment {} is damaged or was tampered with: {what}; it cannot be used for point-in-time restore",
        path.display()
    ))
}

/// Open a segment and read (authenticate) its metadata. `need_encrypted`
/// (`encryption_enabled`): an unencrypted segment, whose plain SHA-256
/// tags anyone could forge, is refused.
pub(crate) fn open(path: &Path, key: Option<&KeyRing>, need_encrypted: bool) -> Result<Opened> {
    let (mut f, _) =
        crate::fsutil::open_regular(path, crate::fsutil::Follow::No).at("open", path)?;
    f.seek(SeekFrom::Start(0)).at("read", path)?;
    let mut reader = ArchiveReader::open(f, key).map_err(|e| bad(path, e))?;
    if need_encrypted && !reader.header().encrypted() {
        return Err(bad(
            path,
            "it is not encrypted while encryption_enabled is on (its tags could be forged)",
        ));
    }
    let entry = reader
        .next_entry()
        .map_err(|e| bad(path, e))?
        .ok_or_else(|| bad(path, "it holds no entry"))?;
    if entry.kind != EntryKind::WalSegment {
        return Err(bad(path, "its entry is not a WAL segment"));
    }
    let mut o = Opened {
        meta: SegmentMeta {
            version: 0,
            generation: String::new(),
            seq: 0,
            prev_sha256: [0; 32],
            page_size: 0,
            wal_salts: (0, 0),
            first_frame: 0,
            frames: 0,
            commits: 0,
            db_size: 0,
            time: 0,
            time_nanos: 0,
        },
        reader,
        pending: Vec::new(),
        left: entry.size,
        path: path.to_path_buf(),
    };
    let mut len = [0u8; 4];
    o.take(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_META_LEN {
        return Err(bad(path, "its metadata is too long"));
    }
    let mut m = vec![0u8; len];
    o.take(&mut m)?;
    o.meta = postcard::from_bytes(&m).map_err(|e| bad(path, e))?;
    let page = u64::from(o.meta.page_size);
    if o.meta.version != 1
        || !(512..=65536).contains(&o.meta.page_size)
        || !o.meta.page_size.is_power_of_two()
        || o.meta.frames.checked_mul(RECORD_HEADER_LEN as u64 + page) != Some(o.left)
    {
        return Err(bad(path, "its metadata does not match its content"));
    }
    Ok(o)
}

impl Opened {
    fn take(&mut self, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            if self.pending.is_empty() {
                let chunk = self
                    .reader
                    .content_chunk()
                    .map_err(|e| bad(&self.path, e))?
                    .ok_or_else(|| bad(&self.path, "its content ends early"))?;
                self.pending.extend_from_slice(chunk);
            }
            let n = (out.len() - done).min(self.pending.len());
            out[done..done + n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            done += n;
        }
        self.left = self.left.saturating_sub(out.len() as u64);
        Ok(())
    }

    /// The next frame record into `buf` (page number, size after it, page),
    /// or `None` after the last one (then the whole archive was checked).
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<(u32, u32)>> {
        if self.left == 0 {
            self.reader.end_entry().map_err(|e| bad(&self.path, e))?;
            if self
                .reader
                .next_entry()
                .map_err(|e| bad(&self.path, e))?
                .is_some()
            {
                return Err(bad(&self.path, "it holds more than one entry"));
            }
            return Ok(None);
        }
        buf.resize(RECORD_HEADER_LEN + self.meta.page_size as usize, 0);
        self.take(buf)?;
        let pgno = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let db_size = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if pgno == 0 {
            return Err(bad(&self.path, "a frame names page 0"));
        }
        Ok(Some((pgno, db_size)))
    }
}
