//! Resolving kind 5 entries: find the kind 1 entry that holds a file's
//! content in the archive the reference names.
//!
//! The entries of an archive come in canonical order, and so do the index
//! records of each holder, so one forward [`IndexCursor`] per holder finds
//! every reference in one pass over that holder's index, and one content
//! reader per holder reads the content (a seek within the current frame
//! does not reopen it). At most [`MAX_CHAIN`] holders are opened; memory is
//! two readers' frame buffers per holder, whatever the number of files,
//! and one read-ahead (`format::ahead`, forward mode) for the holder being
//! read, so that the content of large unchanged files streams on both
//! cores.

use crate::crypto::KeyRing;
use crate::error::{msg, Result};
use crate::format::record::Reference;
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::store::parts::PartReader;
use crate::store::Listed;

use super::cursor::{archive_err, open_reader, IndexCursor};
use super::MAX_CHAIN;

struct Holder {
    cursor: IndexCursor,
    content: Option<ArchiveReader<PartReader>>,
    listed: Listed,
}

/// The holders of one archive's references.
pub struct Holders<'a> {
    /// The archive being read (its id names it in errors).
    of: &'a Listed,
    archives: &'a [Listed],
    key: Option<&'a KeyRing>,
    open: Vec<Holder>,
}

impl<'a> Holders<'a> {
    /// `archives`: the store's listing (any strategies).
    pub fn new(of: &'a Listed, archives: &'a [Listed], key: Option<&'a KeyRing>) -> Self {
        Holders {
            of,
            archives,
            key,
            open: Vec::new(),
        }
    }

    /// The ids of the holders used so far.
    pub fn used(&self) -> Vec<&Listed> {
        self.open.iter().map(|h| &h.listed).collect()
    }

    fn holder(&mut self, id: &str, path: &[u8]) -> Result<usize> {
        if let Some(i) = self.open.iter().position(|h| h.cursor.id() == id) {
            return Ok(i);
        }
        let of = &self.of.meta;
        let Some(listed) = self
            .archives
            .iter()
            .find(|a| a.meta.id == id && a.meta.strategy == of.strategy)
        else {
            return Err(msg(format!(
                "archive {} keeps the content of {} in archive {id}, which is missing or unreadable; restore an older full archive (or put {id} back)",
                of.id,
                String::from_utf8_lossy(path)
            )));
        };
        if listed.meta.sources != of.sources || listed.meta.id == of.id {
            return Err(msg(format!(
                "archive {} refers to archive {id}, which backs up other paths; refusing it",
                of.id
            )));
        }
        if self.open.len() >= MAX_CHAIN {
            return Err(msg(format!(
                "archive {} refers to more than {MAX_CHAIN} earlier archives; refusing it",
                of.id
            )));
        }
        let cursor = IndexCursor::open(listed, self.key)?;
        self.open.push(Holder {
            cursor,
            content: None,
            listed: listed.clone(),
        });
        Ok(self.open.len() - 1)
    }

    /// Check that the holder the reference names holds `path` as a file
    /// of that size and SHA-256 (by its index). Returns its position.
    pub fn check(
        &mut self,
        path: &[u8],
        reference: &Reference,
        sha256: &[u8; 32],
    ) -> Result<usize> {
        let i = self.holder(&reference.holder, path)?;
        let id = reference.holder.clone();
        let of_id = self.of.meta.id.clone();
        let bad = |why: &str| {
            msg(format!(
                "archive {id} does not hold {} as archive {of_id} says ({why}): the chain is damaged; verify {id}, and restore from another archive",
                String::from_utf8_lossy(path),
            ))
        };
        let rec = self.open[i]
            .cursor
            .seek(path)
            .map_err(|e| archive_err(&id, e))?;
        match rec {
            None => Err(bad("no such entry")),
            Some(r) if r.kind != EntryKind::File => Err(bad("not a file entry")),
            Some(r) if r.size != reference.file_size => Err(bad("another size")),
            Some(r) if !crate::crypto::ct_eq(&r.sha256, sha256) => Err(bad("another SHA-256")),
            Some(_) => Ok(i),
        }
    }

    /// Position a reader at the content of `path` in its holder (after
    /// [`Self::check`]): the caller reads the content and ends the entry
    /// (which checks the holder's trailer hash).
    pub fn locate(
        &mut self,
        path: &[u8],
        reference: &Reference,
        sha256: &[u8; 32],
    ) -> Result<(&mut ArchiveReader<PartReader>, String)> {
        let i = self.check(path, reference, sha256)?;
        let id = reference.holder.clone();
        // Frames are read ahead for one holder at a time (memory stays
        // that of one read-ahead, whatever the chain's length): the one
        // being read now.
        for (n, h) in self.open.iter_mut().enumerate() {
            if n != i {
                if let Some(r) = h.content.as_mut() {
                    r.read_ahead_forward(false);
                }
            }
        }
        let holder = &mut self.open[i];
        let at = holder
            .cursor
            .seek(path)
            .map_err(|e| archive_err(&id, e))?
            .map(|r| r.at)
            .ok_or_else(|| msg("internal error: the holder's record vanished"))?;
        if holder.content.is_none() {
            holder.content = Some(open_reader(&holder.listed, self.key)?);
        }
        let Some(r) = holder.content.as_mut() else {
            return Err(msg("internal error: no content reader"));
        };
        r.read_ahead_forward(true);
        r.seek_to(at).map_err(|e| archive_err(&id, e))?;
        let h: Option<EntryHeader> = r.next_entry().map_err(|e| archive_err(&id, e))?;
        match h {
            Some(h)
                if h.path == path && h.kind == EntryKind::File && h.size == reference.file_size =>
            {
                Ok((r, id))
            }
            _ => Err(archive_err(
                &id,
                FormatError::Corrupt("index points at another entry".into()),
            )),
        }
    }
}

/// Read a kind 5 entry's content (the reference, at most a few hundred
/// bytes) and its trailer.
pub fn read_reference(
    r: &mut ArchiveReader<PartReader>,
) -> std::result::Result<(Reference, crate::format::reader::Trailer), FormatError> {
    let mut v = Vec::new();
    while let Some(c) = r.content_chunk()? {
        v.extend_from_slice(c);
        if v.len() > crate::format::record::MAX_REFERENCE_LEN {
            return Err(FormatError::Corrupt("reference too long".into()));
        }
    }
    let t = r.end_entry()?;
    Ok((Reference::decode(&v)?, t))
}
