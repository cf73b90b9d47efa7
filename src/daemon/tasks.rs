//! The daemon's long-lived tasks: the job runner, the scheduler tick (with
//! the systemd watchdog and status), and the signal handler (stop, reload).

use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;

use super::jobs::{JobKind, JobState};
use super::notify::Notifier;
use super::scheduler::Scheduler;
use super::{plans, Daemon};
use crate::alerting::heartbeat::Ping;
use crate::audit::Actor;
use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::ops::Session;

/// Wait for a stop signal; reload the config on SIGHUP.
pub(super) async fn signals(d: Rc<Daemon>) -> Result<String> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .ctx(|| "cannot watch signals".into())?;
    while let Some(sig) = signals.next().await {
        match sig {
            Ok(Signal::Hup) => d.reload(),
            Ok(s) => {
                let running = d.jobs.borrow().running().map(|j| j.id);
                log::info!(
                    "stopping on {s:?}{}",
                    running
                        .map(|j| format!("; job {j} is abandoned cleanly"))
                        .unwrap_or_default()
                );
                return Ok(format!("signal {s:?}"));
            }
            Err(e) => log::warn!("signal error: {e}"),
        }
    }
    Ok("signal stream ended".into())
}

/// The main loop's heartbeat: due strategies, watchdog, status.
pub(super) async fn ticker(d: Rc<Daemon>, notifier: Rc<Notifier>) {
    let watchdog = Notifier::watchdog_interval();
    let tick = watchdog.map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    loop {
        let due = d
            .sched
            .borrow_mut()
            .due(d.mono_ms(), crate::timefmt::now_unix());
        let enabled = d.session().config().backup_enabled;
        for s in due {
            if enabled {
                let _ = d.submit(JobKind::Backup(s, false), Actor::Scheduler);
            } else {
                d.sched.borrow_mut().finished(s, true, d.mono_ms());
            }
        }
        if enabled {
            d.submit_due_drill();
            d.submit_due_export();
        }
        // Close the refusal windows that ended (their summary records).
        if let Err(e) = d.audit.borrow_mut().flush_suppressed(Instant::now()) {
            log::error!("cannot write the audit log: {e}");
        }
        if watchdog.is_some() {
            notifier.send("WATCHDOG=1");
        }
        notifier.send(&format!("STATUS={}", d.status_line()));
        Timer::after(tick).await;
    }
}

/// Runs queued jobs one at a time.
pub(super) async fn runner(d: Rc<Daemon>, wake: smol::channel::Receiver<()>) {
    loop {
        if d.stopping.get() {
            return;
        }
        let next = d.jobs.borrow_mut().start_next();
        let Some((id, kind, counter)) = next else {
            if wake.recv().await.is_err() {
                return;
            }
            continue;
        };
        let (cancel_tx, cancel_rx) = smol::channel::bounded(1);
        *d.cancel.borrow_mut() = Some((id, cancel_tx));
        let backup = matches!(kind, JobKind::Backup(..));
        if backup {
            d.alerting.heartbeat(Ping::Start);
        }
        let work = d.execute(&kind, counter);
        let outcome = smol::future::or(async { Some(work.await) }, async {
            let _ = cancel_rx.recv().await;
            None
        })
        .await;
        *d.cancel.borrow_mut() = None;
        let (state, text) = match outcome {
            Some(Ok(text)) => (JobState::Done, text),
            Some(Err(e)) => (JobState::Failed, e.to_string()),
            None => (
                JobState::Cancelled,
                "cancelled; what was not yet published was discarded".into(),
            ),
        };
        if let JobKind::Backup(s, _) = kind {
            let mut sched = d.sched.borrow_mut();
            match state {
                JobState::Cancelled => sched.skipped(s, d.mono_ms()),
                _ => sched.finished(s, state == JobState::Done, d.mono_ms()),
            }
        }
        if let JobKind::Drill(_) = kind {
            d.sched.borrow_mut().drill_finished(d.mono_ms());
        }
        if let JobKind::Export(_) = kind {
            d.sched.borrow_mut().export_finished(d.mono_ms());
        }
        // A cancelled job (a stop, an operator) says nothing: the
        // receiver's own timeout notices a board that stopped.
        match state {
            JobState::Done if backup => d.alerting.heartbeat(Ping::Success),
            JobState::Failed if backup => d
                .alerting
                .heartbeat(Ping::Fail(format!("{}: {text}", kind.describe()))),
            _ => {}
        }
        d.jobs.borrow_mut().finish(id, state, text.clone());
        // A new archive goes offsite at once.
        if backup && state == JobState::Done {
            d.request_offsite();
        }
        // The monitor looks at once (a failed backup is news).
        let _ = d.kick_monitor.try_send(());
        d.audit_quietly(
            &Actor::Daemon,
            &format!("job {id} {}", kind.describe()),
            &format!("{state:?}: {text}"),
        );
        // The fleet sees the job's outcome without waiting for the interval.
        d.write_textfile();
    }
}

