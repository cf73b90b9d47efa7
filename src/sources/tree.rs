//! Walks configured file trees in a stable order, without following links.
//!
//! Order (restore requires it): roots in config order; under each, depth
//! first, each directory before its children, names sorted bytewise.
//! Symlinks are reported as links (never followed); sockets, fifos and
//! devices are reported as skipped. The walker holds one sorted name list
//! and one directory descriptor per open directory level, not the whole tree.
//!
//! Why descriptors: backup runs as root over directories other users own.
//! A path looked up twice can name two different things if someone swaps a
//! component for a symlink in between. So every directory is opened
//! relative to its parent's descriptor with `O_NOFOLLOW`, its children are
//! `lstat`ed and `readlink`ed relative to it, and every regular file is
//! opened relative to it with `O_NOFOLLOW | O_NONBLOCK` and then `fstat`ed:
//! unless the opened inode is the very one the walk saw (same device and
//! inode, still a regular file, or still a directory) it is skipped with a
//! warning. Only the configured roots' own parent directories are looked up
//! by path (they are the administrator's, not the tree owners').
//!
//! Limits: what is stored must be restorable, and tree owners choose how
//! deep and long their paths are. An entry whose path is longer than
//! [`MAX_PATH_LEN`] bytes, and a directory whose path has more than
//! [`MAX_DIR_DEPTH`] components (the depth restore follows, see there), is
//! reported as skipped and not entered: one warning, nothing below it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

use super::exclude::Excludes;
use crate::format::record::{MAX_DIR_DEPTH, MAX_PATH_LEN};

/// What `lstat`/`fstat` said about an entry, in portable types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub dev: u64,
    pub ino: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

impl Info {
    // The field types of `struct stat` differ between architectures (u32
    // on one is u64 on another), so some casts are no-ops on some targets.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn from_stat(s: &rustix::fs::Stat) -> Info {
        Info {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            size: u64::try_from(s.st_size).unwrap_or(0),
            mtime: s.st_mtime as i64,
            mtime_nsec: (s.st_mtime_nsec as u64).min(999_999_999) as u32,
            ctime: s.st_ctime as i64,
            ctime_nsec: (s.st_ctime_nsec as u64).min(999_999_999) as u32,
        }
    }

    /// `fstat` of an open descriptor.
    pub fn of(fd: impl AsFd) -> io::Result<Info> {
        Ok(Info::from_stat(&rustix::fs::fstat(fd)?))
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode as rustix::fs::RawMode)
    }

    /// Same device and inode.
    pub fn same_inode(&self, other: &Info) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

#[derive(Debug)]
pub enum Found {
    Dir(PathBuf, Info),
    /// A regular file, already opened: `Info` is the `fstat` of `File`,
    /// which is checked to be the inode the walk listed.
    File(PathBuf, Info, File),
    Symlink(PathBuf, Info, Vec<u8>),
    /// Not backed up, with the reason (also used for unreadable entries).
    Skipped(PathBuf, String),
    /// A configured root that an exclude pattern (the second field)
    /// matches: nothing under it is stored.
    RootExcluded(PathBuf, String),
}

struct Level {
    fd: OwnedFd,
    path: PathBuf,
    /// Remaining child names, reversed (pop = next).
    names: Vec<OsString>,
}

pub struct Walker {
    /// Roots still to visit, in reverse order.
    roots: Vec<PathBuf>,
    stack: Vec<Level>,
    excludes: Excludes,
    /// Never entered: the backup directory, by path and by (device, inode),
    /// so it is avoided however it is reached (bind mounts, other names).
    avoid_paths: Vec<PathBuf>,
    avoid_ids: Vec<(u64, u64)>,
}

impl Walker {
    pub fn new(roots: &[PathBuf], excludes: Excludes, avoid: Vec<PathBuf>) -> Walker {
        let mut roots = roots.to_vec();
        roots.reverse();
        let avoid_ids = avoid
            .iter()
            .filter_map(|p| rustix::fs::stat(p.as_path()).ok())
            .map(|s| {
                let i = Info::from_stat(&s);
                (i.dev, i.ino)
            })
            .collect();
        Walker {
            roots,
            stack: Vec::new(),
            excludes,
            avoid_paths: avoid,
            avoid_ids,
        }
    }

