//! `rvm-backup daemon`: scheduler, job runner and control socket on one
//! single-threaded smol executor.
//!
//! Everything runs as tasks on one `LocalExecutor`: the accept loop and one
//! task per connection, the job runner, the scheduler tick, the signal
//! handler. Long work (backup, verify, restore) yields after every chunk,
//! so requests are answered between chunks. State is shared through
//! `RefCell`s that are never held across an `.await`.
//!
//! Shutdown (SIGTERM/SIGINT): the daemon stops taking state-changing
//! requests (`ERR 503`) and starting queued jobs, then cancels the running
//! job through the runner; the job's future is dropped at its next yield
//! point and the drop removes its temporary files (nothing half-written is
//! ever published). Then the socket is removed and `stop` audited.

pub mod jobs;
pub mod notify;
pub mod scheduler;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol::{Async, LocalExecutor, Timer};

use self::jobs::{JobKind, JobState, Jobs};
use self::notify::Notifier;
use self::scheduler::{Plan, Scheduler};
use crate::audit::{Actor, AuditLog};
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::error::{msg, Error, IoContext, Result};
use crate::progress::{Counter, Progress};
use crate::restore::Selector;
use crate::server::access::{role_of, Peer, Role};
use crate::server::protocol::{self, ProtoError, Request, Verb};
use crate::store::{Listed, Store};
use crate::strategy::Strategy;

pub struct Daemon {
    cfg: RefCell<Rc<Config>>,
    key: RefCell<Option<Rc<MasterKey>>>,
    jobs: RefCell<Jobs>,
    audit: RefCell<AuditLog>,
    sched: RefCell<Scheduler>,
    /// The socket this process bound (a reload does not move it).
    socket: PathBuf,
    stopping: std::cell::Cell<bool>,
    wake_runner: smol::channel::Sender<()>,
    cancel: RefCell<Option<(u64, smol::channel::Sender<()>)>>,
    started: Instant,
}

fn mono_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn load_key(cfg: &Config) -> Result<Option<Rc<MasterKey>>> {
    if cfg.encryption_enabled || cfg.key_file.exists() {
        Ok(Some(Rc::new(crate::keys::load(&cfg.key_file)?)))
    } else {
        Ok(None)
    }
}

fn plans(cfg: &Config) -> Result<BTreeMap<Strategy, Plan>> {
    Ok(cfg
        .configured()
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
        .collect())
}

/// Bind the control socket: 0660 inside a 0750 directory, with no moment of
/// wider permissions (the umask covers the bind). A stale socket of a dead
/// daemon is replaced; a live daemon's is never taken over.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    let dir = crate::fsutil::parent(path);
    if !dir.exists() {
        std::fs::create_dir_all(dir).at("create runtime directory", dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .at("set mode of", dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(msg(format!(
                "another rvm-backup daemon is listening on {}; stop it first",
                path.display()
            )));
        }
        log::info!("replacing the stale socket {}", path.display());
        std::fs::remove_file(path).at("remove stale socket", path)?;
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o117));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.at("listen on", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .at("set mode of", path)?;
    Ok(listener)
}

