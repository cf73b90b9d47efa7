//! The read-only replies: `STATUS`, `HEALTH`, `LIST`, and the one-line
//! status systemd shows.

use serde_json::{json, Value};

use super::{plans, Daemon};
use crate::server::protocol::ProtoError;
use crate::store::Listed;
use crate::strategy::Strategy;

impl Daemon {
    pub(super) fn status_line(&self) -> String {
        let jobs = self.jobs.borrow();
        match jobs.running() {
            Some(j) => format!("running job {}: {}", j.id, j.kind.describe()),
            None => {
                let state = crate::state::load(&self.session().config().backup_dir);
                let last = state.values().filter_map(|r| r.last_success).max();
                format!(
                    "idle; last backup {}",
                    last.map_or("never".into(), crate::timefmt::rfc3339)
                )
            }
        }
    }

    pub(super) fn status_json(&self) -> Value {
        let now_mono = self.mono_ms();
        let session = self.session();
        let cfg = session.config();
        let state = crate::state::load(&cfg.backup_dir);
        let sched = self.sched.borrow();
        let jobs = self.jobs.borrow();
        let strategies: serde_json::Map<String, Value> = cfg
            .configured()
            .into_iter()
            .map(|s| {
                let r = state.get(&s).cloned().unwrap_or_default();
                let v = json!({
                    "last_success": r.last_success.map(crate::timefmt::rfc3339),
                    "last_failure": r.last_failure.map(crate::timefmt::rfc3339),
                    "failures": r.failures,
                    "last_error": r.last_error,
                    "last_archive": r.last_verified,
                    "next_in_s": sched.due_in(s, now_mono).map(|ms| ms / 1000),
                    "last_drill": last_drill_json(&r),
                    "last_export": last_export_json(&r),
                });
                (s.name().to_string(), v)
            })
            .collect();
        let mut pitr = self.pitr.borrow().clone();
        pitr.lag_seconds = pitr.lag_at(crate::timefmt::now_unix_ms());
        let pitr = serde_json::to_value(&pitr).unwrap_or(Value::Null);
        json!({
            "state": if jobs.running().is_some() { "running" } else { "idle" },
            "job": jobs.running().map(|j| j.to_json()),
            "queued": jobs.queued(),
            "backup_enabled": cfg.backup_enabled,
            "strategies": strategies,
            "next_drill_in_s": sched.drill_due_in(now_mono).map(|ms| ms / 1000),
            "last_export": cfg
                .configured()
                .iter()
                .filter_map(|s| state.get(s))
                .max_by_key(|r| r.last_export)
                .map_or(Value::Null, last_export_json),
            "next_export_in_s": sched.export_due_in(now_mono).map(|ms| ms / 1000),
            "pitr": pitr,
            "offsite": self.offsite_json(),
            "uptime_s": self.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Unhealthy: a strategy with no success within two periods (or since
    /// start), three failures in a row, or whose last recovery drill
    /// failed; or a monitoring finding firing as critical (its reason is
    /// among the problems). `findings` lists the monitor's latest non-ok
    /// findings (none before its first evaluation, or with monitoring off).
    pub(super) fn health_json(&self) -> Value {
        let session = self.session();
        let cfg = session.config();
        let state = crate::state::load(&cfg.backup_dir);
        let now = crate::timefmt::now_unix();
        let up = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let mut problems = Vec::new();
        for (s, plan) in &plans(cfg) {
            let r = state.get(s).cloned().unwrap_or_default();
            let period = if plan.at.is_some() {
                86_400
            } else {
                i64::try_from(plan.interval.as_secs()).unwrap_or(i64::MAX)
            };
            match r.last_success {
                None if up > period => problems.push(format!("{s}: no successful backup yet")),
                Some(t) if now.saturating_sub(t) > period.saturating_mul(2) => {
                    problems.push(format!(
                        "{s}: last successful backup {} is stale",
                        crate::timefmt::rfc3339(t)
                    ))
                }
                _ => {}
            }
            if r.last_drill_ok == Some(false) {
                problems.push(format!(
                    "{s}: the last recovery drill{} failed: {}",
                    r.last_drill
                        .map(|t| format!(" ({})", crate::timefmt::rfc3339(t)))
                        .unwrap_or_default(),
                    r.last_drill_error.clone().unwrap_or_default()
                ));
            }
            if r.failures >= 3 {
                problems.push(format!(
                    "{s}: {} failures in a row, last: {}",
                    r.failures,
                    r.last_error.unwrap_or_default()
                ));
            }
        }
        let m = self.monitor.borrow();
        for e in m.tracker.entries() {
            if e.severity == crate::monitor::Severity::Critical {
                problems.push(format!("{} ({}): {}", e.subject, e.rule, e.reason));
            }
        }
        let findings: Vec<Value> = m
            .findings
            .iter()
            .filter(|f| f.severity != crate::monitor::Severity::Ok)
            .map(|f| json!({"rule": f.rule, "subject": f.subject, "severity": f.severity, "reason": f.reason}))
            .collect();
        json!({"healthy": problems.is_empty(), "problems": problems, "findings": findings})
    }

    pub(super) fn list_json(&self, strategy: Option<&str>) -> Result<Value, ProtoError> {
        let only = match strategy {
            None => None,
            Some(s) => Some(
                Strategy::parse(s)
                    .ok_or_else(|| ProtoError::new(400, format!("unknown strategy {s}")))?,
            ),
        };
        let listing = self.session().list(only);
        let archives: Vec<Value> = listing.archives.iter().map(Listed::to_json).collect();
        let problems: Vec<String> = listing
            .problems
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        Ok(json!({"archives": archives, "problems": problems}))
    }
}

/// The last export for `STATUS`: `null` if none.
fn last_export_json(r: &crate::state::Remembered) -> Value {
    match r.last_export {
        None => Value::Null,
        Some(t) => json!({
            "at": crate::timefmt::rfc3339(t),
            "ok": r.last_export_ok,
            "set": r.last_export_set,
            "error": r.last_export_error,
        }),
    }
}

/// A strategy's last drill for `STATUS`: `null` if never drilled.
fn last_drill_json(r: &crate::state::Remembered) -> Value {
    match r.last_drill {
        None => Value::Null,
        Some(t) => json!({
            "at": crate::timefmt::rfc3339(t),
            "ok": r.last_drill_ok,
            "seconds": r.last_drill_seconds,
            "error": r.last_drill_error,
        }),
    }
}
