//! Answering one request line: parse it, decide by the peer's role, write
//! state-changing requests to the audit log, dispatch to the command.
//!
//! Invariants: the role comes from the kernel's peer credentials, never
//! from the request; a verb the role does not allow gets `ERR 403` and
//! changes nothing; every state-changing request, accepted or refused, is
//! audited with the peer's uid and pid (refusals through the audit log's
//! rate limit, so a peer with no role cannot flood it); while stopping,
//! state-changing requests get `ERR 503`.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::jobs::{JobKind, JobState};
use super::Daemon;
use crate::audit::Actor;
use crate::ops::RestoreRequest;
use crate::restore::Selector;
use crate::server::access::{role_of, Peer, Role};
use crate::server::protocol::{self, ProtoError, Request, Verb};
use crate::strategy::Strategy;

impl crate::server::Handler for Daemon {
    fn handle_line(&self, peer: &Peer, line: &[u8]) -> String {
        let req = match protocol::parse(line) {
            Ok(r) => r,
            Err(e) => return protocol::err(&e),
        };
        let session = self.session();
        let role = role_of(peer, &session.config().access);
        if self.stopping.get() && req.verb.changes_state() {
            return protocol::err(&ProtoError::new(503, "the daemon is shutting down"));
        }
        let allowed = match req.verb.needs() {
            None => true,
            Some(needed) => role.is_some_and(|r| r >= needed),
        };
        let actor = Actor::Peer {
            uid: peer.uid,
            pid: peer.pid,
        };
        let what = format!("{} {}", req.verb.name(), req.args.join(" "));
        let what = what.trim_end();
        if !allowed {
            let e = ProtoError::new(
                403,
                format!(
                    "uid {} ({}) may not {}; it needs the {} role",
                    peer.uid,
                    role.map_or("no role", Role::name),
                    req.verb.name(),
                    req.verb.needs().map_or("", Role::name)
                ),
            );
            if req.verb.changes_state() {
                self.audit_refused(&actor, what, &format!("refused {} {}", e.code, e.message));
            }
            return protocol::err(&e);
        }
        let reply = self.dispatch(&actor, role, &req);
        if req.verb.changes_state() {
            match &reply {
                Ok(v) => self.audit_quietly(&actor, what, &format!("accepted {v}")),
                Err(e) => {
                    self.audit_refused(&actor, what, &format!("refused {} {}", e.code, e.message))
                }
            }
        }
        match reply {
            Ok(v) => protocol::ok(&v),
            Err(e) => protocol::err(&e),
        }
    }
}

impl Daemon {
    fn audit_refused(&self, actor: &Actor, what: &str, result: &str) {
        let now = std::time::Instant::now();
        if let Err(e) = self.audit.borrow_mut().refused(actor, what, result, now) {
            log::error!("cannot write the audit log: {e}");
        }
    }

