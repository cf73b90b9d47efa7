//! The log sink: one line on stderr. Under the journal (`$JOURNAL_STREAM`
//! set, as `logger` does) it starts with an sd-daemon priority prefix
//! (`<2>` critical, `<4>` warning, `<6>` ok/resolved), which journald turns
//! into the entry's priority; on a terminal it reads
//! `rvm-backup: alert critical: …`. Always delivered.

use std::io::Write;

use crate::monitor::{Alert, AlertKind, Severity};

/// The line for `alert`: with the priority prefix when `journal`.
pub fn line(alert: &Alert, journal: bool) -> String {
    let severity = match alert.kind {
        AlertKind::Resolved => Severity::Ok,
        _ => alert.severity,
    };
    let text: String = alert
        .summary()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if journal {
        format!(
            "<{}>rvm-backup alert {}: {text}\n",
            severity.syslog_priority(),
            alert.id
        )
    } else {
        format!("rvm-backup: alert {severity} {}: {text}\n", alert.id)
    }
}

pub fn send(alert: &Alert) {
    // A closed stderr must not stop the daemon (see `out`).
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = std::io::stderr().write_all(line(alert, journal).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Finding;

    #[test]
    fn priority_follows_severity_and_the_line_is_one_line() {
        let f = |s: Severity| Finding {
            rule: "storage".into(),
            subject: "store".into(),
            severity: s,
            reason: "disk\nfull".into(),
            figures: serde_json::Map::new(),
        };
        let a = |k, s| Alert::new(k, &f(s), Severity::Ok, "h", "", 0).unwrap();
        let crit = line(&a(AlertKind::Firing, Severity::Critical), true);
        assert!(
            crit.starts_with("<2>") && crit.contains("disk full"),
            "{crit}"
        );
        assert_eq!(crit.matches('\n').count(), 1);
        assert!(line(&a(AlertKind::Firing, Severity::Warning), true).starts_with("<4>"));
        assert!(line(&a(AlertKind::Resolved, Severity::Ok), true).starts_with("<6>"));
        let plain = line(&a(AlertKind::Firing, Severity::Critical), false);
        assert!(plain.starts_with("rvm-backup: alert critical "), "{plain}");
    }
}
