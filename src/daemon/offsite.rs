//! The daemon's offsite syncs: a lane of their own beside the job runner
//! (an upload over a slow link never holds back a backup), fed by
//! triggers: each successful backup, each shipped WAL segment, every
//! `[offsite] interval` (and once at start), and the `OFFSITE` verb.
//!
//! A sync is a job of kind [`JobKind::Offsite`] in the daemon's job
//! table, so `OFFSITE` answers with a job id and `JOB`, `HISTORY` and
//! `CANCEL` work on it. Coalescing: at most one sync runs; a trigger while
//! one runs queues exactly one more (further triggers fold into it).
//!
//! Invariants: the sync is `Session::offsite_sync` on this executor, its
//! network I/O async and its hashing and sending yielding after every
//! chunk, so the socket is answered in between; the sync's work starts no
//! thread (`crate::workers` is off in the daemon; only a host name's
//! lookup goes to smol's blocking pool, a short-lived thread, so a dead
//! resolver cannot stall the socket); a failure
//! is one log line (error level), counted, shown in `STATUS` and judged by
//! the monitor, and the next automatic try waits a backoff (30 s, doubled
//! per failure, at most the interval) — an operator's `OFFSITE` does not
//! wait; automatic syncs start at most every [`MIN_GAP`]; every call has
//! the HTTP layer's timeouts, so nothing hangs.

use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;

use super::jobs::{JobKind, JobState};
use super::Daemon;
use crate::audit::Actor;
use crate::offsite::status::{FailureKind, OffsiteStatus};
use crate::ops::SyncReport;

/// The first wait after a failed sync; doubled per failure.
const BACKOFF_MIN: Duration = Duration::from_secs(30);
/// How often the lane looks at its queue and the interval without a wake.
const TICK: Duration = Duration::from_secs(1);
/// Automatic syncs start at most this often (a WAL segment may come every
/// few seconds; each sync lists the store once and reads the sidecars).
const MIN_GAP: Duration = Duration::from_secs(10);

/// The lane's state, kept in the daemon.
#[derive(Default)]
pub(super) struct Lane {
    pub status: OffsiteStatus,
    /// No automatic sync before this (after a failure).
    not_before: Option<Instant>,
    backoff: Duration,
    /// An operator asked: the queued sync does not wait for the backoff.
    asked: bool,
    /// The running sync's id and its cancel switch.
    cancel: Option<(u64, smol::channel::Sender<()>)>,
    /// When the last sync started (the interval counts from it).
    last_start: Option<Instant>,
    /// The files the last sync could not ship, as last logged (said once,
    /// not at every sync).
    problems_said: String,
}

impl Daemon {
    /// Queue a sync (or find the one queued) for an automatic trigger;
    /// nothing when `[offsite]` is not configured.
    pub(super) fn request_offsite(&self) {
        if self.session().config().offsite.is_some()
            && self.submit(JobKind::Offsite, Actor::Daemon).is_some()
        {
            let _ = self.wake_offsite.try_send(());
        }
    }

    /// `OFFSITE`: the queued sync, else the running one, else a new one.
    pub(super) fn ask_offsite(&self, actor: &Actor) -> Option<u64> {
        self.offsite.borrow_mut().asked = true;
        let joined = {
            let jobs = self.jobs.borrow();
            jobs.offsite_queued()
                .or_else(|| jobs.running_offsite().map(|j| j.id))
        };
        let id = joined.or_else(|| self.submit(JobKind::Offsite, actor.clone()))?;
        let _ = self.wake_offsite.try_send(());
        Some(id)
    }

    /// Cancel the running sync, if it is `id` (or any, for `None`).
    pub(super) fn cancel_offsite(&self, id: Option<u64>) {
        if let Some((running, tx)) = self.offsite.borrow().cancel.as_ref() {
            if id.is_none_or(|id| id == *running) {
                let _ = tx.try_send(());
            }
        }
    }

    /// The offsite part of `STATUS`.
    pub(super) fn offsite_json(&self) -> serde_json::Value {
        let lane = self.offsite.borrow();
        let mut v = serde_json::to_value(&lane.status).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            let jobs = self.jobs.borrow();
            o.insert(
                "job".into(),
                jobs.running_offsite()
                    .map_or(serde_json::Value::Null, |j| j.to_json()),
            );
            o.insert("queued".into(), jobs.offsite_queued().into());
        }
        v
    }

    /// The status for the monitor and the metrics (`None`: not configured).
    pub(super) fn offsite_status(&self) -> Option<OffsiteStatus> {
        let s = self.offsite.borrow().status.clone();
        s.enabled.then_some(s)
    }

    /// Recompute what is not confirmed remotely (local files only).
    fn refresh_pending(&self) {
        let result = self.session().offsite_pending();
        let mut lane = self.offsite.borrow_mut();
        match result {
            Ok(p) => {
                lane.status.pending = Some(p);
                lane.status.pending_at = Some(crate::timefmt::now_unix());
            }
            Err(e) => {
                log::debug!("offsite: cannot count what is pending: {e}");
                lane.status.pending = None;
            }
        }
    }
}

/// One line for `JOB` and `HISTORY`.
pub(super) fn describe(r: &SyncReport) -> String {
    let mut text = format!(
        "shipped {} objects ({} bytes); {} found in the store, {} confirmed before",
        r.uploaded, r.bytes, r.found, r.already
    );
    if !r.problems.is_empty() {
        text.push_str(&format!(
            "; {} not shipped: {}",
            r.problems.len(),
            r.problems.join("; ")
        ));
    }
    text
}

