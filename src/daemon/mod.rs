//! `rvm-backup daemon`: scheduler, job runner and control socket on one
//! single-threaded smol executor.
//!
//! The daemon is split the way a small server is: this file owns its
//! lifecycle (start, serve, stop) and its shared state; `tasks` runs the
//! long-lived tasks (job runner, scheduler tick, signals); `work` turns a
//! job into calls of the operations layer; `handler` answers one request
//! line (parse, roles, audit, dispatch); `reports` builds the read-only
//! replies (status, health, list); `metrics` the `METRICS` reply and the
//! node_exporter textfile; `socket` binds the control socket; `offsite`
//! the offsite sync lane beside the job runner.
//!
//! Everything runs as tasks on one `LocalExecutor`: the accept loop and one
//! task per connection, the job runner, the scheduler tick, the signal
//! handler. Long work yields after every entry and every chunk, so
//! requests are answered in between. State is shared through `RefCell`s
//! that are never held across an `.await`.
//!
//! Shutdown (SIGTERM/SIGINT): the daemon stops taking state-changing
//! requests (`ERR 503`) and starting queued jobs, then cancels the running
//! job through the runner; the job's future is dropped at its next yield
//! point and the drop removes its temporary files (nothing half-written is
//! ever published). Then the socket is removed and `stop` audited.

mod dashboard;
mod handler;
pub mod jobs;
mod metrics;
mod monitor;
pub mod notify;
mod offsite;
mod pitr;
mod raise;
mod reports;
pub mod scheduler;
mod socket;
mod tasks;
mod work;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use smol::{Async, LocalExecutor};

use self::jobs::{JobKind, Jobs};
use self::notify::Notifier;
use self::scheduler::{Plan, Scheduler};
use crate::audit::{Actor, AuditLog, Limits};
use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::ops::Session;
use crate::strategy::Strategy;

pub struct Daemon {
    config_path: PathBuf,
    /// The configuration, key and store in force; replaced whole by a
    /// reload. A job keeps the session it started with.
    session: RefCell<Rc<Session>>,
    jobs: RefCell<Jobs>,
    audit: RefCell<AuditLog>,
    sched: RefCell<Scheduler>,
    /// The socket this process serves (a reload does not move it).
    socket: PathBuf,
    stopping: Cell<bool>,
    wake_runner: smol::channel::Sender<()>,
    cancel: RefCell<Option<(u64, smol::channel::Sender<()>)>>,
    started: Instant,
    /// Alert delivery (outbox, sinks, heartbeat); the monitor raises
    /// alerts through it.
    pub(crate) alerting: Rc<crate::alerting::Alerting>,
    /// The monitor's tracker and latest evaluation.
    monitor: RefCell<monitor::MonitorState>,
    /// Wakes the monitor task (after each job).
    kick_monitor: smol::channel::Sender<()>,
    kicked: smol::channel::Receiver<()>,
    /// What the WAL shipper last reported (STATUS).
    pitr: RefCell<crate::pitr::PitrStatus>,
    /// The offsite sync lane (see `offsite`), and its wake-up.
    offsite: RefCell<offsite::Lane>,
    wake_offsite: smol::channel::Sender<()>,
    offsite_woken: smol::channel::Receiver<()>,
}

fn mono_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When each configured strategy runs.
fn plans(cfg: &Config) -> BTreeMap<Strategy, Plan> {
    cfg.configured()
        .into_iter()
        .filter_map(|s| {
            let (interval, at) = cfg.schedule(s)?;
            Some((
                s,
                Plan {
                    interval,
                    at: at.map(|a| (a.hour, a.minute)),
                },
            ))
        })
        .collect()
}

