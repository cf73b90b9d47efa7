//! Drills: the last recovery drill of a strategy failed (critical: the
//! backups may not restore), took longer than `drill_time_target`
//! (warning), or is older than `drill_age_warning` drill intervals
//! (warning: drills stopped). A strategy never drilled is ok (the daemon
//! drills soon after it starts).

use serde_json::json;

use super::{finding, periods, span, DRILL};
use crate::monitor::facts::{Facts, StrategyFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

pub fn drill(s: &StrategyFacts, f: &Facts, t: &Thresholds, now: i64) -> Finding {
    let name = s.strategy.name();
    let r = &s.state;
    let figures = json!({
        "last_drill": r.last_drill,
        "ok": r.last_drill_ok,
        "seconds": r.last_drill_seconds,
        "target_s": t.drill_time_target.map(|d| d.as_secs()),
    });
    let Some(at) = r.last_drill else {
        return finding(DRILL, name, Severity::Ok, "not drilled yet".into(), figures);
    };
    let age = now.saturating_sub(at);
    if r.last_drill_ok == Some(false) {
        return finding(
            DRILL,
            name,
            Severity::Critical,
            format!(
                "the last recovery drill ({} ago) failed: {}; the newest backup may not restore: run `rvm-backup drill {name}` after fixing it",
                span(age),
                r.last_drill_error.as_deref().unwrap_or("(no message)")
            ),
            figures,
        );
    }
    let took = r.last_drill_seconds.unwrap_or(0.0);
    if let Some(target) = t.drill_time_target {
        if took > target.as_secs_f64() {
            return finding(
                DRILL,
                name,
                Severity::Warning,
                format!(
                    "the last recovery drill took {took:.0}s, over the recovery time target of {}",
                    span(super::secs(target.as_secs()))
                ),
                figures,
            );
        }
    }
    let stale = periods(t.drill_age_warning, f.drill_interval_s, 0);
    if age > stale {
        return finding(
            DRILL,
            name,
            Severity::Warning,
            format!(
                "the last recovery drill was {} ago (drill_interval {}): drills stopped; is the daemon running with backup_enabled?",
                span(age),
                span(super::secs(f.drill_interval_s))
            ),
            figures,
        );
    }
    finding(
        DRILL,
        name,
        Severity::Ok,
        format!(
            "the last recovery drill ({} ago) passed in {took:.1}s",
            span(age)
        ),
        figures,
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn failed_slow_and_stale_drills() {
        let f = healthy();
        let mut t = Thresholds::default();
        let mut s = f.strategies[0].clone();
        assert_eq!(drill(&s, &f, &t, NOW).severity, Severity::Ok);
        s.state.record_drill(Ok(12.0), NOW);
        assert_eq!(drill(&s, &f, &t, NOW + HOUR).severity, Severity::Ok);
        t.drill_time_target = Some(Duration::from_secs(10));
        let x = drill(&s, &f, &t, NOW + HOUR);
        assert_eq!(x.severity, Severity::Warning, "{}", x.reason);
        t.drill_time_target = None;
        // Two weeks and a bit: drills stopped.
        assert_eq!(drill(&s, &f, &t, NOW + 14 * 86_400).severity, Severity::Ok);
        assert_eq!(
            drill(&s, &f, &t, NOW + 15 * 86_400).severity,
            Severity::Warning
        );
        s.state
            .record_drill(Err((3.0, "table t has 3 rows, the archive 5".into())), NOW);
        let x = drill(&s, &f, &t, NOW + 1);
        assert_eq!(x.severity, Severity::Critical);
        assert!(x.reason.contains("table t has 3 rows"), "{}", x.reason);
    }
}
