//! Continuous protection (point-in-time recovery): only when `[database]
//! pitr` is on. Two subjects:
//! - `database`: how long commits may have waited outside the store: the
//!   time since the shipper last shipped or found everything shipped
//!   (every commit not shipped yet is younger). Warning beyond
//!   `pitr_lag_warning` (1 minute) plus one `pitr_sync_interval`, critical
//!   beyond `pitr_lag_critical` (10 minutes) plus one; a failing step is
//!   at least a warning; a daemon that does not answer (`check`) is a
//!   warning: nothing ships the WAL.
//! - `stick`: the copy of segments to the recovery stick, while a stick
//!   with a set of this board is mounted or the last copy failed: a
//!   failed copy is a warning (a dead card would come back only to the
//!   stick's newest segment).

use serde_json::json;

use super::{finding, rising, secs, span, PITR};
use crate::monitor::facts::{Facts, PitrFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};
use crate::pitr::PitrStatus;

pub fn pitr(f: &Facts, t: &Thresholds, now: i64) -> Vec<Finding> {
    let Some(p) = f.pitr.as_ref() else {
        return Vec::new();
    };
    let warn = secs(t.pitr_lag_warning.as_secs()).saturating_add(secs(p.sync_interval_s));
    let crit = secs(t.pitr_lag_critical.as_secs()).saturating_add(secs(p.sync_interval_s));
    let s = match &p.shipper {
        Ok(s) => s,
        Err(e) => {
            return vec![finding(
                PITR,
                "database",
                Severity::Warning,
                format!(
                    "point-in-time recovery is on ([database] pitr) but the daemon that ships the WAL does not answer ({e}): commits since the last backup are not protected; start it (systemctl start rvm-backup)"
                ),
                json!({"warning_after_s": warn, "critical_after_s": crit, "sync_interval_s": p.sync_interval_s}),
            )];
        }
    };
    let mut out = vec![database(p, s, warn, crit, now)];
    if let Some(x) = stick(s) {
        out.push(x);
    }
    out
}

fn database(p: &PitrFacts, s: &PitrStatus, warn: i64, crit: i64, now: i64) -> Finding {
    let since_ok = s.last_ok_unix_ms.map(|ms| ms.div_euclid(1000)).or(p.since);
    let lag = since_ok.map(|t| now.saturating_sub(t).max(0));
    let figures = json!({
        "lag_s": lag,
        "warning_after_s": warn,
        "critical_after_s": crit,
        "sync_interval_s": p.sync_interval_s,
        "last_commit_time": s.last_commit_time,
        "generation": s.generation,
        "segments": s.segments,
        "generations_started": s.generations_started,
        "error": s.last_error,
    });
    let Some(lag) = lag else {
        return finding(
            PITR,
            "database",
            Severity::Unknown,
            "the WAL shipper has not shipped yet and its start is not known".into(),
            figures,
        );
    };
    let by_lag = rising(lag, warn, crit);
    let newest = s.last_commit_time.as_deref().unwrap_or("none yet");
    if let Some(e) = &s.last_error {
        return finding(
            PITR,
            "database",
            by_lag.max(Severity::Warning),
            format!(
                "WAL shipping fails: {e}; nothing shipped or checked for {} (newest shipped commit: {newest})",
                span(lag)
            ),
            figures,
        );
    }
    let reason = match by_lag {
        Severity::Ok if s.last_ok_unix_ms.is_some() => format!(
            "WAL shipped {} ago (newest shipped commit {newest}, generation {}, {} segments)",
            span(lag),
            s.generation.as_deref().unwrap_or("none"),
            s.segments
        ),
        Severity::Ok => format!("WAL shipping started {} ago", span(lag)),
        _ => format!(
            "the WAL was last shipped {} ago (pitr_sync_interval {}; newest shipped commit {newest}): commits since are not in the store; see the daemon's log (journalctl -u rvm-backup)",
            span(lag),
            span(secs(p.sync_interval_s))
        ),
    };
    finding(PITR, "database", by_lag, reason, figures)
}