    fn visit_root(&mut self, root: PathBuf) -> Option<Found> {
        if let Some(pattern) = self.excludes.matching(root.as_os_str().as_bytes()) {
            return Some(Found::RootExcluded(root, pattern.to_string()));
        }
        // The root's parent is configuration, looked up by path; the root
        // itself is opened relative to it like every other entry.
        let (parent, name): (OwnedFd, &OsStr) = match (root.parent(), root.file_name()) {
            (Some(parent), Some(name)) => {
                match rustix::fs::open(
                    parent,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => (fd, name),
                    Err(e) => {
                        return Some(Found::Skipped(
                            root.clone(),
                            format!(
                                "cannot open its directory {}: {}",
                                parent.display(),
                                io::Error::from(e)
                            ),
                        ))
                    }
                }
            }
            // "/" itself.
            _ => match rustix::fs::open(
                "/",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let found = visit_dir_fd(fd, root.clone(), None);
                    return self.push(found);
                }
                Err(e) => {
                    return Some(Found::Skipped(
                        root,
                        format!("cannot open: {}", io::Error::from(e)),
                    ))
                }
            },
        };
        let name = name.to_os_string();
        let found = self.visit(parent.as_fd(), &name, root);
        self.push(found)
    }

    fn push(&mut self, found: Option<(Found, Option<Level>)>) -> Option<Found> {
        let (found, level) = found?;
        if let Some(level) = level {
            self.stack.push(level);
        }
        Some(found)
    }

    /// Look at `name` in the directory `parent` (whose path + name is `path`).
    fn visit(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: PathBuf,
    ) -> Option<(Found, Option<Level>)> {
        if self.excludes.matches(path.as_os_str().as_bytes())
            || self.avoid_paths.iter().any(|a| a == &path)
        {
            return None;
        }
        let len = path.as_os_str().len();
        if len > MAX_PATH_LEN {
            return Some((
                Found::Skipped(
                    path,
                    format!("its path is {len} bytes long, more than the {MAX_PATH_LEN} an archive holds; not stored (nor anything below it)"),
                ),
                None,
            ));
        }
        let info = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => Info::from_stat(&s),
            Err(e) => {
                return Some((
                    Found::Skipped(path, format!("cannot stat: {}", io::Error::from(e))),
                    None,
                ))
            }
        };
        let skipped = |path, why: String| Some((Found::Skipped(path, why), None));
        match info.file_type() {
            FileType::Directory => {
                if self.avoid_ids.contains(&(info.dev, info.ino)) {
                    log::debug!(
                        "not entering {}: it is the backup directory",
                        path.display()
                    );
                    return None;
                }
                let depth = depth_of(&path);
                if depth > MAX_DIR_DEPTH {
                    return skipped(
                        path,
                        format!("it is nested {depth} directories deep, more than the {MAX_DIR_DEPTH} restore handles; not stored (nor anything below it)"),
                    );
                }
                match rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY
                        | OFlags::DIRECTORY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC
                        | OFlags::NONBLOCK,
                    Mode::empty(),
                ) {
                    Ok(fd) => visit_dir_fd(fd, path, Some(&info)),
                    Err(e) => skipped(path, open_error("directory", e)),
                }
            }
            FileType::RegularFile => {
                let fd = match rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) => return skipped(path, open_error("file", e)),
                };
                let now = match Info::of(&fd) {
                    Ok(i) => i,
                    Err(e) => return skipped(path, format!("cannot stat the open file: {e}")),
                };
                if now.file_type() != FileType::RegularFile || !now.same_inode(&info) {
                    return skipped(path, REPLACED.into());
                }
                Some((Found::File(path, now, File::from(fd)), None))
            }
            FileType::Symlink => match rustix::fs::readlinkat(parent, name, Vec::new()) {
                Ok(t) => Some((Found::Symlink(path, info, t.into_bytes()), None)),
                Err(e) => skipped(path, format!("cannot read link: {}", io::Error::from(e))),
            },
            _ => skipped(
                path,
                "not a regular file, directory or symlink (socket, fifo or device)".into(),
            ),
        }
    }
}

