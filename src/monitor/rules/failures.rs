//! Failures: consecutive failed runs of a strategy (warning at
//! `failures_warning`, 1 by default; critical at `failures_critical`, 3),
//! with the last error. A success resets the count (`state.json`).

use serde_json::json;

use super::{finding, FAILURES};
use crate::monitor::facts::StrategyFacts;
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

/// The longest error text carried into a reason.
const MAX_ERROR: usize = 300;

pub fn failures(s: &StrategyFacts, t: &Thresholds) -> Finding {
    let name = s.strategy.name();
    let n = s.state.failures;
    let sev = if n >= t.failures_critical {
        Severity::Critical
    } else if n >= t.failures_warning {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let error = s.state.last_error.as_deref().unwrap_or("(no message)");
    let error: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR)
        .collect();
    let reason = match (sev, n) {
        (Severity::Ok, 0) => "the last run succeeded".to_string(),
        (Severity::Ok, _) => format!("{n} failed run(s) in a row, below the warning threshold"),
        (_, 1) => format!("the last backup run failed: {error}"),
        _ => format!("{n} backup runs failed in a row, the last: {error}"),
    };
    finding(
        FAILURES,
        name,
        sev,
        reason,
        json!({
            "failures": n,
            "last_failure": s.state.last_failure,
            "last_error": s.state.last_error,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::strategy::Strategy;

    #[test]
    fn consecutive_failures_escalate_and_a_success_clears() {
        let t = Thresholds::default();
        let mut s = strategy(Strategy::Database, 3600);
        assert_eq!(failures(&s, &t).severity, Severity::Ok);
        for (n, want) in [
            (1, Severity::Warning),
            (2, Severity::Warning),
            (3, Severity::Critical),
        ] {
            s.state
                .record_run(Err("database is locked\nby pid 7".into()), NOW + n);
            let x = failures(&s, &t);
            assert_eq!(x.severity, want, "{n}");
            assert!(
                x.reason.contains("database is locked by pid 7"),
                "{}",
                x.reason
            );
            assert_eq!(x.figures["failures"], n);
        }
        s.state.record_run(Ok(()), NOW + 10);
        assert_eq!(failures(&s, &t).severity, Severity::Ok);
    }
}
