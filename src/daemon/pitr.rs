//! The daemon's WAL shipping task: one [`Shipper`] step every
//! `pitr_sync_interval`, and the pruning of old generations.
//!
//! A new generation's snapshot is an ordinary database backup job in the
//! daemon's queue (actor `daemon`), so that it never races a scheduled or
//! requested job for the store lock; the task waits for it and takes the
//! archive only when it was created after the generation was prepared.
//!
//! Invariants: each step is short (a bounded batch of frames, locks held
//! with a 50 ms busy timeout) and the task yields between steps, so the
//! socket stays responsive; a failing step backs off (up to a minute) and
//! starts a new generation rather than resuming an unproven chain; the
//! status shown by STATUS is kept in the daemon.

use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;

use super::jobs::{JobKind, JobState};
use super::Daemon;
use crate::audit::Actor;
use crate::error::{msg, Result};
use crate::pitr::Shipper;
use crate::strategy::Strategy;

/// How often old generations are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub(super) async fn task(d: Rc<Daemon>) {
    let mut shipper: Option<Shipper> = None;
    let mut backoff = Duration::ZERO;
    let mut last_prune: Option<Instant> = None;
    loop {
        if d.stopping.get() {
            return;
        }
        let session = d.session();
        let cfg = session.config();
        let db = cfg.database.as_ref().filter(|db| db.pitr_enabled());
        let Some(db) = db else {
            shipper = None;
            d.pitr.borrow_mut().enabled = false;
            Timer::after(Duration::from_secs(1)).await;
            continue;
        };
        let interval = db.pitr_sync();
        let snapshot_every = db.pitr_snapshot();
        let path = db.path.0.clone();
        if shipper.as_ref().is_some_and(|s| s.db_path() != path) {
            shipper = None; // the config now names another database
        }
        if shipper.is_none() {
            match Shipper::open(&path) {
                Ok(s) => shipper = Some(s),
                Err(e) => {
                    {
                        let mut st = d.pitr.borrow_mut();
                        if st.last_error.as_deref() != Some(&e.to_string()) {
                            log::warn!("point-in-time recovery is not running: {e}");
                        }
                        st.enabled = true;
                        st.last_error = Some(e.to_string());
                    }
                    Timer::after(Duration::from_secs(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = shipper.as_mut() else { continue };
        let result = if s.needs_snapshot(snapshot_every) {
            new_generation(&d, s).await
        } else {
            s.step(&session);
            Ok(())
        };
        match result {
            Ok(()) => {
                backoff = Duration::ZERO;
                s.status.last_error = None;
            }
            Err(e) => {
                log::warn!("point-in-time recovery: {e}");
                s.status.last_error = Some(e.to_string());
                backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            }
        }
        *d.pitr.borrow_mut() = s.status.clone();
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            match session.prune_pitr() {
                Ok(gone) if !gone.is_empty() => log::info!(
                    "point-in-time recovery: pruned generations {} (older than pitr_retention)",
                    gone.join(", ")
                ),
                Ok(_) => {}
                Err(e) => {
                    log::info!("point-in-time recovery: pruning generations later: {e}");
                    last_prune = None;
                }
            }
        }
        Timer::after(interval.max(backoff)).await;
    }
}

/// Start a generation: prepare, run a database backup through the job
/// queue, wait for it, and finish with the archive it made.
async fn new_generation(d: &Rc<Daemon>, s: &mut Shipper) -> Result<()> {
    let since = s.prepare_generation()?;
    let job = d
        .submit(JobKind::Backup(Strategy::Database, false), Actor::Daemon)
        .ok_or_else(|| msg("the job queue is full; the snapshot waits"))?;
    loop {
        let state = d.jobs.borrow().get(job).map(|j| j.state);
        match state {
            Some(JobState::Queued | JobState::Running) => {
                Timer::after(Duration::from_millis(100)).await;
            }
            Some(JobState::Done) => break,
            _ => {
                return Err(msg(format!(
                    "the snapshot backup (job {job}) did not succeed; trying again"
                )))
            }
        }
        if d.stopping.get() {
            return Err(msg("stopping"));
        }
    }
    let session = d.session();
    let listing = session.list(Some(Strategy::Database));
    let made = listing
        .archives
        .iter()
        .filter(|a| (a.meta.created, a.meta.created_nanos) >= since)
        .max_by_key(|a| (a.meta.created, a.meta.created_nanos))
        .map(|a| a.meta.id.clone())
        .ok_or_else(|| {
            msg(format!(
                "the snapshot backup (job {job}) began before the generation was prepared; trying again"
            ))
        })?;
    s.finish_generation(&session, &made)
}
