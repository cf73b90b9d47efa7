//! The archive format, version 1 (specified in prose in `docs/format.md`).
//!
//! An archive is one logical byte stream (possibly split into parts by the
//! store): a 64-byte plaintext header, a sequence of authenticated frames, and
//! a 24-byte tail. The frames carry the *payload*: entry records followed by
//! an index. This module tree owns the byte layout and nothing else: it reads
//! and writes `Read`/`Write` streams and never touches the file system.
//!
//! - `header`: the plaintext header and which keys it needs;
//! - `frame`: deflate + AES-CTR + HMAC of one frame (the STREAM-like layer);
//! - `record`: entry, index and footer records inside the payload;
//! - `writer` / `reader`: the archive as a whole;
//! - `pages`: the contents of the database chain entries (kinds 8, 9);
//! - `sidecar`: the authenticated postcard metadata file next to an archive.

pub(crate) mod ahead;
pub mod frame;
pub mod header;
pub mod pages;
pub mod reader;
pub mod record;
pub mod sidecar;
pub mod spill;
pub mod writer;

use crate::crypto::KeyId;

pub use header::Header;
pub use reader::ArchiveReader;
pub use record::{EntryHeader, EntryKind, IndexRecord};
pub use writer::ArchiveWriter;

/// Everything that can be wrong with an archive's bytes or the key used to
/// read them. Messages say what an operator can do about it.
#[derive(Debug)]
pub enum FormatError {
    Io(std::io::Error),
    NotAnArchive,
    UnsupportedVersion(u16),
    BadHeader(&'static str),
    NeedKey(KeyId),
    /// The key ring lacks the archive's key; `have` lists the ring's ids.
    WrongKey {
        needed: KeyId,
        have: Vec<KeyId>,
    },
    Tampered {
        frame: u64,
    },
    Truncated,
    Corrupt(String),
    UnsafePath(String),
    ContentMismatch(String),
    SidecarTampered,
    /// The archive's header is not the one its sidecar copied.
    HeaderMismatch,
    /// A part's bytes do not hash to what the sidecar records.
    PartMismatch(String),
    /// The entries read do not add up to the sidecar's counts.
    CountsMismatch,
    /// A database image does not pass SQLite's integrity check (the
    /// first problem SQLite reported).
    DatabaseDamaged(String),
    /// An entry path longer than `record::MAX_PATH_LEN` bytes (or empty):
    /// refused by the writer rather than stored as something no reader
    /// accepts.
    PathTooLong(usize),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use FormatError::*;
        match self {
            Io(e) => write!(f, "cannot read archive: {e}"),
            NotAnArchive => write!(f, "not an rvm-backup archive (bad magic bytes)"),
            UnsupportedVersion(v) => {
                write!(f, "archive format version {v} is not supported by this rvm-backup; upgrade rvm-backup")
            }
            BadHeader(why) => write!(f, "archive header is damaged: {why}"),
            NeedKey(id) => write!(f, "archive is encrypted with key {id}; set key_file to that key"),
            WrongKey { needed, have } => {
                let have: Vec<String> = have.iter().map(KeyId::to_string).collect();
                let (what, have) = match have.as_slice() {
                    [one] => ("key is", one.clone()),
                    _ => ("key ring holds", have.join(", ")),
                };
                write!(
                    f,
                    "archive needs key {needed} but the configured {what} {have}; point key_file at key {needed} (or add it to the key ring)"
                )
            }
            Tampered { frame } => write!(
                f,
                "authentication failed at frame {frame}: the archive is corrupted or was tampered with; restore from another archive"
            ),
            Truncated => write!(f, "archive is truncated (its final frame is missing); restore from another archive"),
            Corrupt(why) => write!(f, "archive is inconsistent: {why}"),
            UnsafePath(p) => write!(f, "archive holds an unsafe path {p:?}; refusing it"),
            PathTooLong(n) => write!(
                f,
                "a path of {n} bytes cannot be stored (archive paths are 1 to {} bytes)",
                record::MAX_PATH_LEN
            ),
            ContentMismatch(p) => write!(f, "content of {p} does not match its SHA-256 in the archive"),
            SidecarTampered => write!(
                f,
                "sidecar authentication failed: the metadata file is corrupted, tampered with, or made with another key"
            ),
            HeaderMismatch => write!(
                f,
                "the archive's header does not match its sidecar (parts of two archives mixed up?); restore from another archive"
            ),
            PartMismatch(name) => write!(
                f,
                "part {name} does not match the SHA-256 in its sidecar; restore from another archive"
            ),
            CountsMismatch => write!(f, "its content does not match the counts in its sidecar"),
            DatabaseDamaged(why) => write!(
                f,
                "the database image fails SQLite's integrity check ({why})"
            ),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FormatError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for FormatError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::Truncated
        } else {
            FormatError::Io(e)
        }
    }
}

/// Where a record starts: the frame that holds its first byte, that frame's
/// byte offset in the archive stream, and the offset inside its plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub frame_index: u64,
    pub frame_offset: u64,
    pub offset_in_frame: u32,
}
