//! Applying retention to the store: decide with `retention`, then delete.
//!
//! Deletion is crash-safe in the store's sense: the sidecar goes first (the
//! archive stops being listed, its directory is fsynced), then the parts; a
//! crash in between leaves parts without a sidecar, which the next run
//! removes as leftovers. Prune holds the store lock.

use std::fs;

use crate::config::Config;
use crate::crypto::KeyRing;
use crate::error::{IoContext, Result};
use crate::fsutil::sync_dir;
use crate::retention::{decide, Candidate, Decision};
use crate::store::{Listed, Store, StoreLock};
use crate::strategy::Strategy;

/// One strategy's verdicts, newest first.
pub struct Plan {
    pub strategy: Strategy,
    pub decisions: Vec<Decision>,
}

/// Decide what retention keeps, for every strategy with archives.
pub fn plan(
    cfg: &Config,
    store: &Store,
    key: Option<&KeyRing>,
    now: i64,
) -> Result<(Vec<Plan>, Vec<Listed>)> {
    let state = crate::state::load(store.root());
    let listing = store.list(None, key);
    for (path, e) in &listing.problems {
        log::warn!("prune leaves {} alone: {e}", path.display());
    }
    let mut plans = Vec::new();
    for s in Strategy::ALL {
        let verified = state.get(&s).and_then(|r| r.last_verified.clone());
        let candidates: Vec<Candidate> = listing
            .archives
            .iter()
            .filter(|a| a.meta.strategy == s)
            .map(|a| Candidate {
                id: a.meta.id.clone(),
                created: a.meta.created,
                created_nanos: a.meta.created_nanos,
                verified: verified.as_deref() == Some(a.meta.id.as_str()),
                parent: a.meta.parent.clone(),
            })
            .collect();
        if !candidates.is_empty() {
            let mut decisions = decide(&candidates, &cfg.retention, now);
            if s == Strategy::Database {
                keep_pitr_snapshots(&mut decisions, &cfg.backup_dir);
            }
            plans.push(Plan {
                strategy: s,
                decisions,
            });
        }
    }
    Ok((plans, listing.archives))
}

/// A database archive that a point-in-time generation starts from is
/// kept while the generation exists (`pitr_retention` prunes
/// generations; then the archive falls back to the ordinary rules).
fn keep_pitr_snapshots(decisions: &mut [crate::retention::Decision], backup_dir: &std::path::Path) {
    let generations = crate::pitr::store::generations(backup_dir);
    for d in decisions.iter_mut() {
        if generations.iter().any(|g| g.id == d.id) {
            if !d.keep {
                d.reasons.clear();
            }
            d.keep = true;
            d.reasons.push("point-in-time generation".into());
        }
    }
}

/// Delete one archive: sidecar first, then its parts.
pub fn delete(archive: &Listed, _lock: &StoreLock) -> Result<()> {
    let sidecar = archive.sidecar_path();
    fs::remove_file(&sidecar).at("delete", &sidecar)?;
    sync_dir(&archive.dir)?;
    for part in &archive.meta.parts {
        let p = archive.dir.join(&part.name);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at("delete", &p),
            _ => {}
        }
    }
    sync_dir(&archive.dir)
}

/// Apply the plan; returns the ids deleted.
pub fn apply(plans: &[Plan], archives: &[Listed], lock: &StoreLock) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for d in plans.iter().flat_map(|p| &p.decisions).filter(|d| !d.keep) {
        if let Some(a) = archives.iter().find(|a| a.meta.id == d.id) {
            delete(a, lock)?;
            deleted.push(d.id.clone());
        }
    }
    Ok(deleted)
}