impl Daemon {
    /// Everything but the socket: clean what a killed run left in the
    /// store, open the audit log (recording the start), plan the schedule.
    /// Binds nothing, so request handling can be tested in-process. The
    /// receiver wakes the job runner.
    pub fn new(
        config_path: &Path,
        session: Session,
    ) -> Result<(Daemon, smol::channel::Receiver<()>)> {
        let cfg = session.config();
        drop(session.store().lock()?);
        let mut audit = AuditLog::open_with(&cfg.audit_log, Limits::from_config(cfg))?;
        audit.record(
            &Actor::Daemon,
            "start",
            &format!("rvm-backup {}", env!("CARGO_PKG_VERSION")),
        )?;
        let seed =
            u64::from(std::process::id()) ^ (u64::from(crate::timefmt::now_precise().1) << 20);
        let sched = Scheduler::new(
            plans(cfg),
            &crate::state::load(&cfg.backup_dir),
            cfg.backup_jitter,
            seed,
            0,
            crate::timefmt::now_unix(),
        );
        let (wake_tx, wake_rx) = smol::channel::bounded(1);
        let (kick_tx, kick_rx) = smol::channel::bounded(1);
        let (offsite_tx, offsite_rx) = smol::channel::bounded(1);
        let socket = cfg.socket.clone();
        let alerting = Rc::new(crate::alerting::Alerting::open(cfg)?);
        Ok((
            Daemon {
                config_path: config_path.to_path_buf(),
                session: RefCell::new(Rc::new(session)),
                jobs: RefCell::new(Jobs::default()),
                audit: RefCell::new(audit),
                sched: RefCell::new(sched),
                socket,
                stopping: Cell::new(false),
                wake_runner: wake_tx,
                cancel: RefCell::new(None),
                started: Instant::now(),
                alerting,
                monitor: RefCell::new(monitor::MonitorState::default()),
                kick_monitor: kick_tx,
                kicked: kick_rx,
                pitr: RefCell::new(crate::pitr::PitrStatus::default()),
                offsite: RefCell::new(offsite::Lane::default()),
                wake_offsite: offsite_tx,
                offsite_woken: offsite_rx,
            },
            wake_rx,
        ))
    }

    fn session(&self) -> Rc<Session> {
        self.session.borrow().clone()
    }

    fn mono_ms(&self) -> u64 {
        mono_ms(self.started)
    }

    fn audit_quietly(&self, actor: &Actor, what: &str, result: &str) {
        if let Err(e) = self.audit.borrow_mut().record(actor, what, result) {
            log::error!("cannot write the audit log: {e}");
        }
    }

    /// Queue work (or find the same work already queued); wakes the runner.
    /// `None`: the queue is full (never for the scheduler).
    fn submit(&self, kind: JobKind, actor: Actor) -> Option<u64> {
        let what = kind.describe();
        let (id, new) = self.jobs.borrow_mut().submit(kind, actor.clone())?;
        if new && actor == Actor::Scheduler {
            self.audit_quietly(
                &actor,
                &format!("scheduled {what}"),
                &format!("queued job {id}"),
            );
        }
        let _ = self.wake_runner.try_send(());
        Some(id)
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<i32> {
    let cfg = Config::load(config_path)?;
    crate::logger::init(cfg.log_level);
    // The daemon's memory bound comes before a faster restore, verify or
    // database backup: its jobs read frames and check the database
    // serially, on its one thread.
    crate::workers::set_allowed(false);
    let (session, _made_key) = Session::open_first_start(cfg)?;
    // First the socket: a second daemon must fail before it touches the
    // store or the audit log of the running one.
    let socket_path = session.config().socket.clone();
    let listener = Async::new(socket::bind(&socket_path)?).at("watch", &socket_path)?;
    let (daemon, wake_rx) = match Daemon::new(config_path, session) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = std::fs::remove_file(&socket_path); // ours: we just bound it
            return Err(e);
        }
    };
    let daemon = Rc::new(daemon);
    let ex = Rc::new(LocalExecutor::new());
    let notifier = Rc::new(Notifier::from_env());
    let result = smol::block_on(ex.run(async {
        ex.spawn(crate::server::serve(listener, daemon.clone(), ex.clone()))
            .detach();
        ex.spawn(tasks::runner(daemon.clone(), wake_rx)).detach();
        ex.spawn(tasks::ticker(daemon.clone(), notifier.clone()))
            .detach();
        ex.spawn(metrics::textfile_task(daemon.clone())).detach();
        ex.spawn(crate::alerting::tasks(daemon.alerting.clone()))
            .detach();
        ex.spawn(monitor::task(daemon.clone(), daemon.kicked.clone()))
            .detach();
        ex.spawn(pitr::task(daemon.clone())).detach();
        ex.spawn(offsite::task(daemon.clone(), daemon.offsite_woken.clone()))
            .detach();
        notifier.send("READY=1");
        log::info!("daemon ready on {}", socket_path.display());
        tasks::signals(daemon.clone()).await
    }));
    notifier.send("STOPPING=1");
    daemon.stopping.set(true);
    daemon.alerting.stop();
    smol::block_on(ex.run(daemon.abandon_running_job()));
    let _ = std::fs::remove_file(&daemon.socket);
    let reason = result?;
    let _ = daemon
        .audit
        .borrow_mut()
        .record(&Actor::Daemon, "stop", &reason);
    Ok(0)
}
