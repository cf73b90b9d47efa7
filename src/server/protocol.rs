//! The control socket's line protocol (DESIGN.md "Socket protocol").
//!
//! A request is one line of at most 4 KiB of printable ASCII: `VERB [ARG…]`,
//! words separated by spaces, the verb case-insensitive. A reply is one line:
//! `OK <json>` or `ERR <code> <message>`. Codes follow HTTP's where one fits:
//! 400 bad request, 403 not allowed, 404 no such thing, 409 conflict,
//! 413 line too long, 501 not implemented yet, 503 busy or shutting down.

use serde_json::Value;

use super::access::Role;

/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Ping,
    Help,
    Status,
    Health,
    List,
    History,
    Job,
    Backup,
    Verify,
    Restore,
    Prune,
    Cancel,
    Alerts,
    Report,
    Metrics,
    Drill,
}

pub const VERBS: [(Verb, &str, Option<Role>, &str); 16] = [
    (Verb::Ping, "PING", None, "PING — is the daemon alive"),
    (Verb::Help, "HELP", None, "HELP — this list"),
    (
        Verb::Status,
        "STATUS",
        Some(Role::Reader),
        "STATUS — running job, queue, last and next backup per strategy",
    ),
    (
        Verb::Health,
        "HEALTH",
        Some(Role::Reader),
        "HEALTH — healthy or not, and why",
    ),
    (
        Verb::List,
        "LIST",
        Some(Role::Reader),
        "LIST [STRATEGY] — archives",
    ),
    (
        Verb::History,
        "HISTORY",
        Some(Role::Reader),
        "HISTORY — recent jobs",
    ),
    (
        Verb::Job,
        "JOB",
        Some(Role::Reader),
        "JOB ID — one job's state and progress",
    ),
    (
        Verb::Backup,
        "BACKUP",
        Some(Role::Operator),
        "BACKUP STRATEGY…|all — queue backups",
    ),
    (
        Verb::Verify,
        "VERIFY",
        Some(Role::Operator),
        "VERIFY ID…|all — queue a full verification",
    ),
    (
        Verb::Restore,
        "RESTORE",
        Some(Role::Admin),
        "RESTORE STRATEGY [ID|latest] [at=TIME] [target=DIR] — queue a restore",
    ),
    (
        Verb::Prune,
        "PRUNE",
        Some(Role::Operator),
        "PRUNE [dry-run] — apply retention",
    ),
    (
        Verb::Cancel,
        "CANCEL",
        Some(Role::Operator),
        "CANCEL ID — cancel a queued or running job",
    ),
    (
        Verb::Alerts,
        "ALERTS",
        Some(Role::Reader),
        "ALERTS — (not implemented yet)",
    ),
    (
        Verb::Report,
        "REPORT",
        Some(Role::Reader),
        "REPORT — (not implemented yet)",
    ),
    (
        Verb::Metrics,
        "METRICS",
        Some(Role::Reader),
        "METRICS — (not implemented yet)",
    ),
    (
        Verb::Drill,
        "DRILL",
        Some(Role::Operator),
        "DRILL — (not implemented yet)",
    ),
];

impl Verb {
    pub fn name(self) -> &'static str {
        VERBS.iter().find(|v| v.0 == self).map_or("?", |v| v.1)
    }

    /// The least role that may use this verb; `None`: anyone.
    pub fn needs(self) -> Option<Role> {
        VERBS.iter().find(|v| v.0 == self).and_then(|v| v.2)
    }

    /// Verbs that change state are written to the audit log.
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            Verb::Backup | Verb::Verify | Verb::Restore | Verb::Prune | Verb::Cancel | Verb::Drill
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub verb: Verb,
    pub args: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ProtoError {
    pub code: u16,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: u16, message: impl Into<String>) -> ProtoError {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

/// Parse one request line (without its newline).
pub fn parse(line: &[u8]) -> Result<Request, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::new(413, "line longer than 4096 bytes"));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ProtoError::new(400, "requests are printable ASCII"));
    }
    // Checked ASCII above, so this is valid UTF-8.
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let Some(word) = words.next() else {
        return Err(ProtoError::new(400, "empty request; try HELP"));
    };
    let upper = word.to_ascii_uppercase();
    let verb = VERBS
        .iter()
        .find(|v| v.1 == upper)
        .map(|v| v.0)
        .ok_or_else(|| ProtoError::new(400, format!("unknown verb {upper}; try HELP")))?;
    Ok(Request {
        verb,
        args: words.map(str::to_string).collect(),
    })
}

pub fn ok(v: &Value) -> String {
    format!("OK {v}\n")
}

pub fn err(e: &ProtoError) -> String {
    let clean: String = e
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("ERR {} {clean}\n", e.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbs_and_args() {
        assert_eq!(
            parse(b"ping").unwrap(),
            Request {
                verb: Verb::Ping,
                args: vec![]
            }
        );
        assert_eq!(
            parse(b"BACKUP  database config\r").unwrap(),
            Request {
                verb: Verb::Backup,
                args: vec!["database".into(), "config".into()]
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"").unwrap_err().code, 400);
        assert_eq!(parse(b"FROB").unwrap_err().code, 400);
        assert_eq!(parse(b"PING \xff\x00").unwrap_err().code, 400);
        assert_eq!(parse(&[b'A'; 5000]).unwrap_err().code, 413);
        assert_eq!(err(&ProtoError::new(400, "a\nb")), "ERR 400 a b\n");
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert_eq!(Verb::Restore.needs(), Some(Role::Admin));
        assert_eq!(Verb::Backup.needs(), Some(Role::Operator));
        assert_eq!(Verb::Status.needs(), Some(Role::Reader));
        assert_eq!(Verb::Ping.needs(), None);
    }
}