/// Everything between binding the socket and serving: clean the store,
/// open the audit log, plan the schedule.
fn prepare(cfg: &Config) -> Result<(AuditLog, Scheduler)> {
    drop(Store::new(&cfg.backup_dir).lock()?); // clean what a killed run left behind
    let mut audit = AuditLog::open(&cfg.audit_log)?;
    audit.record(
        &Actor::Daemon,
        "start",
        &format!("rvm-backup {}", env!("CARGO_PKG_VERSION")),
    )?;
    let seed = u64::from(std::process::id()) ^ (crate::timefmt::now_precise().1 as u64) << 20;
    let memory = crate::state::load(&cfg.backup_dir);
    let sched = Scheduler::new(
        plans(cfg)?,
        &memory,
        cfg.backup_jitter,
        seed,
        0,
        crate::timefmt::now_unix(),
    );
    Ok((audit, sched))
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<i32> {
    let cfg = Rc::new(Config::load(config_path)?);
    crate::logger::init(cfg.log_level);
    let key = load_key(&cfg)?;
    // First the socket: a second daemon must fail before it touches the
    // store or the audit log of the running one.
    let listener = Async::new(bind_socket(&cfg.socket)?).at("watch", &cfg.socket)?;
    let (audit, sched) = match prepare(&cfg) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = std::fs::remove_file(&cfg.socket); // ours: we just bound it
            return Err(e);
        }
    };
    let (wake_tx, wake_rx) = smol::channel::bounded(1);
    let daemon = Rc::new(Daemon {
        cfg: RefCell::new(cfg.clone()),
        key: RefCell::new(key),
        jobs: RefCell::new(Jobs::default()),
        audit: RefCell::new(audit),
        sched: RefCell::new(sched),
        socket: cfg.socket.clone(),
        stopping: std::cell::Cell::new(false),
        wake_runner: wake_tx,
        cancel: RefCell::new(None),
        started: Instant::now(),
    });
    let ex = Rc::new(LocalExecutor::new());
    let notifier = Rc::new(Notifier::from_env());
    let result = smol::block_on(ex.run(async {
        ex.spawn(crate::server::serve(listener, daemon.clone(), ex.clone()))
            .detach();
        ex.spawn(runner(daemon.clone(), wake_rx)).detach();
        ex.spawn(ticker(daemon.clone(), notifier.clone())).detach();
        notifier.send("READY=1");
        log::info!("daemon ready on {}", cfg.socket.display());
        signals(daemon.clone(), config_path.to_path_buf()).await
    }));
    notifier.send("STOPPING=1");
    daemon.stopping.set(true);
    smol::block_on(ex.run(daemon.abandon_running_job()));
    let _ = std::fs::remove_file(&daemon.socket);
    let reason = result?;
    let _ = daemon
        .audit
        .borrow_mut()
        .record(&Actor::Daemon, "stop", &reason);
    Ok(0)
}

