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

/// Write `bytes` to `path` crash-safely with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
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
