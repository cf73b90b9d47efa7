//! What `disaster-restore` does on the stick itself besides reading sets:
//! find and consume a technician's request marker, write the result file,
//! and (at boot) wait for the stick to appear.
//!
//! Invariants: a request marker is consumed by renaming it (never over an
//! existing file, never deleted: it is the technician's file); the result
//! file is written under a temporary name, fsynced, renamed, and its
//! directory fsynced, under a FAT-safe name that names no existing file;
//! waiting is bounded by the caller's timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::recovery_set::{self, REQUEST_DONE_PREFIX, REQUEST_FILES, RESULT_PREFIX};

/// The request markers present at the stick root (regular files only).
pub(crate) fn request_markers(stick: &Path) -> Vec<String> {
    REQUEST_FILES
        .iter()
        .filter(|n| std::fs::symlink_metadata(stick.join(n)).is_ok_and(|m| m.is_file()))
        .map(|n| n.to_string())
        .collect()
}

/// A FAT-safe name `PREFIX<time>[-N].txt` at `dir` that names nothing yet.
fn free_name(dir: &Path, prefix: &str, now: i64) -> PathBuf {
    let stamp = crate::timefmt::compact(now);
    let mut path = dir.join(format!("{prefix}{stamp}.txt"));
    for n in 2..1000 {
        if std::fs::symlink_metadata(&path).is_err() {
            break;
        }
        path = dir.join(format!("{prefix}{stamp}-{n}.txt"));
    }
    path
}

/// Rename each consumed marker to `RESTORE-REQUEST-DONE-<time>.txt`.
/// Failures are warnings: the restore itself succeeded.
pub(crate) fn consume_requests(stick: &Path, markers: &[String], now: i64) -> Vec<String> {
    let mut said = Vec::new();
    for m in markers {
        let to = free_name(stick, REQUEST_DONE_PREFIX, now);
        match std::fs::rename(stick.join(m), &to) {
            Ok(()) => said.push(format!(
                "the request marker {m} was consumed: renamed to {}",
                to.file_name().unwrap_or_default().to_string_lossy()
            )),
            Err(e) => {
                log::warn!("cannot rename the request marker {m} on the stick: {e}");
                said.push(format!(
                    "the request marker {m} could NOT be renamed ({e}): remove it by hand, or the next boot restores again"
                ));
            }
        }
    }
    if let Err(e) = crate::fsutil::sync_dir(stick) {
        log::warn!("{e}");
    }
    said
}

/// Write `text` as `RESULT-<time>.txt` at the stick root, crash-safely.
pub(crate) fn write_result(stick: &Path, now: i64, text: &str) -> crate::error::Result<PathBuf> {
    let path = free_name(stick, RESULT_PREFIX, now);
    // CRLF line ends: the file is read on a technician's laptop.
    let text = text.replace('\n', "\r\n");
    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}

/// Whether `dir` holds an `rvm-backup/` directory (the stick is there).
pub(crate) fn has_sets_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(recovery_set::root(dir)).is_ok_and(|m| m.is_dir())
}

/// Whether `dir` holds an `rvm-backup/` directory on a filesystem mounted
/// at `dir` (not the directory of an empty mount point).
pub(crate) fn stick_present(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Ok(up)) = (std::fs::metadata(dir), std::fs::metadata(dir.join(".."))) else {
        return false;
    };
    let mounted = here.dev() != up.dev() || here.ino() == up.ino();
    mounted && has_sets_dir(dir)
}

/// Wait up to `timeout` for [`stick_present`], looking about once a second.
pub(crate) fn wait_for_stick(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if stick_present(dir) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_results_and_presence() {
        let d = std::env::temp_dir().join(format!("rvb-dstick-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert!(request_markers(&d).is_empty());
        std::fs::create_dir(d.join("RESTORE-REQUEST")).unwrap();
        assert!(request_markers(&d).is_empty(), "a directory is no marker");
        std::fs::write(d.join("RESTORE-REQUEST.txt"), b"please").unwrap();
        let m = request_markers(&d);
        assert_eq!(m, vec!["RESTORE-REQUEST.txt".to_string()]);
        std::fs::write(d.join("RESTORE-REQUEST-DONE-19700101T000010Z.txt"), b"old").unwrap();
        let said = consume_requests(&d, &m, 10);
        assert!(said[0].contains("-2.txt"), "{said:?}");
        assert_eq!(
            std::fs::read(d.join("RESTORE-REQUEST-DONE-19700101T000010Z.txt")).unwrap(),
            b"old",
            "an existing file is never overwritten"
        );
        assert!(!d.join("RESTORE-REQUEST.txt").exists());
        let r = write_result(&d, 10, "line 1\nline 2\n").unwrap();
        assert!(crate::recovery_set::is_fat_safe(
            &r.file_name().unwrap().to_string_lossy()
        ));
        assert_eq!(std::fs::read_to_string(&r).unwrap(), "line 1\r\nline 2\r\n");
        let r2 = write_result(&d, 10, "again\n").unwrap();
        assert_ne!(r, r2);
        std::fs::create_dir(d.join("rvm-backup")).unwrap();
        assert!(!stick_present(&d), "not a mount point");
        assert!(!wait_for_stick(&d, Duration::from_millis(10)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
