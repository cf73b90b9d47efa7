//! Monitoring: the rules that judge whether backups are healthy, the
//! alerts raised when a rule's state changes, and what the fleet reads
//! (`check`, `ALERTS`, `REPORT`, `METRICS`, the node_exporter textfile).
//!
//! This module owns the vocabulary every part shares; the parts live in
//! their own modules:
//! - [`Severity`]: ok < warning < critical (and unknown, for `check`);
//! - [`Finding`]: one rule's verdict on one subject (a strategy, the
//!   store, the stick), with a one-line reason and the figures behind it;
//! - [`Alert`]: a transition of a finding (raised, escalated, repeated or
//!   resolved), with an id a receiver can de-duplicate on. Alerts are what
//!   the delivery side (`alerting`) writes to its outbox and sends.
//!
//! Invariants: a finding's key (`rule` plus `subject`) names it across
//! evaluations and restarts; an alert's id is random (64 bits), chosen
//! once when the alert is made and kept through every retry.

pub mod alert;
pub mod severity;

pub use alert::{Alert, AlertKind};
pub use severity::Severity;

use serde::{Deserialize, Serialize};

/// One rule's verdict on one subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's name, e.g. `backup_age`, `failures`, `storage`.
    pub rule: String,
    /// What it is about: a strategy's name, `store`, `stick`, `audit`, ….
    pub subject: String,
    pub severity: Severity,
    /// One line a person can act on, e.g. "database: newest backup is
    /// 13h old, schedule allows 12h (warning at 2 intervals)".
    pub reason: String,
    /// The figures behind it (name to number or text), for dashboards.
    #[serde(default)]
    pub figures: serde_json::Map<String, serde_json::Value>,
}

impl Finding {
    /// `rule/subject`: a finding's identity across evaluations.
    pub fn key(&self) -> String {
        format!("{}/{}", self.rule, self.subject)
    }
}
