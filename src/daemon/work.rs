//! What a job does: one call of the operations layer per job kind, and the
//! one line of outcome that `JOB` and `HISTORY` show.

use super::jobs::JobKind;
use super::Daemon;
use crate::error::{msg, Result};
use crate::ops::Which;
use crate::progress::{Counter, Progress};

impl Daemon {
    /// Do one job's work with the session in force when it started.
    pub(super) async fn execute(&self, kind: &JobKind, counter: Counter) -> Result<String> {
        let session = self.session();
        let mut progress = Progress::observed(counter);
        match kind {
            JobKind::Backup(s, full) => {
                let r = session.backup_with(*s, *full, &mut progress).await?;
                // Scheduled or requested, a backup is followed by retention
                // (the new archive is recorded as verified, so it is kept).
                let pruned = session.prune(false)?;
                let text = format!(
                    "{} verified; {} files, {} bytes stored; pruned {}",
                    r.meta.id,
                    r.meta.files,
                    r.meta.archive_bytes,
                    pruned.deleted.len()
                );
                match r.problem {
                    None => Ok(text),
                    Some(p) => Err(msg(format!("{text}; but {p}"))),
                }
            }
            JobKind::Verify(ids) => {
                let which = if ids.is_empty() {
                    Which::All
                } else {
                    Which::Ids(ids.clone())
                };
                let report = session.verify(&which, &mut progress, |_, _| {}).await?;
                let mut failed: Vec<String> = report
                    .unreadable
                    .iter()
                    .map(|(p, e)| format!("{}: {e}", p.display()))
                    .collect();
                failed.extend(
                    report
                        .checked
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())),
                );
                let total = report.checked.len() + report.unreadable.len();
                if failed.is_empty() {
                    Ok(format!("{total} archives verified"))
                } else {
                    Err(msg(format!(
                        "{} of {total} failed: {}",
                        failed.len(),
                        failed.join("; ")
                    )))
                }
            }
            JobKind::Restore(req) => {
                let r = session.restore(req, &mut progress).await?;
                Ok(format!(
                    "restored {}: {} files, {} bytes{}{}",
                    r.id,
                    r.files,
                    r.bytes,
                    r.previous_database
                        .map(|p| format!("; previous database kept as {}", p.display()))
                        .unwrap_or_default(),
                    r.pitr.map(|p| format!("; {p}")).unwrap_or_default()
                ))
            }
            JobKind::RestoreAll {
                at,
                target,
                accept_damaged,
            } => {
                let r = session
                    .restore_all(*at, target.clone(), *accept_damaged, &mut progress)
                    .await?;
                let each: Vec<String> = r
                    .restored
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} ({} files, {} bytes, {:.1} s{}{})",
                            s.strategy,
                            s.id,
                            s.files,
                            s.bytes,
                            s.seconds,
                            s.previous_database
                                .as_ref()
                                .map(|p| format!("; previous database kept as {}", p.display()))
                                .unwrap_or_default(),
                            s.pitr
                                .as_ref()
                                .map(|p| format!("; {p}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                Ok(format!(
                    "restored all {} strategies: {}",
                    r.restored.len(),
                    each.join("; ")
                ))
            }
            JobKind::Drill(strategies) => {
                let report = session.drill(strategies, &mut progress).await?;
                let each: Vec<String> = report.outcomes.iter().map(|o| o.describe()).collect();
                let failed: Vec<&str> = report.failed().map(|o| o.strategy.name()).collect();
                if failed.is_empty() {
                    Ok(format!("drill passed: {}", each.join("; ")))
                } else {
                    Err(msg(format!(
                        "drill FAILED for {}: {}",
                        failed.join(", "),
                        each.join("; ")
                    )))
                }
            }
            JobKind::Export(dir) => {
                let r = session
                    .export(dir.as_deref(), &mut progress)
                    .await
                    .inspect_err(|e| log::warn!("export failed: {e}"))?;
                Ok(r.describe())
            }
            // Syncs run in the offsite lane (`super::offsite`), not here.
            JobKind::Offsite => session
                .offsite_sync()
                .await
                .map(|r| super::offsite::describe(&r)),
            JobKind::Prune { dry_run } => {
                let report = session.prune(*dry_run)?;
                let ids: Vec<&str> = report.dropped().collect();
                Ok(format!(
                    "{} {}",
                    if *dry_run { "would delete" } else { "deleted" },
                    ids.join(" ")
                ))
            }
        }
    }
}
