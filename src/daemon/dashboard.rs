//! The monitor's replies: `ALERTS` (every finding with its tracked state,
//! and which are firing) and `REPORT` (a summary for a fleet dashboard).
//! Both read the monitor's latest evaluation (see `monitor::latest`); see
//! docs/protocol.md for their JSON.

use serde_json::{json, Value};

use super::Daemon;
use crate::monitor::facts::{Facts, Space};
use crate::monitor::{rules, Finding, Severity};
use crate::timefmt::rfc3339;

impl Daemon {
    pub(super) fn alerts_json(&self) -> Value {
        let (_, findings, at) = self.latest();
        let enabled = self.session().config().monitoring_enabled;
        let m = self.monitor.borrow();
        let rows: Vec<Value> = findings
            .iter()
            .map(|f| {
                let e = m.tracker.get(&f.key());
                json!({
                    "rule": f.rule,
                    "subject": f.subject,
                    "severity": f.severity,
                    "state": e.map_or(f.severity, |e| e.severity),
                    "since": e.map(|e| rfc3339(e.since)),
                    "firing": e.is_some_and(|e| e.firing()),
                    "pending": e.and_then(|e| e.pending),
                    "last_alert": e.and_then(|e| e.last_alert).map(rfc3339),
                    "reason": f.reason,
                    "figures": f.figures,
                })
            })
            .collect();
        let firing: Vec<Value> = m
            .tracker
            .entries()
            .filter(|e| e.firing())
            .map(|e| {
                json!({
                    "key": e.key(),
                    "rule": e.rule,
                    "subject": e.subject,
                    "severity": e.severity,
                    "since": rfc3339(e.since),
                    "reason": e.reason,
                })
            })
            .collect();
        json!({
            "monitoring": enabled,
            "evaluated": rfc3339(at),
            "worst": rules::worst(&findings),
            "firing": firing,
            "findings": rows,
        })
    }

    pub(super) fn report_json(&self) -> Value {
        let (facts, findings, at) = self.latest();
        let m = self.monitor.borrow();
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        let firing: Vec<Value> = m
            .tracker
            .entries()
            .filter(|e| e.firing())
            .map(|e| json!({"key": e.key(), "severity": e.severity, "since": rfc3339(e.since), "reason": e.reason}))
            .collect();
        json!({
            "host": crate::recovery_set::board::hostname(),
            "version": env!("CARGO_PKG_VERSION"),
            "evaluated": rfc3339(at),
            "worst": rules::worst(&findings),
            "strategies": strategies_json(&facts, &findings, at),
            "storage": {
                "backup_dir": space_json(facts.storage.as_ref()),
                "stick": space_json(facts.stick.as_ref()),
            },
            "alerts": {
                "firing": firing,
                "findings": {
                    "ok": count(Severity::Ok),
                    "warning": count(Severity::Warning),
                    "critical": count(Severity::Critical),
                    "unknown": count(Severity::Unknown),
                },
            },
        })
    }
}

fn space_json(s: Option<&Space>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({
            "path": s.path.display().to_string(),
            "free_bytes": s.avail,
            "total_bytes": s.total,
        }),
    }
}

/// Per strategy: newest archive, age, size trend, last verify, drill and
/// export, and the worst finding about it.
fn strategies_json(facts: &Facts, findings: &[Finding], now: i64) -> Value {
    let mut out = serde_json::Map::new();
    for s in &facts.strategies {
        let r = &s.state;
        let newest = s.newest();
        let sizes: Vec<u64> = s.archives.iter().map(|a| a.content_bytes).collect();
        let earlier = &sizes[..sizes.len().saturating_sub(1)];
        let median = {
            let mut v = earlier.to_vec();
            v.sort_unstable();
            v.get(v.len().saturating_sub(1) / 2).copied()
        };
        let about: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.subject == s.strategy.name())
            .collect();
        let worst = about
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok);
        out.insert(
            s.strategy.name().to_string(),
            json!({
                "newest_archive": newest.map(|a| &a.id),
                "newest_created": newest.map(|a| rfc3339(a.created)),
                "age_s": r.last_success.or(newest.map(|a| a.created)).map(|t| now.saturating_sub(t)),
                "last_success": r.last_success.map(rfc3339),
                "failures": r.failures,
                "last_error": r.last_error,
                "archive_count": s.archive_count,
                "content_bytes": newest.map(|a| a.content_bytes),
                "archive_bytes": newest.map(|a| a.archive_bytes),
                "size_trend": {
                    "recent_content_bytes": sizes,
                    "median_content_bytes": median,
                    "newest_percent_of_median": match (newest, median) {
                        (Some(n), Some(m)) if m > 0 => u64::try_from(u128::from(n.content_bytes) * 100 / u128::from(m)).ok(),
                        _ => None,
                    },
                },
                "last_verified": r.last_verified,
                "last_verify": r.last_verify.map(|t| json!({
                    "at": rfc3339(t),
                    "ok": r.last_verify_ok,
                    "error": r.last_verify_error,
                })),
                "last_drill": r.last_drill.map(|t| json!({
                    "at": rfc3339(t),
                    "ok": r.last_drill_ok,
                    "seconds": r.last_drill_seconds,
                    "error": r.last_drill_error,
                })),
                "last_export": r.last_export.map(|t| json!({
                    "at": rfc3339(t),
                    "ok": r.last_export_ok,
                    "set": r.last_export_set,
                    "error": r.last_export_error,
                })),
                "worst": worst,
                "problems": about
                    .iter()
                    .filter(|f| f.severity != Severity::Ok)
                    .map(|f| json!({"rule": f.rule, "severity": f.severity, "reason": f.reason}))
                    .collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(out)
}