/// The lane: wait for a trigger, run one sync at a time.
pub(super) async fn task(d: Rc<Daemon>, wake: smol::channel::Receiver<()>) {
    let mut was_enabled = false;
    loop {
        if d.stopping.get() {
            return;
        }
        let session = d.session();
        let interval = session.config().offsite.as_ref().map(|o| o.interval());
        d.offsite.borrow_mut().status.enabled = interval.is_some();
        if let Some(interval) = interval {
            if !was_enabled {
                d.refresh_pending();
            }
            let due = d
                .offsite
                .borrow()
                .last_start
                .is_none_or(|t| t.elapsed() >= interval);
            if due {
                d.request_offsite();
            }
            let may_start = {
                let mut lane = d.offsite.borrow_mut();
                let waiting = lane.not_before.filter(|t| *t > Instant::now());
                lane.status.retry_in_s = waiting.map(|t| (t - Instant::now()).as_secs());
                let spaced = lane.last_start.is_none_or(|t| t.elapsed() >= MIN_GAP);
                (waiting.is_none() && spaced) || lane.asked
            };
            if may_start {
                run_one(&d, interval).await;
            }
        }
        if interval.is_none() {
            drop_queued(&d);
        }
        was_enabled = interval.is_some();
        drop(session);
        smol::future::or(
            async {
                Timer::after(TICK).await;
            },
            async {
                if wake.recv().await.is_err() {
                    Timer::after(TICK).await;
                }
            },
        )
        .await;
    }
}

/// `[offsite]` is gone (a reload): a queued sync will not run.
fn drop_queued(d: &Daemon) {
    let queued = d.jobs.borrow().offsite_queued();
    if let Some(id) = queued {
        d.jobs.borrow_mut().finish(
            id,
            JobState::Cancelled,
            "the configuration has no [offsite] section any more".into(),
        );
    }
}

/// Run the queued sync, if any, to its end.
async fn run_one(d: &Rc<Daemon>, interval: Duration) {
    let Some((id, _, _)) = d.jobs.borrow_mut().start_next_offsite() else {
        return;
    };
    let actor = d.jobs.borrow().get(id).map(|j| j.actor.clone());
    let (cancel_tx, cancel_rx) = smol::channel::bounded(1);
    {
        let mut lane = d.offsite.borrow_mut();
        lane.asked = false;
        lane.cancel = Some((id, cancel_tx));
        lane.last_start = Some(Instant::now());
        lane.status.running = true;
    }
    let session = d.session();
    let outcome = smol::future::or(async { Some(session.offsite_sync().await) }, async {
        let _ = cancel_rx.recv().await;
        None
    })
    .await;
    let now = crate::timefmt::now_unix();
    let (state, text) = {
        let mut lane = d.offsite.borrow_mut();
        lane.cancel = None;
        lane.status.running = false;
        let (state, text) = match &outcome {
            Some(Ok(r)) => {
                let st = &mut lane.status;
                st.bytes_shipped = st.bytes_shipped.saturating_add(r.bytes);
                st.objects_shipped = st.objects_shipped.saturating_add(r.uploaded);
                st.last_success = Some(now);
                st.last_error = None;
                st.last_error_kind = None;
                st.consecutive_failures = 0;
                let problems = r.problems.join("; ");
                if !problems.is_empty() && problems != lane.problems_said {
                    log::warn!(
                        "offsite: {} files not shipped (every sync tries again): {problems}",
                        r.problems.len()
                    );
                }
                lane.problems_said = problems;
                (JobState::Done, describe(r))
            }
            Some(Err(e)) => {
                let kind = FailureKind::of(e);
                let st = &mut lane.status;
                st.last_error = Some(e.to_string());
                st.last_error_kind = Some(kind);
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                (JobState::Failed, e.to_string())
            }
            None => (
                JobState::Cancelled,
                "cancelled; an unfinished upload is resumed by the next sync".to_string(),
            ),
        };
        lane.status.last_sync = Some(now);
        lane.status.last_result = Some(text.clone());
        match state {
            JobState::Failed => {
                lane.backoff = (lane.backoff * 2).clamp(BACKOFF_MIN, interval.max(BACKOFF_MIN));
                lane.not_before = Some(Instant::now() + lane.backoff);
                log::error!(
                    "offsite sync failed ({} in a row; next automatic try in {}s or at OFFSITE): {text}",
                    lane.status.consecutive_failures,
                    lane.backoff.as_secs()
                );
            }
            _ => {
                lane.backoff = Duration::ZERO;
                lane.not_before = None;
            }
        }
        (state, text)
    };
    if state == JobState::Done {
        // Each object shipped was logged by the sync itself.
        log::debug!("offsite sync: {text}");
    }
    d.jobs.borrow_mut().finish(id, state, text.clone());
    d.refresh_pending();
    // Only an operator's sync is audited (the request was): automatic
    // ones would write a record per WAL segment.
    if matches!(actor, Some(Actor::Peer { .. })) {
        d.audit_quietly(
            &Actor::Daemon,
            &format!("job {id} offsite sync"),
            &format!("{state:?}: {text}"),
        );
    }
    let _ = d.kick_monitor.try_send(());
    d.write_textfile();
    // Let the rest of the daemon in before the next one.
    smol::future::yield_now().await;
}
