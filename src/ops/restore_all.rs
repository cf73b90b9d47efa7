//! `restore --all [--at TIME]`: full-system recovery, every configured
//! strategy as of one point in time.
//!
//! Order of work, so that a refusal leaves everything as it was:
//! 1. choose, for every configured strategy, the archive as of `at` (the
//!    newest created at or before it; the newest when `None`); if any
//!    strategy has none, fail naming every such strategy. The database,
//!    when point-in-time data covers `at` more closely than any archive
//!    (`Session::pitr_plan`, as `restore database --at`), is its
//!    generation's snapshot plus the WAL segments up to `at`;
//! 2. under the store lock, refuse a database archive of a damaged source
//!    (unless `accept_damaged`); with the database to a point in time,
//!    read its WAL segments through, so a broken chain is refused before
//!    anything is touched;
//! 3. in place only: run `[recovery] stop`;
//! 4. stage config, application, database, logs in that order, each
//!    through the restore driver's phase 1 (`restore::stage`: every frame
//!    authenticated before use, every file's SHA-256 checked as it is
//!    written, the database image integrity-checked), replacing nothing;
//!    any failure undoes every staged archive (newest first) and nothing
//!    live was touched: all or nothing, with each archive read once;
//! 5. publish them in the same order (`restore::Staged::publish`);
//! 6. in place only: run `[recovery] start`, rolling the database back to
//!    its pre-restore copy if that fails (see `ops::restore`).
//!
//! `disaster-restore` (`stage_all_first: false`), and any restore that
//! replays WAL segments onto the database, do it the older way: step 4 is
//! a read-through of every archive (`verify`) before step 3, and step 5
//! restores each archive in turn. disaster-restore's journal, written once
//! all is verified, must record the run (its pid, for sweeping what a
//! killed run staged) before anything is staged; and WAL segments
//! replayed onto the database stage and publish on their own.
//!
//! A failure in step 5 stops there: the strategies published before it
//! stay restored, and the error names what was and was not restored.
//! Staging everything first needs room for every strategy's staged copy
//! beside the live data at once (a full disk fails in step 4, before
//! anything is replaced).

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{msg, Error, Result};
use crate::progress::Progress;
use crate::restore::{Selector, Staged};
use crate::store::Listed;
use crate::strategy::Strategy;

use super::pitr::Plan;
use super::restore::Published;
use super::{select, Session};

/// The order of a full-system restore: configuration before the code that
/// reads it, the database before the logs that describe it.
pub const RESTORE_ALL_ORDER: [Strategy; 4] = [
    Strategy::Config,
    Strategy::Application,
    Strategy::Database,
    Strategy::Logs,
];

/// One strategy of a full-system restore.
#[derive(Debug)]
pub struct RestoredStrategy {
    pub strategy: Strategy,
    pub id: String,
    /// When the archive was created (Unix time).
    pub created: i64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Where a replaced live database was kept (in place only).
    pub previous_database: Option<PathBuf>,
    /// The point-in-time replay, when there was one: how far it got.
    pub pitr: Option<String>,
}

#[derive(Debug)]
pub struct RestoreAllReport {
    /// The point in time asked for (`None`: the newest archives).
    pub at: Option<i64>,
    pub in_place: bool,
    pub restored: Vec<RestoredStrategy>,
    pub seconds: f64,
}

/// Archives already chosen, in restore order, and how to restore them.
pub(crate) struct ChosenRestore<'a> {
    pub archives: Vec<Listed>,
    /// `None`: in place (with the `[recovery]` hooks).
    pub target: Option<PathBuf>,
    pub accept_damaged: bool,
    /// Names the operation in errors (`restore --all`, `disaster-restore`).
    pub label: &'a str,
    /// WAL segments to replay onto the database archive (`disaster-restore`:
    /// the stick's copy of the generation that archive starts).
    pub database_wal: Option<crate::pitr::store::Generation>,
    /// The database to a point in time (`restore --all --at`): the plan
    /// whose snapshot is the chosen database archive, and the time.
    pub database_at: Option<(Plan, i64)>,
    /// Stage every archive before publishing any (one read of each);
    /// else verify every archive, then restore each in turn. See the
    /// module doc.
    pub stage_all_first: bool,
}

