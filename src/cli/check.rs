//! `check [--json]`: evaluate the monitoring rules once, without the
//! daemon, and exit like a monitoring plugin: 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN (the worst finding; a config that does not load is UNKNOWN,
//! a key that does not load is a critical `key_file` finding). Human
//! output: a summary line first (what a plugin's caller
//! shows), then one line per finding that is not ok. `--json`: one object
//! with every finding.
//!
//! The `pitr` rule needs the daemon's WAL shipper: `check` asks the
//! daemon's `STATUS` (5 s timeout) when `[database] pitr` is on; a daemon
//! that does not answer is a `pitr` warning. The offsite rules judge the
//! daemon's syncs from the same `STATUS` when `[offsite]` is configured;
//! without an answer they are not evaluated.
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
use crate::offsite::status::OffsiteStatus;
use crate::out::Out;
use crate::pitr::PitrStatus;

pub(super) fn run(config: Option<&Path>, args: &[String], out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let json = take_flag(&mut args, "--json");
    // Bad usage is UNKNOWN too (exit 2 would read as CRITICAL).
    if let Err(e) = no_unknown_flags(&args).and_then(|()| no_arguments(&args)) {
        crate::out::error_line(&format!("{e}; usage: check [--json]"));
        return Ok(Severity::Unknown.exit_code());
    }
    let now = crate::timefmt::now_unix();
    let cfg = match Config::load(&Config::locate(config)) {
        Ok(c) => c,
        Err(e) => return Ok(unknown(out, json, &e.to_string())),
    };
    // A key that does not load is judged (critical), not a reason to see
    // nothing: the rest is evaluated without it (encrypted sidecars then
    // do not read, which the sidecars rule reports).
    let (session, key_error) = match crate::ops::Session::open(cfg.clone()) {
        Ok(s) => (s, None),
        Err(e) => {
            let store = crate::store::Store::for_config(&cfg);
            (
                crate::ops::Session::over_store(cfg, None, store),
                Some(e.to_string()),
            )
        }
    };
    let mut facts = smol::block_on(crate::monitor::facts::gather(&session, None, None));
    let pitr_on = session
        .config()
        .database
        .as_ref()
        .is_some_and(|d| d.pitr_enabled());
    let offsite = session.config().offsite.as_ref();
    let daemon = (pitr_on || offsite.is_some()).then(|| daemon_status(&session.config().socket));
    if let Some(status) = daemon.clone().filter(|_| pitr_on) {
        let (shipper, since) = match status.and_then(|v| pitr_of(&v, now)) {
            Ok((s, since)) => (Ok(s), Some(since)),
            Err(e) => (Err(e), None),
        };
        facts.pitr = crate::monitor::facts::pitr(session.config(), shipper, since);
    }
    // The offsite syncs are the daemon's: judged only when it answers.
    if let (Some(o), Some(Ok(v))) = (offsite, &daemon) {
        if let Ok(status) = serde_json::from_value::<OffsiteStatus>(v["offsite"].clone()) {
            facts.offsite = status.enabled.then(|| crate::monitor::facts::OffsiteFacts {
                interval_s: o.interval().as_secs().max(1),
                status,
            });
        }
    }
    let mut findings = rules::evaluate(&facts, &session.config().monitoring, now);
    if let Some(e) = key_error {
        for f in findings.iter_mut().filter(|f| f.rule == rules::KEY_FILE) {
            f.severity = Severity::Critical;
            f.reason = format!("the key does not load: {e}");
        }
    }
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

/// The daemon's `STATUS` (the WAL shipper and the offsite syncs live in
/// the daemon); why not, as one line.
fn daemon_status(socket: &Path) -> std::result::Result<serde_json::Value, String> {
    use std::io::{BufRead, BufReader, Write};
    const MAX_REPLY: u64 = 1 << 20;
    let timeout = Some(std::time::Duration::from_secs(5));
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(b"STATUS\n"))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut reply = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REPLY))
        .read_line(&mut reply)
        .map_err(|e| format!("no reply on {}: {e}", socket.display()))?;
    let body = reply.strip_prefix("OK ").ok_or_else(|| {
        format!(
            "STATUS on {} answered {:?}",
            socket.display(),
            reply.trim_end()
        )
    })?;
    serde_json::from_str(body).map_err(|e| format!("STATUS reply not understood: {e}"))
}

/// The WAL shipper's state in a `STATUS` reply, and the daemon's start.
fn pitr_of(v: &serde_json::Value, now: i64) -> std::result::Result<(PitrStatus, i64), String> {
    let status = serde_json::from_value(v["pitr"].clone())
        .map_err(|e| format!("STATUS reply not understood: {e}"))?;
    let up = v["uptime_s"]
        .as_u64()
        .map_or(0, |u| i64::try_from(u).unwrap_or(i64::MAX));
    Ok((status, now.saturating_sub(up)))
}

/// Say UNKNOWN (the config does not load) and return its exit status.
fn unknown(out: &mut Out, json: bool, why: &str) -> i32 {
    if json {
        out.line(
            &json!({"status": "unknown", "exit": 3, "error": why, "findings": []}).to_string(),
        );
    } else {
        out.line(&format!("RVM-BACKUP UNKNOWN: {why}"));
    }
    Severity::Unknown.exit_code()
}
