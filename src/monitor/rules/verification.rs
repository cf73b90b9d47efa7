//! Verification: the last `verify` run found a damaged archive of the
//! strategy (critical: the medium or the store is failing), or the newest
//! archive that passed verification is too old (warning after
//! `verified_warning` periods, critical after `verified_critical`: 4 and 8
//! by default). Every backup is read back when written, so the second
//! fires when backups keep being made but none can be trusted (e.g. a
//! damaged source database's archives are kept but never "verified").

use serde_json::json;

use super::{finding, periods, rising, span, VERIFICATION};
use crate::monitor::facts::{Facts, StrategyFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

pub fn verification(s: &StrategyFacts, f: &Facts, t: &Thresholds, now: i64) -> Finding {
    let name = s.strategy.name();
    let r = &s.state;
    if r.last_verify_ok == Some(false) {
        return finding(
            VERIFICATION,
            name,
            Severity::Critical,
            format!(
                "the last verify{} found a damaged archive: {}; run `rvm-backup verify --all`, then back up again",
                r.last_verify
                    .map(|t| format!(" ({})", crate::timefmt::rfc3339(t)))
                    .unwrap_or_default(),
                r.last_verify_error.as_deref().unwrap_or("(no message)")
            ),
            json!({"last_verify": r.last_verify, "last_verify_ok": false}),
        );
    }
    let verified = r.last_verified.as_deref();
    let created = verified.and_then(|id| {
        s.archives
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.created)
            .or_else(|| created_from_id(id))
    });
    let warn = periods(t.verified_warning, s.period_s, f.jitter_s);
    let crit = periods(t.verified_critical, s.period_s, f.jitter_s);
    let figures = |age: Option<i64>| {
        json!({
            "last_verified": verified,
            "age_s": age,
            "last_verify": r.last_verify,
            "warning_after_s": warn,
            "critical_after_s": crit,
        })
    };
    match created {
        Some(c) => {
            let age = now.saturating_sub(c);
            let sev = rising(age, warn, crit);
            let reason = match sev {
                Severity::Ok => format!("newest verified archive is {} old", span(age)),
                _ => format!(
                    "the newest archive that passed verification ({}) is {} old: newer backups failed or could not be trusted; see the failures and database_check findings",
                    verified.unwrap_or_default(),
                    span(age)
                ),
            };
            finding(VERIFICATION, name, sev, reason, figures(Some(age)))
        }
        None if s.archives.is_empty() => finding(
            VERIFICATION,
            name,
            Severity::Ok,
            "no archive yet (see backup_age)".into(),
            figures(None),
        ),
        None => finding(
            VERIFICATION,
            name,
            Severity::Warning,
            format!(
                "{} archive(s), none recorded as verified: run `rvm-backup verify --all`",
                s.archive_count
            ),
            figures(None),
        ),
    }
}

/// The start time in an archive id `<strategy>-YYYYMMDDTHHMMSSZ-<hex>`.
fn created_from_id(id: &str) -> Option<i64> {
    let (_, rest) = id.split_once('-')?;
    let stamp = rest.get(..16)?;
    let b = stamp.as_bytes();
    if b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = crate::timefmt::days_from_civil(i64::from(y), mo, d);
    Some(days * 86_400 + i64::from(h * 3600 + mi * 60 + se))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_failed_verify_is_critical_until_one_passes() {
        let f = healthy();
        let t = Thresholds::default();
        let mut s = f.strategies[0].clone();
        assert_eq!(verification(&s, &f, &t, NOW).severity, Severity::Ok);
        s.state
            .record_verify(Err("archive x: part 2 tag mismatch".into()), NOW);
        let x = verification(&s, &f, &t, NOW);
        assert_eq!(x.severity, Severity::Critical);
        assert!(x.reason.contains("tag mismatch"), "{}", x.reason);
        s.state.record_verify(Ok(()), NOW + 5);
        assert_eq!(verification(&s, &f, &t, NOW + 5).severity, Severity::Ok);
    }

    #[test]
    fn the_newest_verified_archive_ages() {
        let f = healthy();
        let t = Thresholds::default();
        let s = &f.strategies[0];
        let c = NOW - 60;
        assert_eq!(verification(s, &f, &t, c + 4 * HOUR).severity, Severity::Ok);
        assert_eq!(
            verification(s, &f, &t, c + 5 * HOUR).severity,
            Severity::Warning
        );
        assert_eq!(
            verification(s, &f, &t, c + 9 * HOUR).severity,
            Severity::Critical
        );
        // An id not among the newest archives: its time comes from the id.
        let mut s = s.clone();
        s.state.last_verified = Some("config-20270115T083000Z-a1b2c3".into());
        let at = crate::timefmt::parse("2027-01-15T08:30:00Z").unwrap();
        let x = verification(&s, &f, &t, at + 3600);
        assert_eq!(
            (x.severity, x.figures["age_s"].as_i64()),
            (Severity::Ok, Some(3600))
        );
        s.state.last_verified = None;
        assert_eq!(verification(&s, &f, &t, NOW).severity, Severity::Warning);
        assert_eq!(created_from_id("config-2027x115T083000Z-a"), None);
        assert_eq!(created_from_id("c-"), None);
    }
}
