//! Reads an archive: sequentially (verify, full restore) or by index (one file).
//!
//! Sequential reading checks everything a reader can: every frame tag, that
//! the frames end on exactly one final frame followed by the tail, every
//! entry's SHA-256, and that the index and footer agree with the entries
//! actually seen. Content is handed out only from authenticated frames.

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::ahead::ReadAhead;
use super::frame::FrameOpener;
use super::header::{Header, HEADER_LEN};
use super::record::{
    decode_tail, ByteSource, EntryHeader, EntryKind, Footer, IndexRecord, INDEX_MARKER,
    INDEX_MARKER_STAT, TAIL_LEN, TRAILER_LEN,
};
use super::{FormatError, Location};
use crate::crypto::{ct_eq, KeyRing};

/// An entry's trailer: status byte and the SHA-256 the writer computed.
#[derive(Clone, Copy, Debug)]
pub struct Trailer {
    pub status: u8,
    pub sha256: [u8; 32],
}

struct OpenEntry {
    /// What the index must say about this entry (status and hash filled
    /// in at its end).
    record: IndexRecord,
    remaining: u64,
    hasher: Sha256,
}

pub struct ArchiveReader<R> {
    src: R,
    header: Header,
    opener: FrameOpener,
    /// Frames opened on other threads ahead of use (a sequential pass
    /// that asked for it: [`ArchiveReader::read_ahead`]).
    ahead: Option<ReadAhead>,
    /// Offset and index of the frame whose plaintext we are consuming.
    frame_offset: u64,
    frame_index: u64,
    next_offset: u64,
    pos: usize,
    len: usize,
    frame_is_last: bool,
    started: bool,
    footer: Option<Footer>,
    payload_read: u64,
    open: Option<OpenEntry>,
    /// Entries seen in a sequential pass and the SHA-256 of their index
    /// records, to check the index against in fixed memory.
    seen: u64,
    seen_hash: Sha256,
    sequential: bool,
    /// Random access that mostly moves forward (a chain's holder): frames
    /// are read ahead once reading runs on into a following frame, and a
    /// short forward seek walks through the read-ahead instead of jumping
    /// ([`ArchiveReader::read_ahead_forward`]).
    forward: bool,
}

/// A forward seek to a frame at most this many frames on walks through the
/// read-ahead (opening the frames between) rather than jumping, which
/// drops the frames in flight.
const WALK_FRAMES: u64 = 4;