fn stick(s: &PitrStatus) -> Option<Finding> {
    let figures = json!({"stick_segments": s.stick_segments, "error": s.stick_error});
    if let Some(e) = &s.stick_error {
        return Some(finding(
            PITR,
            "stick",
            Severity::Warning,
            format!(
                "cannot copy WAL segments to the recovery stick: {e}; a dead card would come back only to the stick's newest segment: check or replace the stick"
            ),
            figures,
        ));
    }
    let n = s.stick_segments?;
    Some(finding(
        PITR,
        "stick",
        Severity::Ok,
        format!("{n} WAL segments on the recovery stick"),
        figures,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn with(status: Result<PitrStatus, String>) -> Facts {
        let mut f = healthy();
        f.pitr = Some(PitrFacts {
            sync_interval_s: 1,
            shipper: status,
            since: Some(NOW - 3600),
        });
        f
    }

    fn shipping(last_ok: i64) -> PitrStatus {
        PitrStatus {
            enabled: true,
            generation: Some("database-x".into()),
            segments: 12,
            last_commit_time: Some("2027-01-15T08:00:00Z".into()),
            last_ok_unix_ms: Some(last_ok * 1000 + 250),
            generations_started: 1,
            ..PitrStatus::default()
        }
    }

    fn one(f: &Facts, subject: &str) -> Finding {
        let all = pitr(f, &Thresholds::default(), NOW);
        all.into_iter()
            .find(|x| x.subject == subject)
            .unwrap_or_else(|| panic!("no pitr/{subject}"))
    }

    #[test]
    fn off_means_no_finding() {
        let f = healthy();
        assert!(pitr(&f, &Thresholds::default(), NOW).is_empty());
    }

    #[test]
    fn lag_against_the_thresholds_plus_one_sync_interval() {
        let sev = |ago| one(&with(Ok(shipping(NOW - ago))), "database").severity;
        assert_eq!(sev(1), Severity::Ok);
        assert_eq!(sev(61), Severity::Ok); // 60 s + the 1 s interval
        assert_eq!(sev(62), Severity::Warning);
        assert_eq!(sev(601), Severity::Warning);
        assert_eq!(sev(602), Severity::Critical);
        let x = one(&with(Ok(shipping(NOW - 700))), "database");
        assert!(
            x.reason.contains("11m ago") && !x.reason.contains('\n'),
            "{}",
            x.reason
        );
        assert_eq!(x.figures["lag_s"], 700);
        assert_eq!(x.figures["critical_after_s"], 601);
        let ok = one(&with(Ok(shipping(NOW - 1))), "database");
        assert!(ok.reason.contains("12 segments"), "{}", ok.reason);
    }

    #[test]
    fn never_shipped_counts_from_the_start_and_errors_warn() {
        let mut s = PitrStatus {
            enabled: true,
            ..PitrStatus::default()
        };
        // Started an hour ago, never shipped: critical.
        assert_eq!(
            one(&with(Ok(s.clone())), "database").severity,
            Severity::Critical
        );
        let mut f = with(Ok(s.clone()));
        f.pitr.as_mut().unwrap().since = Some(NOW - 5);
        assert_eq!(one(&f, "database").severity, Severity::Ok);
        f.pitr.as_mut().unwrap().since = None;
        assert_eq!(one(&f, "database").severity, Severity::Unknown);
        // A failing step: at least a warning, with the error.
        s = shipping(NOW - 2);
        s.last_error = Some("the snapshot backup (job 4) did not succeed".into());
        let x = one(&with(Ok(s)), "database");
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.reason.contains("job 4"), "{}", x.reason);
        // No daemon to ask.
        let x = one(&with(Err("connection refused".into())), "database");
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.reason.contains("connection refused"), "{}", x.reason);
    }

    #[test]
    fn the_stick_copy() {
        let mut s = shipping(NOW - 1);
        assert!(pitr(&with(Ok(s.clone())), &Thresholds::default(), NOW)
            .iter()
            .all(|x| x.subject != "stick"));
        s.stick_segments = Some(40);
        assert_eq!(one(&with(Ok(s.clone())), "stick").severity, Severity::Ok);
        s.stick_error = Some("No space left on device (os error 28)".into());
        let x = one(&with(Ok(s)), "stick");
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.reason.contains("No space left"), "{}", x.reason);
        assert_eq!(x.figures["stick_segments"], 40);
    }
}
