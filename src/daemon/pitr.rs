//! The daemon's WAL shipping task: one [`Shipper`] step every
//! `pitr_sync_interval` (sooner when a probe every 50 ms finds the WAL at
//! its checkpoint point), and the pruning of old generations.
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
use crate::pitr::shipper::PROBE_EVERY;
use crate::pitr::Shipper;
use crate::strategy::Strategy;

/// Segments copied to the recovery stick per tick at most.
const STICK_BUDGET: u64 = 8;
/// How often the stick is looked at when nothing new was shipped (a
/// stick plugged in later, a pass that failed).
const STICK_RETRY: Duration = Duration::from_secs(30);

/// How often old generations are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub(super) async fn task(d: Rc<Daemon>) {
    let mut shipper: Option<Shipper> = None;
    let mut backoff = Duration::ZERO;
    let mut last_prune: Option<Instant> = None;
    let mut stick = StickCopy::default();
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
            let started = new_generation(&d, s).await;
            if started.is_ok() {
                export_for_generation(&d, &session);
            }
            started
        } else {
            let before = (s.status.generation.clone(), s.status.segments);
            s.step(&session);
            // A new segment goes offsite at once (coalesced there).
            if (s.status.generation.clone(), s.status.segments) != before {
                d.request_offsite();
            }
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
        stick.tick(&d, &session, &mut s.status).await;
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
        if backoff.is_zero() {
            wait_or_probe(&d, shipper.as_ref(), interval).await;
        } else {
            Timer::after(interval.max(backoff)).await;
        }
    }
}

/// Wait for the next tick, but no longer than until the shipper wants a
/// step sooner (the WAL reached its checkpoint point): a writer must not
/// grow the WAL by a whole sync interval's frames past the threshold.
async fn wait_or_probe(d: &Daemon, shipper: Option<&Shipper>, interval: Duration) {
    let until = Instant::now() + interval;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || d.stopping.get() {
            return;
        }
        Timer::after(left.min(PROBE_EVERY)).await;
        if shipper.is_some_and(Shipper::wants_step) {
            return;
        }
    }
}

/// Start a generation: prepare, run a full database backup through the
/// job queue (a generation's snapshot is never incremental: a restore to
/// a time starts from it alone), wait for it, and finish with the archive
/// it made.
async fn new_generation(d: &Rc<Daemon>, s: &mut Shipper) -> Result<()> {
    let since = s.prepare_generation()?;
    let job = d
        .submit(JobKind::Backup(Strategy::Database, true), Actor::Daemon)
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
        .filter(|a| (a.meta.created, a.meta.created_nanos) >= since && a.meta.parent.is_none())
        .max_by_key(|a| (a.meta.created, a.meta.created_nanos))
        .map(|a| a.meta.id.clone())
        .ok_or_else(|| {
            msg(format!(
                "the snapshot backup (job {job}) began before the generation was prepared; trying again"
            ))
        })?;
    s.finish_generation(&session, &made)
}

/// A new generation's snapshot is worth exporting when a stick is
/// mounted: the set's database archive becomes that snapshot (export
/// prefers it), so the segments copied from now on are usable.
fn export_for_generation(d: &Rc<Daemon>, session: &crate::ops::Session) {
    let cfg = session.config();
    let mounted = crate::recovery_set::stick::check(&cfg.export_dir, &cfg.backup_dir).is_ok();
    if mounted && d.submit(JobKind::Export(None), Actor::Daemon).is_some() {
        log::info!(
            "point-in-time recovery: a new generation started with a stick at {}: exporting a set with its snapshot",
            cfg.export_dir.display()
        );
    }
}

/// The continuous copy of new segments to the recovery stick.
#[derive(Default)]
struct StickCopy {
    /// (generation, segments) at the last pass that left nothing pending.
    done: Option<(Option<String>, u64)>,
    last: Option<Instant>,
    /// The last pass failed: wait `STICK_RETRY` before the next.
    failed: bool,
}

impl StickCopy {
    /// One bounded pass when something new was shipped (or now and then):
    /// a failure is logged once and shown in STATUS, never more.
    async fn tick(
        &mut self,
        d: &Rc<Daemon>,
        session: &crate::ops::Session,
        status: &mut crate::pitr::PitrStatus,
    ) {
        let key = (status.generation.clone(), status.segments);
        let recent = self.last.is_some_and(|t| t.elapsed() < STICK_RETRY);
        let fresh = (self.failed || self.done.as_ref() == Some(&key)) && recent;
        // An export job writes the same directory: it copies them itself.
        let exporting = d
            .jobs
            .borrow()
            .running()
            .is_some_and(|j| matches!(j.kind, JobKind::Export(_)));
        if fresh || exporting {
            return;
        }
        self.last = Some(Instant::now());
        self.failed = false;
        match session.ship_wal_to_stick(STICK_BUDGET).await {
            Ok(Some(r)) => {
                if status.stick_error.take().is_some() {
                    log::info!("point-in-time recovery: copying segments to the stick again");
                }
                status.stick_segments = Some(r.present + r.copied);
                self.done = (r.pending == 0).then_some(key);
                for g in &r.removed {
                    log::info!(
                        "point-in-time recovery: removed generation {g} from the stick (its snapshot is in no set there)"
                    );
                }
            }
            Ok(None) => {
                status.stick_segments = None;
                status.stick_error = None;
                self.done = Some(key);
            }
            Err(e) => {
                let e = e.to_string();
                if status.stick_error.as_deref() != Some(e.as_str()) {
                    log::warn!("point-in-time recovery: cannot copy segments to the stick: {e}");
                }
                status.stick_error = Some(e);
                self.done = None;
                self.failed = true;
            }
        }
    }
}