/// What [`Session::restore_chosen`] reports while it works.
pub(crate) enum Step<'a> {
    /// Every archive was read through and checked (and, in one pass,
    /// staged); nothing live replaced yet.
    Verified,
    /// One strategy was published.
    Restored(&'a RestoredStrategy),
}

impl Session {
    /// Restore every configured strategy as of `at` (see the module doc).
    pub async fn restore_all(
        &self,
        at: Option<i64>,
        target: Option<PathBuf>,
        accept_damaged: bool,
        progress: &mut Progress,
    ) -> Result<RestoreAllReport> {
        let started = Instant::now();
        let configured = self.all_strategies()?;
        let order: Vec<Strategy> = RESTORE_ALL_ORDER
            .into_iter()
            .filter(|s| configured.contains(s))
            .collect();
        let selector = at.map_or(Selector::Latest, Selector::At);
        let mut listing = self.list(None);
        for (path, e) in &listing.problems {
            log::warn!("ignoring unreadable sidecar {}: {e}", path.display());
        }
        let plan = match at {
            Some(t) if order.contains(&Strategy::Database) => self.pitr_plan(t).map(|p| (p, t)),
            _ => None,
        };
        let mut chosen: Vec<Listed> = Vec::new();
        let mut missing = Vec::new();
        for &s in &order {
            if let (Strategy::Database, Some((p, _))) = (s, &plan) {
                chosen.push(p.snapshot().clone());
                continue;
            }
            match select::by_selector(&mut listing, s, &selector) {
                Ok(a) => chosen.push(a.clone()),
                Err(e) => missing.push(format!("{s}: {e}")),
            }
        }
        if !missing.is_empty() {
            let when = at.map_or_else(
                || "at all".to_string(),
                |t| format!("from {} or before", crate::timefmt::rfc3339(t)),
            );
            return Err(msg(format!(
                "restore --all: {} configured strateg{} no archive {when} ({}); nothing was restored",
                missing.len(),
                if missing.len() == 1 { "y has" } else { "ies have" },
                missing.join("; ")
            )));
        }
        let mut report = self
            .restore_chosen(
                ChosenRestore {
                    archives: chosen,
                    target,
                    accept_damaged,
                    label: "restore --all",
                    database_wal: None,
                    database_at: plan,
                    stage_all_first: true,
                },
                progress,
                &mut |_| Ok(()),
            )
            .await?;
        report.at = at;
        report.seconds = started.elapsed().as_secs_f64();
        // Where point-in-time data exists, say when it was not used.
        if let Some(t) = at.filter(|_| self.has_pitr()) {
            for r in report
                .restored
                .iter_mut()
                .filter(|r| r.strategy == Strategy::Database && r.pitr.is_none())
            {
                r.pitr = Some(format!(
                    "no point-in-time restore point is closer to {}: the database is as of its archive {}, created {}",
                    crate::timefmt::rfc3339(t),
                    r.id,
                    crate::timefmt::rfc3339(r.created)
                ));
            }
        }
        Ok(report)
    }

    /// Refuse a database archive of a damaged source (unless
    /// `accept_damaged`) and read every chosen archive through, so a
    /// damaged one is refused before anything is touched. Only reads.
    pub(crate) async fn check_chosen(
        &self,
        archives: &[Listed],
        accept_damaged: bool,
        label: &str,
        progress: &mut Progress,
    ) -> Result<()> {
        Self::refuse_damaged(archives, accept_damaged, label)?;
        for a in archives {
            let listing = self.list(Some(a.meta.strategy));
            crate::verify::verify_chain(a, &listing.archives, self.key.as_ref(), progress)
                .await
                .map_err(|e| {
                    msg(format!(
                        "{label}: the {} archive {} fails verification ({e}); nothing was restored",
                        a.meta.strategy, a.meta.id
                    ))
                })?;
        }
        Ok(())
    }

