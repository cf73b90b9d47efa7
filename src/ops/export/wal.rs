//! WAL segments onto the recovery stick: `DIR/rvm-backup/<board>/wal/
//! <generation>/<seq:012>.rvw` (`docs/format.md`, section 11).
//!
//! A stick generation is worth its space only while its snapshot (the
//! database archive it starts from, named by the generation) is the
//! database archive of a complete set on the stick: only those
//! generations are copied, and stick generations whose snapshot is in no
//! complete set are removed. `export` copies after writing a set; the
//! daemon copies a bounded number of segments per shipping tick.
//!
//! Invariants: segments are copied oldest first, each crash-safely
//! (temporary name, fsync, rename, fsync the directory) and read back
//! against the local file's size and SHA-256, so the stick holds a gapless
//! prefix of the local chain; a file already there with the right size is
//! kept (segments never change once published; `disaster-restore`
//! authenticates every one anyway); directories are created, never
//! renamed (fusefat); only names of our exact shapes are ever removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::copy::{self, StickIo, Want};
use super::sets;
use crate::error::Result;
use crate::fsutil::TMP_SUFFIX;
use crate::pitr::{segment, store};
use crate::progress::Progress;
use crate::recovery_set::stick::Stick;
use crate::recovery_set::WAL_DIR;
use crate::store::SIDECAR_EXT;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StickWalReport {
    /// Segments copied now.
    pub copied: u64,
    /// Segments of the shipped generations already on the stick.
    pub present: u64,
    /// Segments left for a later pass (the budget ran out).
    pub pending: u64,
    /// Stick generations removed (snapshot in no complete set).
    pub removed: Vec<String>,
}

/// The database archives of the complete sets in `board`: the
/// generations worth keeping on the stick.
fn wanted(board: &Path) -> Result<BTreeSet<String>> {
    let all = sets::list_sets(board).map_err(|e| {
        crate::error::msg(format!("cannot list the sets in {}: {e}", board.display()))
    })?;
    let refs = sets::referenced(board, &all)?;
    Ok(refs
        .iter()
        .filter_map(|n| n.strip_prefix("database/")?.strip_suffix(SIDECAR_EXT))
        .map(str::to_string)
        .collect())
}

/// Copy at most `budget` segments of the wanted generations from
/// `backup_dir` to the board directory `board` on `stick`, then remove
/// unwanted stick generations. The caller holds the store lock (no
/// export or prune races it).
pub(crate) async fn ship(
    backup_dir: &Path,
    board: &Path,
    stick: &Stick,
    budget: u64,
    progress: &mut Progress,
) -> Result<StickWalReport> {
    let io = StickIo { stick, needed: 0 };
    let wanted = wanted(board)?;
    let mut report = StickWalReport::default();
    let local: Vec<store::Generation> = store::generations(backup_dir)
        .into_iter()
        .filter(|g| wanted.contains(&g.id))
        .collect();
    let wal = if local.is_empty() {
        board.join(WAL_DIR)
    } else {
        sets::ensure_dir(board, WAL_DIR, stick.dev)
            .map_err(|e| io.error("create", &board.join(WAL_DIR), e))?
    };
    for g in &local {
        let dir = sets::ensure_dir(&wal, &g.id, stick.dev)
            .map_err(|e| io.error("create", &wal.join(&g.id), e))?;
        // The gapless prefix of the local chain.
        let n = g
            .seqs
            .iter()
            .enumerate()
            .take_while(|(i, seq)| **seq == *i as u64)
            .count();
        let on_stick = |seq: u64| -> Result<bool> {
            let src = g.segment_path(seq);
            let bytes = local_len(&src)?;
            let dest = dir.join(segment::file_name(seq));
            Ok(std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == bytes))
        };
        // The stick holds a prefix (copies go oldest first): look back
        // from the newest for the last one there, so a pass costs what is
        // new, not the whole chain.
        let mut first_missing = n;
        while first_missing > 0 && !on_stick((first_missing - 1) as u64)? {
            first_missing -= 1;
        }
        report.present += first_missing as u64;
        for seq in (first_missing as u64)..(n as u64) {
            if report.copied >= budget {
                report.pending += 1;
                continue;
            }
            let src = g.segment_path(seq);
            let dest = dir.join(segment::file_name(seq));
            let want = Want {
                bytes: local_len(&src)?,
                sha256: segment::file_sha256(&src)?,
            };
            copy::copy_in(&src, &dest, &want, &io, progress).await?;
            report.copied += 1;
        }
    }
    report.removed = remove_unwanted(&wal, &wanted, &io)?;
    Ok(report)
}

fn local_len(p: &Path) -> Result<u64> {
    std::fs::symlink_metadata(p)
        .map(|m| m.len())
        .map_err(|e| crate::error::msg(format!("cannot read {}: {e}", p.display())))
}

/// Most names read from one generation directory on the stick (a day of
/// one-second segments fits many times over).
const MAX_SEGMENTS: usize = 1_000_000;

/// The names in `dir` (bounded); a missing directory has none.
fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        if out.len() >= MAX_SEGMENTS {
            return Err(std::io::Error::other(format!(
                "{} holds more than {MAX_SEGMENTS} entries",
                dir.display()
            )));
        }
        if let Ok(n) = e?.file_name().into_string() {
            out.push(n);
        }
    }
    Ok(out)
}

/// Whether `name` is a file name this module writes in a generation.
fn ours(name: &str) -> bool {
    segment::parse_name(name).is_some()
        || name
            .strip_suffix(TMP_SUFFIX)
            .is_some_and(|n| segment::parse_name(n).is_some())
}

/// Remove the stick generations not in `wanted` (our names only; a
/// directory holding anything else stays).
fn remove_unwanted(wal: &Path, wanted: &BTreeSet<String>, io: &StickIo<'_>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let gens = sets::names(wal).map_err(|e| io.error("read", wal, e))?;
    for name in gens {
        if wanted.contains(&name) || !store::generation_name(&name) {
            continue;
        }
        let dir = wal.join(&name);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_dir()) {
            continue;
        }
        for n in names(&dir).map_err(|e| io.error("read", &dir, e))? {
            let p = dir.join(&n);
            if ours(&n) && std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
                std::fs::remove_file(&p).map_err(|e| io.error("remove", &p, e))?;
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(name),
            Err(e) => log::warn!(
                "kept {} on the stick (it holds files that are not WAL segments): {e}",
                dir.display()
            ),
        }
    }
    if !removed.is_empty() {
        copy::sync_dir(wal).map_err(|e| io.error("sync", wal, e))?;
    }
    Ok(removed)
}

/// The segments of `generation` on the stick under `board`, for
/// `disaster-restore` (names of our shape only, ascending).
pub(crate) fn stick_generation(board: &Path, generation: &str) -> Option<store::Generation> {
    if !store::generation_name(generation) {
        return None;
    }
    let dir: PathBuf = board.join(WAL_DIR).join(generation);
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_dir()) {
        return None;
    }
    let mut seqs: Vec<u64> = names(&dir)
        .ok()?
        .iter()
        .filter_map(|n| segment::parse_name(n))
        .collect();
    seqs.sort_unstable();
    if seqs.is_empty() {
        return None;
    }
    Some(store::Generation {
        id: generation.to_string(),
        dir,
        seqs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names() {
        assert!(ours("000000000000.rvw"));
        assert!(ours("000000000012.rvw.tmp"));
        for bad in [
            "MANIFEST",
            "000000000000.rvw.bak",
            "12.rvw",
            "x.tmp",
            ".000000000000.rvw",
        ] {
            assert!(!ours(bad), "{bad}");
        }
    }
}