const REPLACED: &str = "it was replaced while the tree was walked (by a symlink or another file); not followed, not stored";

fn open_error(what: &str, e: rustix::io::Errno) -> String {
    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
        REPLACED.into()
    } else {
        format!("cannot open {what}: {}", io::Error::from(e))
    }
}

/// An opened directory: check it is the one listed (when known), list it.
fn visit_dir_fd(
    fd: OwnedFd,
    path: PathBuf,
    listed: Option<&Info>,
) -> Option<(Found, Option<Level>)> {
    let now = match Info::of(&fd) {
        Ok(i) => i,
        Err(e) => {
            return Some((
                Found::Skipped(path, format!("cannot stat the open directory: {e}")),
                None,
            ))
        }
    };
    if now.file_type() != FileType::Directory || listed.is_some_and(|l| !l.same_inode(&now)) {
        return Some((Found::Skipped(path, REPLACED.into()), None));
    }
    match read_sorted(fd.as_fd()) {
        Ok(names) => Some((
            Found::Dir(path.clone(), now),
            Some(Level { fd, path, names }),
        )),
        Err(e) => Some((
            Found::Skipped(path, format!("cannot read directory: {e}")),
            None,
        )),
    }
}

impl Iterator for Walker {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            let found = if let Some(level) = self.stack.last_mut() {
                match level.names.pop() {
                    Some(name) => {
                        let path = level.path.join(&name);
                        let level = self.stack.last()?;
                        let found = self.visit(level.fd.as_fd(), &name, path);
                        self.push(found)
                    }
                    None => {
                        self.stack.pop();
                        continue;
                    }
                }
            } else {
                let root = self.roots.pop()?;
                self.visit_root(root)
            };
            if found.is_some() {
                return found;
            }
        }
    }
}

/// Directories in a path: its normal components (`/a/b` is 2), as restore
/// counts them.
fn depth_of(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
}

/// The names in an open directory, sorted bytewise and reversed.
fn read_sorted(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = d.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

/// True if `path` (configured, absolute) exists without following a final
/// symlink.
pub fn exists_nofollow(path: &Path) -> bool {
    rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(root: &Path) -> Vec<String> {
        Walker::new(&[root.to_path_buf()], Excludes::default(), Vec::new())
            .map(|f| match f {
                Found::Dir(p, _) => format!("d {}", p.display()),
                Found::File(p, _, _) => format!("f {}", p.display()),
                Found::Symlink(p, _, t) => {
                    format!("l {} {}", p.display(), String::from_utf8_lossy(&t))
                }
                Found::Skipped(p, why) => format!("s {} {why}", p.display()),
                Found::RootExcluded(p, pat) => format!("x {} {pat}", p.display()),
            })
            .collect()
    }

    #[test]
    fn canonical_order_and_no_following() {
        let t = std::env::temp_dir().join(format!("rvb-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::create_dir_all(t.join("a.c")).unwrap();
        std::fs::write(t.join("a/b/f"), b"x").unwrap();
        std::fs::write(t.join("a/z"), b"x").unwrap();
        std::fs::write(t.join("B"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", t.join("a/link")).unwrap();
        let got = walk(&t);
        let r = t.display();
        assert_eq!(
            got,
            vec![
                format!("d {r}"),
                format!("f {r}/B"),
                format!("d {r}/a"),
                format!("d {r}/a/b"),
                format!("f {r}/a/b/f"),
                format!("l {r}/a/link /etc"),
                format!("f {r}/a/z"),
                format!("d {r}/a.c"),
            ]
        );
        let _ = std::fs::remove_dir_all(&t);
    }
}
