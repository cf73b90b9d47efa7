//! Duration: a backup that took (or, running, has taken) longer than a
//! limit, or much longer than its median. The limit is `duration_limit`,
//! else the strategy's period but at least 10 minutes (a backup that takes
//! longer than its interval can never keep up). "Much longer" is more
//! than `duration_factor` (5) times the median of the earlier archives'
//! durations, and only beyond `duration_min` (1 minute): a 1-second job
//! taking 6 seconds is no news. Both are warnings.
//!
//! Restores: a restore running past `recovery_timeout` is critical (the
//! platform is probably stopped while it runs).

use serde_json::json;

use super::{finding, median, secs, span, DURATION};
use crate::monitor::facts::{Facts, StrategyFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

/// The default limit is never below this.
const MIN_DEFAULT_LIMIT_S: u64 = 600;

fn limit_s(s: &StrategyFacts, t: &Thresholds) -> u64 {
    t.duration_limit
        .map_or(s.period_s.max(MIN_DEFAULT_LIMIT_S), |d| d.as_secs())
}

pub fn duration(s: &StrategyFacts, f: &Facts, t: &Thresholds, now: i64) -> Finding {
    let name = s.strategy.name();
    let limit = secs(limit_s(s, t));
    let (last, before) = match s.archives.split_last() {
        Some((n, b)) => (Some(n), b),
        None => (None, &[][..]),
    };
    let durations: Vec<u64> = before.iter().map(|a| a.duration_ms / 1000).collect();
    let med = median(&durations[durations.len().saturating_sub(t.size_history)..]);
    let min = secs(t.duration_min.as_secs());
    let too_long = |took: i64| -> Option<String> {
        if took > limit {
            return Some(format!("over the limit of {}", span(limit)));
        }
        let m = secs(med?);
        let factor = i64::from(t.duration_factor);
        (took > min && took > m.saturating_mul(factor).max(1))
            .then(|| format!("over {factor} times its median of {}", span(m)))
    };
    let running = f
        .running
        .as_ref()
        .filter(|r| r.backup == Some(s.strategy))
        .map(|r| now.saturating_sub(r.started));
    let took = last.map(|a| secs(a.duration_ms / 1000));
    let figures = json!({
        "last_duration_s": took,
        "median_duration_s": med,
        "running_s": running,
        "limit_s": limit,
    });
    if let Some(r) = running {
        if let Some(why) = too_long(r) {
            return finding(
                DURATION,
                name,
                Severity::Warning,
                format!("the running backup has taken {} so far, {why}: look for a stuck source (a locked database, a hung mount)", span(r)),
                figures,
            );
        }
    }
    match (last, took.and_then(|d| too_long(d).map(|w| (d, w)))) {
        (Some(a), Some((d, why))) => finding(
            DURATION,
            name,
            Severity::Warning,
            format!(
                "backup {} took {}, {why}: the source grew or the storage is slow",
                a.id,
                span(d)
            ),
            figures,
        ),
        (Some(_), None) => finding(
            DURATION,
            name,
            Severity::Ok,
            format!("the last backup took {}", span(took.unwrap_or_default())),
            figures,
        ),
        (None, _) => finding(
            DURATION,
            name,
            Severity::Ok,
            "no backup yet".into(),
            figures,
        ),
    }
}

/// A restore running longer than `recovery_timeout`.
pub fn running_restore(f: &Facts, now: i64) -> Finding {
    let limit = secs(f.recovery_timeout_s);
    match f.running.as_ref().filter(|r| r.restore) {
        Some(r) if now.saturating_sub(r.started) > limit => finding(
            DURATION,
            "restore",
            Severity::Critical,
            format!(
                "{} has run for {}, past recovery_timeout ({}): the platform may be down; look at JOB and the log",
                r.what,
                span(now.saturating_sub(r.started)),
                span(limit)
            ),
            json!({"running_s": now.saturating_sub(r.started), "limit_s": limit}),
        ),
        _ => finding(
            DURATION,
            "restore",
            Severity::Ok,
            "no restore running past recovery_timeout".into(),
            json!({"limit_s": limit}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::monitor::facts::Running;
    use crate::strategy::Strategy;

    #[test]
    fn limits_and_medians() {
        let mut f = healthy();
        let t = Thresholds::default();
        for a in &mut f.strategies[0].archives {
            a.duration_ms = 20_000;
        }
        let s = |f: &Facts| f.strategies[0].clone();
        assert_eq!(duration(&s(&f), &f, &t, NOW).severity, Severity::Ok);
        // 5 x 20 s = 100 s: 90 s is fine, 120 s is not.
        f.strategies[0].archives.last_mut().unwrap().duration_ms = 90_000;
        assert_eq!(duration(&s(&f), &f, &t, NOW).severity, Severity::Ok);
        f.strategies[0].archives.last_mut().unwrap().duration_ms = 120_000;
        let x = duration(&s(&f), &f, &t, NOW);
        assert_eq!(x.severity, Severity::Warning);
        assert!(
            x.reason.contains("5 times its median of 20s"),
            "{}",
            x.reason
        );
        // Past the hourly period (at least 10 minutes): the limit.
        for a in &mut f.strategies[0].archives {
            a.duration_ms = 3_000_000;
        }
        assert_eq!(duration(&s(&f), &f, &t, NOW).severity, Severity::Ok);
        f.strategies[0].archives.last_mut().unwrap().duration_ms = 3_700_000;
        let x = duration(&s(&f), &f, &t, NOW);
        assert!(x.reason.contains("limit of 1h"), "{}", x.reason);
        // Small jobs below duration_min are never "much longer".
        for a in &mut f.strategies[0].archives {
            a.duration_ms = 1_000;
        }
        f.strategies[0].archives.last_mut().unwrap().duration_ms = 30_000;
        assert_eq!(duration(&s(&f), &f, &t, NOW).severity, Severity::Ok);
    }

    #[test]
    fn running_jobs() {
        let mut f = healthy();
        let t = Thresholds::default();
        f.running = Some(Running {
            what: "backup config".into(),
            backup: Some(Strategy::Config),
            restore: false,
            started: NOW,
        });
        let s = f.strategies[0].clone();
        assert_eq!(duration(&s, &f, &t, NOW + 60).severity, Severity::Ok);
        let x = duration(&s, &f, &t, NOW + 2 * HOUR);
        assert_eq!(x.severity, Severity::Warning);
        assert!(
            x.reason.contains("running backup has taken 2h"),
            "{}",
            x.reason
        );
        assert_eq!(running_restore(&f, NOW + 2 * HOUR).severity, Severity::Ok);
        f.running = Some(Running {
            what: "restore all latest".into(),
            backup: None,
            restore: true,
            started: NOW,
        });
        assert_eq!(running_restore(&f, NOW + 300).severity, Severity::Ok);
        let x = running_restore(&f, NOW + 301);
        assert_eq!(x.severity, Severity::Critical);
        assert!(
            x.reason.contains("restore all latest has run for"),
            "{}",
            x.reason
        );
    }
}
