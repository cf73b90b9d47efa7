//! Alert delivery: getting the monitor's alerts to people, through power
//! cuts and network outages.
//!
//! [`Alerting`] is the daemon's handle: [`Alerting::raise`] picks, for each
//! alert, the sinks that want it (`[[alert]]` tables: [`sink`]), stores one
//! outbox entry per (alert, sink) crash-safely ([`outbox`]) and wakes the
//! delivery task ([`delivery`]), which sends them with retries
//! ([`backoff`]) through the webhook ([`webhook`] on [`http`]), exec
//! ([`exec`]) and email ([`email`]) sinks; the log sink ([`journal`]) is
//! written at once. [`heartbeat`] pings `heartbeat_url` around backups.
//!
//! Invariants: an alert is on disk before anything is sent, and leaves the
//! outbox only when its sink took it (at least once; receivers
//! de-duplicate on the alert's id, which every retry keeps); the outbox is
//! bounded (`outbox_max`, the oldest dropped and counted); nothing here
//! blocks the executor; borrows are never held across an `.await`.
//! An alert the outbox cannot store (a full or broken `backup_dir`, which
//! is itself what an alert must say) is kept in memory instead, at most
//! [`MAX_UNSTORED`] (sink, alert) pairs, and sent from there with the same
//! retries, moving to the outbox as soon as it can be stored: lost only if
//! the daemon stops before either.

pub mod backoff;
pub mod delivery;
pub mod email;
pub mod exec;
pub mod heartbeat;
pub mod journal;
pub mod outbox;
pub mod sink;
pub mod webhook;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use self::heartbeat::Ping;
use self::outbox::Outbox;
use self::sink::{Sink, SinkKind};
use crate::config::Config;
use crate::error::{msg, Result};
use crate::monitor::{Alert, AlertKind, Finding, Severity};
use crate::net::url::HttpUrl;

/// The rule name of `alert test` alerts; they go to every sink.
pub const TEST_RULE: &str = "test";
/// The most (alert, sink) pairs kept in memory while the outbox cannot
/// store them (the oldest dropped first).
pub const MAX_UNSTORED: usize = 64;

/// The daemon's alert delivery: outbox, sinks, wake-ups, heartbeat.
pub struct Alerting {
    outbox: RefCell<Outbox>,
    sinks: RefCell<Rc<Vec<Sink>>>,
    heartbeat_url: RefCell<Option<HttpUrl>>,
    /// Per sink: not tried again before this (Unix ms), after a failure.
    held: RefCell<HashMap<String, i64>>,
    /// Alerts the outbox could not store, with their sink, oldest first.
    unstored: RefCell<VecDeque<(Alert, String)>>,
    jitter: RefCell<backoff::Jitter>,
    wake_tx: smol::channel::Sender<()>,
    wake_rx: smol::channel::Receiver<()>,
    ping_tx: smol::channel::Sender<Ping>,
    ping_rx: smol::channel::Receiver<Ping>,
    stopping: Cell<bool>,
}

impl Alerting {
    /// Open the outbox in `backup_dir` (entries left by an earlier run are
    /// picked up) with the sinks of `cfg`.
    pub fn open(cfg: &Config) -> Result<Alerting> {
        let outbox =
            Outbox::open(&cfg.backup_dir, cfg.outbox_max, delivery::now_ms()).map_err(|e| {
                msg(format!(
                    "cannot open the alert outbox in {}: {e}",
                    cfg.backup_dir.display()
                ))
            })?;
        if outbox.depth() > 0 {
            log::info!(
                "alert outbox: {} undelivered alert(s) from before; sending them",
                outbox.depth()
            );
        }
        let (wake_tx, wake_rx) = smol::channel::bounded(1);
        let (ping_tx, ping_rx) = smol::channel::bounded(heartbeat::QUEUE);
        let seed =
            u64::from(std::process::id()) ^ (u64::from(crate::timefmt::now_precise().1) << 16);
        Ok(Alerting {
            outbox: RefCell::new(outbox),
            sinks: RefCell::new(Rc::new(cfg.alerts.clone())),
            heartbeat_url: RefCell::new(cfg.heartbeat_url.clone()),
            held: RefCell::new(HashMap::new()),
            unstored: RefCell::new(VecDeque::new()),
            jitter: RefCell::new(backoff::Jitter::new(seed)),
            wake_tx,
            wake_rx,
            ping_tx,
            ping_rx,
            stopping: Cell::new(false),
        })
    }

    /// Take a reloaded config's sinks, heartbeat and bound. Entries for a
    /// sink no longer configured are dropped (and counted) when due.
    pub fn reconfigure(&self, cfg: &Config) {
        *self.sinks.borrow_mut() = Rc::new(cfg.alerts.clone());
        *self.heartbeat_url.borrow_mut() = cfg.heartbeat_url.clone();
        self.held.borrow_mut().clear();
        self.outbox.borrow_mut().set_max(cfg.outbox_max);
        let _ = self.wake_tx.try_send(());
    }

