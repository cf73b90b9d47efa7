//! Writes one archive as a stream: header, entry records, index, footer, tail.
//!
//! Memory is fixed: one frame of payload buffer plus the sealer's scratch and
//! deflate state, whatever the size of the data; the index is kept in memory
//! up to 256 KiB and spilled beyond that to a sink the caller provides (see
//! `spill`; this module never opens a file itself).

use std::io::Write;

use sha2::{Digest, Sha256};

use super::frame::FrameSealer;
use super::header::{Header, HEADER_LEN};
use super::record::{
    encode_tail, EntryHeader, EntryKind, Footer, IndexRecord, IndexStat, Reference, INDEX_MARKER,
    INDEX_MARKER_STAT, MAX_PATH_LEN, STATUS_CLEAN,
};
use super::spill::{IndexSpill, SpillOpener};
use super::{FormatError, Location};
use crate::crypto::Protection;

/// What a finished archive looked like.
#[derive(Clone, Debug, Default)]
pub struct WriteSummary {
    pub archive_bytes: u64,
    pub payload_bytes: u64,
    pub frames: u64,
    pub entries: u64,
}

struct OpenEntry {
    record: IndexRecord,
    written: u64,
    hasher: Sha256,
}

pub struct ArchiveWriter<W: Write> {
    out: W,
    sealer: FrameSealer,
    buf: Vec<u8>,
    frame_size: usize,
    /// Archive offset where the frame now being filled will start.
    frame_offset: u64,
    payload_len: u64,
    index: IndexSpill,
    open: Option<OpenEntry>,
    scratch: Vec<u8>,
    /// Write the index marked `INDEX_MARKER_STAT`, each record with its
    /// stat block.
    with_stat: bool,
}

impl<W: Write> ArchiveWriter<W> {
    /// Start an archive: writes the header at once.
    pub fn new(
        mut out: W,
        header: &Header,
        protection: Protection,
        level: Option<u8>,
    ) -> Result<Self, FormatError> {
        let head = header.encode();
        out.write_all(&head)?;
        let level = level.filter(|_| header.compressed());
        Ok(ArchiveWriter {
            out,
            sealer: FrameSealer::new(protection, &head, header.frame_size, level),
            buf: Vec::with_capacity(header.frame_size as usize),
            frame_size: header.frame_size as usize,
            frame_offset: HEADER_LEN as u64,
            payload_len: 0,
            index: IndexSpill::new(None),
            open: None,
            scratch: Vec::new(),
            with_stat: false,
        })
    }

    fn location(&self) -> Location {
        Location {
            frame_index: self.sealer.next_index(),
            frame_offset: self.frame_offset,
            offset_in_frame: self.buf.len() as u32,
        }
    }

