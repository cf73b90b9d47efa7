//! The log sink: one line on stderr with an sd-daemon priority prefix
//! (`<2>` critical, `<4>` warning, `<6>` ok/resolved), which the systemd
//! journal turns into the entry's priority. Always delivered.

use std::io::Write;

use crate::monitor::{Alert, AlertKind, Severity};

/// The journal line for `alert`.
pub fn line(alert: &Alert) -> String {
    let severity = match alert.kind {
        AlertKind::Resolved => Severity::Ok,
        _ => alert.severity,
    };
    let text: String = alert
        .summary()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "<{}>rvm-backup alert {}: {text}\n",
        severity.syslog_priority(),
        alert.id
    )
}

pub fn send(alert: &Alert) {
    // A closed stderr must not stop the daemon (see `out`).
    let _ = std::io::stderr().write_all(line(alert).as_bytes());
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
        let crit = line(&a(AlertKind::Firing, Severity::Critical));
        assert!(
            crit.starts_with("<2>") && crit.contains("disk full"),
            "{crit}"
        );
        assert_eq!(crit.matches('\n').count(), 1);
        assert!(line(&a(AlertKind::Firing, Severity::Warning)).starts_with("<4>"));
        assert!(line(&a(AlertKind::Resolved, Severity::Ok)).starts_with("<6>"));
    }
}
