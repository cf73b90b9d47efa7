//! The restore journal: what phase 1 did, in order, so that phase 2 can
//! publish it and an abandoned restore can undo it, in fixed memory.
//!
//! The journal is a script of directory moves and staged names: `Root`
//! (start over at a restore root), `Enter` (go up to a depth, then into a
//! child directory, with the device and inode it had), `Fix` (the current
//! directory's recorded mode, owner and time), `Staged` (a temporary name
//! in the current directory and what it becomes). Replaying it walks the
//! same directories by descriptor, which is how publish and undo re-check
//! every directory's identity without keeping any path.
//!
//! Invariants: records are kept in memory up to [`IN_MEMORY_LIMIT`] bytes,
//! then everything moves to an unnamed temporary file (`O_TMPFILE` in the
//! restore root, which vanishes with the process); `Staged` records of
//! regular files carry their archive path and appear in strictly increasing
//! canonical order, so [`Journal::find_file`] can binary-search them
//! through a sparse index of every [`SPARSE_EVERY`]th one.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use super::order::canonical_cmp;
use crate::safefs::Dir;

/// Bytes of journal kept in memory before it moves to a temporary file.
pub const IN_MEMORY_LIMIT: usize = 256 * 1024;
/// One sparse-index point per this many regular-file records.
pub const SPARSE_EVERY: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Database,
    Symlink,
    HardLink,
}

/// Where a staged regular file is, to make hard links to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    pub root: u32,
    pub path: Vec<u8>,
    pub parent_dev: u64,
    pub parent_ino: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rec {
    Root {
        index: u32,
    },
    Enter {
        depth: u32,
        name: Vec<u8>,
        dev: u64,
        ino: u64,
        created: bool,
    },
    /// The recorded metadata of the directory at `depth` (the one the
    /// stack ends in once cut to `depth` levels).
    Fix {
        depth: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        nsec: u32,
    },
    /// A staged name in the directory at `depth`.
    Staged {
        depth: u32,
        kind: Kind,
        name: Vec<u8>,
        tmp: u64,
        dev: u64,
        ino: u64,
        key: Option<FileKey>,
    },
}