    /// Answer one allowed request.
    fn dispatch(
        &self,
        actor: &Actor,
        role: Option<Role>,
        req: &Request,
    ) -> Result<Value, ProtoError> {
        let arg = |i: usize| req.args.get(i).map(String::as_str);
        match req.verb {
            Verb::Ping => Ok(json!({"pong": true})),
            Verb::Help => Ok(json!({
                "verbs": protocol::VERBS.iter().map(|v| v.help).collect::<Vec<_>>(),
                "your_role": role.map(Role::name),
            })),
            Verb::Status => Ok(self.status_json()),
            Verb::Health => Ok(self.health_json()),
            Verb::List => self.list_json(arg(0)),
            Verb::History => Ok(
                json!({"jobs": self.jobs.borrow().all().map(|j| j.to_json()).collect::<Vec<_>>()}),
            ),
            Verb::Job => {
                let id = job_id(arg(0))?;
                self.jobs
                    .borrow()
                    .get(id)
                    .map(|j| j.to_json())
                    .ok_or_else(|| ProtoError::new(404, format!("no job {id}")))
            }
            Verb::Backup => {
                // `full` anywhere: full archives instead of incrementals.
                let full = req.args.iter().any(|a| a == "full");
                let names: Vec<String> =
                    req.args.iter().filter(|a| *a != "full").cloned().collect();
                let strategies = self.parse_strategies(&names)?;
                let ids: Vec<u64> = strategies
                    .into_iter()
                    .map(|s| self.queue(JobKind::Backup(s, full), actor))
                    .collect::<Result<_, _>>()?;
                Ok(json!({"jobs": ids}))
            }
            Verb::Verify => {
                let ids: Vec<String> = req.args.iter().filter(|a| *a != "all").cloned().collect();
                Ok(json!({"job": self.queue(JobKind::Verify(ids), actor)?}))
            }
            Verb::Restore => {
                let kind = match req.args.split_first() {
                    Some((all, rest)) if all == "all" => parse_restore_all(rest)?,
                    _ => JobKind::Restore(parse_restore(&req.args)?),
                };
                Ok(json!({"job": self.queue(kind, actor)?}))
            }
            Verb::Prune => {
                let dry_run = match arg(0) {
                    None => false,
                    Some("dry-run") => true,
                    Some(other) => {
                        return Err(ProtoError::new(
                            400,
                            format!("PRUNE takes only dry-run, not {other}"),
                        ))
                    }
                };
                Ok(json!({"job": self.queue(JobKind::Prune { dry_run }, actor)?}))
            }
            Verb::Cancel => self.cancel(job_id(arg(0))?),
            Verb::Drill => {
                let strategies = self.parse_strategies(&req.args)?;
                if strategies.is_empty() {
                    return Err(ProtoError::new(
                        404,
                        "no strategy is configured: there is nothing to drill",
                    ));
                }
                Ok(json!({"job": self.queue(JobKind::Drill(strategies), actor)?}))
            }
            Verb::Export => {
                let dir = match req.args.as_slice() {
                    [] => None,
                    [dir] => {
                        let p = PathBuf::from(dir);
                        if !crate::restore::is_plain_absolute(&p) {
                            return Err(ProtoError::new(
                                400,
                                format!("EXPORT {dir}: give an absolute path without .."),
                            ));
                        }
                        Some(p)
                    }
                    _ => return Err(ProtoError::new(400, "EXPORT takes at most one directory")),
                };
                Ok(json!({"job": self.queue(JobKind::Export(dir), actor)?}))
            }
            Verb::Offsite => {
                if !req.args.is_empty() {
                    return Err(ProtoError::new(400, "OFFSITE takes no arguments"));
                }
                let session = self.session();
                if session.config().offsite.is_none() {
                    return Err(ProtoError::new(
                        404,
                        format!(
                            "config {} has no [offsite] section: there is no store to sync with",
                            session.config().file.display()
                        ),
                    ));
                }
                let id = self.ask_offsite(actor).ok_or_else(|| {
                    ProtoError::new(
                        503,
                        format!(
                            "the job queue is full ({} jobs waiting); try again when some have run",
                            super::jobs::MAX_QUEUED
                        ),
                    )
                })?;
                Ok(json!({"job": id}))
            }
            Verb::Metrics => Ok(self.metrics_json()),
            Verb::TestAlert => self.test_alert(&req.args),
            Verb::Alerts => Ok(self.alerts_json()),
            Verb::Report => Ok(self.report_json()),
        }
    }

    /// `TEST-ALERT [SEVERITY]`: a test alert to every sink.
    fn test_alert(&self, args: &[String]) -> Result<Value, ProtoError> {
        if args.len() > 1 {
            return Err(ProtoError::new(400, "TEST-ALERT takes at most a severity"));
        }
        let severity = crate::alerting::parse_test_severity(args.first().map(String::as_str))
            .map_err(|e| ProtoError::new(400, e))?;
        let session = self.session();
        let (alert, sinks) = self
            .alerting
            .raise_test(severity, session.config())
            .map_err(|e| ProtoError::new(500, e.to_string()))?;
        Ok(json!({
            "alert": alert,
            "sinks": sinks,
            "outbox_depth": self.alerting.depth(),
        }))
    }

    /// Queue a requested job; a full queue is `ERR 503`.
    fn queue(&self, kind: JobKind, actor: &Actor) -> Result<u64, ProtoError> {
        self.submit(kind, actor.clone()).ok_or_else(|| {
            ProtoError::new(
                503,
                format!(
                    "the job queue is full ({} jobs waiting); try again when some have run",
                    super::jobs::MAX_QUEUED
                ),
            )
        })
    }

    fn parse_strategies(&self, args: &[String]) -> Result<Vec<Strategy>, ProtoError> {
        let session = self.session();
        let cfg = session.config();
        if args.is_empty() || args.iter().any(|a| a == "all") {
            return Ok(cfg.configured());
        }
        args.iter()
            .map(|a| {
                let s = Strategy::parse(a)
                    .ok_or_else(|| ProtoError::new(400, format!("unknown strategy {a}")))?;
                cfg.source(s)
                    .map(|_| s)
                    .ok_or_else(|| ProtoError::new(404, format!("strategy {s} is not configured")))
            })
            .collect()
    }

