//! Descriptor-relative file-system operations for work in directories that
//! other users may change while we run (restore runs as root over trees
//! that other users own).
//!
//! A [`Dir`] is an open directory descriptor plus the device and inode it
//! had when opened. Every operation takes one *name* (a single path
//! component, never a path) inside such a directory, so nothing here ever
//! re-resolves a path string: a directory renamed away and replaced by a
//! symlink cannot redirect an operation elsewhere.
//!
//! Invariants:
//! - children are opened with `O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC`, so a
//!   symlink where a directory is expected fails (`ELOOP`/`ENOTDIR`);
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`: never an
//!   existing file, never through a symlink;
//! - removal ([`Dir::unlink_if`], [`Dir::rmdir_if`]) first checks that the
//!   name still has the device and inode we created, so a name someone
//!   swapped in is left alone;
//! - only [`Dir::open_path`] resolves a path, for the operator-chosen
//!   restore root.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};

/// An open directory and its identity when opened.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
}

/// What a name in a directory is (not following symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Missing,
    Dir,
    Symlink,
    Other,
}

fn name_arg(name: &[u8]) -> io::Result<&OsStr> {
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single path component",
        ));
    }
    Ok(OsStr::from_bytes(name))
}

pub fn dev_ino(st: &Stat) -> (u64, u64) {
    #[allow(clippy::useless_conversion)]
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dir {
    fn from_fd(fd: OwnedFd) -> io::Result<Dir> {
        let st = rustix::fs::fstat(&fd)?;
        let (dev, ino) = dev_ino(&st);
        Ok(Dir { fd, dev, ino })
    }

    /// Open a directory by path, following symlinks: only for a root the
    /// operator named.
    pub fn open_path(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Dir::from_fd(fd)
    }

    /// A second descriptor for the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            dev: self.dev,
            ino: self.ino,
        })
    }

    /// Open the child directory `name`, never through a symlink.
    pub fn open_child(&self, name: &[u8]) -> io::Result<Dir> {
        let fd = rustix::fs::openat(&self.fd, name_arg(name)?, DIR_FLAGS, Mode::empty())?;
        Dir::from_fd(fd)
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, name_arg(name)?, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// `lstat` of a name in this directory; `None` if it does not exist.
    pub fn stat(&self, name: &[u8]) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name_arg(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn kind(&self, name: &[u8]) -> io::Result<Found> {
        Ok(match self.stat(name)? {
            None => Found::Missing,
            Some(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Found::Dir,
                FileType::Symlink => Found::Symlink,
                _ => Found::Other,
            },
        })
    }

    /// Create a new regular file (never an existing one, never through a
    /// symlink), open for reading and writing.
    pub fn create_file(&self, name: &[u8], mode: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name_arg(name)?,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Open an existing regular file for reading, never through a symlink
    /// and never a FIFO or device (refused with `InvalidInput`).
    pub fn open_regular(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name_arg(name)?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if !FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(File::from(fd))
    }

    /// An unnamed temporary file on this directory's file system
    /// (`O_TMPFILE`), or, where that is not supported, a file created
    /// under `fallback_name` and unlinked at once.
    pub fn temp_file(&self, fallback_name: &[u8]) -> io::Result<File> {
        match rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(_) => {
                let f = self.create_file(fallback_name, 0o600)?;
                let st = rustix::fs::fstat(&f)?;
                let (dev, ino) = dev_ino(&st);
                self.unlink_if(fallback_name, dev, ino)?;
                Ok(f)
            }
        }
    }

    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        rustix::fs::symlinkat(OsStr::from_bytes(target), &self.fd, name_arg(name)?)?;
        Ok(())
    }

    /// Rename `from` to `to`, both in this directory.
    pub fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, name_arg(from)?, &self.fd, name_arg(to)?)?;
        Ok(())
    }

    /// A second name `to` here for `from` in `src` (not following symlinks).
    pub fn link_from(&self, src: &Dir, from: &[u8], to: &[u8]) -> io::Result<()> {
        rustix::fs::linkat(
            &src.fd,
            name_arg(from)?,
            &self.fd,
            name_arg(to)?,
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Remove `name` if it is still the file (device, inode) we made.
    /// Returns whether it was removed.
    pub fn unlink_if(&self, name: &[u8], dev: u64, ino: u64) -> io::Result<bool> {
        match self.stat(name)? {
            Some(st) if dev_ino(&st) == (dev, ino) => {
                rustix::fs::unlinkat(&self.fd, name_arg(name)?, AtFlags::empty())?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Remove `name` without checking (only for names we just made and
    /// whose identity cannot be known, such as SQLite's side files).
    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name_arg(name)?, AtFlags::empty())?;
        Ok(())
    }

    /// Remove the empty directory `name` if it is still the one we made.
    pub fn rmdir_if(&self, name: &[u8], dev: u64, ino: u64) -> io::Result<bool> {
        match self.stat(name)? {
            Some(st) if dev_ino(&st) == (dev, ino) => {
                rustix::fs::unlinkat(&self.fd, name_arg(name)?, AtFlags::REMOVEDIR)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Give the symlink `name` an owner, through a descriptor of the link
    /// itself (`O_PATH | O_NOFOLLOW`, then `fchownat(fd, "", AT_EMPTY_PATH
    /// | AT_SYMLINK_NOFOLLOW)`): only if it is a symlink we own, so a name
    /// swapped for another file is never chowned. Returns its inode.
    pub fn chown_symlink(&self, name: &[u8], uid: u32, gid: u32) -> io::Result<u64> {
        let fd = rustix::fs::openat(
            &self.fd,
            name_arg(name)?,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink
            || st.st_uid != rustix::process::geteuid().as_raw()
        {
            return Err(io::Error::other(
                "the staged symlink was replaced by someone else",
            ));
        }
        let (_, ino) = dev_ino(&st);
        if let Err(e) = rustix::fs::chownat(
            &fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        ) {
            log::debug!("keeping owner of a restored symlink: {e}");
        }
        Ok(ino)
    }

    pub fn fsync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// Flush the whole file system this directory is on.
    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd)?;
        Ok(())
    }

    /// `/proc/self/fd/N/NAME`: a path to `name` in this very directory, for
    /// libraries (SQLite) that only take paths.
    pub fn proc_path(&self, name: &[u8]) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        p.push(OsStr::from_bytes(name));
        p
    }

    /// Owner, mode and modification time of this directory itself.
    pub fn set_meta(&self, uid: u32, gid: u32, mode: u32, mtime: i64, nsec: u32) -> io::Result<()> {
        set_meta(self.fd.as_fd(), uid, gid, mode, mtime, nsec)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Times, then owner, then mode (a chown clears setuid bits) of an open
/// file or directory, through its descriptor. A failed chown (not root)
/// keeps the restoring user as owner.
pub fn set_meta(
    fd: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    nsec: u32,
) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: i64::from(nsec) as _,
        },
    };
    rustix::fs::futimens(fd, &times)?;
    if let Err(e) = rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    ) {
        log::debug!("keeping owner: {e}");
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

/// Device and inode of an open file.
pub fn file_id(f: &File) -> io::Result<(u64, u64)> {
    Ok(dev_ino(&rustix::fs::fstat(f)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_follows_or_removes_what_it_did_not_make() {
        let base = std::env::temp_dir().join(format!("rvb-safefs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let root = Dir::open_path(&base).unwrap();
        assert!(root.open_child(b"link").is_err(), "followed a symlink");
        assert_eq!(root.kind(b"link").unwrap(), Found::Symlink);
        assert!(root.open_child(b"../etc").is_err(), "took a path");
        let real = root.open_child(b"real").unwrap();
        let f = real.create_file(b"f", 0o600).unwrap();
        assert!(real.create_file(b"f", 0o600).is_err(), "reused a file");
        let (dev, ino) = file_id(&f).unwrap();
        // Swapped for another file: left alone.
        std::fs::remove_file(base.join("real/f")).unwrap();
        std::fs::write(base.join("real/f"), b"theirs").unwrap();
        assert!(!real.unlink_if(b"f", dev, ino).unwrap());
        assert!(base.join("real/f").exists());
        root.symlink(b"/etc", b"s").unwrap();
        root.chown_symlink(b"s", rustix::process::geteuid().as_raw(), 0)
            .unwrap();
        assert!(
            root.chown_symlink(b"real", 0, 0).is_err(),
            "chowned a non-link"
        );
        let t = root.temp_file(b".t.tmp").unwrap();
        drop(t);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
