//! Where the monitor's alerts leave the daemon: the one seam between the
//! rules (`monitor`) and delivery. For now every alert is logged (the
//! journal, by severity); delivery to the configured sinks plugs in here.

use super::Daemon;
use crate::monitor::{Alert, AlertKind, Severity};

/// Hand over the alerts of one evaluation, in the order they were made.
pub(super) fn raise(_daemon: &Daemon, alerts: Vec<Alert>) {
    for a in alerts {
        match (a.kind, a.severity) {
            (AlertKind::Resolved, _) => log::warn!("{}", a.summary()),
            (_, Severity::Critical) => log::error!("{}", a.summary()),
            _ => log::warn!("{}", a.summary()),
        }
    }
}