impl<R: Read + Seek> ArchiveReader<R> {
    /// Read and check the header; `key` must be the archive's key if it is
    /// encrypted.
    pub fn open(mut src: R, key: Option<&KeyRing>) -> Result<Self, FormatError> {
        let mut head = [0u8; HEADER_LEN];
        src.read_exact(&mut head).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FormatError::NotAnArchive,
            _ => FormatError::Io(e),
        })?;
        let header = Header::decode(&head)?;
        let protection = header.protection(key)?;
        let opener = FrameOpener::new(protection, &head, header.frame_size, header.compressed());
        Ok(ArchiveReader {
            src,
            header,
            opener,
            ahead: None,
            frame_offset: HEADER_LEN as u64,
            frame_index: 0,
            next_offset: HEADER_LEN as u64,
            pos: 0,
            len: 0,
            frame_is_last: false,
            started: false,
            footer: None,
            payload_read: 0,
            open: None,
            seen: 0,
            seen_hash: Sha256::new(),
            sequential: true,
            forward: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn into_inner(mut self) -> R {
        self.ahead = None;
        self.src
    }

    /// Open the following frames on other threads while the caller uses
    /// the current one (see [`super::ahead`]). Only for a pass that reads
    /// the archive through from its first frame; a seek elsewhere ends it.
    /// Without a thread it silently reads serially.
    pub fn read_ahead(&mut self) {
        if !self.started && self.sequential && self.ahead.is_none() {
            self.ahead = ReadAhead::start(self.opener.codec(), self.opener.next_index());
        }
    }

    /// Turn forward read-ahead on or off for a reader used by seeks that
    /// mostly go forward (see [`super::ahead`]): with it on, once reading
    /// runs on from one frame into the next the following frames are
    /// opened on other threads, and a seek a few frames on walks through
    /// them. A seek further away, or back, drops them; they start again
    /// only when reading runs on again, so scattered small reads open
    /// nothing ahead. Off drops the frames in flight and their threads
    /// (between entries only: the next seek then reopens its frame).
    pub fn read_ahead_forward(&mut self, on: bool) {
        self.forward = on;
        if !on && self.ahead.is_some() && self.open.is_none() {
            self.ahead = None;
            // The current frame's plaintext went with the read-ahead.
            self.started = false;
        }
    }

    fn plain(&self) -> &[u8] {
        plain_of(&self.ahead, &self.opener)
    }

    fn open_frame(&mut self) -> Result<(), FormatError> {
        self.open_frame_from(true)
    }

    /// Open the next frame; `continuing`: reading runs on from the current
    /// one (not a jump), which starts forward read-ahead.
    fn open_frame_from(&mut self, continuing: bool) -> Result<(), FormatError> {
        if self.frame_is_last {
            return Err(FormatError::Corrupt("payload ends inside a record".into()));
        }
        let index = self.opener.next_index();
        if self.forward && continuing && self.started && self.ahead.is_none() {
            // The source is at this frame: a serial open leaves it there.
            self.ahead = ReadAhead::start(self.opener.codec(), index);
        }
        let info = match self.ahead.as_mut() {
            Some(ahead) => {
                let info = ahead.next(&mut self.src)?;
                self.opener.reposition(index.saturating_add(1));
                info
            }
            None => self.opener.open_next(&mut self.src)?,
        };
        self.frame_index = index;
        self.frame_offset = self.next_offset;
        self.next_offset += info.stored_bytes;
        self.pos = 0;
        self.len = self.plain().len();
        self.frame_is_last = info.last;
        self.started = true;
        if info.last {
            self.footer = Some(Footer::decode(self.plain())?);
            self.len = 0;
        }
        Ok(())
    }

    /// Where the next payload byte is.
    fn location(&self) -> Location {
        if !self.started || (self.pos == self.len && !self.frame_is_last) {
            let frame_index = if self.started {
                self.frame_index.saturating_add(1)
            } else {
                0
            };
            return Location {
                frame_index,
                frame_offset: self.next_offset,
                offset_in_frame: 0,
            };
        }
        Location {
            frame_index: self.frame_index,
            frame_offset: self.frame_offset,
            offset_in_frame: self.pos as u32,
        }
    }

    /// True once no payload byte is left (opens the next frame to find out).
    fn at_payload_end(&mut self) -> Result<bool, FormatError> {
        while self.pos == self.len {
            if self.frame_is_last {
                return Ok(true);
            }
            self.open_frame()?;
        }
        Ok(false)
    }

    /// The next entry, or `None` once the index is reached (in a sequential
    /// pass the index, footer and tail are then checked).
    pub fn next_entry(&mut self) -> Result<Option<EntryHeader>, FormatError> {
        if self.open.is_some() {
            return Err(FormatError::Corrupt(
                "next entry requested before the last one was read".into(),
            ));
        }
        let at = self.location();
        let kind = self.u8()?;
        if kind == INDEX_MARKER || kind == INDEX_MARKER_STAT {
            if self.sequential {
                self.check_index(at, kind == INDEX_MARKER_STAT)?;
            }
            return Ok(None);
        }
        let header = EntryHeader::decode_after_kind(EntryKind::from_byte(kind)?, self)?;
        self.open = Some(OpenEntry {
            record: IndexRecord {
                kind: header.kind,
                path: header.path.clone(),
                size: header.size,
                at,
                status: 0,
                sha256: [0; 32],
                stat: None,
            },
            remaining: header.size,
            hasher: Sha256::new(),
        });
        Ok(Some(header))
    }

    /// The next piece of the open entry's content; `None` when all is read.
    pub fn content_chunk(&mut self) -> Result<Option<&[u8]>, FormatError> {
        let remaining = match &self.open {
            Some(o) if o.remaining > 0 => o.remaining,
            _ => return Ok(None),
        };
        if self.pos == self.len {
            self.open_frame()?;
            if self.frame_is_last {
                return Err(FormatError::Corrupt("payload ends inside an entry".into()));
            }
        }
        let n = (self.len - self.pos).min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let start = self.pos;
        self.pos += n;
        self.payload_read += n as u64;
        let chunk = &plain_of(&self.ahead, &self.opener)[start..start + n];
        if let Some(o) = self.open.as_mut() {
            o.remaining -= n as u64;
            o.hasher.update(chunk);
        }
        Ok(Some(chunk))
    }

    /// Finish the open entry (skipping unread content) and check its hash.
    pub fn end_entry(&mut self) -> Result<Trailer, FormatError> {
        while self.content_chunk()?.is_some() {}
        let open = self
            .open
            .take()
            .ok_or_else(|| FormatError::Corrupt("no open entry".into()))?;
        let mut t = [0u8; TRAILER_LEN];
        self.bytes(&mut t)?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&t[1..]);
        let actual: [u8; 32] = open.hasher.finalize().into();
        // A kind 5 entry's content is the reference; its trailer holds the
        // SHA-256 of the referenced file content, checked where that
        // content is read (restore, verify).
        if open.record.kind != EntryKind::Stored && !ct_eq(&actual, &sha256) {
            return Err(FormatError::ContentMismatch(
                String::from_utf8_lossy(&open.record.path).into_owned(),
            ));
        }
        if self.sequential {
            let mut enc = Vec::with_capacity(open.record.path.len() + 64);
            IndexRecord {
                status: t[0],
                sha256,
                ..open.record
            }
            .encode(&mut enc);
            self.seen_hash.update(&enc);
            self.seen += 1;
        }
        Ok(Trailer {
            status: t[0],
            sha256,
        })
    }

    fn check_index(&mut self, index_at: Location, with_stat: bool) -> Result<(), FormatError> {
        let mut listed = 0u64;
        let mut listed_hash = Sha256::new();
        let mut enc = Vec::new();
        while !self.at_payload_end()? {
            enc.clear();
            let rec = if with_stat {
                IndexRecord::decode_with_stat(self)?
            } else {
                IndexRecord::decode(self)?
            };
            if with_stat && rec.kind == EntryKind::Stored {
                let holder = rec.stat.as_ref().map_or(&[][..], |s| &s.holder[..]);
                if holder.is_empty() {
                    return Err(FormatError::Corrupt(format!(
                        "the index names no archive for {}",
                        String::from_utf8_lossy(&rec.path)
                    )));
                }
            }
            rec.encode(&mut enc);
            listed_hash.update(&enc);
            listed += 1;
        }
        let seen_hash = std::mem::replace(&mut self.seen_hash, Sha256::new()).finalize();
        if listed != self.seen || listed_hash.finalize() != seen_hash {
            return Err(FormatError::Corrupt(format!(
                "the index lists {listed} entries that do not match the {} entries in the archive",
                self.seen
            )));
        }
        let footer = self.footer.clone().ok_or(FormatError::Truncated)?;
        let consistent = footer.entry_count == self.seen
            && footer.index_at == index_at
            && footer.payload_len == self.payload_read;
        if !consistent {
            return Err(FormatError::Corrupt(
                "footer disagrees with the payload".into(),
            ));
        }
        self.check_tail()
    }

    fn check_tail(&mut self) -> Result<(), FormatError> {
        let mut tail = [0u8; TAIL_LEN];
        self.src.read_exact(&mut tail)?;
        let (offset, index) = decode_tail(&tail)?;
        if offset != self.frame_offset || index != self.frame_index {
            return Err(FormatError::Corrupt(
                "tail does not point at the final frame".into(),
            ));
        }
        let mut extra = [0u8; 1];
        if self.src.read(&mut extra)? != 0 {
            return Err(FormatError::Corrupt(
                "bytes after the end of the archive".into(),
            ));
        }
        Ok(())
    }

    /// Random access: read the footer through the tail and return the index.
    pub fn read_index(&mut self) -> Result<Vec<IndexRecord>, FormatError> {
        let (count, with_stat) = self.open_index()?;
        let mut records = Vec::new();
        for _ in 0..count {
            records.push(self.index_record(with_stat)?);
        }
        Ok(records)
    }

    /// Random access: position at the first index record; returns the
    /// number of records and whether they carry stat blocks. Read them
    /// one by one with [`Self::index_record`] (fixed memory).
    pub fn open_index(&mut self) -> Result<(u64, bool), FormatError> {
        self.sequential = false;
        self.ahead = None;
        self.src
            .seek(SeekFrom::End(-(TAIL_LEN as i64)))
            .map_err(|_| FormatError::Truncated)?;
        let mut tail = [0u8; TAIL_LEN];
        self.src.read_exact(&mut tail)?;
        let (final_offset, final_index) = decode_tail(&tail)?;
        self.jump(final_offset, final_index)?;
        let footer = self.footer.clone().ok_or(FormatError::Corrupt(
            "tail does not point at the final frame".into(),
        ))?;
        self.seek_to(footer.index_at)?;
        let with_stat = match self.u8()? {
            INDEX_MARKER => false,
            INDEX_MARKER_STAT => true,
            _ => {
                return Err(FormatError::Corrupt(
                    "footer does not point at the index".into(),
                ))
            }
        };
        Ok((footer.entry_count, with_stat))
    }

    /// The next index record after [`Self::open_index`]; the caller counts.
    pub fn index_record(&mut self, with_stat: bool) -> Result<IndexRecord, FormatError> {
        if with_stat {
            IndexRecord::decode_with_stat(self)
        } else {
            IndexRecord::decode(self)
        }
    }

    /// Random access: position at a record location from the index.
    pub fn seek_to(&mut self, at: Location) -> Result<(), FormatError> {
        self.sequential = false;
        self.open = None;
        let same_frame = self.started
            && !self.frame_is_last
            && self.frame_index == at.frame_index
            && self.frame_offset == at.frame_offset;
        if !same_frame && !self.walk_to(at)? {
            self.jump(at.frame_offset, at.frame_index)?;
        }
        if at.offset_in_frame as usize > self.len {
            return Err(FormatError::Corrupt(
                "index points outside its frame".into(),
            ));
        }
        self.pos = at.offset_in_frame as usize;
        Ok(())
    }

    /// With frames read ahead and `at` a few frames on, open the frames up
    /// to it from the read-ahead (each checked as any frame is). False when
    /// that does not apply, a frame on the way does not open, or the frame
    /// reached is not where `at` says: the caller jumps.
    fn walk_to(&mut self, at: Location) -> Result<bool, FormatError> {
        let next = self.opener.next_index();
        if self.ahead.is_none()
            || !self.started
            || self.frame_is_last
            || at.frame_index < next
            || at.frame_index - next >= WALK_FRAMES
        {
            return Ok(false);
        }
        while self.frame_index != at.frame_index {
            // A frame that does not open here (damaged, cut) is left to
            // the jump: a serial reader skips the frames in between and
            // fails, or not, exactly where this one must.
            if self.frame_is_last || self.open_frame().is_err() {
                return Ok(false);
            }
        }
        Ok(self.frame_offset == at.frame_offset && !self.frame_is_last)
    }

    fn jump(&mut self, offset: u64, index: u64) -> Result<(), FormatError> {
        if offset < HEADER_LEN as u64 {
            return Err(FormatError::Corrupt("offset inside the header".into()));
        }
        // The read-ahead source position is past this frame's.
        self.ahead = None;
        self.src.seek(SeekFrom::Start(offset))?;
        self.opener.reposition(index);
        self.next_offset = offset;
        self.frame_is_last = false;
        self.open_frame_from(false)
    }
}

/// The plaintext of the frame being consumed (a free function, so that
/// callers can borrow it beside other fields).
fn plain_of<'a>(ahead: &'a Option<ReadAhead>, opener: &'a FrameOpener) -> &'a [u8] {
    match ahead {
        Some(a) => a.plain(),
        None => opener.plain(),
    }
}

impl<R: Read + Seek> ByteSource for ArchiveReader<R> {
    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.pos == self.len {
                self.open_frame()?;
                if self.frame_is_last {
                    return Err(FormatError::Corrupt("payload ends inside a record".into()));
                }
            }
            let n = (self.len - self.pos).min(buf.len() - filled);
            buf[filled..filled + n]
                .copy_from_slice(&plain_of(&self.ahead, &self.opener)[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
        }
        self.payload_read += buf.len() as u64;
        Ok(())
    }
}
