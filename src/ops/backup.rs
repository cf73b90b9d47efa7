//! `backup`: write one strategy's archive, read it back, record the run.

use crate::backup::{Base, DbParent, Outcome, Parent};
use crate::chain::cursor::IndexCursor;
use crate::chain::plan::{choose, Choice};
use crate::crypto::KeyRing;
use crate::error::{msg, Result};
use crate::format::sidecar::Meta;
use crate::progress::Progress;
use crate::store::Listed;
use crate::strategy::Strategy;
use crate::verify::Verified;

use super::Session;

/// A backup that was written and verified.
#[derive(Debug)]
pub struct BackupReport {
    pub meta: Meta,
    pub verified: Verified,
    /// Set when the archive was kept but something is wrong with what it
    /// holds (the source database failed its check): the run counts as
    /// failed, so the command exits non-zero and the daemon reports it.
    pub problem: Option<String>,
}

impl Session {
    /// The archive a new backup of `strategy` is made against
    /// (`chain::plan::choose`), or `None` with the reason for a full backup
    /// logged. After `keygen --rotate` a new chain starts: an incremental
    /// would leave what it did not store again readable only with the old
    /// key, which could then never be dropped while the chain is kept.
    fn choose_parent<'a>(
        &self,
        archives: &'a [Listed],
        strategy: Strategy,
        sources: &[String],
        full: bool,
    ) -> Option<&'a Listed> {
        let now = crate::timefmt::now_unix();
        let parent = match choose(&self.cfg, archives, strategy, sources, full, now) {
            Choice::Parent(p) => p,
            Choice::Full(why) => {
                log::info!("{strategy}: full backup: {why}");
                return None;
            }
        };
        if let Some(ring) = self.key.as_ref() {
            let writing = ring.writing().id();
            if parent.meta.key_id != writing {
                log::info!(
                    "{strategy}: full backup: the writing key changed since {} (key {} then, {writing} now)",
                    parent.meta.id,
                    parent.meta.key_id
                );
                return None;
            }
        }
        Some(parent)
    }

    /// The parent of a new backup of `strategy`, opened; `None` (with the
    /// reason logged) for a full backup. A parent whose index cannot be
    /// opened (damaged, tampered with, or written before incrementals)
    /// means a full backup, never a corrupt child.
    fn parent_for(&self, strategy: Strategy, full: bool) -> Option<Parent> {
        let sources: Vec<String> = match self.cfg.source(strategy)? {
            crate::config::SourceSpec::Tree { paths, .. } => {
                paths.iter().map(|p| p.display().to_string()).collect()
            }
            crate::config::SourceSpec::Database { .. } => return None,
        };
        let listing = self.list(Some(strategy));
        let parent = self.choose_parent(&listing.archives, strategy, &sources, full)?;
        match IndexCursor::open(parent, self.key.as_ref()) {
            Ok(cursor) if cursor.with_stat() => {
                log::info!("{strategy}: incremental backup against {}", parent.meta.id);
                Some(Parent {
                    cursor,
                    started_ns: i128::from(parent.meta.created) * 1_000_000_000
                        + i128::from(parent.meta.created_nanos),
                })
            }
            Ok(_) => {
                log::info!(
                    "{strategy}: full backup: {} was written before incremental backups",
                    parent.meta.id
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "{strategy}: the last archive {} cannot be read ({e}); making a full backup instead; verify the store",
                    parent.meta.id
                );
                None
            }
        }
    }

    /// The chain a new database backup is made against, its digests
    /// opened; `None` (with the reason logged) for a full backup. A chain
    /// that cannot be read (damaged, tampered with, or written before
    /// incremental database backups) means a full backup.
    fn db_parent_for(&self, full: bool) -> Option<DbParent> {
        let path = match self.cfg.source(Strategy::Database)? {
            crate::config::SourceSpec::Database { path } => path.display().to_string(),
            crate::config::SourceSpec::Tree { .. } => return None,
        };
        let strategy = Strategy::Database;
        let listing = self.list(Some(strategy));
        let parent = self.choose_parent(&listing.archives, strategy, &[path], full)?;
        let opened = crate::chain::db::links(&listing.archives, parent)
            .and_then(|chain| crate::chain::db::ChainDigests::open(&chain, self.key.as_ref()));
        match opened {
            Ok(digests) => {
                log::info!("{strategy}: incremental backup against {}", parent.meta.id);
                Some(DbParent {
                    meta: parent.meta.clone(),
                    digests,
                })
            }
            Err(e) => {
                log::warn!(
                    "{strategy}: full backup: the chain of the last archive {} cannot be used ({e})",
                    parent.meta.id
                );
                None
            }
        }
    }

    /// Back up `strategy` now: take the store lock, write the archive,
    /// verify it, and record the outcome (success, failure, newest verified
    /// archive) in `state.json`. Dropping the future (a cancel) records
    /// nothing and leaves nothing half-written.
    pub async fn backup(
        &self,
        strategy: Strategy,
        progress: &mut Progress,
    ) -> Result<BackupReport> {
        self.backup_with(strategy, false, progress).await
    }

    /// [`Self::backup`]; `full` forces a full archive (no parent), which
    /// otherwise is incremental when its chain
    /// allows (see `chain::plan`).
    pub async fn backup_with(
        &self,
        strategy: Strategy,
        full: bool,
        progress: &mut Progress,
    ) -> Result<BackupReport> {
        let outcome = self.backup_and_verify(strategy, full, progress).await;
        let now = crate::timefmt::now_unix();
        let recorded = match &outcome {
            Ok(r) => match &r.problem {
                None => Ok(()),
                Some(p) => Err(p.clone()),
            },
            Err(e) => Err(e.to_string()),
        };
        // An archive of a damaged source is kept, but it does not become
        // the protected "newest verified" restore point.
        let verified = outcome
            .as_ref()
            .ok()
            .filter(|r| r.problem.is_none())
            .map(|r| r.meta.id.clone());
        crate::state::update(self.backup_dir(), strategy, |r| {
            r.record_run(recorded, now);
            if verified.is_some() {
                r.last_verified = verified;
            }
        });
        outcome
    }

    async fn backup_and_verify(
        &self,
        strategy: Strategy,
        full: bool,
        progress: &mut Progress,
    ) -> Result<BackupReport> {
        let lock = self.store.lock()?;
        let mut base = if strategy == Strategy::Database {
            self.db_parent_for(full)
                .map(|p| Base::Database(Box::new(p)))
        } else {
            self.parent_for(strategy, full)
                .map(|p| Base::Tree(Box::new(p)))
        };
        let meta = loop {
            let had_parent = base.is_some();
            match crate::backup::run(
                &self.cfg,
                &self.store,
                &lock,
                strategy,
                self.key.as_ref().map(KeyRing::writing),
                base.take(),
                progress,
            )
            .await?
            {
                Outcome::Done(meta) => break *meta,
                Outcome::ParentFailed(why) if had_parent => {
                    log::warn!(
                        "{strategy}: the parent archive cannot be read ({why}); making a full backup instead; verify the store"
                    );
                }
                Outcome::ParentFailed(why) => return Err(msg(why)),
            }
        };
        let listing = self.list(Some(strategy));
        let written = listing
            .archives
            .iter()
            .find(|a| a.meta.id == meta.id)
            .ok_or_else(|| {
                msg(format!(
                    "archive {} was written but cannot be listed back; check {}",
                    meta.id,
                    self.store.strategy_dir(strategy).display()
                ))
            })?;
        // An archive that does not read back is no backup: it must never
        // become "latest" for restore, drills or retention. It is ours,
        // just written under the lock, so remove it.
        let verified = match crate::verify::verify(written, self.key.as_ref(), progress).await {
            Ok(v) => v,
            Err(e) => {
                let fate = match crate::prune::delete(written, &lock) {
                    Ok(()) => "it was removed".to_string(),
                    Err(d) => format!("removing it failed too ({d})"),
                };
                return Err(msg(format!(
                    "archive {} failed its read-back verification, {fate}: {e}",
                    meta.id
                )));
            }
        };
        let problem = match meta.db_check.as_deref() {
            Some(check) if check != "ok" => Some(format!(
                "the source database fails its integrity check ({check}); archive {} was kept as the best copy there is, restore it only with --accept-damaged",
                meta.id
            )),
            _ => None,
        };
        Ok(BackupReport {
            meta,
            verified,
            problem,
        })
    }
}
