//! The offsite store, only when `[offsite]` is configured and the daemon
//! runs the syncs (facts filled by it). Three rules on subject `store`:
//! - `offsite_lag`: age of the oldest restore point (archive file or WAL
//!   segment) not yet confirmed remotely; 0 when nothing is pending.
//!   Warning beyond `offsite_lag_warning` (default 2 intervals plus an
//!   hour), critical beyond `offsite_lag_critical` (default 4 intervals
//!   plus a day);
//! - `offsite_failures`: syncs failed in a row, warning from
//!   `offsite_failures_warning` (2), critical from
//!   `offsite_failures_critical` (6);
//! - `offsite_credentials`: critical at the first sync the store refuses
//!   the credentials of (a failing key does not heal by waiting).

use serde_json::json;

use super::{finding, rising, secs, span, OFFSITE_CREDENTIALS, OFFSITE_FAILURES, OFFSITE_LAG};
use crate::monitor::facts::{Facts, OffsiteFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};

const SUBJECT: &str = "store";

pub fn offsite(f: &Facts, t: &Thresholds, now: i64) -> Vec<Finding> {
    let Some(o) = f.offsite.as_ref() else {
        return Vec::new();
    };
    vec![lag(o, t, now), failures(o, t), credentials(o)]
}

/// (warning, critical) lag in seconds.
fn lag_limits(o: &OffsiteFacts, t: &Thresholds) -> (i64, i64) {
    let i = o.interval_s;
    let warn = t.offsite_lag_warning.map_or_else(
        || secs(i.saturating_mul(2).saturating_add(3600)),
        |d| secs(d.as_secs()),
    );
    let crit = t.offsite_lag_critical.map_or_else(
        || secs(i.saturating_mul(4).saturating_add(86_400)),
        |d| secs(d.as_secs()),
    );
    (warn, crit.max(warn))
}

fn lag(o: &OffsiteFacts, t: &Thresholds, now: i64) -> Finding {
    let (warn, crit) = lag_limits(o, t);
    let s = &o.status;
    let Some(p) = &s.pending else {
        return finding(
            OFFSITE_LAG,
            SUBJECT,
            Severity::Unknown,
            "what is not yet in the offsite store is not known (the offsite record or secret cannot be read; see the daemon's log)".into(),
            json!({"warning_after_s": warn, "critical_after_s": crit}),
        );
    };
    let lag = p.oldest.map_or(0, |o| now.saturating_sub(o).max(0));
    let figures = json!({
        "lag_s": lag,
        "warning_after_s": warn,
        "critical_after_s": crit,
        "pending_objects": p.objects,
        "pending_bytes": p.bytes,
        "last_success": s.last_success,
    });
    let severity = rising(lag, warn, crit);
    let reason = match (severity, p.objects) {
        (_, 0) => "everything is in the offsite store".to_string(),
        (Severity::Ok, n) => format!(
            "{n} objects ({} bytes) wait to be shipped offsite; the oldest is {} old",
            p.bytes,
            span(lag)
        ),
        (_, n) => format!(
            "the oldest of {n} objects ({} bytes) not yet in the offsite store is {} old (allowed {}): a lost board would lose them; see offsite_failures and the daemon's log (journalctl -u rvm-backup)",
            p.bytes,
            span(lag),
            span(warn)
        ),
    };
    finding(OFFSITE_LAG, SUBJECT, severity, reason, figures)
}

