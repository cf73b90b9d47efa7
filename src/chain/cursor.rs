//! A forward-only cursor over one archive's index, for merge-joins in
//! canonical entry order. Memory is fixed: the reader's frame buffers and
//! one record. Every index frame read is authenticated by its tag (the
//! reader checks it before handing out a byte); records must come in
//! strictly increasing canonical order, else the index is refused.

use std::cmp::Ordering;

use crate::crypto::KeyRing;
use crate::error::{Error, Result};
use crate::format::{ArchiveReader, FormatError, IndexRecord};
use crate::store::parts::PartReader;
use crate::store::Listed;

pub struct IndexCursor {
    id: String,
    sources: Vec<String>,
    reader: ArchiveReader<PartReader>,
    remaining: u64,
    with_stat: bool,
    current: Option<IndexRecord>,
    last: Option<Vec<u8>>,
}

/// Open an archive's parts and check that its header is the one its
/// (authenticated) sidecar copied.
pub fn open_reader(archive: &Listed, key: Option<&KeyRing>) -> Result<ArchiveReader<PartReader>> {
    let parts = PartReader::open(&archive.dir, &archive.meta.parts)?;
    let r = ArchiveReader::open(parts, key).map_err(|e| archive_err(&archive.meta.id, e))?;
    if r.header() != &archive.header {
        return Err(archive_err(&archive.meta.id, FormatError::HeaderMismatch));
    }
    Ok(r)
}

pub fn archive_err(id: &str, source: FormatError) -> Error {
    Error::Archive {
        id: id.to_string(),
        source,
    }
}

impl IndexCursor {
    pub fn open(archive: &Listed, key: Option<&KeyRing>) -> Result<IndexCursor> {
        let mut reader = open_reader(archive, key)?;
        let (remaining, with_stat) = reader
            .open_index()
            .map_err(|e| archive_err(&archive.meta.id, e))?;
        Ok(IndexCursor {
            id: archive.meta.id.clone(),
            sources: archive.meta.sources.clone(),
            reader,
            remaining,
            with_stat,
            current: None,
            last: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the index carries stat blocks (what an incremental backup
    /// compares against).
    pub fn with_stat(&self) -> bool {
        self.with_stat
    }

    /// Advance to `path`: its record, or `None` when the index has none
    /// (the cursor then stays at the first record after it). Paths asked
    /// for must not go backwards.
    pub fn seek(&mut self, path: &[u8]) -> std::result::Result<Option<&IndexRecord>, FormatError> {
        loop {
            if self.current.is_none() {
                if self.remaining == 0 {
                    return Ok(None);
                }
                let rec = self.reader.index_record(self.with_stat)?;
                self.remaining -= 1;
                if let Some(last) = &self.last {
                    if super::order::cmp(&self.sources, last, &rec.path) != Ordering::Less {
                        return Err(FormatError::Corrupt(format!(
                            "the index is not in canonical order at {}",
                            String::from_utf8_lossy(&rec.path)
                        )));
                    }
                }
                self.last = Some(rec.path.clone());
                self.current = Some(rec);
            }
            let Some(cur) = &self.current else {
                continue;
            };
            match super::order::cmp(&self.sources, &cur.path, path) {
                Ordering::Less => self.current = None,
                Ordering::Equal => return Ok(self.current.as_ref()),
                Ordering::Greater => return Ok(None),
            }
        }
    }
}
