//! Files onto the stick: crash-safe copies that are read back from the
//! stick, hashing what is there, and what an I/O failure on the stick
//! means to the operator.
//!
//! Invariants: a file appears under its final name only complete, fsynced
//! and with the size and SHA-256 it must have (temporary name, write,
//! fsync, rename, fsync the directory); a temporary file this program
//! created is removed when the copy fails (if the stick is still there);
//! nothing is ever written through a symbolic link (`O_NOFOLLOW`,
//! `O_EXCL`); memory stays fixed (one [`CHUNK`] buffer).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{msg, Error, Result};
use crate::fsutil::{open_regular, tmp_path, Follow};
use crate::progress::Progress;
use crate::recovery_set::stick::Stick;

/// Bytes read or written at a time.
pub(super) const CHUNK: usize = 1 << 20;

/// What an I/O failure on the stick means, said so the operator can act.
pub(super) struct StickIo<'a> {
    pub stick: &'a Stick,
    /// Bytes this export had to write (for the "full" message).
    pub needed: u64,
}

impl StickIo<'_> {
    pub fn error(&self, what: &str, path: &Path, e: io::Error) -> Error {
        use rustix::io::Errno;
        let dir = self.stick.dir.display();
        let errno = e.raw_os_error().map(Errno::from_raw_os_error);
        let gone = [
            Errno::NOTCONN,
            Errno::IO,
            Errno::NODEV,
            Errno::NXIO,
            Errno::STALE,
            Errno::NOENT,
        ];
        // FAT has no permissions, and root is not refused for them: there,
        // EPERM on a write or a new file is fusefat's word for "no free
        // cluster" (it says ENOSPC only sometimes).
        let fat = matches!(
            self.stick.mount.fstype.as_str(),
            "vfat" | "msdos" | "exfat" | "fuse.fusefat"
        );
        if e.kind() == io::ErrorKind::StorageFull
            || errno == Some(Errno::NOSPC)
            || (fat && errno == Some(Errno::PERM) && self.stick.still_there())
        {
            return msg(format!(
                "the stick at {dir} is full: {} bytes were needed; remove old files or use a bigger stick; the previous set is intact",
                self.needed
            ));
        }
        if !self.stick.still_there() || errno.is_some_and(|n| gone.contains(&n)) {
            return msg(format!(
                "the stick at {dir} went away during the export (cannot {what} {}: {e}); plug it in again and export again; the previous set is intact",
                path.display()
            ));
        }
        if e.kind() == io::ErrorKind::ReadOnlyFilesystem || errno == Some(Errno::ROFS) {
            return msg(format!(
                "the stick at {dir} is read-only: remount it read-write (mount -o remount,rw {dir}) or check the stick's write-protect switch; the previous set is intact"
            ));
        }
        msg(format!(
            "cannot {what} {} on the stick: {e}; the previous set is intact",
            path.display()
        ))
    }
}

/// fsync a directory (its renames and unlinks become durable).
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size and SHA-256 of a regular file on the stick; `None` when there is
/// none of that name. Anything else at the name is an error.
pub(super) async fn hash_file(
    path: &Path,
    progress: &mut Progress,
) -> io::Result<Option<(u64, [u8; 32])>> {
    let (mut f, _) = match open_regular(path, Follow::No) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
        progress.add(n as u64);
        smol::future::yield_now().await;
    }
    Ok(Some((len, h.finalize().into())))
}

