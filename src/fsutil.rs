//! Crash-safe publication of files: the one place that knows the dance.
//!
//! A file is published by writing it under a temporary name in the same
//! directory, fsyncing it, renaming it over its final name and fsyncing the
//! directory. After a crash at any instant either the old state or the new
//! one is on disk, never a torn file under a final name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Suffix of every temporary file this program writes.
pub const TMP_SUFFIX: &str = ".tmp";

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// fsync a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)
}

pub fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Rename `from` over `to` and make it durable.
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).ctx(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    sync_dir(parent(to))
}

/// Refuse a secret file (a key) that group or others can access: a key
/// that leaked is not a key. `what` names it in the error.
pub fn check_secret_mode(path: &Path, meta: &fs::Metadata, what: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(crate::error::msg(format!(
            "{what} {} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Create a secret file (a key): mode 0600 from the start, never over an
/// existing file (whatever it holds could be the only way to read old
/// archives, so `refusal` says why not), content and directory fsynced.
/// `what` names the file in errors ("key file").
pub fn create_secret(path: &Path, bytes: &[u8], what: &str, refusal: &str) -> Result<()> {
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(crate::error::msg(format!(
                "{} already exists; refusing to overwrite a {what} ({refusal})",
                path.display()
            )))
        }
        Err(e) => return Err(e).at(&format!("create {what}"), path),
    };
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        // We created it a moment ago: a half-written key file must not
        // block the next try (it would refuse to overwrite it).
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e).at(&format!("write {what}"), path);
    }
    sync_dir(parent(path))
}

/// Write `bytes` to `path` crash-safely with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = tmp_path(path);
    // A stale temporary file (a crash, or a symlink planted by someone with
    // write access to the directory) is removed first, if it is a file or
    // a symlink (unlink never follows); the new one is created exclusively
    // and without following a symlink, so nothing outside is written.
    match fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => {
            fs::remove_file(&tmp).at("remove stale", &tmp)?;
        }
        _ => {}
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32,
            )
            .open(&tmp)
            .at("create", &tmp)?;
        f.write_all(bytes).at("write", &tmp)?;
        f.sync_all().at("sync", &tmp)?;
        publish(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether [`open_regular`] may follow a symbolic link at the last
/// component of the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow it (the opened file is still checked).
    Yes,
    /// Refuse it (`O_NOFOLLOW`): for files inside `backup_dir`.
    No,
}

/// Open `path` for reading without ever blocking on it: `O_NONBLOCK` (a
/// FIFO opens at once instead of waiting for a writer), `O_CLOEXEC`, and
/// `O_NOFOLLOW` unless `follow` says otherwise. The opened file must be a
/// regular file (checked with `fstat`, so a symlink swapped in after a
/// check cannot get past it). Errors are `std::io::Error`s whose text says
/// what the file is instead; callers add which file they wanted.
pub fn open_regular(path: &Path, follow: Follow) -> std::io::Result<(File, fs::Metadata)> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::NONBLOCK | OFlags::CLOEXEC;
    if follow == Follow::No {
        flags |= OFlags::NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            if follow == Follow::No
                && e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
            {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is refused here: replace it with the file itself",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file",
                describe_type(meta.file_type())
            ),
        ));
    }
    Ok((file, meta))
}

/// "a directory", "a FIFO (named pipe)", … for error messages.
pub fn describe_type(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Read a whole small file: [`open_regular`], then at most `max` bytes; a
/// longer file is an error (nothing beyond `max + 1` bytes is read, so a
/// huge or growing file cannot exhaust memory). The one bounded read used
/// for key, config, sidecar, state and audit head files.
pub fn read_regular(
    path: &Path,
    max: usize,
    follow: Follow,
) -> std::io::Result<(fs::Metadata, Vec<u8>)> {
    use std::io::Read;
    let (file, meta) = open_regular(path, follow)?;
    let cap = usize::try_from(meta.len()).unwrap_or(max).min(max);
    let mut bytes = Vec::with_capacity(cap.saturating_add(1));
    file.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {max} bytes, too large for what it should hold"),
        ));
    }
    Ok((meta, bytes))
}

/// A FIFO at `path`, mode 0600 (tests of the no-special-file rules).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    if let Err(e) = rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    ) {
        panic!("cannot make a FIFO at {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-fsutil-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_small_regular_files_only() {
        let d = scratch("read");
        let f = d.join("f");
        fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 5, Follow::No).unwrap().1, b"hello");
        let e = read_regular(&f, 4, Follow::No).unwrap_err().to_string();
        assert!(e.contains("larger than 4 bytes"), "{e}");
        let l = d.join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(read_regular(&l, 5, Follow::Yes).unwrap().1, b"hello");
        let e = read_regular(&l, 5, Follow::No).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = read_regular(&d, 5, Follow::Yes).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let z = d.join("z");
        std::os::unix::fs::symlink("/dev/zero", &z).unwrap();
        let e = read_regular(&z, 5, Follow::Yes).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        let fifo = d.join("fifo");
        make_fifo(&fifo);
        let e = read_regular(&fifo, 5, Follow::No).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_atomic_never_writes_through_a_stale_tmp_symlink() {
        let d = scratch("atomic");
        let victim = d.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let f = d.join("state.json");
        std::os::unix::fs::symlink(&victim, tmp_path(&f)).unwrap();
        write_atomic(&f, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert!(fs::symlink_metadata(tmp_path(&f)).is_err());
        // A stale regular tmp file is replaced too.
        fs::write(tmp_path(&f), b"stale").unwrap();
        write_atomic(&f, b"newer", 0o600).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"newer");
        fs::remove_dir_all(&d).unwrap();
    }
}