    fn cancel(&self, id: u64) -> Result<Value, ProtoError> {
        let (state, kind) = self
            .jobs
            .borrow()
            .get(id)
            .map(|j| (j.state, j.kind.clone()))
            .ok_or_else(|| ProtoError::new(404, format!("no job {id}")))?;
        match state {
            JobState::Queued => {
                if let JobKind::Backup(s, _) = kind {
                    self.sched.borrow_mut().skipped(s, self.mono_ms());
                }
                self.jobs.borrow_mut().finish(
                    id,
                    JobState::Cancelled,
                    "cancelled before it started".into(),
                );
                Ok(json!({"job": id, "state": "cancelled"}))
            }
            JobState::Running => {
                self.cancel_running(id);
                Ok(json!({"job": id, "state": "cancelling"}))
            }
            _ => Err(ProtoError::new(409, format!("job {id} has already ended"))),
        }
    }
}

fn job_id(arg: Option<&str>) -> Result<u64, ProtoError> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| ProtoError::new(400, "give a job id (a number)"))
}

/// `RESTORE STRATEGY [ID|latest] [at=TIME] [target=DIR] [file=PATH] [accept-damaged]`
fn parse_restore(args: &[String]) -> Result<RestoreRequest, ProtoError> {
    let bad = |m: String| ProtoError::new(400, m);
    let strategy = args
        .first()
        .and_then(|a| Strategy::parse(a))
        .ok_or_else(|| {
            bad("RESTORE needs a strategy: database, config, logs or application".into())
        })?;
    let plain_absolute = |key: &str, v: &str| -> Result<PathBuf, ProtoError> {
        let p = PathBuf::from(v);
        if crate::restore::is_plain_absolute(&p) {
            Ok(p)
        } else {
            Err(bad(format!(
                "{key}={v} must be an absolute path without .."
            )))
        }
    };
    let mut req = RestoreRequest {
        strategy,
        selector: Selector::Latest,
        target: None,
        file: None,
        accept_damaged: false,
    };
    let mut selector = None;
    for a in &args[1..] {
        let next = if let Some(t) = a.strip_prefix("at=") {
            Selector::At(crate::timefmt::parse(t).map_err(bad)?)
        } else if let Some(dir) = a.strip_prefix("target=") {
            req.target = Some(plain_absolute("target", dir)?);
            continue;
        } else if let Some(f) = a.strip_prefix("file=") {
            req.file = Some(plain_absolute("file", f)?);
            continue;
        } else if a == "accept-damaged" {
            req.accept_damaged = true;
            continue;
        } else if a == "latest" {
            Selector::Latest
        } else {
            Selector::Id(a.clone())
        };
        if selector.replace(next).is_some() {
            return Err(bad("give one of ID, latest or at=TIME".into()));
        }
    }
    if let Some(s) = selector {
        req.selector = s;
    }
    Ok(req)
}