impl Daemon {
    /// Queue the periodic drill of every configured strategy when it is
    /// due (`drill_interval`; see `scheduler::DrillSchedule`).
    fn submit_due_drill(&self) {
        let session = self.session();
        let cfg = session.config();
        let strategies = cfg.configured();
        if strategies.is_empty() {
            return;
        }
        let last_drill = || {
            let state = crate::state::load(&cfg.backup_dir);
            // The oldest last drill; never drilled if one never was.
            strategies
                .iter()
                .map(|s| state.get(s).and_then(|r| r.last_drill))
                .try_fold(i64::MAX, |oldest, t| t.map(|t| oldest.min(t)))
        };
        let due = self.sched.borrow_mut().drill_due(
            cfg.drill_interval,
            last_drill,
            self.mono_ms(),
            crate::timefmt::now_unix(),
        );
        if due {
            let _ = self.submit(JobKind::Drill(strategies.clone()), Actor::Scheduler);
        }
    }

    /// Queue the periodic export when it is due (`export_interval`) and a
    /// stick of an allowed type is mounted at `export_dir`. Without one
    /// the export is skipped quietly (said once, at info) and looked for
    /// again a minute later.
    fn submit_due_export(&self) {
        let session = self.session();
        let cfg = session.config();
        if cfg.configured().is_empty() {
            return;
        }
        let last_export = || {
            let state = crate::state::load(&cfg.backup_dir);
            cfg.configured()
                .iter()
                .map(|s| state.get(s).and_then(|r| r.last_export))
                .try_fold(i64::MAX, |oldest, t| t.map(|t| oldest.min(t)))
        };
        let mut sched = self.sched.borrow_mut();
        let now = self.mono_ms();
        if !sched.export_due(
            cfg.export_interval,
            last_export,
            now,
            crate::timefmt::now_unix(),
        ) {
            return;
        }
        match crate::recovery_set::stick::check(&cfg.export_dir, &cfg.backup_dir) {
            Ok(_) => {
                sched.export_skip_noted = false;
                drop(sched);
                let _ = self.submit(JobKind::Export(None), Actor::Scheduler);
            }
            Err(e) => {
                if !sched.export_skip_noted {
                    log::info!("scheduled export skipped: {e}");
                    sched.export_skip_noted = true;
                }
                sched.export_retry(now);
            }
        }
    }

    /// Load the config again; keep the old one (and say so) if the new one
    /// or its key does not load.
    fn reload(&self) {
        let path = self.config_path.clone();
        let loaded = Config::load(&path)
            .map_err(crate::error::Error::from)
            .and_then(Session::open);
        match loaded {
            Ok(session) => {
                let c = session.config();
                crate::logger::init(c.log_level);
                let old = self.session();
                if c.socket != self.socket || c.audit_log != old.config().audit_log {
                    log::warn!("socket and audit_log changes take effect at the next restart");
                }
                let state = crate::state::load(&c.backup_dir);
                let seed = u64::from(crate::timefmt::now_precise().1);
                *self.sched.borrow_mut() = Scheduler::new(
                    plans(c),
                    &state,
                    c.backup_jitter,
                    seed,
                    self.mono_ms(),
                    crate::timefmt::now_unix(),
                );
                self.alerting.reconfigure(c);
                *self.session.borrow_mut() = Rc::new(session);
                log::info!("configuration reloaded from {}", path.display());
                self.audit_quietly(&Actor::Daemon, "reload", "ok");
            }
            Err(e) => {
                log::error!("reload failed, keeping the old configuration: {e}");
                self.audit_quietly(&Actor::Daemon, "reload", &format!("failed: {e}"));
            }
        }
    }

    /// Cancel the running job and wait (a bounded time) until it is gone.
    pub(super) async fn abandon_running_job(&self) {
        if let Some((_, tx)) = self.cancel.borrow().as_ref() {
            let _ = tx.try_send(());
        }
        self.cancel_offsite(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let busy = || {
            let jobs = self.jobs.borrow();
            jobs.running().is_some() || jobs.running_offsite().is_some()
        };
        while busy() && Instant::now() < deadline {
            Timer::after(Duration::from_millis(5)).await;
        }
    }

    /// Ask the running job to stop, if it is `id`.
    pub(super) fn cancel_running(&self, id: u64) {
        if let Some((running, tx)) = self.cancel.borrow().as_ref() {
            if *running == id {
                let _ = tx.try_send(());
            }
        }
        self.cancel_offsite(Some(id));
    }
}
