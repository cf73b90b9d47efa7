//! Sweeping what an interrupted disaster restore left in the trees it was
//! restoring: the staged names `.rvm-restore-PID-TOKEN-N.tmp` (see
//! `restore::stage`) of the runs its journal lists.
//!
//! A killed restore cannot undo its own staging; on a board with no Linux
//! person nearby the next run must. Invariants: only names of that exact
//! form whose PID is one the journal recorded (so this program's own
//! runs made them) are removed, and only regular files and symlinks;
//! the walk goes by directory descriptors and never follows a symlink;
//! it is bounded in depth and entries; errors are warnings (the restore
//! replaces the trees anyway, a leftover is clutter, not damage).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;

use crate::safefs::Dir;

/// Deepest directory walked below a root.
const MAX_DEPTH: usize = crate::format::record::MAX_DIR_DEPTH;
/// Most directory entries looked at in one sweep.
const MAX_ENTRIES: u64 = 1_000_000;

/// Whether `name` is a staged name of a restore run with one of `pids`.
pub(crate) fn is_leftover(name: &[u8], pids: &[u32]) -> bool {
    let Some(rest) = name
        .strip_prefix(b".rvm-restore-")
        .and_then(|r| r.strip_suffix(b".tmp"))
    else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|b| *b == b'-').collect();
    let [pid, token, n] = parts.as_slice() else {
        return false;
    };
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 20 && s.iter().all(u8::is_ascii_digit);
    let pid_ok = digits(pid)
        && std::str::from_utf8(pid)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| pids.contains(&p));
    pid_ok
        && token.len() == 16
        && token.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && digits(n)
}

/// Remove the leftovers of `pids` in `root` (and below it when `deep`).
/// Returns how many were removed.
pub(crate) fn sweep(root: &Path, deep: bool, pids: &[u32]) -> u64 {
    if pids.is_empty() {
        return 0;
    }
    let dir = match Dir::open_path(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            log::warn!(
                "cannot look for restore leftovers in {}: {e}",
                root.display()
            );
            return 0;
        }
    };
    let mut budget = MAX_ENTRIES;
    let mut removed = 0;
    walk(
        &dir,
        root,
        if deep { MAX_DEPTH } else { 0 },
        pids,
        &mut budget,
        &mut removed,
    );
    if removed > 0 {
        log::info!(
            "removed {removed} staged file(s) an interrupted restore left in {}",
            root.display()
        );
    }
    removed
}

fn walk(dir: &Dir, shown: &Path, depth: usize, pids: &[u32], budget: &mut u64, removed: &mut u64) {
    let mut stream = match rustix::fs::Dir::read_from(dir) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot read {}: {e}", shown.display());
            return;
        }
    };
    let mut subdirs = Vec::new();
    while let Some(entry) = stream.read() {
        if *budget == 0 {
            log::warn!("stopped looking for restore leftovers: too many entries");
            return;
        }
        *budget -= 1;
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        // d_type may be unknown: lstat then.
        let kind = match entry.file_type() {
            FileType::Unknown => match dir.stat(&name) {
                Ok(Some(st)) => FileType::from_raw_mode(st.st_mode),
                _ => continue,
            },
            k => k,
        };
        match kind {
            FileType::RegularFile | FileType::Symlink if is_leftover(&name, pids) => {
                match dir.unlink(&name) {
                    Ok(()) => *removed += 1,
                    Err(e) => log::warn!(
                        "cannot remove the restore leftover {}: {e}",
                        shown.join(OsStr::from_bytes(&name)).display()
                    ),
                }
            }
            FileType::Directory if depth > 0 => subdirs.push(name),
            _ => {}
        }
    }
    drop(stream);
    for name in subdirs {
        if let Ok(child) = dir.open_child(&name) {
            walk(
                &child,
                &shown.join(OsStr::from_bytes(&name)),
                depth - 1,
                pids,
                budget,
                removed,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staged_names_of_known_runs() {
        let pids = [4242];
        assert!(is_leftover(
            b".rvm-restore-4242-fcb38e465dc873cf-7.tmp",
            &pids
        ));
        for bad in [
            &b".rvm-restore-4243-fcb38e465dc873cf-7.tmp"[..],
            b".rvm-restore-4242-fcb38e465dc873c-7.tmp",
            b".rvm-restore-4242-FCB38E465DC873CF-7.tmp",
            b".rvm-restore-4242-fcb38e465dc873cf-.tmp",
            b".rvm-restore-4242-fcb38e465dc873cf-7",
            b".rvm-restore-4242-journal.tmp",
            b"rvm-restore-4242-fcb38e465dc873cf-7.tmp",
            b".rvm-restore-4242-fcb38e465dc873cf-7-1.tmp",
        ] {
            assert!(!is_leftover(bad, &pids), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!is_leftover(
            b".rvm-restore-4242-fcb38e465dc873cf-7.tmp",
            &[]
        ));
    }

    #[test]
    fn sweep_removes_files_and_symlinks_not_directories_or_others() {
        let d = std::env::temp_dir().join(format!("rvb-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        let name = ".rvm-restore-4242-fcb38e465dc873cf-1.tmp";
        std::fs::write(d.join(name), b"x").unwrap();
        std::fs::write(d.join("a/b").join(name), b"x").unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            d.join("a/.rvm-restore-4242-fcb38e465dc873cf-2.tmp"),
        )
        .unwrap();
        std::fs::create_dir(d.join("a/.rvm-restore-4242-fcb38e465dc873cf-3.tmp")).unwrap();
        std::fs::write(d.join("a/.rvm-restore-99-fcb38e465dc873cf-1.tmp"), b"x").unwrap();
        std::fs::write(d.join("keep"), b"x").unwrap();
        assert_eq!(sweep(&d, false, &[4242]), 1);
        assert_eq!(sweep(&d, true, &[4242]), 2);
        assert!(d
            .join("a/.rvm-restore-4242-fcb38e465dc873cf-3.tmp")
            .is_dir());
        assert!(d.join("a/.rvm-restore-99-fcb38e465dc873cf-1.tmp").exists());
        assert!(d.join("keep").exists());
        assert!(std::path::Path::new("/etc/passwd").exists());
        assert_eq!(sweep(&d.join("missing"), true, &[4242]), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
