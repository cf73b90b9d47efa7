//! Where the monitor's alerts leave the daemon: the one seam between the
//! rules (`monitor`) and delivery (`alerting`). Each alert goes to the
//! outbox, which stores it before it is sent to the `[[alert]]` sinks; a
//! `log` sink, or no sink at all, writes it to the journal at once with a
//! priority by severity (`alerting::journal`), so every alert is in the
//! journal or on its way to a sink.

use super::Daemon;
use crate::monitor::Alert;

/// Hand over the alerts of one evaluation, in the order they were made.
pub(super) fn raise(daemon: &Daemon, alerts: Vec<Alert>) {
    if alerts.is_empty() {
        return;
    }
    for a in &alerts {
        log::debug!("alert {} raised: {}", a.id, a.summary());
    }
    daemon.alerting.raise(alerts);
}
