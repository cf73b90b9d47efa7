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
    Export,
    Offsite,
    TestAlert,
}

/// What the protocol says about one verb.
#[derive(Clone, Copy, Debug)]
pub struct VerbSpec {
    pub verb: Verb,
    /// The word on the wire.
    pub name: &'static str,
    /// The least role that may use it; `None`: anyone.
    pub needs: Option<Role>,
    /// One line for `HELP`.
    pub help: &'static str,
}

pub const VERBS: [VerbSpec; 19] = [
    VerbSpec {
        verb: Verb::Ping,
        name: "PING",
        needs: None,
        help: "PING — is the daemon alive",
    },
    VerbSpec {
        verb: Verb::Help,
        name: "HELP",
        needs: None,
        help: "HELP — this list",
    },
    VerbSpec {
        verb: Verb::Status,
        name: "STATUS",
        needs: Some(Role::Reader),
        help: "STATUS — running job, queue, last and next backup per strategy",
    },
    VerbSpec {
        verb: Verb::Health,
        name: "HEALTH",
        needs: Some(Role::Reader),
        help: "HEALTH — healthy or not, and why",
    },
    VerbSpec {
        verb: Verb::List,
        name: "LIST",
        needs: Some(Role::Reader),
        help: "LIST [STRATEGY] — archives",
    },
    VerbSpec {
        verb: Verb::History,
        name: "HISTORY",
        needs: Some(Role::Reader),
        help: "HISTORY — recent jobs",
    },
    VerbSpec {
        verb: Verb::Job,
        name: "JOB",
        needs: Some(Role::Reader),
        help: "JOB ID — one job's state and progress",
    },
    VerbSpec {
        verb: Verb::Backup,
        name: "BACKUP",
        needs: Some(Role::Operator),
        help: "BACKUP STRATEGY…|all [full] — queue backups (full: a full archive, not an incremental)",
    },
    VerbSpec {
        verb: Verb::Verify,
        name: "VERIFY",
        needs: Some(Role::Operator),
        help: "VERIFY ID…|all — queue a full verification",
    },
    VerbSpec {
        verb: Verb::Restore,
        name: "RESTORE",
        needs: Some(Role::Admin),
        help: "RESTORE STRATEGY [ID|latest] [at=TIME] [target=DIR] [file=PATH] [accept-damaged] | RESTORE all [at=TIME] [target=DIR] [accept-damaged] — queue a restore (all: every strategy as of TIME)",
    },
    VerbSpec {
        verb: Verb::Prune,
        name: "PRUNE",
        needs: Some(Role::Operator),
        help: "PRUNE [dry-run] — apply retention",
    },
    VerbSpec {
        verb: Verb::Cancel,
        name: "CANCEL",
        needs: Some(Role::Operator),
        help: "CANCEL ID — cancel a queued or running job",
    },
    VerbSpec {
        verb: Verb::Alerts,
        name: "ALERTS",
        needs: Some(Role::Reader),
        help: "ALERTS — every monitoring finding with its state (ok, warning, critical, unknown), since when and why; which are firing",
    },
    VerbSpec {
        verb: Verb::Report,
        name: "REPORT",
        needs: Some(Role::Reader),
        help: "REPORT — a JSON summary for a dashboard: per strategy the newest archive, its age, size trend, last verify, drill and export; storage; alerts",
    },
    VerbSpec {
        verb: Verb::Metrics,
        name: "METRICS",
        needs: Some(Role::Reader),
        help: "METRICS — the metrics in the Prometheus text format (version 0.0.4), as a JSON string",
    },
    VerbSpec {
        verb: Verb::Drill,
        name: "DRILL",
        needs: Some(Role::Operator),
        help: "DRILL [STRATEGY…|all] — queue a recovery drill: restore the newest archives into scratch space, check and time them",
    },
    VerbSpec {
        verb: Verb::Export,
        name: "EXPORT",
        needs: Some(Role::Operator),
        help: "EXPORT [DIR] — queue an export of a verified recovery set onto the stick mounted at DIR (default: export_dir)",
    },
    VerbSpec {
        verb: Verb::Offsite,
        name: "OFFSITE",
        needs: Some(Role::Operator),
        help: "OFFSITE — sync with the [offsite] store now: ship what it does not hold yet (joins a sync queued or running)",
    },
    VerbSpec {
        verb: Verb::TestAlert,
        name: "TEST-ALERT",
        needs: Some(Role::Operator),
        help: "TEST-ALERT [warning|critical|ok] — send a test alert to every [[alert]] sink (through the outbox, with retries)",
    },
];

impl Verb {
    pub fn spec(self) -> &'static VerbSpec {
        // Every verb has a row (checked by a test); PING's is the fallback.
        VERBS.iter().find(|v| v.verb == self).unwrap_or(&VERBS[0])
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The least role that may use this verb; `None`: anyone.
    pub fn needs(self) -> Option<Role> {
        self.spec().needs
    }

    /// Verbs that change state are written to the audit log.
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            Verb::Backup
                | Verb::Verify
                | Verb::Restore
                | Verb::Prune
                | Verb::Cancel
                | Verb::Drill
                | Verb::Export
                | Verb::Offsite
                | Verb::TestAlert
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
        .find(|v| v.name == upper)
        .map(|v| v.verb)
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
    fn every_verb_has_its_own_row() {
        for spec in VERBS {
            assert_eq!(spec.verb.spec().name, spec.name);
            assert_eq!(parse(spec.name.as_bytes()).unwrap().verb, spec.verb);
        }
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert_eq!(Verb::Restore.needs(), Some(Role::Admin));
        assert_eq!(Verb::Backup.needs(), Some(Role::Operator));
        assert_eq!(Verb::Status.needs(), Some(Role::Reader));
        assert_eq!(Verb::Ping.needs(), None);
    }
}
