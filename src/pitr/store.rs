//! Where WAL segments live: `<backup_dir>/database-wal/<generation>/`.
//!
//! A generation directory is named by the id of the database archive it
//! starts from (FAT-safe: letters, digits, `-`) and holds the segments
//! `000000000000.rvw`, `000000000001.rvw`, … (see `segment`). Only names of
//! those shapes are ever read or removed here; anything else is left alone.
//!
//! Invariants: listing reads only directory entries and, for a range, the
//! first archive frame of a generation's first and last segments (fixed
//! memory, whatever the number of segments); a listing never fails as a
//! whole for one unreadable generation (it is reported with the reason).

use std::path::{Path, PathBuf};

use super::segment::{self, SegmentMeta};
use crate::crypto::KeyRing;
use crate::error::Result;

/// The segments' directory under `backup_dir`.
pub(crate) const WAL_DIR: &str = "database-wal";

pub(crate) fn root(backup_dir: &Path) -> PathBuf {
    backup_dir.join(WAL_DIR)
}

/// One generation on disk.
#[derive(Clone, Debug)]
pub(crate) struct Generation {
    pub id: String,
    pub dir: PathBuf,
    /// Sequence numbers found, ascending.
    pub seqs: Vec<u64>,
}

impl Generation {
    pub fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment::file_name(seq))
    }

    /// The first and last segments' metadata (authenticated first frames).
    pub fn range(
        &self,
        key: Option<&KeyRing>,
        need_encrypted: bool,
    ) -> Result<(SegmentMeta, SegmentMeta)> {
        let first_seq = *self
            .seqs
            .first()
            .ok_or_else(|| crate::error::msg(format!("generation {} holds no segment", self.id)))?;
        let last_seq = *self.seqs.last().unwrap_or(&first_seq);
        let first = segment::open(&self.segment_path(first_seq), key, need_encrypted)?.meta;
        let last = if last_seq == first_seq {
            first.clone()
        } else {
            segment::open(&self.segment_path(last_seq), key, need_encrypted)?.meta
        };
        if first.seq != 0 || first.generation != self.id || last.generation != self.id {
            return Err(crate::error::msg(format!(
                "generation {}: its segments do not start at 0 or name another generation",
                self.id
            )));
        }
        Ok((first, last))
    }
}

/// Whether `name` may be a generation directory (a database archive id).
pub(crate) fn generation_name(name: &str) -> bool {
    name.starts_with("database-")
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Every generation, oldest first (ids sort by their creation time).
pub(crate) fn generations(backup_dir: &Path) -> Vec<Generation> {
    let root = root(backup_dir);
    let Ok(rd) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if !generation_name(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = root.join(&name);
        let mut seqs: Vec<u64> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(segment::parse_name))
                    .collect()
            })
            .unwrap_or_default();
        seqs.sort_unstable();
        out.push(Generation {
            id: name,
            dir,
            seqs,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Remove a whole generation: its segments (and our temporary files),
/// then the directory. Other names are left, and then so is the directory.
pub(crate) fn remove_generation(g: &Generation) -> Result<()> {
    use crate::error::IoContext;
    if let Ok(rd) = std::fs::read_dir(&g.dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            let ours = segment::parse_name(s).is_some()
                || (s.starts_with('.') && s.ends_with(".tmp") && s.contains(segment::SEGMENT_EXT));
            if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                let p = g.dir.join(s);
                std::fs::remove_file(&p).at("remove", &p)?;
            }
        }
    }
    match std::fs::remove_dir(&g.dir) {
        Ok(()) => crate::fsutil::sync_dir(crate::fsutil::parent(&g.dir)),
        Err(e) => {
            log::warn!(
                "kept {} (it holds files that are not WAL segments): {e}",
                g.dir.display()
            );
            Ok(())
        }
    }
}