    /// Append payload bytes, sealing every frame as soon as it is full so the
    /// buffer is never full between calls.
    fn push(&mut self, mut data: &[u8]) -> Result<(), FormatError> {
        self.payload_len += data.len() as u64;
        while !data.is_empty() {
            let take = (self.frame_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.frame_size {
                self.seal(false)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, last: bool) -> Result<(), FormatError> {
        self.frame_offset += self.sealer.seal(&self.buf, last, &mut self.out)?;
        self.buf.clear();
        Ok(())
    }

    /// Keep the index in memory only up to a limit, then in the sink that
    /// `opener` opens (once, when the limit is first reached). Call before
    /// the first entry.
    pub fn spill_index_with(&mut self, opener: SpillOpener) {
        self.index = IndexSpill::new(Some(opener));
    }

    /// Write the index with stat blocks (marker `0xFD`), as the tree
    /// strategies do so that an incremental backup can compare against
    /// it. Call before the first entry.
    pub fn index_stats(&mut self) {
        self.with_stat = true;
    }

    /// Start an entry; exactly `header.size` content bytes must follow.
    pub fn begin_entry(&mut self, header: &EntryHeader) -> Result<(), FormatError> {
        if self.open.is_some() {
            return Err(FormatError::Corrupt(
                "entry started before the previous one ended".into(),
            ));
        }
        let len = header.path.len();
        if len == 0 || len > MAX_PATH_LEN || u16::try_from(len).is_err() {
            return Err(FormatError::PathTooLong(len));
        }
        let at = self.location();
        let mut enc = std::mem::take(&mut self.scratch);
        enc.clear();
        header.encode(&mut enc);
        let r = self.push(&enc);
        self.scratch = enc;
        r?;
        let record = IndexRecord {
            kind: header.kind,
            path: header.path.clone(),
            size: header.size,
            at,
            status: STATUS_CLEAN,
            sha256: [0; 32],
            stat: None,
        };
        self.open = Some(OpenEntry {
            record,
            written: 0,
            hasher: Sha256::new(),
        });
        Ok(())
    }

    /// Content of the open entry, in any number of pieces.
    pub fn write_content(&mut self, data: &[u8]) -> Result<(), FormatError> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| FormatError::Corrupt("content outside an entry".into()))?;
        open.written += data.len() as u64;
        if open.written > open.record.size {
            return Err(FormatError::Corrupt(format!(
                "more content than declared for {}",
                String::from_utf8_lossy(&open.record.path)
            )));
        }
        open.hasher.update(data);
        self.push(data)
    }

    /// End the open entry with its status; returns the content's SHA-256.
    pub fn end_entry(&mut self, status: u8) -> Result<[u8; 32], FormatError> {
        self.end_entry_with(status, None, None)
    }

    /// End the open entry; `stat` goes into its index record (when the
    /// index has stat blocks).
    pub fn end_entry_stat(&mut self, status: u8, stat: IndexStat) -> Result<[u8; 32], FormatError> {
        self.end_entry_with(status, Some(stat), None)
    }

    /// A whole kind 5 entry: `header.kind` must be `Stored`, its size is
    /// set from the reference; the trailer holds `sha256`, the SHA-256 of
    /// the referenced content. Needs an index with stat blocks.
    pub fn stored_entry(
        &mut self,
        header: &EntryHeader,
        reference: &Reference,
        sha256: [u8; 32],
        stat: IndexStat,
    ) -> Result<(), FormatError> {
        let content = reference.encode();
        if header.kind != EntryKind::Stored
            || !self.with_stat
            || stat.holder != reference.holder.as_bytes()
        {
            return Err(FormatError::Corrupt(
                "a kind 5 entry needs its kind, a stat index and the same holder".into(),
            ));
        }
        let header = EntryHeader {
            size: content.len() as u64,
            ..header.clone()
        };
        self.begin_entry(&header)?;
        self.write_content(&content)?;
        self.end_entry_with(STATUS_CLEAN, Some(stat), Some(sha256))?;
        Ok(())
    }

    fn end_entry_with(
        &mut self,
        status: u8,
        stat: Option<IndexStat>,
        trailer_sha: Option<[u8; 32]>,
    ) -> Result<[u8; 32], FormatError> {
        let open = self
            .open
            .take()
            .ok_or_else(|| FormatError::Corrupt("no entry to end".into()))?;
        if open.written != open.record.size {
            return Err(FormatError::Corrupt(format!(
                "{} bytes written for {} but {} declared",
                open.written,
                String::from_utf8_lossy(&open.record.path),
                open.record.size
            )));
        }
        let content_sha: [u8; 32] = open.hasher.finalize().into();
        let sha256 = trailer_sha.unwrap_or(content_sha);
        let mut trailer = [0u8; 33];
        trailer[0] = status;
        trailer[1..].copy_from_slice(&sha256);
        self.push(&trailer)?;
        let mut enc = std::mem::take(&mut self.scratch);
        enc.clear();
        let record = IndexRecord {
            status,
            sha256,
            stat,
            ..open.record
        };
        if self.with_stat {
            record.encode_with_stat(&mut enc);
        } else {
            record.encode(&mut enc);
        }
        let spilled = self.index.push(&enc);
        self.scratch = enc;
        spilled?;
        Ok(sha256)
    }

    /// Write the index, the footer frame and the tail; hand back the sink.
    pub fn finish(mut self) -> Result<(W, WriteSummary), FormatError> {
        if self.open.is_some() {
            return Err(FormatError::Corrupt(
                "archive finished inside an entry".into(),
            ));
        }
        let index_at = self.location();
        self.push(&[if self.with_stat {
            INDEX_MARKER_STAT
        } else {
            INDEX_MARKER
        }])?;
        let index = std::mem::replace(&mut self.index, IndexSpill::new(None));
        let entries = index.records();
        index.drain(|bytes| self.push(bytes))?;
        if !self.buf.is_empty() {
            self.seal(false)?;
        }
        let footer = Footer {
            entry_count: entries,
            payload_len: self.payload_len,
            index_at,
        };
        let final_offset = self.frame_offset;
        let final_index = self.sealer.next_index();
        self.buf.extend_from_slice(&footer.encode());
        self.seal(true)?;
        self.out
            .write_all(&encode_tail(final_offset, final_index))?;
        self.out.flush()?;
        let summary = WriteSummary {
            archive_bytes: self.frame_offset + super::record::TAIL_LEN as u64,
            payload_bytes: self.payload_len,
            frames: self.sealer.next_index(),
            entries,
        };
        Ok((self.out, summary))
    }
}