/// `RESTORE all [at=TIME] [target=DIR] [accept-damaged]` (after `all`).
fn parse_restore_all(args: &[String]) -> Result<JobKind, ProtoError> {
    let bad = |m: String| ProtoError::new(400, m);
    let (mut at, mut target, mut accept_damaged) = (None, None, false);
    for a in args {
        if let Some(t) = a.strip_prefix("at=") {
            if at.replace(crate::timefmt::parse(t).map_err(bad)?).is_some() {
                return Err(bad("give at=TIME once".into()));
            }
        } else if let Some(dir) = a.strip_prefix("target=") {
            let p = PathBuf::from(dir);
            if !crate::restore::is_plain_absolute(&p) {
                return Err(bad(format!(
                    "target={dir} must be an absolute path without .."
                )));
            }
            if target.replace(p).is_some() {
                return Err(bad("give target=DIR once".into()));
            }
        } else if a == "accept-damaged" {
            accept_damaged = true;
        } else if a.starts_with("file=") {
            return Err(bad(
                "file= restores one entry of one strategy; it cannot go with RESTORE all".into(),
            ));
        } else {
            return Err(bad(format!(
                "RESTORE all takes at=TIME, target=DIR and accept-damaged, not {a:?}"
            )));
        }
    }
    Ok(JobKind::RestoreAll {
        at,
        target,
        accept_damaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ops::Session;
    use crate::server::Handler;
    use std::path::Path;

    /// A daemon on a scratch store, built in-process: nothing is bound.
    fn daemon(name: &str) -> (Daemon, PathBuf) {
        let dir = std::env::temp_dir().join(format!("rvb-handler-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        (daemon_on(&dir).0, dir)
    }

    /// A daemon (again) on the store under `dir`.
    fn daemon_on(dir: &Path) -> (Daemon, smol::channel::Receiver<()>) {
        let text = format!(
            "backup_dir = \"{d}/backups\"\nencryption_enabled = false\nsocket = \"{d}/run/s.sock\"\n\
             [config]\npaths = [\"{d}/etc\"]\n\
             [access.reader]\nuids = [2001]\n[access.operator]\nuids = [2002]\n[access.admin]\nuids = [2003]\n",
            d = dir.display()
        );
        let cfg = Config::parse(&text, Path::new("test.toml")).unwrap();
        Daemon::new(Path::new("test.toml"), Session::open(cfg).unwrap()).unwrap()
    }

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: 4242,
            groups: vec![uid],
        }
    }

    fn audit_text(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("backups/audit.log")).unwrap()
    }

    #[test]
    fn roles_decide_who_may_do_what() {
        let (d, dir) = daemon("roles");
        let ask = |uid: u32, line: &str| d.handle_line(&peer(uid), line.as_bytes());
        assert!(ask(5000, "PING").starts_with("OK"));
        assert!(ask(5000, "HELP").starts_with("OK"));
        assert!(ask(5000, "STATUS").starts_with("ERR 403"));
        assert!(ask(5000, "BACKUP config").starts_with("ERR 403"));
        assert!(ask(2001, "STATUS").starts_with("OK"));
        assert!(ask(2001, "BACKUP config").starts_with("ERR 403"));
        assert!(ask(2002, "BACKUP config").starts_with("OK {\"jobs\":[1]}"));
        assert!(ask(2002, "RESTORE config").starts_with("ERR 403"));
        assert!(ask(2003, "RESTORE config latest target=/tmp/x").starts_with("OK"));
        assert!(ask(0, "PRUNE dry-run").starts_with("OK"));
        assert!(ask(2002, "BACKUP photos").starts_with("ERR 400"));
        assert!(ask(2002, "\u{1}garbage").starts_with("ERR 400"));
        assert!(ask(5000, "METRICS").starts_with("ERR 403"));
        let m = ask(2001, "METRICS");
        let v: Value = serde_json::from_str(m.strip_prefix("OK ").unwrap()).unwrap();
        assert_eq!(v["content_type"], "text/plain; version=0.0.4");
        assert!(
            v["text"].as_str().unwrap().contains("\nrvm_backup_up 1\n"),
            "{m}"
        );
        assert_eq!(m.matches('\n').count(), 1, "one reply line: {m}");
        assert!(ask(5000, "ALERTS").starts_with("ERR 403"));
        for verb in ["ALERTS", "REPORT"] {
            let reply = ask(2001, verb);
            let v: serde_json::Value =
                serde_json::from_str(reply.strip_prefix("OK ").unwrap()).unwrap();
            assert!(v["worst"].is_string(), "{verb}: {v}");
        }
        assert!(ask(2001, "DRILL").starts_with("ERR 403"));
        assert!(ask(2002, "DRILL photos").starts_with("ERR 400"));
        assert!(ask(2002, "DRILL database").starts_with("ERR 404"));
        assert!(ask(2002, "DRILL all").starts_with("OK {\"job\":"));
        assert!(ask(2001, "OFFSITE").starts_with("ERR 403"));
        assert!(ask(2002, "OFFSITE now").starts_with("ERR 400"));
        assert!(ask(2002, "OFFSITE").starts_with("ERR 404"), "no [offsite]");
        let audit = audit_text(&dir);
        // Every state-changing attempt is there, with uid and pid; reads are not.
        assert!(
            audit.contains(r#""who":{"pid":4242,"uid":5000}"#),
            "{audit}"
        );
        assert!(audit.contains("refused 403"), "{audit}");
        assert!(audit.contains(r#""what":"BACKUP config""#), "{audit}");
        assert!(audit.contains(r#""what":"RESTORE config latest target=/tmp/x""#));
        assert!(!audit.contains("STATUS"), "reads are not audited: {audit}");
        crate::audit::verify(&dir.join("backups/audit.log")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn restore_requests_parse_every_option_once() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let r = parse_restore(&words(
            "database at=2026-11-24T15:00:00Z target=/srv/r file=/var/lib/x.db accept-damaged",
        ))
        .unwrap();
        assert_eq!(r.strategy, Strategy::Database);
        assert!(matches!(r.selector, Selector::At(_)));
        assert_eq!(r.target.as_deref(), Some(Path::new("/srv/r")));
        assert_eq!(r.file.as_deref(), Some(Path::new("/var/lib/x.db")));
        assert!(r.accept_damaged);
        for bad in [
            "photos",
            "config latest at=2026-11-24T15:00:00Z",
            "config target=relative",
            "config file=/a/../b",
            "config at=yesterday",
        ] {
            assert_eq!(parse_restore(&words(bad)).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn restore_all_requests_parse() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let k = parse_restore_all(&words(
            "at=2026-11-24T15:00:00Z target=/srv/r accept-damaged",
        ))
        .unwrap();
        assert_eq!(
            k,
            JobKind::RestoreAll {
                at: Some(crate::timefmt::parse("2026-11-24T15:00:00Z").unwrap()),
                target: Some(PathBuf::from("/srv/r")),
                accept_damaged: true,
            }
        );
        assert_eq!(
            parse_restore_all(&[]).unwrap(),
            JobKind::RestoreAll {
                at: None,
                target: None,
                accept_damaged: false
            }
        );
        for bad in [
            "latest",
            "file=/etc/x",
            "target=rel",
            "at=yesterday",
            "at=2026-11-24T15:00:00Z at=2026-11-24T15:00:00Z",
        ] {
            assert_eq!(
                parse_restore_all(&words(bad)).unwrap_err().code,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_refused_flood_writes_a_bounded_audit_log_and_the_daemon_restarts() {
        let (d, dir) = daemon("flood");
        let line = format!("BACKUP {}", "x".repeat(4000));
        for _ in 0..20_000 {
            assert!(d
                .handle_line(&peer(5000), line.as_bytes())
                .starts_with("ERR 403"));
        }
        // An operator's bad requests are refusals too.
        for _ in 0..1000 {
            assert!(d
                .handle_line(&peer(2002), line.as_bytes())
                .starts_with("ERR 400"));
        }
        let log = dir.join("backups/audit.log");
        let size = std::fs::metadata(&log).unwrap().len();
        assert!(
            size < 64 * 1024,
            "21,000 refusals wrote {size} bytes of audit log"
        );
        drop(d);
        let (again, _) = daemon_on(&dir);
        assert!(again.handle_line(&peer(0), b"PING").starts_with("OK"));
        crate::audit::verify(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn offsite_queues_one_sync_and_joins_it() {
        let dir = std::env::temp_dir().join(format!("rvb-handler-offsite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let text = format!(
            "backup_dir = \"{d}/backups\"\nencryption_enabled = false\nsocket = \"{d}/run/s.sock\"\n\
             [config]\npaths = [\"{d}/etc\"]\n\
             [offsite]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"fleet\"\nprefix = \"b/\"\n\
             access_key_id = \"AK\"\nsecret_key_file = \"{d}/s3.secret\"\n",
            d = dir.display()
        );
        let cfg = Config::parse(&text, Path::new("test.toml")).unwrap();
        let (d, _) = Daemon::new(Path::new("test.toml"), Session::open(cfg).unwrap()).unwrap();
        let first = d.handle_line(&peer(0), b"OFFSITE");
        assert_eq!(first.trim_end(), "OK {\"job\":1}", "{first}");
        // Asked again (or by a trigger) while queued: the same job.
        assert_eq!(d.handle_line(&peer(0), b"OFFSITE"), first);
        d.request_offsite();
        assert_eq!(d.jobs.borrow().offsite_queued(), Some(1));
        // The job runner never takes it: it belongs to the offsite lane.
        assert!(d.jobs.borrow_mut().start_next().is_none());
        let job = d.handle_line(&peer(0), b"JOB 1");
        assert!(job.contains(r#""what":"offsite sync""#), "{job}");
        let status = d.handle_line(&peer(0), b"STATUS");
        assert!(
            status.contains(r#""offsite":{"#) && status.contains(r#""queued":1"#),
            "{status}"
        );
        let audit = audit_text(&dir);
        assert!(audit.contains(r#""what":"OFFSITE""#), "{audit}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stopping_refuses_changes_but_answers_reads() {
        let (d, dir) = daemon("stopping");
        d.stopping.set(true);
        assert!(d
            .handle_line(&peer(0), b"BACKUP config")
            .starts_with("ERR 503"));
        assert!(d.handle_line(&peer(0), b"STATUS").starts_with("OK"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
