//! Export: only when export is in use (an export was ever recorded). The
//! last export failed (warning), or it is older than `export_warning`
//! export intervals (warning; 2 by default) or `export_critical` (critical;
//! 7): no recovery set on a stick has been renewed, so a dead board would
//! come back with old data. The subject is `export` (one set holds every
//! strategy).

use serde_json::json;

use super::{finding, periods, rising, span, EXPORT};
use crate::monitor::facts::Facts;
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

pub fn export(f: &Facts, t: &Thresholds, now: i64) -> Option<Finding> {
    if !f.export_used {
        return None;
    }
    // The newest record (every strategy is recorded by each export).
    let r = f
        .strategies
        .iter()
        .map(|s| &s.state)
        .filter(|r| r.last_export.is_some())
        .max_by_key(|r| r.last_export)?;
    let at = r.last_export?;
    let age = now.saturating_sub(at);
    let warn = periods(t.export_warning, f.export_interval_s, 0);
    let crit = periods(t.export_critical, f.export_interval_s, 0);
    let figures = json!({
        "last_export": at,
        "ok": r.last_export_ok,
        "set": r.last_export_set,
        "age_s": age,
        "warning_after_s": warn,
        "critical_after_s": crit,
    });
    let by_age = rising(age, warn, crit);
    if r.last_export_ok == Some(false) {
        return Some(finding(
            EXPORT,
            "export",
            by_age.max(Severity::Warning),
            format!(
                "the last export ({} ago) failed: {}; the newest recovery set is {}",
                span(age),
                r.last_export_error.as_deref().unwrap_or("(no message)"),
                r.last_export_set.as_deref().unwrap_or("none")
            ),
            figures,
        ));
    }
    let reason = match by_age {
        Severity::Ok => format!("the last export ({} ago) wrote {}", span(age), r.last_export_set.as_deref().unwrap_or("a set")),
        _ => format!(
            "the last export was {} ago (export_interval {}): mount the recovery stick at export_dir, or run `rvm-backup export`",
            span(age),
            span(super::secs(f.export_interval_s))
        ),
    };
    Some(finding(EXPORT, "export", by_age, reason, figures))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn only_when_used_and_by_age_or_failure() {
        let mut f = healthy();
        let t = Thresholds::default();
        assert!(export(&f, &t, NOW).is_none());
        f.export_used = true;
        f.strategies[0].state.record_export(Ok("set-1".into()), NOW);
        let at = |f: &Facts, later| export(f, &t, NOW + later).unwrap().severity;
        assert_eq!(at(&f, 86_400), Severity::Ok);
        assert_eq!(at(&f, 2 * 86_400 + 1), Severity::Warning);
        assert_eq!(at(&f, 7 * 86_400 + 1), Severity::Critical);
        f.strategies[0]
            .state
            .record_export(Err("the stick is full".into()), NOW);
        let x = export(&f, &t, NOW + 1).unwrap();
        assert_eq!(x.severity, Severity::Warning);
        assert!(
            x.reason.contains("stick is full") && x.reason.contains("set-1"),
            "{}",
            x.reason
        );
        assert_eq!(at(&f, 8 * 86_400), Severity::Critical);
    }
}
