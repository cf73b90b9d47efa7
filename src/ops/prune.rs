//! `prune`: decide with the retention policy, then delete under the lock.

use crate::error::Result;
use crate::prune::Plan;

use super::Session;

pub struct PruneReport {
    /// Every strategy's verdicts, newest first.
    pub plans: Vec<Plan>,
    /// Archives deleted (empty for a dry run).
    pub deleted: Vec<String>,
}

impl PruneReport {
    /// Ids that retention does not keep (deleted, or would be).
    pub fn dropped(&self) -> impl Iterator<Item = &str> {
        self.plans
            .iter()
            .flat_map(|p| &p.decisions)
            .filter(|d| !d.keep)
            .map(|d| d.id.as_str())
    }
}

impl Session {
    /// Apply retention; a dry run decides the same way and deletes nothing
    /// (and needs no lock).
    pub fn prune(&self, dry_run: bool) -> Result<PruneReport> {
        let lock = if dry_run {
            None
        } else {
            Some(self.store.lock()?)
        };
        let (plans, archives) = crate::prune::plan(
            &self.cfg,
            &self.store,
            self.key.as_ref(),
            crate::timefmt::now_unix(),
        )?;
        let deleted = match &lock {
            Some(lock) => crate::prune::apply(&plans, &archives, lock)?,
            None => Vec::new(),
        };
        Ok(PruneReport { plans, deleted })
    }
}
