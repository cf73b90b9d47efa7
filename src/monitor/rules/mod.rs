//! The rules: pure functions of (facts, thresholds, now) that each return
//! findings, one file per rule family.
//!
//! Invariants: a rule never reads the clock or the disk (everything comes
//! in [`Facts`]); every rule that applies yields a finding for each of its
//! subjects on every evaluation, ok ones included, so a finding's key
//! (`rule/subject`) exists exactly while the rule applies and the tracker
//! can tell "back to ok" from "no longer checked"; every reason is one
//! line an operator can act on.

mod age;
mod drill;
mod duration;
mod export;
mod failures;
mod integrity;
mod offsite;
mod pitr;
mod size;
mod storage;
mod verification;

use serde_json::Value;

use super::facts::Facts;
use super::thresholds::Thresholds;
use super::{Finding, Severity};

/// Rule names (the first half of a finding's key).
pub const BACKUP_AGE: &str = "backup_age";
pub const FAILURES: &str = "failures";
pub const VERIFICATION: &str = "verification";
pub const STORAGE: &str = "storage";
pub const SIZE: &str = "size";
pub const DURATION: &str = "duration";
pub const DRILL: &str = "drill";
pub const EXPORT: &str = "export";
pub const PITR: &str = "pitr";
pub const OFFSITE_LAG: &str = "offsite_lag";
pub const OFFSITE_FAILURES: &str = "offsite_failures";
pub const OFFSITE_CREDENTIALS: &str = "offsite_credentials";
pub const DATABASE_CHECK: &str = "database_check";
pub const KEY_FILE: &str = "key_file";
pub const SIDECARS: &str = "sidecars";

/// Every rule on every subject, in a fixed order.
pub fn evaluate(f: &Facts, t: &Thresholds, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &f.strategies {
        out.push(age::backup_age(s, f, t, now));
        out.push(failures::failures(s, t));
        out.push(verification::verification(s, f, t, now));
        out.push(integrity::sidecars(s));
        out.push(size::size(s, t));
        out.push(duration::duration(s, f, t, now));
        out.push(drill::drill(s, f, t, now));
        if let Some(x) = integrity::database_check(s) {
            out.push(x);
        }
    }
    out.push(duration::running_restore(f, now));
    out.push(storage::backup_dir(f, t));
    if let Some(x) = storage::stick(f, t) {
        out.push(x);
    }
    if let Some(x) = export::export(f, t, now) {
        out.push(x);
    }
    out.extend(pitr::pitr(f, t, now));
    out.extend(offsite::offsite(f, t, now));
    out.push(integrity::key_file(f));
    out
}

/// The worst severity (ok when there is nothing).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

fn finding(
    rule: &str,
    subject: &str,
    severity: Severity,
    reason: String,
    figures: Value,
) -> Finding {
    Finding {
        rule: rule.to_string(),
        subject: subject.to_string(),
        severity,
        reason,
        figures: match figures {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
    }
}

/// A span of seconds for people: `45s`, `13m`, `6h 5m`, `2d 4h`.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 if s % 3600 == 0 => format!("{}h", s / 3600),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => match s % 3600 / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        _ => match s % 86_400 / 3600 {
            0 => format!("{}d", s / 86_400),
            h => format!("{}d {h}h", s / 86_400),
        },
    }
}

/// Seconds as i64, saturating.
fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `n` periods of `period_s` seconds plus `slack_s`, saturating.
fn periods(n: u32, period_s: u64, slack_s: u64) -> i64 {
    secs(
        period_s
            .saturating_mul(u64::from(n))
            .saturating_add(slack_s),
    )
}

/// The median of `v` (the lower middle for an even count); `None` if empty.
fn median(v: &[u64]) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len().checked_sub(1)? / 2).copied()
}

/// Severity of a value against rising thresholds.
fn rising(value: i64, warning: i64, critical: i64) -> Severity {
    if value > critical {
        Severity::Critical
    } else if value > warning {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A simulated board for the rule tests.
    use super::super::facts::*;
    use crate::state::Remembered;
    use crate::strategy::Strategy;

    pub const NOW: i64 = 1_800_000_000;
    pub const HOUR: i64 = 3600;

    pub fn strategy(s: Strategy, period_s: u64) -> StrategyFacts {
        StrategyFacts {
            strategy: s,
            period_s,
            daily: false,
            state: Remembered::default(),
            archives: Vec::new(),
            archive_count: 0,
            unreadable: Vec::new(),
        }
    }

    pub fn archive(created: i64, content: u64) -> ArchiveFacts {
        ArchiveFacts {
            id: format!("x-{created}"),
            created,
            content_bytes: content,
            archive_bytes: content / 2,
            duration_ms: 1000,
            db_check: None,
            rows: None,
        }
    }

    /// One hourly strategy, backed up a minute ago, with 6 archives of
    /// 1 MiB, on a disk with plenty of room.
    pub fn healthy() -> Facts {
        let mut s = strategy(Strategy::Config, 3600);
        s.state.last_success = Some(NOW - 60);
        s.state.last_verified = Some(format!("x-{}", NOW - 60));
        s.archives = (0..6)
            .map(|i| archive(NOW - 60 - (5 - i) * HOUR, 1 << 20))
            .collect();
        s.archive_count = 6;
        Facts {
            strategies: vec![s],
            storage: Some(Space {
                path: "/b".into(),
                total: 10 << 30,
                avail: 8 << 30,
            }),
            drill_interval_s: 7 * 86_400,
            export_interval_s: 86_400,
            recovery_timeout_s: 300,
            jitter_s: 300,
            key_file: KeyFile::Mode(0o600),
            ..Facts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn a_healthy_board_is_all_ok_and_every_subject_is_judged() {
        let f = healthy();
        let all = evaluate(&f, &Thresholds::default(), NOW);
        assert_eq!(worst(&all), Severity::Ok, "{all:#?}");
        let keys: Vec<String> = all.iter().map(Finding::key).collect();
        for k in [
            "backup_age/config",
            "failures/config",
            "verification/config",
            "size/config",
            "duration/config",
            "drill/config",
            "storage/backup_dir",
            "key_file/key",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
        }
        assert!(all
            .iter()
            .all(|f| !f.reason.is_empty() && !f.reason.contains('\n')));
    }

    #[test]
    fn spans_and_medians() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(13 * 60), "13m");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(5400), "90m");
        assert_eq!(span(6 * 3600 + 300), "6h 5m");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2d 4h");
        assert_eq!(span(-5), "0s");
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[]), None);
    }
}