/// Wait for a stop signal; reload the config on SIGHUP.
async fn signals(d: Rc<Daemon>, config_path: PathBuf) -> Result<String> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .ctx(|| "cannot watch signals".into())?;
    while let Some(sig) = signals.next().await {
        match sig {
            Ok(Signal::Hup) => d.reload(&config_path),
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
async fn ticker(d: Rc<Daemon>, notifier: Rc<Notifier>) {
    let watchdog = Notifier::watchdog_interval();
    let tick = watchdog.map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    loop {
        let due = d
            .sched
            .borrow_mut()
            .due(mono_ms(d.started), crate::timefmt::now_unix());
        let enabled = d.cfg().backup_enabled;
        for s in due {
            if enabled {
                d.submit(JobKind::Backup(s), Actor::Scheduler);
            } else {
                d.sched.borrow_mut().finished(s, true, mono_ms(d.started));
            }
        }
        if watchdog.is_some() {
            notifier.send("WATCHDOG=1");
        }
        notifier.send(&format!("STATUS={}", d.status_line()));
        Timer::after(tick).await;
    }
}

/// Runs queued jobs one at a time.
async fn runner(d: Rc<Daemon>, wake: smol::channel::Receiver<()>) {
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
        if let JobKind::Backup(s) = kind {
            match state {
                JobState::Cancelled => d.sched.borrow_mut().skipped(s, mono_ms(d.started)),
                _ => d.backup_finished(s, state == JobState::Done, &text),
            }
        }
        d.jobs.borrow_mut().finish(id, state, text.clone());
        d.audit_quietly(
            &Actor::Daemon,
            &format!("job {id} {}", kind.describe()),
            &format!("{state:?}: {text}"),
        );
    }
}

impl Daemon {
    fn cfg(&self) -> Rc<Config> {
        self.cfg.borrow().clone()
    }

    fn key(&self) -> Option<Rc<MasterKey>> {
        self.key.borrow().clone()
    }

    fn store(&self) -> Store {
        Store::for_config(&self.cfg())
    }

    fn audit_quietly(&self, actor: &Actor, what: &str, result: &str) {
        if let Err(e) = self.audit.borrow_mut().record(actor, what, result) {
            log::error!("cannot write the audit log: {e}");
        }
    }

    fn submit(&self, kind: JobKind, actor: Actor) -> u64 {
        let what = kind.describe();
        let (id, new) = self.jobs.borrow_mut().submit(kind, actor.clone());
        if new && actor == Actor::Scheduler {
            self.audit_quietly(
                &actor,
                &format!("scheduled {what}"),
                &format!("queued job {id}"),
            );
        }
        let _ = self.wake_runner.try_send(());
        id
    }

    fn reload(&self, path: &Path) {
        let loaded = Config::load(path).map_err(Error::from).and_then(|c| {
            let key = load_key(&c)?;
            let plans = plans(&c)?;
            Ok((c, key, plans))
        });
        match loaded {
            Ok((c, key, plans)) => {
                crate::logger::init(c.log_level);
                if c.socket != self.socket || c.audit_log != self.cfg().audit_log {
                    log::warn!("socket and audit_log changes take effect at the next restart");
                }
                let state = crate::state::load(&c.backup_dir);
                let seed = crate::timefmt::now_precise().1 as u64;
                *self.sched.borrow_mut() = Scheduler::new(
                    plans,
                    &state,
                    c.backup_jitter,
                    seed,
                    mono_ms(self.started),
                    crate::timefmt::now_unix(),
                );
                *self.key.borrow_mut() = key;
                *self.cfg.borrow_mut() = Rc::new(c);
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
    async fn abandon_running_job(&self) {
        if let Some((_, tx)) = self.cancel.borrow().as_ref() {
            let _ = tx.try_send(());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.jobs.borrow().running().is_some() && Instant::now() < deadline {
            Timer::after(Duration::from_millis(5)).await;
        }
    }

    fn backup_finished(&self, s: Strategy, ok: bool, text: &str) {
        self.sched
            .borrow_mut()
            .finished(s, ok, mono_ms(self.started));
        let result = if ok { Ok(()) } else { Err(text.to_string()) };
        crate::state::update(&self.cfg().backup_dir, s, |r| {
            r.record_run(result, crate::timefmt::now_unix())
        });
    }

    fn status_line(&self) -> String {
        let jobs = self.jobs.borrow();
        match jobs.running() {
            Some(j) => format!("running job {}: {}", j.id, j.kind.describe()),
            None => {
                let state = crate::state::load(&self.cfg().backup_dir);
                let last = state.values().filter_map(|r| r.last_success).max();
                format!(
                    "idle; last backup {}",
                    last.map_or("never".into(), crate::timefmt::rfc3339)
                )
            }
        }
    }

    /// Do one job's work; the text is its outcome.
    async fn execute(&self, kind: &JobKind, counter: Counter) -> Result<String> {
        let cfg = self.cfg();
        let key = self.key();
        let store = self.store();
        let mut progress = Progress::observed(counter);
        match kind {
            JobKind::Backup(s) => {
                let lock = store.lock()?;
                let meta =
                    crate::backup::run(&cfg, &store, &lock, *s, key.as_deref(), &mut progress)
                        .await?;
                let listing = store.list(Some(*s), key.as_deref());
                let new = crate::store::resolve(&listing.archives, &meta.id)?;
                crate::verify::verify(new, key.as_deref(), &mut progress).await?;
                crate::state::update(&cfg.backup_dir, *s, |r| {
                    r.last_verified = Some(meta.id.clone())
                });
                let pruned =
                    self.prune_with(&cfg, &store, &lock, key.as_deref(), false, Some(&meta.id))?;
                Ok(format!(
                    "{} verified; {} files, {} bytes stored; pruned {}",
                    meta.id,
                    meta.files,
                    meta.archive_bytes,
                    pruned.len()
                ))
            }
            JobKind::Verify(ids) => {
                let listing = store.list(None, key.as_deref());
                let mut failed: Vec<String> = Vec::new();
                let chosen: Vec<_> = if ids.is_empty() {
                    failed.extend(
                        listing
                            .problems
                            .iter()
                            .map(|(p, e)| format!("{}: {e}", p.display())),
                    );
                    listing.archives.iter().collect()
                } else {
                    ids.iter()
                        .map(|id| crate::store::resolve(&listing.archives, id))
                        .collect::<Result<_>>()?
                };
                for a in &chosen {
                    if let Err(e) = crate::verify::verify(a, key.as_deref(), &mut progress).await {
                        failed.push(e.to_string());
                    }
                }
                if failed.is_empty() {
                    Ok(format!("{} archives verified", chosen.len()))
                } else {
                    Err(msg(format!(
                        "{} of {} failed: {}",
                        failed.len(),
                        chosen.len(),
                        failed.join("; ")
                    )))
                }
            }
            JobKind::Restore {
                strategy,
                selector,
                target,
            } => {
                let listing = store.list(Some(*strategy), key.as_deref());
                let archive = crate::restore::select(&listing.archives, *strategy, selector)?;
                let _lock = store.lock()?;
                let r = crate::restore::run(
                    archive,
                    key.as_deref(),
                    target.as_deref(),
                    None,
                    false,
                    &mut progress,
                )
                .await?;
                Ok(format!(
                    "restored {}: {} files, {} bytes",
                    r.id, r.files, r.bytes
                ))
            }
            JobKind::Prune { dry_run } => {
                let lock = store.lock()?;
                let gone = self.prune_with(&cfg, &store, &lock, key.as_deref(), *dry_run, None)?;
                Ok(format!(
                    "{} {}",
                    if *dry_run { "would delete" } else { "deleted" },
                    gone.join(" ")
                ))
            }
        }
    }

    fn prune_with(
        &self,
        cfg: &Config,
        store: &Store,
        lock: &crate::store::StoreLock,
        key: Option<&MasterKey>,
        dry_run: bool,
        just_verified: Option<&str>,
    ) -> Result<Vec<String>> {
        let (mut plans, archives) =
            crate::prune::plan(cfg, store, key, crate::timefmt::now_unix())?;
        if let Some(id) = just_verified {
            // The archive just verified is the newest verified one: keep it
            // even before the state file says so.
            for d in plans
                .iter_mut()
                .flat_map(|p| p.decisions.iter_mut())
                .filter(|d| d.id == id)
            {
                d.keep = true;
            }
        }
        if dry_run {
            return Ok(plans
                .iter()
                .flat_map(|p| &p.decisions)
                .filter(|d| !d.keep)
                .map(|d| d.id.clone())
                .collect());
        }
        crate::prune::apply(&plans, &archives, lock)
    }

    /// Answer one request (the server calls this for every line).
    fn dispatch(
        &self,
        peer: &Peer,
        role: Option<Role>,
        req: &Request,
    ) -> Result<Value, ProtoError> {
        let actor = Actor::Peer {
            uid: peer.uid,
            pid: peer.pid,
        };
        let arg = |i: usize| req.args.get(i).map(String::as_str);
        match req.verb {
            Verb::Ping => Ok(json!({"pong": true})),
            Verb::Help => Ok(json!({
                "verbs": protocol::VERBS.iter().map(|v| v.3).collect::<Vec<_>>(),
                "your_role": role.map(Role::name),
            })),
            Verb::Status => Ok(self.status_json()),
            Verb::Health => Ok(self.health_json()),
            Verb::List => self.list_json(arg(0)),
            Verb::History => Ok(
                json!({"jobs": self.jobs.borrow().all().map(|j| j.to_json()).collect::<Vec<_>>()}),
            ),
            Verb::Job => {
                let id = job_id(arg(0))?;
                self.jobs
                    .borrow()
                    .get(id)
                    .map(|j| j.to_json())
                    .ok_or_else(|| ProtoError::new(404, format!("no job {id}")))
            }
            Verb::Backup => {
                let strategies = self.parse_strategies(&req.args)?;
                let ids: Vec<u64> = strategies
                    .into_iter()
                    .map(|s| self.submit(JobKind::Backup(s), actor.clone()))
                    .collect();
                Ok(json!({"jobs": ids}))
            }
            Verb::Verify => {
                let ids: Vec<String> = req.args.iter().filter(|a| *a != "all").cloned().collect();
                Ok(json!({"job": self.submit(JobKind::Verify(ids), actor)}))
            }
            Verb::Restore => {
                let kind = parse_restore(&req.args)?;
                Ok(json!({"job": self.submit(kind, actor)}))
            }
            Verb::Prune => {
                let dry_run = match arg(0) {
                    None => false,
                    Some("dry-run") => true,
                    Some(other) => {
                        return Err(ProtoError::new(
                            400,
                            format!("PRUNE takes only dry-run, not {other}"),
                        ))
                    }
                };
                Ok(json!({"job": self.submit(JobKind::Prune { dry_run }, actor)}))
            }
            Verb::Cancel => self.cancel(job_id(arg(0))?),
            Verb::Alerts | Verb::Report | Verb::Metrics | Verb::Drill => Err(ProtoError::new(
                501,
                format!("{} is not implemented yet", req.verb.name()),
            )),
        }
    }

    fn parse_strategies(&self, args: &[String]) -> Result<Vec<Strategy>, ProtoError> {
        let cfg = self.cfg();
        if args.is_empty() || args.iter().any(|a| a == "all") {
            return Ok(cfg.configured());
        }
        args.iter()
            .map(|a| {
                let s = Strategy::parse(a)
                    .ok_or_else(|| ProtoError::new(400, format!("unknown strategy {a}")))?;
                cfg.source(s)
                    .map(|_| s)
                    .ok_or_else(|| ProtoError::new(404, format!("strategy {s} is not configured")))
            })
            .collect()
    }

    fn cancel(&self, id: u64) -> Result<Value, ProtoError> {
        let state = self
            .jobs
            .borrow()
            .get(id)
            .map(|j| j.state)
            .ok_or_else(|| ProtoError::new(404, format!("no job {id}")))?;
        match state {
            JobState::Queued => {
                if let Some(JobKind::Backup(s)) = self.jobs.borrow().get(id).map(|j| j.kind.clone())
                {
                    self.sched.borrow_mut().skipped(s, mono_ms(self.started));
                }
                self.jobs.borrow_mut().finish(
                    id,
                    JobState::Cancelled,
                    "cancelled before it started".into(),
                );
                Ok(json!({"job": id, "state": "cancelled"}))
            }
            JobState::Running => {
                if let Some((running, tx)) = self.cancel.borrow().as_ref() {
                    if *running == id {
                        let _ = tx.try_send(());
                    }
                }
                Ok(json!({"job": id, "state": "cancelling"}))
            }
            _ => Err(ProtoError::new(409, format!("job {id} has already ended"))),
        }
    }

    fn status_json(&self) -> Value {
        let now_mono = mono_ms(self.started);
        let cfg = self.cfg();
        let state = crate::state::load(&cfg.backup_dir);
        let sched = self.sched.borrow();
        let jobs = self.jobs.borrow();
        let strategies: serde_json::Map<String, Value> = cfg
            .configured()
            .into_iter()
            .map(|s| {
                let r = state.get(&s).cloned().unwrap_or_default();
                let v = json!({
                    "last_success": r.last_success.map(crate::timefmt::rfc3339),
                    "last_failure": r.last_failure.map(crate::timefmt::rfc3339),
                    "failures": r.failures,
                    "last_error": r.last_error,
                    "last_archive": r.last_verified,
                    "next_in_s": sched.due_in(s, now_mono).map(|ms| ms / 1000),
                });
                (s.name().to_string(), v)
            })
            .collect();
        json!({
            "state": if jobs.running().is_some() { "running" } else { "idle" },
            "job": jobs.running().map(|j| j.to_json()),
            "queued": jobs.queued(),
            "backup_enabled": cfg.backup_enabled,
            "strategies": strategies,
            "uptime_s": self.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Unhealthy: a strategy with no success within two periods (or since
    /// start), or three failures in a row.
    fn health_json(&self) -> Value {
        let cfg = self.cfg();
        let state = crate::state::load(&cfg.backup_dir);
        let now = crate::timefmt::now_unix();
        let up = self.started.elapsed().as_secs() as i64;
        let plans = plans(&cfg).unwrap_or_default();
        let mut problems = Vec::new();
        for (s, plan) in &plans {
            let r = state.get(s).cloned().unwrap_or_default();
            let period = if plan.at.is_some() {
                86_400
            } else {
                plan.interval.as_secs() as i64
            };
            match r.last_success {
                None if up > period => problems.push(format!("{s}: no successful backup yet")),
                Some(t) if now - t > 2 * period => problems.push(format!(
                    "{s}: last successful backup {} is stale",
                    crate::timefmt::rfc3339(t)
                )),
                _ => {}
            }
            if r.failures >= 3 {
                problems.push(format!(
                    "{s}: {} failures in a row, last: {}",
                    r.failures,
                    r.last_error.unwrap_or_default()
                ));
            }
        }
        json!({"healthy": problems.is_empty(), "problems": problems})
    }

    fn list_json(&self, strategy: Option<&str>) -> Result<Value, ProtoError> {
        let only = match strategy {
            None => None,
            Some(s) => Some(
                Strategy::parse(s)
                    .ok_or_else(|| ProtoError::new(400, format!("unknown strategy {s}")))?,
            ),
        };
        let key = self.key();
        let listing = self.store().list(only, key.as_deref());
        let archives: Vec<Value> = listing.archives.iter().map(Listed::to_json).collect();
        let problems: Vec<String> = listing
            .problems
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        Ok(json!({"archives": archives, "problems": problems}))
    }
}

fn job_id(arg: Option<&str>) -> Result<u64, ProtoError> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| ProtoError::new(400, "give a job id (a number)"))
}

/// `RESTORE STRATEGY [ID|latest] [at=TIME] [target=DIR]`
fn parse_restore(args: &[String]) -> Result<JobKind, ProtoError> {
    let bad = |m: String| ProtoError::new(400, m);
    let strategy = args
        .first()
        .and_then(|a| Strategy::parse(a))
        .ok_or_else(|| {
            bad("RESTORE needs a strategy: database, config, logs or application".into())
        })?;
    let mut selector = None;
    let mut target = None;
    for a in &args[1..] {
        let next = if let Some(t) = a.strip_prefix("at=") {
            Selector::At(crate::timefmt::parse(t).map_err(bad)?)
        } else if let Some(dir) = a.strip_prefix("target=") {
            let p = PathBuf::from(dir);
            if !crate::restore::is_plain_absolute(&p) {
                return Err(bad(format!(
                    "target {dir} must be an absolute path without .."
                )));
            }
            target = Some(p);
            continue;
        } else if a == "latest" {
            Selector::Latest
        } else {
            Selector::Id(a.clone())
        };
        if selector.replace(next).is_some() {
            return Err(bad("give one of ID, latest or at=TIME".into()));
        }
    }
    let selector = selector.unwrap_or(Selector::Latest);
    Ok(JobKind::Restore {
        strategy,
        selector,
        target,
    })
}

impl crate::server::Handler for Daemon {
    fn handle_line(&self, peer: &Peer, line: &[u8]) -> String {
        let req = match protocol::parse(line) {
            Ok(r) => r,
            Err(e) => return protocol::err(&e),
        };
        let role = role_of(peer, &self.cfg().access);
        if self.stopping.get() && req.verb.changes_state() {
            return protocol::err(&ProtoError::new(503, "the daemon is shutting down"));
        }
        let allowed = match req.verb.needs() {
            None => true,
            Some(needed) => role.is_some_and(|r| r >= needed),
        };
        let reply = if allowed {
            self.dispatch(peer, role, &req)
        } else {
            Err(ProtoError::new(
                403,
                format!(
                    "uid {} ({}) may not {}; it needs the {} role",
                    peer.uid,
                    role.map_or("no role", Role::name),
                    req.verb.name(),
                    req.verb.needs().map_or("", Role::name)
                ),
            ))
        };
        if req.verb.changes_state() {
            let what = format!("{} {}", req.verb.name(), req.args.join(" "));
            let result = match &reply {
                Ok(v) => format!("accepted {v}"),
                Err(e) => format!("refused {} {}", e.code, e.message),
            };
            self.audit_quietly(
                &Actor::Peer {
                    uid: peer.uid,
                    pid: peer.pid,
                },
                what.trim_end(),
                &result,
            );
        }
        match reply {
            Ok(v) => protocol::ok(&v),
            Err(e) => protocol::err(&e),
        }
    }
}
