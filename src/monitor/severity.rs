//! How bad a finding is, ordered, with the exit status `check` uses
//! (the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    /// The rule could not be evaluated (e.g. the store is unreadable).
    Unknown,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Unknown => "unknown",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "ok" => Some(Severity::Ok),
            "unknown" => Some(Severity::Unknown),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The monitoring-plugin exit status.
    pub fn exit_code(self) -> i32 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
            Severity::Unknown => 3,
        }
    }

    /// syslog priority for the journal sink (crit 2, warning 4, info 6).
    pub fn syslog_priority(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::Warning | Severity::Unknown => 4,
            Severity::Ok => 6,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_names() {
        assert!(Severity::Ok < Severity::Warning && Severity::Warning < Severity::Critical);
        for s in [
            Severity::Ok,
            Severity::Unknown,
            Severity::Warning,
            Severity::Critical,
        ] {
            assert_eq!(Severity::parse(s.name()), Some(s));
        }
        assert_eq!(Severity::Critical.exit_code(), 2);
        assert_eq!(Severity::Unknown.exit_code(), 3);
    }
}
