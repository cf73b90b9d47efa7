//! Backup age: the newest successful backup of a strategy is older than
//! its schedule allows. Warning after `age_warning` periods, critical after
//! `age_critical` (2 and 4 by default; a daily `at` strategy's period is a
//! day), each plus `backup_jitter`. The age counts from the last success
//! in `state.json`, else from the newest archive's start (a lost
//! `state.json` must not look like a missing backup). Never backed up: the
//! daemon counts from its start; `check` says warning.

use serde_json::json;

use super::{finding, periods, rising, span, BACKUP_AGE};
use crate::monitor::facts::{Facts, StrategyFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

pub fn backup_age(s: &StrategyFacts, f: &Facts, t: &Thresholds, now: i64) -> Finding {
    let name = s.strategy.name();
    let warn = periods(t.age_warning, s.period_s, f.jitter_s);
    let crit = periods(t.age_critical, s.period_s, f.jitter_s);
    let schedule = if s.daily {
        "daily".to_string()
    } else {
        format!("every {}", span(super::secs(s.period_s)))
    };
    let last = s.state.last_success.or(s.newest().map(|a| a.created));
    let figures = |age: Option<i64>| {
        json!({
            "age_s": age,
            "last_success": last,
            "period_s": s.period_s,
            "warning_after_s": warn,
            "critical_after_s": crit,
        })
    };
    match (last, f.watch_since) {
        (Some(at), _) => {
            let age = now.saturating_sub(at);
            let sev = rising(age, warn, crit);
            let reason = match sev {
                Severity::Ok => format!("newest backup is {} old (scheduled {schedule})", span(age)),
                _ => format!(
                    "newest successful backup is {} old, scheduled {schedule} ({} after {}): check why backups stop (STATUS, the log)",
                    span(age),
                    sev,
                    span(if sev == Severity::Critical { crit } else { warn })
                ),
            };
            finding(BACKUP_AGE, name, sev, reason, figures(Some(age)))
        }
        (None, Some(since)) => {
            let waited = now.saturating_sub(since);
            let sev = rising(waited, warn, crit);
            let reason = match sev {
                Severity::Ok => format!("no backup yet; the first is due (scheduled {schedule})"),
                _ => format!(
                    "no successful backup in the {} since the daemon started, scheduled {schedule}: check why backups fail (STATUS, the log)",
                    span(waited)
                ),
            };
            finding(BACKUP_AGE, name, sev, reason, figures(None))
        }
        (None, None) => finding(
            BACKUP_AGE,
            name,
            Severity::Warning,
            format!("no successful backup yet (scheduled {schedule}): run `rvm-backup backup {name}` or start the daemon"),
            figures(None),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn age_in_periods_on_a_simulated_clock() {
        let f = healthy();
        let t = Thresholds::default();
        let s = &f.strategies[0];
        let last = s.state.last_success.unwrap();
        // Hourly, jitter 5 minutes: warning after 2h5m, critical after 4h5m.
        for (later, want) in [
            (HOUR, Severity::Ok),
            (2 * HOUR + 300, Severity::Ok),
            (2 * HOUR + 301, Severity::Warning),
            (4 * HOUR + 300, Severity::Warning),
            (4 * HOUR + 301, Severity::Critical),
            (400 * HOUR, Severity::Critical),
        ] {
            let x = backup_age(s, &f, &t, last + later);
            assert_eq!(x.severity, want, "{later}: {}", x.reason);
            assert_eq!(x.figures["age_s"], later);
        }
        let x = backup_age(s, &f, &t, last + 5 * HOUR);
        assert!(
            x.reason.contains("5h old") && x.reason.contains("every 1h"),
            "{}",
            x.reason
        );
    }

    #[test]
    fn daily_strategies_count_days_and_state_loss_falls_back_to_archives() {
        let mut f = healthy();
        let t = Thresholds::default();
        f.strategies[0].daily = true;
        f.strategies[0].period_s = 86_400;
        let s = &f.strategies[0];
        let last = s.state.last_success.unwrap();
        assert_eq!(
            backup_age(s, &f, &t, last + 47 * HOUR).severity,
            Severity::Ok
        );
        assert_eq!(
            backup_age(s, &f, &t, last + 49 * HOUR).severity,
            Severity::Warning
        );
        assert_eq!(
            backup_age(s, &f, &t, last + 97 * HOUR).severity,
            Severity::Critical
        );
        // state.json lost: the newest archive still counts.
        f.strategies[0].state.last_success = None;
        let s = &f.strategies[0];
        let created = s.newest().unwrap().created;
        assert_eq!(backup_age(s, &f, &t, created + HOUR).severity, Severity::Ok);
    }

    #[test]
    fn never_backed_up() {
        let mut f = healthy();
        let t = Thresholds::default();
        f.strategies[0].state.last_success = None;
        f.strategies[0].archives.clear();
        let s = f.strategies[0].clone();
        assert_eq!(backup_age(&s, &f, &t, NOW).severity, Severity::Warning);
        f.watch_since = Some(NOW);
        assert_eq!(backup_age(&s, &f, &t, NOW + 60).severity, Severity::Ok);
        let x = backup_age(&s, &f, &t, NOW + 5 * HOUR);
        assert_eq!(x.severity, Severity::Critical);
        assert!(
            x.reason.contains("since the daemon started"),
            "{}",
            x.reason
        );
    }
}