    /// Refuse a database archive made from a damaged source, unless
    /// `accept_damaged` (its sidecar says so: nothing is read).
    fn refuse_damaged(archives: &[Listed], accept_damaged: bool, label: &str) -> Result<()> {
        for a in archives {
            if let Some(problem) = a.meta.db_check.as_deref().filter(|c| *c != "ok") {
                if !accept_damaged {
                    return Err(msg(format!(
                        "{label}: database archive {} was made from a damaged database ({problem}); nothing was restored. Choose another time with --at, or restore it deliberately with --accept-damaged",
                        a.meta.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// Steps 2 to 6 of the module doc for archives already chosen (in
    /// restore order): under the store lock, stop the platform (in
    /// place), stage them all, publish each, start it again. `observe`
    /// hears `Verified` once everything is checked (and staged) and before
    /// anything live is replaced, and `Restored` after each strategy is
    /// published; an error from it stops the restore there.
    pub(crate) async fn restore_chosen(
        &self,
        chosen: ChosenRestore<'_>,
        progress: &mut Progress,
        observe: &mut dyn FnMut(Step<'_>) -> Result<()>,
    ) -> Result<RestoreAllReport> {
        let started = Instant::now();
        let ChosenRestore {
            archives: chosen,
            target,
            accept_damaged,
            label,
            database_wal,
            mut database_at,
            stage_all_first,
        } = chosen;
        let _lock = self.restore_lock()?;
        // WAL segments to replay onto the database (disaster-restore's from
        // the stick, or restore --all --at's): that replay stages and
        // publishes on its own, so every archive is read through first.
        let two_pass = !stage_all_first || database_wal.is_some() || database_at.is_some();
        if two_pass {
            self.check_chosen(&chosen, accept_damaged, label, progress)
                .await?;
        } else {
            Self::refuse_damaged(&chosen, accept_damaged, label)?;
        }
        if let Some((plan, t)) = &database_at {
            self.pitr_check(plan, *t).await.map_err(|e| {
                msg(format!(
                    "{label}: the WAL segments of point-in-time generation {} fail verification ({e}); nothing was restored",
                    plan.snapshot().meta.id
                ))
            })?;
        }
        if two_pass {
            observe(Step::Verified)?;
        }
        let in_place = target.is_none();
        let stopped = if in_place {
            Some(self.stop_platform().await?)
        } else {
            None
        };
        let mut restored = Vec::new();
        let mut published = Published::default();
        let mut outcome = Ok(());
        let mut staged = StagedInOrder(Vec::new());
        if !two_pass {
            outcome = self
                .stage_chosen(
                    &chosen,
                    target.as_deref(),
                    accept_damaged,
                    label,
                    &mut staged,
                    progress,
                )
                .await
                .and_then(|()| observe(Step::Verified));
        }
        for (i, a) in chosen.iter().enumerate() {
            if outcome.is_err() {
                break;
            }
            let t = Instant::now();
            let ready = staged.0.get_mut(i).and_then(Option::take);
            let staging = ready.as_ref().map_or(0.0, |(_, secs)| *secs);
            let to_time = if a.meta.strategy == Strategy::Database {
                database_at.take()
            } else {
                None
            };
            let done = match (ready, to_time, &database_wal, a.meta.strategy) {
                (Some((s, _)), ..) => s.publish().await,
                (None, Some((plan, t)), _, _) => {
                    let req = super::restore::RestoreRequest {
                        strategy: Strategy::Database,
                        selector: Selector::At(t),
                        target: target.clone(),
                        file: None,
                        accept_damaged,
                    };
                    self.pitr_restore(plan, t, &req, progress).await
                }
                (None, None, Some(g), Strategy::Database) => {
                    self.restore_database_replayed(
                        a,
                        g.clone(),
                        target.as_deref(),
                        accept_damaged,
                        progress,
                    )
                    .await
                }
                (None, None, ..) => {
                    self.restore_archive(a, target.as_deref(), accept_damaged, progress)
                        .await
                }
            };
            let done = done.and_then(|r| {
                if a.meta.strategy == Strategy::Database {
                    published.new_database = true;
                    published.databases.extend(r.previous_database.clone());
                } else {
                    published.trees.push(a.meta.strategy);
                }
                let one = RestoredStrategy {
                    strategy: a.meta.strategy,
                    id: r.id,
                    created: a.meta.created,
                    files: r.files,
                    bytes: r.bytes,
                    seconds: staging + t.elapsed().as_secs_f64(),
                    previous_database: r.previous_database,
                    pitr: r.pitr,
                };
                let heard = observe(Step::Restored(&one));
                restored.push(one);
                heard
            });
            if let Err(e) = done {
                let done: Vec<&str> = restored.iter().map(|r| r.id.as_str()).collect();
                let left: Vec<&str> = chosen
                    .iter()
                    .skip(restored.len())
                    .map(|a| a.meta.strategy.name())
                    .collect();
                outcome = Err(msg(format!(
                    "{label} stopped at {} ({e}); restored before it: {}; not restored: {}",
                    a.meta.id,
                    if done.is_empty() {
                        "nothing".to_string()
                    } else {
                        done.join(", ")
                    },
                    if left.is_empty() {
                        "nothing".to_string()
                    } else {
                        left.join(", ")
                    }
                )));
                break;
            }
        }
        // Whatever was staged and not published is undone now, before the
        // platform starts again.
        drop(staged);
        let report = outcome.map(|()| RestoreAllReport {
            at: None,
            in_place,
            restored,
            seconds: 0.0,
        });
        let report = match stopped {
            Some(stopped) => self.start_platform(stopped, report, &published).await,
            None => report,
        };
        report.map(|mut r| {
            r.seconds = started.elapsed().as_secs_f64();
            r
        })
    }

    /// Stage every chosen archive, in restore order, into `staged` (one
    /// slot each, with the seconds it took), publishing nothing: each is
    /// read once, every frame authenticated and every file's SHA-256
    /// checked as it is written. A failure names the archive; what was
    /// staged is undone when `staged` is dropped.
    async fn stage_chosen(
        &self,
        chosen: &[Listed],
        target: Option<&std::path::Path>,
        accept_damaged: bool,
        label: &str,
        staged: &mut StagedInOrder,
        progress: &mut Progress,
    ) -> Result<()> {
        for a in chosen {
            let t = Instant::now();
            let listing = self.list(Some(a.meta.strategy));
            let s = crate::restore::stage(
                a,
                &listing.archives,
                self.key.as_ref(),
                target,
                accept_damaged,
                progress,
            )
            .await
            .map_err(|e| {
                let what = match e {
                    Error::Archive { .. } => "fails verification",
                    _ => "cannot be staged",
                };
                msg(format!(
                    "{label}: the {} archive {} {what} ({e}); nothing was restored",
                    a.meta.strategy, a.meta.id
                ))
            })?;
            staged.0.push(Some((s, t.elapsed().as_secs_f64())));
        }
        // A database image's integrity check runs on its own thread while
        // the archives after it stage; every check has passed before
        // anything is published.
        for (a, entry) in chosen.iter().zip(staged.0.iter_mut()) {
            if let Some((s, secs)) = entry.as_mut() {
                let t = Instant::now();
                s.checked().await.map_err(|e| {
                    msg(format!(
                        "{label}: the {} archive {} fails verification ({e}); nothing was restored",
                        a.meta.strategy, a.meta.id
                    ))
                })?;
                *secs += t.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }
}

/// Archives staged and not yet published, in restore order, each with
/// the seconds its staging took. Dropped (an error, or the restore's task
/// cancelled), it undoes them newest first, so that a directory an earlier
/// one created (the `--target` directory, say) is empty again by the time
/// that earlier one's undo removes it.
pub(crate) struct StagedInOrder(Vec<Option<(Staged, f64)>>);

impl Drop for StagedInOrder {
    fn drop(&mut self) {
        while let Some(s) = self.0.pop() {
            drop(s);
        }
    }
}
