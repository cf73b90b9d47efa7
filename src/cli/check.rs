//! `check [--json]`: evaluate the monitoring rules once, without the
//! daemon, and exit like a monitoring plugin: 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN (the worst finding; a config or key that does not load is
//! UNKNOWN). Human output: a summary line first (what a plugin's caller
//! shows), then one line per finding that is not ok. `--json`: one object
//! with every finding.
//!
//! Read-only: it judges the raw findings now, with no tracker (no
//! confirmation, no repeat), and writes nothing, not `monitor.json`
//! either; the daemon's alerts are unaffected by running it.

use std::path::Path;

use serde_json::json;

use super::{no_arguments, no_unknown_flags, take_flag};
use crate::config::Config;
use crate::error::Result;
use crate::monitor::{rules, Severity};
use crate::out::Out;

pub(super) fn run(config: Option<&Path>, args: &[String], out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let json = take_flag(&mut args, "--json");
    // Bad usage is UNKNOWN too (exit 2 would read as CRITICAL).
    if let Err(e) = no_unknown_flags(&args).and_then(|()| no_arguments(&args)) {
        crate::out::error_line(&format!("{e}; usage: check [--json]"));
        return Ok(Severity::Unknown.exit_code());
    }
    let now = crate::timefmt::now_unix();
    let session = Config::load(&Config::locate(config))
        .map_err(crate::error::Error::from)
        .and_then(crate::ops::Session::open);
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            if json {
                out.line(
                    &json!({"status": "unknown", "exit": 3, "error": e.to_string(), "findings": []})
                        .to_string(),
                );
            } else {
                out.line(&format!("RVM-BACKUP UNKNOWN: {e}"));
            }
            return Ok(Severity::Unknown.exit_code());
        }
    };
    let facts = smol::block_on(crate::monitor::facts::gather(&session, None, None));
    let findings = rules::evaluate(&facts, &session.config().monitoring, now);
    let worst = rules::worst(&findings);
    if json {
        out.line(
            &json!({
                "status": worst,
                "exit": worst.exit_code(),
                "evaluated": crate::timefmt::rfc3339(now),
                "findings": findings,
            })
            .to_string(),
        );
        return Ok(worst.exit_code());
    }
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .collect();
    let count = |s: Severity| bad.iter().filter(|f| f.severity == s).count();
    let summary = if bad.is_empty() {
        format!("all {} checks ok", findings.len())
    } else {
        let mut parts = Vec::new();
        for s in [Severity::Critical, Severity::Warning, Severity::Unknown] {
            if count(s) > 0 {
                parts.push(format!("{} {s}", count(s)));
            }
        }
        let mut worst_first = bad.clone();
        worst_first.sort_by_key(|f| std::cmp::Reverse(f.severity));
        format!(
            "{} of {} checks: {}",
            parts.join(", "),
            findings.len(),
            worst_first
                .iter()
                .map(|f| f.key())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    out.line(&format!(
        "RVM-BACKUP {}: {summary}",
        worst.name().to_ascii_uppercase()
    ));
    let mut sorted = bad;
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in sorted {
        out.line(&format!(
            "{} {} {}: {}",
            f.severity.name().to_ascii_uppercase(),
            f.rule,
            f.subject,
            f.reason
        ));
    }
    Ok(worst.exit_code())
}
