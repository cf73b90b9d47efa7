//! Walks configured file trees in a stable order, without following links.
//!
//! Depth first, each directory before its children, names sorted bytewise.
//! Symlinks are reported as links (never followed); sockets, fifos and
//! devices are reported as skipped. The walker holds one sorted name list
//! per open directory level, not the whole tree.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::exclude::Excludes;

#[derive(Debug)]
pub enum Found {
    Dir(PathBuf, Metadata),
    File(PathBuf, Metadata),
    Symlink(PathBuf, Metadata, Vec<u8>),
    /// Not backed up, with the reason (also used for unreadable entries).
    Skipped(PathBuf, String),
}

pub struct Walker {
    /// Roots still to visit, in reverse order.
    roots: Vec<PathBuf>,
    /// Per open directory: remaining child names, reversed (pop = next).
    stack: Vec<(PathBuf, Vec<OsString>)>,
    excludes: Excludes,
    /// Paths never entered (the backup directory itself).
    avoid: Vec<PathBuf>,
}

impl Walker {
    pub fn new(roots: &[PathBuf], excludes: Excludes, avoid: Vec<PathBuf>) -> Walker {
        let mut roots = roots.to_vec();
        roots.reverse();
        Walker {
            roots,
            stack: Vec::new(),
            excludes,
            avoid,
        }
    }

    fn next_path(&mut self) -> Option<PathBuf> {
        while let Some((dir, names)) = self.stack.last_mut() {
            if let Some(name) = names.pop() {
                return Some(dir.join(name));
            }
            self.stack.pop();
        }
        self.roots.pop()
    }

    fn visit(&mut self, path: PathBuf) -> Option<Found> {
        if self.excludes.matches(path.as_os_str().as_bytes())
            || self.avoid.iter().any(|a| a == &path)
        {
            return None;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => return Some(Found::Skipped(path, format!("cannot stat: {e}"))),
        };
        let ft = meta.file_type();
        Some(if ft.is_dir() {
            match read_sorted(&path) {
                Ok(names) => {
                    self.stack.push((path.clone(), names));
                    Found::Dir(path, meta)
                }
                Err(e) => Found::Skipped(path, format!("cannot read directory: {e}")),
            }
        } else if ft.is_file() {
            Found::File(path, meta)
        } else if ft.is_symlink() {
            match fs::read_link(&path) {
                Ok(t) => Found::Symlink(path, meta, t.into_os_string().into_vec()),
                Err(e) => Found::Skipped(path, format!("cannot read link: {e}")),
            }
        } else {
            Found::Skipped(
                path,
                "not a regular file, directory or symlink (socket, fifo or device)".into(),
            )
        })
    }
}

impl Iterator for Walker {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            let path = self.next_path()?;
            if let Some(found) = self.visit(path) {
                return Some(found);
            }
        }
    }
}

fn read_sorted(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
