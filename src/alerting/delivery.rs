//! The delivery task: sends what waits in the outbox, one entry at a
//! time, on the daemon's executor.
//!
//! It wakes when [`Alerting::raise`](super::Alerting::raise) stored
//! something or when the next retry falls due (never sleeping more than
//! [`MAX_SLEEP`], so a wall-clock step is noticed). A failed try sets the
//! entry's next try by [`backoff`](super::backoff) and holds the whole
//! sink back until then, so a dead receiver costs one timeout per backoff
//! step, not one per entry, and other sinks go on.
//!
//! Invariants: nothing here blocks the executor (every send is async and
//! bounded in time: [`webhook::TIMEOUTS`](super::webhook::TIMEOUTS),
//! [`exec::TIMEOUT`](super::exec::TIMEOUT)); it yields between entries;
//! no `RefCell` borrow is held across an `.await`; an entry leaves the
//! outbox only when its sink took it (or it cannot ever be sent: damaged,
//! or its sink is no longer configured, which is logged and counted).

use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use super::backoff;
use super::sink::{Sink, SinkKind};
use super::Alerting;
use crate::monitor::Alert;

/// Longest sleep between looks at the outbox.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Longest sleep while alerts wait in memory (the outbox could not store
/// them).
const UNSTORED_LOOK: Duration = Duration::from_secs(1);

pub fn now_ms() -> i64 {
    let (s, ns) = crate::timefmt::now_precise();
    s.saturating_mul(1000)
        .saturating_add(i64::from(ns / 1_000_000))
}

/// Send `alert` to `sink` once.
pub async fn deliver(sink: &Sink, alert: &Alert) -> Result<(), String> {
    match &sink.kind {
        SinkKind::Webhook { url } => super::webhook::send(url, alert).await,
        SinkKind::Exec { command } => super::exec::send(&command.0, alert).await,
        SinkKind::Email { to, from, sendmail } => {
            super::email::send(&sendmail.0, to, from.as_deref(), alert).await
        }
        SinkKind::Log => {
            super::journal::send(alert);
            Ok(())
        }
    }
}

/// Run until [`Alerting::stop`].
pub async fn run(a: Rc<Alerting>) {
    loop {
        if a.stopping.get() {
            return;
        }
        let now = now_ms();
        let due = {
            let held = a.held.borrow();
            a.outbox
                .borrow()
                .next_due(now, |s| held.get(s).copied().unwrap_or(i64::MIN))
        };
        if let Some(seq) = due {
            attempt(&a, seq).await;
            smol::future::yield_now().await;
            continue;
        }
        if let Some((alert, sink)) = a.take_unstored(now) {
            attempt_unstored(&a, alert, sink).await;
            smol::future::yield_now().await;
            continue;
        }
        let wake_at = {
            let held = a.held.borrow();
            a.outbox
                .borrow()
                .next_wake(|s| held.get(s).copied().unwrap_or(i64::MIN))
        };
        let mut sleep = wake_at.map_or(MAX_SLEEP, |t| {
            Duration::from_millis(u64::try_from(t.saturating_sub(now)).unwrap_or(0)).min(MAX_SLEEP)
        });
        if !a.unstored.borrow().is_empty() {
            // Alerts in memory: look again soon (their sinks are held).
            sleep = sleep.min(UNSTORED_LOOK);
        }
        smol::future::or(
            async {
                let _ = a.wake_rx.recv().await;
            },
            async {
                Timer::after(sleep).await;
            },
        )
        .await;
    }
}

async fn attempt(a: &Alerting, seq: u64) {
    let read = a.outbox.borrow().read(seq);
    let entry = match read {
        Ok(e) => e,
        Err(e) => {
            log::warn!("alert outbox: dropping damaged entry {seq}: {e}");
            a.outbox.borrow_mut().discard(seq);
            return;
        }
    };
    let sink = a
        .sinks
        .borrow()
        .iter()
        .find(|s| s.name == entry.sink)
        .cloned();
    let Some(sink) = sink else {
        log::warn!(
            "alert {} was for sink {:?}, which is no longer configured: dropped",
            entry.alert.id,
            entry.sink
        );
        a.outbox.borrow_mut().discard(seq);
        return;
    };
    let result = deliver(&sink, &entry.alert).await;
    let now = now_ms();
    match result {
        Ok(()) => {
            a.held.borrow_mut().remove(&sink.name);
            if let Err(e) = a.outbox.borrow_mut().delivered(seq) {
                log::warn!("alert outbox: cannot remove a delivered entry: {e}");
            }
            log::info!(
                "alert {} delivered to {} after {} failed tries",
                entry.alert.id,
                sink.name,
                entry.attempts
            );
        }
        Err(e) => {
            let attempts = entry.attempts.saturating_add(1);
            let delay = backoff::delay_ms(attempts, a.jitter.borrow_mut().draw());
            let id = entry.alert.id.clone();
            let next = a.outbox.borrow_mut().failed(seq, entry, &e, now, delay);
            let next = next.unwrap_or_else(|w| {
                log::warn!("alert outbox: cannot record a failed try: {w}");
                now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
            });
            a.held.borrow_mut().insert(sink.name.clone(), next);
            let line = format!(
                "alert {id} to {}: try {attempts} failed: {e}; next try in {}s",
                sink.name,
                delay.div_ceil(1000)
            );
            if attempts == 1 || attempts % 10 == 0 {
                log::warn!("{line}");
            } else {
                log::info!("{line}");
            }
        }
    }
}

/// One try of an alert the outbox could not store. Delivered: done.
/// Failed: its sink is held by the backoff, and it goes to the outbox if
/// that can store it now, else back to memory.
async fn attempt_unstored(a: &Alerting, alert: Alert, name: String) {
    let sink = a.sinks.borrow().iter().find(|s| s.name == name).cloned();
    let Some(sink) = sink else {
        log::warn!(
            "alert {} was for sink {name:?}, which is no longer configured: dropped",
            alert.id
        );
        return;
    };
    match deliver(&sink, &alert).await {
        Ok(()) => {
            a.held.borrow_mut().remove(&sink.name);
            log::info!(
                "alert {} delivered to {} (from memory: the outbox could not store it)",
                alert.id,
                sink.name
            );
        }
        Err(e) => {
            let now = now_ms();
            let delay = backoff::delay_ms(1, a.jitter.borrow_mut().draw());
            a.held.borrow_mut().insert(
                sink.name.clone(),
                now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
            );
            log::warn!(
                "alert {} to {} (held in memory): try failed: {e}",
                alert.id,
                sink.name
            );
            let added = a
                .outbox
                .borrow_mut()
                .add(&alert, std::slice::from_ref(&name), now);
            if added.is_err() {
                a.keep_unstored(alert, name);
            }
        }
    }
}
