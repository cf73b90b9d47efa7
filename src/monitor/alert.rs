//! An alert: one transition of a finding, as delivered to every sink
//! (webhook body, `exec` stdin and environment, email, journal).
//!
//! The JSON form (`Alert` serialized) is the webhook body and the `exec`
//! stdin; `docs/protocol.md` documents it for receivers. `id` is the
//! de-duplication key: delivery is at least once, so a receiver may see
//! an id twice after a power cut.

use serde::{Deserialize, Serialize};

use super::{Finding, Severity};

/// What happened to the finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// It left ok (or got worse: warning to critical).
    Firing,
    /// Still firing after the repeat interval.
    Repeat,
    /// Back to ok: the recovery notice.
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 16 lowercase hex digits, random, kept through every retry.
    pub id: String,
    pub kind: AlertKind,
    pub rule: String,
    pub subject: String,
    pub severity: Severity,
    /// The severity before this transition.
    pub previous: Severity,
    pub reason: String,
    #[serde(default)]
    pub figures: serde_json::Map<String, serde_json::Value>,
    /// The board: hostname (and machine id when known).
    pub host: String,
    #[serde(default)]
    pub machine_id: String,
    /// When the alert was made (Unix seconds) and the same in RFC 3339.
    pub at: i64,
    pub time: String,
}

impl Alert {
    /// A new alert about `finding`, with a fresh random id.
    pub fn new(
        kind: AlertKind,
        finding: &Finding,
        previous: Severity,
        host: &str,
        machine_id: &str,
        now: i64,
    ) -> std::io::Result<Alert> {
        let mut r = [0u8; 8];
        crate::crypto::fill_random(&mut r)?;
        Ok(Alert {
            id: r.iter().map(|b| format!("{b:02x}")).collect(),
            kind,
            rule: finding.rule.clone(),
            subject: finding.subject.clone(),
            severity: finding.severity,
            previous,
            reason: finding.reason.clone(),
            figures: finding.figures.clone(),
            host: host.to_string(),
            machine_id: machine_id.to_string(),
            at: now,
            time: crate::timefmt::rfc3339(now),
        })
    }

    /// One line for logs, subjects and the journal:
    /// `[CRITICAL] rvm-0042 database: failures: 3 runs failed (…)`.
    pub fn summary(&self) -> String {
        let state = match self.kind {
            AlertKind::Resolved => "RESOLVED".to_string(),
            _ => self.severity.name().to_ascii_uppercase(),
        };
        format!(
            "[{state}] {} {}: {}: {}",
            self.host, self.subject, self.rule, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_json_round_trips() {
        let f = Finding {
            rule: "failures".into(),
            subject: "database".into(),
            severity: Severity::Critical,
            reason: "3 runs failed in a row".into(),
            figures: serde_json::Map::new(),
        };
        let a = Alert::new(
            AlertKind::Firing,
            &f,
            Severity::Ok,
            "rvm-1",
            "",
            1_795_000_000,
        )
        .unwrap();
        let b = Alert::new(
            AlertKind::Firing,
            &f,
            Severity::Ok,
            "rvm-1",
            "",
            1_795_000_000,
        )
        .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 16);
        let back: Alert = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        assert!(
            a.summary()
                .starts_with("[CRITICAL] rvm-1 database: failures:"),
            "{}",
            a.summary()
        );
    }
}