/// Create `tmp` fresh: a stale temporary (a crash's) is removed first if
/// it is a file; the new one is created exclusively, never through a link.
fn create_tmp(tmp: &Path) -> io::Result<File> {
    if std::fs::symlink_metadata(tmp).is_ok_and(|m| m.is_file() || m.file_type().is_symlink()) {
        std::fs::remove_file(tmp)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(tmp)
}

/// Drop the written pages from the cache (best effort), so the read-back
/// that follows asks the stick rather than memory.
fn forget_cached(f: &File) {
    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
}

/// What a file on the stick must be.
#[derive(Clone, Debug)]
pub(super) struct Want {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// A temporary file of ours, removed unless it was published.
struct Tmp {
    path: PathBuf,
    done: bool,
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Copy the local file `src` to `dest` on the stick crash-safely, then
/// read it back from the stick. `src` must hash to `want` as it is read
/// (a local file that changed or is damaged is not copied).
pub(super) async fn copy_in(
    src: &Path,
    dest: &Path,
    want: &Want,
    io: &StickIo<'_>,
    progress: &mut Progress,
) -> Result<()> {
    let (mut from, _) = open_regular(src, Follow::No)
        .map_err(|e| msg(format!("cannot read {}: {e}", src.display())))?;
    let tmp_name = tmp_path(dest);
    let mut to = create_tmp(&tmp_name).map_err(|e| io.error("create", &tmp_name, e))?;
    let mut tmp = Tmp {
        path: tmp_name,
        done: false,
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .map_err(|e| msg(format!("cannot read {}: {e}", src.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
        if len > want.bytes {
            break;
        }
        to.write_all(&buf[..n])
            .map_err(|e| io.error("write", &tmp.path, e))?;
        progress.add(n as u64);
        smol::future::yield_now().await;
    }
    let sha: [u8; 32] = h.finalize().into();
    if len != want.bytes || sha != want.sha256 {
        return Err(msg(format!(
            "{} is not what its sidecar records (changed or damaged on this board); run `rvm-backup verify` and back up again",
            src.display()
        )));
    }
    to.sync_all().map_err(|e| io.error("sync", &tmp.path, e))?;
    forget_cached(&to);
    drop(to);
    std::fs::rename(&tmp.path, dest).map_err(|e| io.error("publish", dest, e))?;
    tmp.done = true;
    sync_dir(crate::fsutil::parent(dest))
        .map_err(|e| io.error("sync the directory of", dest, e))?;
    check_on_stick(dest, want, io, progress).await
}

/// Read a published file back from the stick and compare.
pub(super) async fn check_on_stick(
    path: &Path,
    want: &Want,
    io: &StickIo<'_>,
    progress: &mut Progress,
) -> Result<()> {
    match hash_file(path, progress).await {
        Ok(Some((len, sha))) if len == want.bytes && sha == want.sha256 => Ok(()),
        Ok(Some(_)) => Err(msg(format!(
            "{} reads back from the stick at {} differently than it was written: the stick may be failing; use another stick",
            path.display(),
            io.stick.dir.display()
        ))),
        Ok(None) => Err(io.error(
            "read back",
            path,
            io::Error::from(io::ErrorKind::NotFound),
        )),
        Err(e) => Err(io.error("read back", path, e)),
    }
}

/// Write a small file (`key.sealed`, `MANIFEST`) crash-safely and read it
/// back.
pub(super) async fn write_small(
    dest: &Path,
    bytes: &[u8],
    io: &StickIo<'_>,
    progress: &mut Progress,
) -> Result<()> {
    let tmp_name = tmp_path(dest);
    let mut to = create_tmp(&tmp_name).map_err(|e| io.error("create", &tmp_name, e))?;
    let mut tmp = Tmp {
        path: tmp_name,
        done: false,
    };
    to.write_all(bytes)
        .map_err(|e| io.error("write", &tmp.path, e))?;
    to.sync_all().map_err(|e| io.error("sync", &tmp.path, e))?;
    forget_cached(&to);
    drop(to);
    std::fs::rename(&tmp.path, dest).map_err(|e| io.error("publish", dest, e))?;
    tmp.done = true;
    sync_dir(crate::fsutil::parent(dest))
        .map_err(|e| io.error("sync the directory of", dest, e))?;
    let want = Want {
        bytes: bytes.len() as u64,
        sha256: crate::crypto::sha256(bytes),
    };
    check_on_stick(dest, &want, io, progress).await
}
