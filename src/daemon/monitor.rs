//! The monitor task: every `backup_monitoring_interval`, and right after
//! each job ends, gather the facts, evaluate the rules, run the tracker,
//! and hand the alerts it makes to [`super::raise::raise`].
//!
//! It runs on the daemon's single thread like everything else: gathering
//! yields after each strategy, and the `RefCell` holding the monitor's
//! state is never borrowed across an `.await`. With
//! `backup_monitoring_enabled = false` nothing is evaluated on a timer;
//! `ALERTS` and `REPORT` then evaluate on demand (no tracker, no alerts).

use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use super::jobs::JobKind;
use super::Daemon;
use crate::monitor::facts::{Facts, Running};
use crate::monitor::tracker::{self, Tracker};
use crate::monitor::{rules, Finding};

/// The monitor's latest view, for `ALERTS`, `REPORT` and `HEALTH`.
#[derive(Default)]
pub(super) struct MonitorState {
    pub tracker: Tracker,
    /// Whether `tracker` was loaded from `backup_dir` yet.
    pub loaded: bool,
    pub findings: Vec<Finding>,
    pub facts: Option<Facts>,
    /// When the latest evaluation was made (Unix seconds).
    pub evaluated: Option<i64>,
}

/// Evaluate now and then: on the interval, and when a job ends (`kick`).
pub(super) async fn task(d: Rc<Daemon>, kick: smol::channel::Receiver<()>) {
    loop {
        if d.stopping.get() {
            return;
        }
        let (enabled, interval) = {
            let s = d.session();
            let c = s.config();
            (c.monitoring_enabled, c.monitoring_interval)
        };
        if enabled {
            d.evaluate_and_alert().await;
        }
        let wait = interval.max(Duration::from_secs(1));
        smol::future::or(
            async {
                Timer::after(wait).await;
            },
            async {
                if kick.recv().await.is_err() {
                    // The daemon is going away: sleep on the timer.
                    Timer::after(wait).await;
                }
            },
        )
        .await;
    }
}

impl Daemon {
    /// What the running job means to the rules.
    fn running_facts(&self) -> Option<Running> {
        let jobs = self.jobs.borrow();
        let j = jobs.running()?;
        Some(Running {
            what: j.kind.describe(),
            backup: match j.kind {
                JobKind::Backup(s, _) => Some(s),
                _ => None,
            },
            restore: matches!(j.kind, JobKind::Restore(_) | JobKind::RestoreAll { .. }),
            started: j.started_at.unwrap_or(j.queued_at),
        })
    }

    /// The daemon's start as Unix time (when watching began).
    fn started_wall(&self) -> i64 {
        let up = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(0);
        crate::timefmt::now_unix().saturating_sub(up)
    }

    /// Gather facts and evaluate the rules (no tracker).
    pub(super) async fn evaluate(&self) -> (Facts, Vec<Finding>, i64) {
        let session = self.session();
        let facts = crate::monitor::facts::gather(
            &session,
            self.running_facts(),
            Some(self.started_wall()),
        )
        .await;
        let mut facts = facts;
        facts.pitr = crate::monitor::facts::pitr(
            session.config(),
            Ok(self.pitr.borrow().clone()),
            Some(self.started_wall()),
        );
        facts.offsite = self.offsite_status().and_then(|status| {
            let interval = session.config().offsite.as_ref()?.interval();
            Some(crate::monitor::facts::OffsiteFacts {
                interval_s: interval.as_secs().max(1),
                status,
            })
        });
        let now = crate::timefmt::now_unix();
        let findings = rules::evaluate(&facts, &session.config().monitoring, now);
        (facts, findings, now)
    }

    /// One round of the monitor: evaluate, track, save, raise.
    pub(super) async fn evaluate_and_alert(&self) {
        let (facts, findings, now) = self.evaluate().await;
        let session = self.session();
        let cfg = session.config();
        let changes = {
            let mut m = self.monitor.borrow_mut();
            if !m.loaded {
                m.tracker = Tracker::load(&cfg.backup_dir);
                m.loaded = true;
            }
            let before = m.tracker.clone();
            let changes = m.tracker.observe(
                &findings,
                cfg.monitoring.confirm,
                cfg.monitoring.repeat.as_secs(),
                now,
            );
            // Write only when a state changed (the SD card wears), not for
            // a new reason text or evaluation time.
            if !m.tracker.same_states(&before) {
                if let Err(e) = m.tracker.save(&cfg.backup_dir) {
                    log::error!("cannot save the monitor's state: {e}");
                }
            }
            m.findings = findings;
            m.facts = Some(facts);
            m.evaluated = Some(now);
            changes
        };
        if changes.is_empty() {
            return;
        }
        let who =
            crate::recovery_set::board::BoardIdentity::current_or_hostname(&cfg.machine_id_file);
        let alerts = tracker::alerts(&changes, &who.hostname, &who.machine_id, now);
        super::raise::raise(self, alerts);
    }

    /// The latest findings and facts; evaluated now (blocking the thread
    /// for one gathering, a few dozen sidecars) when the monitor has not
    /// run yet or is off (a reload may have turned it off).
    pub(super) fn latest(&self) -> (Facts, Vec<Finding>, i64) {
        if self.session().config().monitoring_enabled {
            let m = self.monitor.borrow();
            if let (Some(f), Some(at)) = (&m.facts, m.evaluated) {
                return (f.clone(), m.findings.clone(), at);
            }
        }
        smol::block_on(self.evaluate())
    }
}