fn failures(o: &OffsiteFacts, t: &Thresholds) -> Finding {
    let s = &o.status;
    let n = s.consecutive_failures;
    let severity = if n >= t.offsite_failures_critical {
        Severity::Critical
    } else if n >= t.offsite_failures_warning {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let figures = json!({
        "consecutive_failures": n,
        "warning_at": t.offsite_failures_warning,
        "critical_at": t.offsite_failures_critical,
        "error": s.last_error,
    });
    let reason = match (&s.last_error, n) {
        (Some(e), n) if n > 0 => format!("{n} offsite syncs failed in a row, the last: {e}"),
        _ => match s.last_success {
            Some(_) => "the last offsite sync succeeded".to_string(),
            None => "no offsite sync has ended yet".to_string(),
        },
    };
    finding(OFFSITE_FAILURES, SUBJECT, severity, reason, figures)
}

fn credentials(o: &OffsiteFacts) -> Finding {
    let s = &o.status;
    if s.credentials_rejected() {
        let e = s.last_error.as_deref().unwrap_or("credentials rejected");
        return finding(
            OFFSITE_CREDENTIALS,
            SUBJECT,
            Severity::Critical,
            format!("the offsite store rejects this board's credentials: {e}"),
            json!({"error": e}),
        );
    }
    finding(
        OFFSITE_CREDENTIALS,
        SUBJECT,
        Severity::Ok,
        "the offsite store has not rejected the credentials".into(),
        json!({}),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::offsite::pending::Pending;
    use crate::offsite::status::{FailureKind, OffsiteStatus};

    fn with(status: OffsiteStatus) -> Facts {
        let mut f = healthy();
        f.offsite = Some(OffsiteFacts {
            interval_s: 900,
            status,
        });
        f
    }

    fn pending(oldest_ago: Option<i64>, objects: u64) -> OffsiteStatus {
        OffsiteStatus {
            enabled: true,
            pending: Some(Pending {
                objects,
                bytes: objects * 1000,
                oldest: oldest_ago.map(|a| NOW - a),
            }),
            ..OffsiteStatus::default()
        }
    }

    fn one(f: &Facts, t: &Thresholds, rule: &str) -> Finding {
        offsite(f, t, NOW)
            .into_iter()
            .find(|x| x.rule == rule)
            .unwrap_or_else(|| panic!("no {rule}"))
    }

    #[test]
    fn not_configured_means_no_finding() {
        assert!(offsite(&healthy(), &Thresholds::default(), NOW).is_empty());
        // With it, every rule judges, each on `store`.
        let all = offsite(&with(pending(None, 0)), &Thresholds::default(), NOW);
        let keys: Vec<String> = all.iter().map(Finding::key).collect();
        assert_eq!(
            keys,
            [
                "offsite_lag/store",
                "offsite_failures/store",
                "offsite_credentials/store"
            ]
        );
        assert!(all.iter().all(|x| x.severity == Severity::Ok), "{all:#?}");
    }

    #[test]
    fn lag_defaults_follow_the_interval_and_keys_override() {
        let t = Thresholds::default();
        let sev = |ago: i64| one(&with(pending(Some(ago), 3)), &t, OFFSITE_LAG).severity;
        // 2 × 900 s + 1 h = 5400 s; 4 × 900 s + 1 d = 90000 s.
        assert_eq!(sev(5400), Severity::Ok);
        assert_eq!(sev(5401), Severity::Warning);
        assert_eq!(sev(90_000), Severity::Warning);
        assert_eq!(sev(90_001), Severity::Critical);
        let x = one(&with(pending(Some(7200), 3)), &t, OFFSITE_LAG);
        assert!(x.reason.contains("2h old"), "{}", x.reason);
        assert_eq!(x.figures["pending_bytes"], 3000);
        // Nothing pending: no lag, however old the last success.
        assert_eq!(
            one(&with(pending(None, 0)), &t, OFFSITE_LAG).figures["lag_s"],
            0
        );
        let t = Thresholds {
            offsite_lag_warning: Some(std::time::Duration::from_secs(60)),
            offsite_lag_critical: Some(std::time::Duration::from_secs(120)),
            ..Thresholds::default()
        };
        let sev = |ago: i64| one(&with(pending(Some(ago), 1)), &t, OFFSITE_LAG).severity;
        assert_eq!(sev(60), Severity::Ok);
        assert_eq!(sev(61), Severity::Warning);
        assert_eq!(sev(121), Severity::Critical);
        // Not known: unknown, said so.
        let mut s = pending(None, 0);
        s.pending = None;
        assert_eq!(one(&with(s), &t, OFFSITE_LAG).severity, Severity::Unknown);
    }

    #[test]
    fn failures_count_and_credentials_are_critical_at_once() {
        let t = Thresholds::default();
        let mut s = pending(None, 0);
        s.consecutive_failures = 1;
        s.last_error = Some("the offsite store 127.0.0.1:9 cannot be reached".into());
        s.last_error_kind = Some(FailureKind::Unreachable);
        assert_eq!(
            one(&with(s.clone()), &t, OFFSITE_FAILURES).severity,
            Severity::Ok
        );
        assert_eq!(
            one(&with(s.clone()), &t, OFFSITE_CREDENTIALS).severity,
            Severity::Ok
        );
        s.consecutive_failures = 2;
        let x = one(&with(s.clone()), &t, OFFSITE_FAILURES);
        assert_eq!(x.severity, Severity::Warning);
        assert!(x.reason.contains("cannot be reached"), "{}", x.reason);
        s.consecutive_failures = 6;
        assert_eq!(
            one(&with(s.clone()), &t, OFFSITE_FAILURES).severity,
            Severity::Critical
        );
        // Rejected credentials: critical at the first failure.
        s.consecutive_failures = 1;
        s.last_error = Some("SignatureDoesNotMatch".into());
        s.last_error_kind = Some(FailureKind::Credentials);
        let x = one(&with(s.clone()), &t, OFFSITE_CREDENTIALS);
        assert_eq!(x.severity, Severity::Critical);
        assert!(x.reason.contains("SignatureDoesNotMatch"), "{}", x.reason);
        // A success clears both.
        s.consecutive_failures = 0;
        s.last_error = None;
        s.last_error_kind = None;
        s.last_success = Some(NOW);
        assert!(offsite(&with(s), &t, NOW)
            .iter()
            .all(|x| x.severity == Severity::Ok));
    }
}
