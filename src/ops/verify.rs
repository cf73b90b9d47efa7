//! `verify`: read archives through and check every byte; remember the
//! newest archive of each strategy that passed.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::verify::Verified;

use super::{select, Session};

/// Which archives to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    All,
    /// Ids or unique id prefixes, as `list` prints them.
    Ids(Vec<String>),
}

/// The outcome per archive, and (for `All`) the sidecars that could not
/// even be read, which count as failures.
pub struct VerifyReport {
    pub checked: Vec<(String, Result<Verified>)>,
    pub unreadable: Vec<(PathBuf, Error)>,
}

impl VerifyReport {
    pub fn failures(&self) -> usize {
        self.unreadable.len() + self.checked.iter().filter(|(_, r)| r.is_err()).count()
    }
}

impl Session {
    /// Verify archives; fails at once (before reading anything) if an id
    /// names no archive. `on_each` sees every outcome as it is known.
    pub async fn verify(
        &self,
        which: &Which,
        progress: &mut Progress,
        mut on_each: impl FnMut(&str, &Result<Verified>),
    ) -> Result<VerifyReport> {
        let mut listing = self.list(None);
        let chosen: Vec<String> = match which {
            Which::All => listing.archives.iter().map(|a| a.meta.id.clone()).collect(),
            Which::Ids(ids) => ids
                .iter()
                .map(|id| select::by_id(&mut listing, id).map(|a| a.meta.id.clone()))
                .collect::<Result<_>>()?,
        };
        let unreadable = match which {
            Which::All => std::mem::take(&mut listing.problems),
            Which::Ids(_) => Vec::new(),
        };
        let mut checked = Vec::with_capacity(chosen.len());
        let mut passed = std::collections::HashSet::new();
        for id in chosen {
            let Some(a) = listing.archives.iter().find(|a| a.meta.id == id) else {
                continue;
            };
            let r = crate::verify::verify_chain_memo(
                a,
                &listing.archives,
                self.key.as_ref(),
                &mut passed,
                progress,
            )
            .await;
            on_each(&id, &r);
            if r.is_ok() {
                passed.insert(id.clone());
                self.remember_verified(&listing.archives, &id);
            }
            checked.push((id, r));
        }
        self.remember_verify_runs(&listing.archives, &checked);
        Ok(VerifyReport {
            checked,
            unreadable,
        })
    }

    /// Record per strategy whether the archives of it this run checked
    /// all passed (the monitor's verification rule reads it).
    fn remember_verify_runs(
        &self,
        archives: &[crate::store::Listed],
        checked: &[(String, Result<Verified>)],
    ) {
        let mut runs: std::collections::BTreeMap<crate::strategy::Strategy, Option<String>> =
            Default::default();
        for (id, r) in checked {
            let Some(a) = archives.iter().find(|a| &a.meta.id == id) else {
                continue;
            };
            let first = runs.entry(a.meta.strategy).or_default();
            if let (None, Err(e)) = (&first, r) {
                *first = Some(format!("archive {id}: {e}"));
            }
        }
        let now = crate::timefmt::now_unix();
        for (s, failure) in runs {
            crate::state::update(self.backup_dir(), s, |r| {
                r.record_verify(failure.map_or(Ok(()), Err), now)
            });
        }
    }

    /// Record `id` as its strategy's newest verified archive, unless a
    /// newer one is recorded already (listing order is age order).
    pub(super) fn remember_verified(&self, archives: &[crate::store::Listed], id: &str) {
        let Some(pos) = archives.iter().position(|a| a.meta.id == id) else {
            return;
        };
        let strategy = archives[pos].meta.strategy;
        crate::state::update(self.backup_dir(), strategy, |r| {
            let recorded = r
                .last_verified
                .as_deref()
                .and_then(|v| archives.iter().position(|a| a.meta.id == v));
            if recorded.is_none_or(|old| old < pos) {
                r.last_verified = Some(id.to_string());
            }
        });
    }
}