pub struct Journal {
    mem: Vec<u8>,
    file: Option<(File, io::BufWriter<File>)>,
    len: u64,
    spill_dir: Option<Dir>,
    /// Offsets of every `SPARSE_EVERY`th regular-file record.
    sparse: Vec<u64>,
    files: u64,
    cache_at: u64,
    cache: Vec<u8>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            mem: Vec::new(),
            file: None,
            len: 0,
            spill_dir: None,
            sparse: Vec::new(),
            files: 0,
            cache_at: 0,
            cache: Vec::new(),
        }
    }

    /// Where to put the temporary file once memory is full.
    pub fn spill_into(&mut self, dir: &Dir) -> io::Result<()> {
        if self.spill_dir.is_none() {
            self.spill_dir = Some(dir.try_clone()?);
        }
        Ok(())
    }

    pub fn push(&mut self, rec: &Rec) -> io::Result<()> {
        let body = postcard::to_stdvec(rec).map_err(io::Error::other)?;
        if let Rec::Staged { key: Some(_), .. } = rec {
            if self.files.is_multiple_of(SPARSE_EVERY) {
                self.sparse.push(self.len);
            }
            self.files += 1;
        }
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        if self.file.is_none() && self.mem.len() + bytes.len() > IN_MEMORY_LIMIT {
            if let Some(dir) = &self.spill_dir {
                let f = dir.temp_file(
                    format!(".rvm-restore-{}-journal.tmp", std::process::id()).as_bytes(),
                )?;
                let mut w = io::BufWriter::with_capacity(64 * 1024, f.try_clone()?);
                w.write_all(&self.mem)?;
                self.mem = Vec::new();
                self.file = Some((f, w));
            }
        }
        match &mut self.file {
            Some((_, w)) => w.write_all(&bytes)?,
            None => self.mem.extend_from_slice(&bytes),
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn read_exact_at(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        let end = at
            .checked_add(n as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| io::Error::other("restore journal is damaged"))?;
        match &mut self.file {
            None => Ok(&self.mem[at as usize..end as usize]),
            Some((f, w)) => {
                let cache_end = self.cache_at + self.cache.len() as u64;
                if at < self.cache_at || end > cache_end {
                    w.flush()?;
                    let want = n.max(64 * 1024).min((self.len - at) as usize);
                    self.cache.resize(want, 0);
                    f.read_exact_at(&mut self.cache, at)?;
                    self.cache_at = at;
                }
                let from = (at - self.cache_at) as usize;
                Ok(&self.cache[from..from + n])
            }
        }
    }

    /// The record at `at` and the offset of the next one.
    pub fn read(&mut self, at: u64) -> io::Result<(Rec, u64)> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.read_exact_at(at, 4)?);
        let n = u32::from_le_bytes(len) as usize;
        let body = self.read_exact_at(at + 4, n)?;
        let rec = postcard::from_bytes(body).map_err(io::Error::other)?;
        Ok((rec, at + 4 + n as u64))
    }

    /// Offset just past the last record.
    pub fn end(&self) -> u64 {
        self.len
    }

    /// The staged regular file with archive path `path` below source
    /// `root`, if one was journaled.
    pub fn find_file(&mut self, root: u32, path: &[u8]) -> io::Result<Option<(u64, Rec)>> {
        let cmp = |k: &FileKey| k.root.cmp(&root).then_with(|| canonical_cmp(&k.path, path));
        // Last sparse point whose key is <= the wanted one.
        let (mut lo, mut hi) = (0usize, self.sparse.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (rec, _) = self.read(self.sparse[mid])?;
            match &rec {
                Rec::Staged { key: Some(k), .. } if cmp(k) != Ordering::Greater => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let mut at = self.sparse[lo - 1];
        while at < self.len {
            let (rec, next) = self.read(at)?;
            if let Rec::Staged { key: Some(k), .. } = &rec {
                match cmp(k) {
                    Ordering::Equal => return Ok(Some((at, rec))),
                    Ordering::Greater => return Ok(None),
                    Ordering::Less => {}
                }
            }
            at = next;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: u32) -> Rec {
        Rec::Staged {
            depth: 0,
            kind: Kind::File,
            name: format!("f{i:06}").into_bytes(),
            tmp: u64::from(i),
            dev: 1,
            ino: u64::from(i),
            key: Some(FileKey {
                root: 0,
                path: format!("/r/f{i:06}").into_bytes(),
                parent_dev: 1,
                parent_ino: 2,
            }),
        }
    }

    #[test]
    fn spills_streams_back_and_finds_files() {
        let dir = Dir::open_path(&std::env::temp_dir()).unwrap();
        let mut j = Journal::new();
        j.spill_into(&dir).unwrap();
        j.push(&Rec::Root { index: 0 }).unwrap();
        for i in 0..20_000 {
            j.push(&file(i)).unwrap();
            if i % 7 == 0 {
                j.push(&Rec::Fix {
                    depth: 0,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    nsec: 0,
                })
                .unwrap();
            }
        }
        assert!(j.file.is_some(), "must have spilled");
        assert!(j.mem.is_empty());
        let (mut at, mut n) = (0, 0);
        while at < j.end() {
            let (rec, next) = j.read(at).unwrap();
            if matches!(rec, Rec::Staged { .. }) {
                assert_eq!(rec, file(n));
                n += 1;
            }
            at = next;
        }
        assert_eq!(n, 20_000);
        for i in [0, 1, 63, 64, 65, 12_345, 19_999] {
            let (_, rec) = j
                .find_file(0, format!("/r/f{i:06}").as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(rec, file(i));
        }
        assert!(j.find_file(0, b"/r/f0123450").unwrap().is_none());
        assert!(j.find_file(0, b"/a").unwrap().is_none());
        assert!(j.find_file(1, b"/r/f000001").unwrap().is_none());
    }
}
