//! The sets and the pool of one board's directory on the stick: which sets
//! are there and complete, what they reference, and the cleaning: what a
//! crashed export left, sets beyond `export_keep`, pool files no set needs.
//!
//! Invariants: only this board's directory is looked at; only names this
//! program writes are ever removed (`set-<time>` directories and in them
//! `MANIFEST`, `key.sealed` and their temporaries; pool files named for an
//! archive of their strategy's directory and their temporaries), and only
//! regular files (`lstat`, no link followed); a set is dropped by removing
//! its `MANIFEST` first, so it is never "complete" with files missing;
//! every directory read is bounded by [`MAX_ENTRIES`].

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{msg, Result};
use crate::fsutil::{read_regular, Follow, TMP_SUFFIX};
use crate::recovery_set::manifest::MAX_MANIFEST_LEN;
use crate::recovery_set::{is_set_name, Manifest, MANIFEST_FILE, SEALED_KEY_FILE};
use crate::store::{is_archive_id, PART_EXT, SIDECAR_EXT};
use crate::strategy::Strategy;

/// Most entries read from one directory on the stick.
pub(super) const MAX_ENTRIES: usize = 10_000;

/// The names in `dir` (bounded); a missing directory has none.
pub(super) fn names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        if out.len() >= MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "{} holds more than {MAX_ENTRIES} entries; clean it up by hand",
                dir.display()
            )));
        }
        if let Ok(n) = e.file_name().into_string() {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

fn is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir())
}

/// A set directory of this board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SetDir {
    pub name: String,
    /// Its `MANIFEST` exists (whether it checks out is another question).
    pub complete: bool,
}

/// The set directories of a board, oldest first (names are UTC times).
pub(super) fn list_sets(board: &Path) -> io::Result<Vec<SetDir>> {
    Ok(names(board)?
        .into_iter()
        .filter(|n| is_set_name(n) && is_dir(&board.join(n)))
        .map(|name| SetDir {
            complete: is_regular(&board.join(&name).join(MANIFEST_FILE)),
            name,
        })
        .collect())
}

/// Whether `name` is a file this program writes into `pool/<s>/`: an
/// archive's sidecar or part (`<id>.meta`, `<id>.NNN.rvb`).
pub(super) fn is_pool_name(s: Strategy, name: &str) -> bool {
    let id = if let Some(id) = name.strip_suffix(SIDECAR_EXT) {
        id
    } else if let Some((id, num)) = name.strip_suffix(PART_EXT).and_then(|r| r.rsplit_once('.')) {
        if num.len() < 3 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        id
    } else {
        return false;
    };
    is_archive_id(s, id)
}