    /// Hand alerts over for delivery: each is written to the outbox once
    /// per sink that wants it (durably, before this returns) and the
    /// delivery task is woken; log sinks are written at once. Without any
    /// `[[alert]]` table, alerts go to the journal. Returns how many
    /// outbox entries were stored. Never fails: a full outbox drops its
    /// oldest entries, a write error is logged.
    pub fn raise(&self, alerts: Vec<Alert>) -> usize {
        let sinks = self.sinks.borrow().clone();
        let now = delivery::now_ms();
        let mut stored = 0;
        for alert in alerts {
            let alert = bounded(alert);
            if sinks.is_empty() {
                journal::send(&alert);
                continue;
            }
            let mut names = Vec::new();
            for s in sinks.iter().filter(|s| s.wants(&alert)) {
                match s.kind {
                    SinkKind::Log => journal::send(&alert),
                    _ => names.push(s.name.clone()),
                }
            }
            if names.is_empty() {
                continue;
            }
            let added = self.outbox.borrow_mut().add(&alert, &names, now);
            match added {
                Ok(seqs) => stored += seqs.len(),
                Err(e) => {
                    log::error!(
                        "cannot store alert {} in the outbox ({e}); it is sent from memory, and lost if the daemon stops first: {}",
                        alert.id,
                        alert.summary()
                    );
                    for name in names {
                        self.keep_unstored(alert.clone(), name);
                    }
                }
            }
        }
        if stored > 0 || !self.unstored.borrow().is_empty() {
            let _ = self.wake_tx.try_send(());
        }
        stored
    }

    /// Keep an alert the outbox could not store (bounded, oldest dropped).
    fn keep_unstored(&self, alert: Alert, sink: String) {
        let mut u = self.unstored.borrow_mut();
        if u.len() >= MAX_UNSTORED {
            if let Some((old, s)) = u.pop_front() {
                log::error!(
                    "alert {} for {s} dropped: {MAX_UNSTORED} alerts already wait in memory for a writable outbox",
                    old.id
                );
            }
        }
        u.push_back((alert, sink));
    }

    /// The oldest alert kept in memory whose sink is not held at `now_ms`.
    fn take_unstored(&self, now_ms: i64) -> Option<(Alert, String)> {
        let held = self.held.borrow();
        let mut u = self.unstored.borrow_mut();
        let i = u
            .iter()
            .position(|(_, s)| held.get(s).is_none_or(|&t| t <= now_ms))?;
        u.remove(i)
    }

    /// Raise a test alert (rule `test`, of `severity`) that goes to every
    /// sink, whatever its `min_severity` and `rules`: how an operator
    /// checks the sinks. Returns the alert and the sinks it went to.
    pub fn raise_test(&self, severity: Severity, cfg: &Config) -> Result<(Alert, Vec<String>)> {
        let (host, machine_id) = board_identity(cfg);
        let finding = Finding {
            rule: TEST_RULE.into(),
            subject: "alerting".into(),
            severity,
            reason: "test alert (rvm-backup alert test): this sink works".into(),
            figures: serde_json::Map::new(),
        };
        let alert = Alert::new(
            AlertKind::Firing,
            &finding,
            Severity::Ok,
            &host,
            &machine_id,
            crate::timefmt::now_unix(),
        )
        .map_err(|e| msg(format!("cannot make an alert id: {e}")))?;
        let sinks: Vec<String> = self.sinks.borrow().iter().map(|s| s.name.clone()).collect();
        self.raise(vec![alert.clone()]);
        Ok((alert, sinks))
    }

    /// Entries waiting in the outbox (for METRICS).
    pub fn depth(&self) -> u64 {
        self.outbox.borrow().depth()
    }

    /// Outbox entries ever dropped (full, damaged, sink removed).
    pub fn dropped(&self) -> u64 {
        self.outbox.borrow().dropped()
    }

    /// Queue a heartbeat ping (never waits; without `heartbeat_url`,
    /// nothing).
    pub fn heartbeat(&self, ping: Ping) {
        if self.heartbeat_url.borrow().is_none() {
            return;
        }
        if self.ping_tx.try_send(ping).is_err() {
            log::debug!("heartbeat queue full: a ping is dropped");
        }
    }

    /// Stop the delivery tasks at their next step (what is not delivered
    /// stays in the outbox for the next start).
    pub fn stop(&self) {
        self.stopping.set(true);
        let _ = self.wake_tx.try_send(());
        self.ping_rx.close();
    }
}

/// The daemon's delivery tasks (the outbox and the heartbeat), until
/// [`Alerting::stop`]. Spawn it on the daemon's executor.
pub async fn tasks(a: Rc<Alerting>) {
    let pings = async {
        while let Ok(ping) = a.ping_rx.recv().await {
            let url = a.heartbeat_url.borrow().clone();
            if let Some(url) = url {
                heartbeat::send(&url, &ping).await;
            }
        }
    };
    smol::future::zip(delivery::run(a.clone()), pings).await;
}

/// An alert small enough for an outbox entry: a huge reason is cut and
/// huge figures left out (said in the reason).
fn bounded(mut alert: Alert) -> Alert {
    let size = serde_json::to_vec(&alert).map_or(usize::MAX, |v| v.len());
    if size > outbox::MAX_ENTRY / 2 {
        alert.reason = alert.reason.chars().take(2000).collect();
        alert.reason.push_str(" [cut: the alert was too large]");
        alert.figures.clear();
    }
    alert.subject = alert.subject.chars().take(200).collect();
    alert.rule = alert.rule.chars().take(200).collect();
    alert
}

/// This board's host name and machine id (empty when unknown).
pub fn board_identity(cfg: &Config) -> (String, String) {
    let read = |p: &std::path::Path| {
        crate::fsutil::read_regular(p, 256, crate::fsutil::Follow::Yes)
            .ok()
            .and_then(|(_, b)| String::from_utf8(b).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut host = crate::recovery_set::board::hostname();
    if host.is_empty() {
        host = "localhost".into();
    }
    (host, read(&cfg.machine_id_file))
}

/// The severity word of `alert test --severity` and `TEST-ALERT`.
pub fn parse_test_severity(s: Option<&str>) -> std::result::Result<Severity, String> {
    match s {
        None | Some("warning") => Ok(Severity::Warning),
        Some("critical") => Ok(Severity::Critical),
        Some("ok") => Ok(Severity::Ok),
        Some(other) => Err(format!("severity {other:?}: use warning, critical or ok")),
    }
}
