//! The exec sink: a command run with the alert as JSON on stdin and as
//! environment variables (`RVM_ALERT_ID`, `RVM_ALERT_KIND`,
//! `RVM_ALERT_SEVERITY`, `RVM_ALERT_PREVIOUS`, `RVM_ALERT_RULE`,
//! `RVM_ALERT_SUBJECT`, `RVM_ALERT_REASON`, `RVM_ALERT_SUMMARY`,
//! `RVM_ALERT_HOST`, `RVM_ALERT_MACHINE_ID`, `RVM_ALERT_AT`,
//! `RVM_ALERT_TIME`), besides `PATH` and `LANG=C` only.
//!
//! It runs through [`crate::child`]: no shell, its own process group,
//! killed with it after [`TIMEOUT`], output bounded. Exit status 0 is
//! delivered; anything else is tried again later.

use std::time::Duration;

use crate::child::{self, Ending};
use crate::monitor::Alert;

/// How long one run may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The environment an exec sink gets (values without control characters:
/// one line each).
pub fn environment(alert: &Alert) -> Vec<(String, String)> {
    let one_line = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(4096)
            .collect()
    };
    let kind = serde_json::to_value(alert.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    [
        ("RVM_ALERT_ID", alert.id.clone()),
        ("RVM_ALERT_KIND", kind),
        ("RVM_ALERT_SEVERITY", alert.severity.name().to_string()),
        ("RVM_ALERT_PREVIOUS", alert.previous.name().to_string()),
        ("RVM_ALERT_RULE", alert.rule.clone()),
        ("RVM_ALERT_SUBJECT", alert.subject.clone()),
        ("RVM_ALERT_REASON", alert.reason.clone()),
        ("RVM_ALERT_SUMMARY", alert.summary()),
        ("RVM_ALERT_HOST", alert.host.clone()),
        ("RVM_ALERT_MACHINE_ID", alert.machine_id.clone()),
        ("RVM_ALERT_AT", alert.at.to_string()),
        ("RVM_ALERT_TIME", alert.time.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), one_line(&v)))
    .collect()
}

/// Run `argv` with `input` on stdin and `env`; Ok on exit status 0.
pub async fn run(
    what: &str,
    argv: &[String],
    env: Vec<(String, String)>,
    input: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let shown = argv.join(" ");
    let r = child::run(child::Spec {
        argv,
        env,
        stdin: Some(input),
        timeout,
    })
    .await;
    match &r.ending {
        Ending::Exited(s) if s.success() => Ok(()),
        Ending::Exited(s) => Err(format!("{what} {shown} failed ({s}){}", r.printed())),
        Ending::TimedOut => Err(format!(
            "{what} {shown} did not finish within {}s and was killed{}",
            timeout.as_secs(),
            r.printed()
        )),
        Ending::NotStarted(e) => Err(format!("cannot run {what} {shown}: {e}")),
        Ending::Lost(e) => Err(format!("cannot wait for {what} {shown}: {e}")),
    }
}

pub async fn send(argv: &[String], alert: &Alert) -> Result<(), String> {
    let mut body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
    body.push(b'\n');
    run("the alert command", argv, environment(alert), body, TIMEOUT).await
}