/// Remove a regular file of ours; a missing one is fine.
fn remove_file(p: &Path) -> io::Result<bool> {
    if !is_regular(p) {
        return Ok(false);
    }
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove a set directory: `MANIFEST` first (then the set is incomplete),
/// then its other files, then the directory if nothing else is in it.
pub(super) fn remove_set(board: &Path, name: &str) -> io::Result<()> {
    let dir = board.join(name);
    if remove_file(&dir.join(MANIFEST_FILE))? {
        super::copy::sync_dir(&dir)?;
    }
    for f in [
        format!("{MANIFEST_FILE}{TMP_SUFFIX}"),
        SEALED_KEY_FILE.to_string(),
        format!("{SEALED_KEY_FILE}{TMP_SUFFIX}"),
    ] {
        remove_file(&dir.join(f))?;
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => super::copy::sync_dir(board),
        Err(e) => {
            log::warn!(
                "left {} on the stick: it holds files rvm-backup did not write ({e})",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Remove what an interrupted export left: set directories without a
/// `MANIFEST`, and temporary files in the pool.
pub(super) fn clean_leftovers(board: &Path, pool: &Path) -> io::Result<()> {
    for set in list_sets(board)? {
        if !set.complete {
            log::info!(
                "removing {}, left by an interrupted export",
                board.join(&set.name).display()
            );
            remove_set(board, &set.name)?;
        }
    }
    for s in Strategy::ALL {
        let dir = pool.join(s.name());
        let mut removed = false;
        for n in names(&dir)? {
            if n.strip_suffix(TMP_SUFFIX)
                .is_some_and(|f| is_pool_name(s, f))
            {
                removed |= remove_file(&dir.join(&n))?;
            }
        }
        if removed {
            super::copy::sync_dir(&dir)?;
        }
    }
    Ok(())
}

/// The pool files (`<strategy>/<file>`) the complete sets among `sets`
/// reference. An error when a manifest cannot be read or parsed: then no
/// one knows what it needs, and nothing may be collected.
pub(super) fn referenced(board: &Path, sets: &[SetDir]) -> Result<BTreeSet<String>> {
    let mut refs = BTreeSet::new();
    for set in sets.iter().filter(|s| s.complete) {
        let p = board.join(&set.name).join(MANIFEST_FILE);
        let (_, bytes) = read_regular(&p, MAX_MANIFEST_LEN, Follow::No)
            .map_err(|e| msg(format!("cannot read {}: {e}", p.display())))?;
        let (m, _, _) =
            Manifest::parse(&bytes).map_err(|e| msg(format!("{}: {e}", p.display())))?;
        for a in &m.archives {
            refs.extend(a.files.iter().map(|f| f.name.clone()));
        }
    }
    Ok(refs)
}

/// Remove the pool files of ours that are not in `keep`; returns how many.
pub(super) fn collect_pool(pool: &Path, keep: &BTreeSet<String>) -> io::Result<usize> {
    let mut n = 0;
    for s in Strategy::ALL {
        let dir = pool.join(s.name());
        let mut removed = false;
        for name in names(&dir)? {
            let ours = is_pool_name(s, &name) && !keep.contains(&format!("{}/{name}", s.name()));
            if ours && remove_file(&dir.join(&name))? {
                n += 1;
                removed = true;
            }
        }
        if removed {
            super::copy::sync_dir(&dir)?;
        }
    }
    Ok(n)
}

/// Make `parent/name` a directory (if it is not one), never following a
/// link: a symbolic link or a file of that name is an error. It must be
/// on device `dev` (the stick): a stick pulled meanwhile leaves its empty
/// mount point on the board's disk, and nothing is written there (a
/// directory made there a moment ago is removed again; `NotFound`).
pub(super) fn ensure_dir(parent: &Path, name: &str, dev: u64) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let p = parent.join(name);
    let made = match std::fs::create_dir(&p) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    let meta = std::fs::symlink_metadata(&p)?;
    if meta.dev() != dev {
        if made {
            let _ = std::fs::remove_dir(&p);
        }
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    if !meta.file_type().is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory; move it away",
            p.display()
        )));
    }
    if made {
        super::copy::sync_dir(parent)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_pool_names() {
        let id = "config-20261124T150000Z-0a1b2c";
        let s = Strategy::Config;
        assert!(is_pool_name(s, &format!("{id}.meta")));
        assert!(is_pool_name(s, &format!("{id}.000.rvb")));
        assert!(is_pool_name(s, &format!("{id}.1234.rvb")));
        for other in [
            format!("{id}.00.rvb"),
            format!("{id}.meta.tmp"),
            format!("{id}.rvb"),
            format!("{id}.0x0.rvb"),
            "notes.txt".to_string(),
            "logs-20261124T150000Z-0a1b2c.meta".to_string(),
        ] {
            assert!(!is_pool_name(s, &other), "{other}");
        }
    }

    #[test]
    fn cleaning_leaves_foreign_files_alone() {
        let d = std::env::temp_dir().join(format!("rvb-export-sets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let board = d.join("b");
        let pool = board.join("pool");
        std::fs::create_dir_all(pool.join("config")).unwrap();
        let id = "config-20261124T150000Z-0a1b2c";
        std::fs::write(pool.join(format!("config/{id}.meta.tmp")), b"x").unwrap();
        std::fs::write(pool.join(format!("config/{id}.meta")), b"x").unwrap();
        std::fs::write(pool.join("config/notes.tmp"), b"x").unwrap();
        // An interrupted set, a complete one, one with a foreign file.
        let a = board.join("set-20261124T150000Z");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("key.sealed"), b"x").unwrap();
        let b = board.join("set-20261124T150001Z");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("MANIFEST"), b"x").unwrap();
        let c = board.join("set-20261124T150002Z");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("mine.txt"), b"x").unwrap();
        clean_leftovers(&board, &pool).unwrap();
        assert!(!a.exists());
        assert!(b.join("MANIFEST").exists());
        assert!(c.join("mine.txt").exists());
        assert!(!pool.join(format!("config/{id}.meta.tmp")).exists());
        assert!(pool.join(format!("config/{id}.meta")).exists());
        assert!(pool.join("config/notes.tmp").exists());
        assert_eq!(
            list_sets(&board).unwrap(),
            vec![
                SetDir {
                    name: "set-20261124T150001Z".into(),
                    complete: true
                },
                SetDir {
                    name: "set-20261124T150002Z".into(),
                    complete: false
                }
            ]
        );
        // The pool: ours not kept go, foreign ones stay.
        let n = collect_pool(&pool, &BTreeSet::new()).unwrap();
        assert_eq!(n, 1);
        assert!(pool.join("config/notes.tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
