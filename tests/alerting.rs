//! Alert delivery through the real daemon: a real HTTP receiver that is
//! down at first, answers 500 twice, and a daemon SIGKILLed with alerts
//! pending; the email, exec and log sinks; the heartbeat; STATUS while a
//! receiver is slow. Alerts are raised with the operator's own tool,
//! `alert test` / `TEST-ALERT`, so no monitoring rule is needed.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn patience() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        Duration::from_secs(240)
    } else {
        Duration::from_secs(60)
    }
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_for_or(what, done, String::new);
}

/// [`wait_for`], telling `context()` (a daemon's log) when it times out.
fn wait_for_or(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + patience();
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A board whose config has `keys` (top level) and `tables` ([[alert]]).
fn board(name: &str, keys: &str, tables: &str) -> Board {
    let b = Board::new(name);
    let socket = b.tmp.path().join("run/control.sock");
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\nbackup_enabled = false\n{keys}",
        socket.display()
    ));
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(tables);
    fs::write(&b.config, text).unwrap();
    b
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(b: &Board) -> Daemon {
        Daemon::start_with(b, &[])
    }

    fn start_with(b: &Board, env: &[(&str, &str)]) -> Daemon {
        let log = b.tmp.path().join("daemon.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = bin()
            .arg("--config")
            .arg(&b.config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(f)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            socket: b.tmp.path().join("run/control.sock"),
            log,
        };
        wait_for("the daemon to answer", || d.try_request("PING").is_some());
        d
    }

    fn try_request(&self, line: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(patience())).ok()?;
        s.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        reply.starts_with("OK").then_some(reply)
    }

    fn json(&self, line: &str) -> serde_json::Value {
        let r = self
            .try_request(line)
            .unwrap_or_else(|| panic!("{line}: no OK reply; log: {}", self.log_text()));
        serde_json::from_str(r.trim_end().strip_prefix("OK ").unwrap()).unwrap()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    /// When the receiver had read it all.
    received: std::time::SystemTime,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP server on its own thread: `answer(n)` (n: 0-based count
/// of requests so far) gives each request's status; `hold` keeps every
/// connection open that long before answering.
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    holding: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, answer: fn(usize) -> u16, hold: Duration) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let holding = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, h, s) = (got.clone(), holding.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let status = answer(n);
                        n += 1;
                        let (g, h) = (g.clone(), h.clone());
                        std::thread::spawn(move || serve(conn, status, hold, &g, &h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            got,
            holding,
            stop,
            thread: Some(thread),
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    status: u16,
    hold: Duration,
    got: &Mutex<Vec<Got>>,
    holding: &AtomicUsize,
) {
    let Some((head, body)) = common::http::read_request(&mut conn) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !hold.is_zero() {
        holding.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(hold);
        holding.fetch_sub(1, Ordering::SeqCst);
    }
    got.lock().unwrap().push(Got {
        method,
        path,
        headers,
        body,
        status,
        received: std::time::SystemTime::now(),
    });
    let _ = conn.write_all(
        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Outbox entries on disk and their attempts.
fn outbox(b: &Board) -> Vec<serde_json::Value> {
    let dir = b.backups.join("outbox");
    let mut v = Vec::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".json") {
            if let Ok(text) = fs::read_to_string(e.path()) {
                if let Ok(j) = serde_json::from_str(&text) {
                    v.push(j);
                }
            }
        }
    }
    v
}

#[test]
fn alerts_reach_a_receiver_that_was_down_answered_500_and_outlived_a_sigkill() {
    let port = free_port();
    let b = board(
        "alert-webhook",
        "",
        &format!("\n[[alert]]\ntype = \"webhook\"\nname = \"platform\"\nurl = \"http://127.0.0.1:{port}/hooks/rvm\"\n"),
    );
    let d = Daemon::start(&b);
    // The receiver is down: alerts wait in the outbox.
    let mut ids = BTreeSet::new();
    for sev in ["warning", "critical", "critical", "ok", "warning"] {
        let r = d.json(&format!("TEST-ALERT {sev}"));
        assert_eq!(r["sinks"], serde_json::json!(["platform"]), "{r}");
        ids.insert(r["alert"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 5);
    wait_for("a failed try recorded in the outbox", || {
        outbox(&b).iter().any(|e| e["attempts"].as_u64() >= Some(1))
    });
    assert_eq!(outbox(&b).len(), 5);
    // Power cut: SIGKILL with everything pending.
    d.kill9();
    // The receiver comes up and answers 500 twice before it takes alerts.
    let rx = Receiver::start(port, |n| if n < 2 { 500 } else { 200 }, Duration::ZERO);
    let d = Daemon::start(&b);
    wait_for("every alert delivered", || {
        let got: BTreeSet<String> = rx
            .got()
            .iter()
            .filter(|g| g.status == 200)
            .filter_map(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
            .filter_map(|j| j["id"].as_str().map(str::to_string))
            .collect();
        ids.is_subset(&got)
    });
    let got = rx.got();
    assert!(
        got.iter().filter(|g| g.status == 500).count() == 2,
        "{got:?}"
    );
    for g in &got {
        assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/hooks/rvm"));
        assert_eq!(g.header("Content-Type"), Some("application/json"));
        assert_eq!(g.header("Host"), Some(format!("127.0.0.1:{port}").as_str()));
        let j: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(g.header("X-RVM-Alert-Id"), j["id"].as_str());
        assert_eq!(j["rule"], "test");
        for field in [
            "kind", "subject", "severity", "previous", "reason", "host", "at", "time",
        ] {
            assert!(!j[field].is_null(), "{field} missing: {j}");
        }
    }
    wait_for("an empty outbox", || outbox(&b).is_empty());
    drop(d);
}

#[test]
fn email_exec_and_log_sinks_deliver_what_an_operator_can_read() {
    let tmp = TempDir::new("alert-sinks-scripts");
    let mail_dir = tmp.path().join("mail");
    let exec_dir = tmp.path().join("exec");
    fs::create_dir_all(&mail_dir).unwrap();
    fs::create_dir_all(&exec_dir).unwrap();
    // A sendmail stand-in that fails its first run (a retry must follow),
    // then stores each message with its arguments.
    let sendmail = tmp.path().join("sendmail.sh");
    fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\nd={}\nif [ ! -e $d/failed-once ]; then touch $d/failed-once; cat >/dev/null; echo 'mail queue busy' >&2; exit 75; fi\nf=$d/msg-$$\necho \"$@\" > $f.args\ncat > $f.tmp && mv $f.tmp $f.eml\n",
            mail_dir.display()
        ),
    )
    .unwrap();
    let notify = tmp.path().join("notify.sh");
    fs::write(
        &notify,
        format!(
            "#!/bin/sh\nd={}\ncat > $d/$RVM_ALERT_ID.json\nenv | grep '^RVM_ALERT_' | sort > $d/$RVM_ALERT_ID.env\nenv | grep -c . > $d/$RVM_ALERT_ID.count\n",
            exec_dir.display()
        ),
    )
    .unwrap();
    let b = board(
        "alert-sinks",
        "",
        &format!(
            "\n[[alert]]\ntype = \"email\"\nto = [\"ops@example.com\", \"oncall@example.org\"]\nfrom = \"rvm@board.example\"\nsendmail = [\"/bin/sh\", \"{}\", \"-t\", \"-i\"]\n\
             \n[[alert]]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"{}\"]\nmin_severity = \"critical\"\nrules = [\"failures\"]\n\
             \n[[alert]]\ntype = \"log\"\n",
            sendmail.display(),
            notify.display()
        ),
    );
    // As under systemd: the log sink's lines carry their priority.
    let d = Daemon::start_with(&b, &[("JOURNAL_STREAM", "8:1234")]);
    // The operator's command (the test alert ignores min_severity/rules).
    let out = b.ok(&["alert", "test", "--severity", "critical"]);
    assert!(out.contains("queued for email-1, exec-2, log-3"), "{out}");
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(id.len(), 16, "{out}");
    wait_for("the message", || {
        fs::read_dir(&mail_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".eml"))
    });
    let msg = fs::read_dir(&mail_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .unwrap()
        .path();
    assert!(mail_dir.join("failed-once").exists());
    // A real parser reads it back.
    let script = r#"
import email, email.policy, email.utils, sys, json
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
assert not m.defects, m.defects
print(json.dumps({
  'subject': str(m['subject']), 'from': str(m['from']), 'to': str(m['to']),
  'date': email.utils.parsedate_to_datetime(str(m['date'])).timestamp(),
  'message_id': str(m['message-id']), 'ctype': m.get_content_type(),
  'charset': m.get_content_charset(), 'body': m.get_content(),
}))
"#;
    let py = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&msg)
        .output()
        .expect("python3 is needed for this test");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("[CRITICAL] ") && subject.contains("alerting: test:"),
        "{m}"
    );
    assert_eq!(m["from"], "rvm@board.example");
    assert_eq!(m["to"], "ops@example.com, oncall@example.org");
    let date = m["date"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - date).abs() < 86_400.0, "{m}");
    let mid = m["message_id"].as_str().unwrap();
    assert!(
        mid.starts_with(&format!("<{id}@")) && mid.ends_with('>'),
        "{m}"
    );
    assert_eq!(
        (m["ctype"].as_str(), m["charset"].as_str()),
        (Some("text/plain"), Some("utf-8"))
    );
    assert!(m["body"].as_str().unwrap().contains(&id), "{m}");
    let args = fs::read_to_string(msg.with_extension("args")).unwrap();
    assert_eq!(args.trim(), "-t -i");
    // The exec sink: JSON on stdin, the alert in its environment, nothing else.
    wait_for("the exec sink", || {
        exec_dir.join(format!("{id}.count")).exists()
    });
    let j: serde_json::Value =
        serde_json::from_slice(&fs::read(exec_dir.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(
        (j["id"].as_str(), j["severity"].as_str()),
        (Some(id.as_str()), Some("critical"))
    );
    let env = fs::read_to_string(exec_dir.join(format!("{id}.env"))).unwrap();
    for want in [
        format!("RVM_ALERT_ID={id}"),
        "RVM_ALERT_SEVERITY=critical".into(),
        "RVM_ALERT_RULE=test".into(),
        "RVM_ALERT_SUBJECT=alerting".into(),
        "RVM_ALERT_KIND=firing".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in {env}");
    }
    assert!(env.contains("RVM_ALERT_HOST=") && env.contains("RVM_ALERT_REASON=test alert"));
    // The log sink: a journal line with the critical priority.
    wait_for("the journal line", || {
        d.log_text()
            .lines()
            .any(|l| l.starts_with("<2>") && l.contains(&id))
    });
    // Retried mail shows in the log; the outbox ends empty.
    wait_for("an empty outbox", || outbox(&b).is_empty());
    assert!(d.log_text().contains("mail queue busy"), "{}", d.log_text());
}

#[test]
fn status_answers_while_a_receiver_is_slow_and_the_heartbeat_follows_backups() {
    let port = free_port();
    let hb_port = free_port();
    // The webhook receiver holds every request a long while.
    let hold = Duration::from_secs(8);
    let slow = Receiver::start(port, |_| 200, hold);
    let hb = Receiver::start(hb_port, |_| 200, Duration::ZERO);
    let b = board(
        "alert-slow",
        &format!("heartbeat_url = \"http://127.0.0.1:{hb_port}/ping/board-7\"\n"),
        &format!("\n[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n"),
    );
    b.populate();
    let d = Daemon::start(&b);
    let r = d.json("TEST-ALERT");
    let id = r["alert"]["id"].as_str().unwrap().to_string();
    wait_for("the receiver to hold the request", || {
        slow.holding.load(Ordering::SeqCst) > 0
    });
    // While it is held, the daemon answers (many times over), each
    // answer far quicker than the hold: the send does not block it.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        d.json("STATUS");
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slow.holding.load(Ordering::SeqCst) > 0,
        "the requests were slower than the receiver"
    );
    assert!(
        slowest < hold / 4,
        "the slowest STATUS took {slowest:?} while the receiver held an alert for {hold:?}"
    );
    eprintln!("slowest STATUS while the receiver held an alert: {slowest:?}");
    // A backup pings start then success.
    let job = d.json("BACKUP config")["jobs"][0].as_u64().unwrap();
    wait_for("the backup", || {
        let j = d.json(&format!("JOB {job}"));
        !matches!(j["state"].as_str(), Some("queued" | "running"))
    });
    wait_for("the heartbeat pings", || hb.got().len() >= 2);
    let paths: Vec<String> = hb
        .got()
        .iter()
        .map(|g| format!("{} {}", g.method, g.path))
        .collect();
    assert_eq!(paths, ["GET /ping/board-7/start", "GET /ping/board-7"]);
    wait_for("the slow delivery", || {
        slow.got()
            .iter()
            .any(|g| g.body.windows(id.len()).any(|w| w == id.as_bytes()))
    });
    // A failing backup pings /fail with the error.
    fs::remove_dir_all(b.root.join("etc/myrvm")).unwrap();
    let job = d.json("BACKUP config")["jobs"][0].as_u64().unwrap();
    wait_for("the failed backup", || {
        d.json(&format!("JOB {job}"))["state"] == "failed"
    });
    wait_for("the fail ping", || hb.got().len() >= 4);
    let fail = &hb.got()[3];
    assert_eq!(
        (fail.method.as_str(), fail.path.as_str()),
        ("POST", "/ping/board-7/fail")
    );
    assert!(
        String::from_utf8_lossy(&fail.body).contains("config"),
        "{fail:?}"
    );
}

/// Unix seconds of an RFC 3339 UTC time as the daemon writes it
/// (`2026-11-27T01:10:00Z`).
fn unix_of(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { t[r].parse().unwrap_or_else(|_| panic!("{t}")) };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (proleptic Gregorian), as in timefmt.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Unix seconds, with fractions, of `t`.
fn unix_f(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The end-to-end timing rules of the failures test: the schedule and
/// monitoring periods it configures, in seconds.
const E2E_BACKUP_INTERVAL: u64 = 2;
const E2E_BACKUP_JITTER: u64 = 1;
const E2E_MONITORING_INTERVAL: u64 = 1;

/// Room on top of the bound for a loaded machine or an emulated run.
fn e2e_slack() -> f64 {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        90.0
    } else {
        8.0
    }
}

/// The end-to-end tests' config: `strategy` backed up every
/// [`E2E_BACKUP_INTERVAL`] (the others once a year), monitoring every
/// [`E2E_MONITORING_INTERVAL`], failures critical at the first, the free
/// space percentages off, and a webhook sink at `port`.
fn write_e2e_config(b: &Board, strategy: &str, port: u16) {
    let socket = b.tmp.path().join("run/control.sock");
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\nbackup_interval = \"{E2E_BACKUP_INTERVAL}s\"\nbackup_jitter = \"{E2E_BACKUP_JITTER}s\"\nbackup_monitoring_interval = \"{E2E_MONITORING_INTERVAL}s\"\n",
        socket.display()
    ));
    let mut text = fs::read_to_string(&b.config).unwrap();
    for other in ["database", "config", "logs", "application"] {
        if other != strategy {
            text = text.replace(
                &format!("[{other}]\n"),
                &format!("[{other}]\ninterval = \"366d\"\n"),
            );
        }
    }
    text.push_str(&format!(
        "\n[monitoring]\nfailures_warning = 1\nfailures_critical = 1\nfree_warning_percent = 0\nfree_critical_percent = 0\n\n\
         [[alert]]\ntype = \"webhook\"\nname = \"platform\"\nurl = \"http://127.0.0.1:{port}/rvm\"\nmin_severity = \"warning\"\n"
    ));
    fs::write(&b.config, text).unwrap();
}

/// The whole path, rules to receiver, for one way of breaking backups:
/// scheduled backups of `strategy` run (every other strategy's schedule
/// is a year, so only this one keeps running); once one has succeeded,
/// `cause` breaks them; the monitor's failures rule (critical at the first
/// failure, believed after its two confirming evaluations) must bring a
/// critical alert naming the strategy, and a reason holding `why`, to the
/// webhook within two monitoring intervals plus one backup period (and
/// some slack) of the end of the first failed job; `mend` undoes the
/// cause, the next scheduled backup succeeds, and the receiver must get
/// the recovery notice (`resolved`) for the same finding. `setup` runs
/// before anything is written (it may mount `backup_dir`); what it returns
/// lives until the daemon is gone.
fn scheduled_failures_reach_the_webhook<G, C>(
    name: &str,
    strategy: &str,
    why: &str,
    setup: impl FnOnce(&Board) -> G,
    cause: impl FnOnce(&Board) -> C,
    mend: impl FnOnce(&Board, C),
) {
    let port = free_port();
    let rx = Receiver::start(port, |_| 200, Duration::ZERO);
    let b = Board::new(name);
    let _setup = setup(&b);
    write_e2e_config(&b, strategy, port);
    b.populate();
    let d = Daemon::start(&b);
    let alerts = || -> Vec<(serde_json::Value, std::time::SystemTime)> {
        rx.got()
            .iter()
            .filter(|g| g.status == 200)
            .filter_map(|g| {
                serde_json::from_slice::<serde_json::Value>(&g.body)
                    .ok()
                    .map(|j| (j, g.received))
            })
            .filter(|(j, _)| j["rule"] == "failures" && j["subject"] == strategy)
            .collect()
    };
    // The jobs of this strategy that ended in `state`, with when.
    let what = format!("backup {strategy}");
    let ended = |state: &str| -> Vec<i64> {
        d.json("HISTORY")["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["what"] == what.as_str() && j["state"] == state)
            .filter_map(|j| j["finished"].as_str().map(unix_of))
            .collect()
    };
    // A good scheduled backup first, so the failures are news.
    wait_for("a successful scheduled backup", || {
        !ended("done").is_empty()
    });
    let c = cause(&b);
    // Every failed job seen (HISTORY is bounded: keep the first).
    let mut first_failure: Option<i64> = None;
    let mut note_failures = || {
        if let Some(t) = ended("failed").into_iter().min() {
            first_failure = Some(first_failure.map_or(t, |f| f.min(t)));
        }
    };
    let context = || format!("HISTORY: {}\nlog:\n{}", d.json("HISTORY"), d.log_text());
    wait_for_or(
        "a critical failures alert at the webhook",
        || {
            note_failures();
            alerts()
                .iter()
                .any(|(j, _)| j["severity"] == "critical" && j["kind"] != "resolved")
        },
        context,
    );
    note_failures();
    let (critical, received) = alerts()
        .into_iter()
        .find(|(j, _)| j["severity"] == "critical")
        .unwrap();
    let reason = critical["reason"].as_str().unwrap();
    assert!(
        reason.contains("failed") && reason.contains(why),
        "the reason should say what failed and why ({why}): {critical}"
    );
    // When: the job's end is in whole seconds (rounded down), hence the 1.
    let failed_at = first_failure.expect("no failed job in HISTORY") as f64;
    let bound = (2 * E2E_MONITORING_INTERVAL + E2E_BACKUP_INTERVAL + E2E_BACKUP_JITTER) as f64
        + 1.0
        + e2e_slack();
    let took = unix_f(received) - failed_at;
    assert!(
        took <= bound,
        "the critical alert came {took:.1} s after the first failed job ended; the bound is {bound:.1} s: {critical}"
    );
    eprintln!("{name}: critical alert {took:.1} s after the first failure (bound {bound:.1} s)");
    mend(&b, c);
    wait_for_or(
        "the recovery notice",
        || alerts().iter().any(|(j, _)| j["kind"] == "resolved"),
        context,
    );
    let (notice, _) = alerts()
        .into_iter()
        .find(|(j, _)| j["kind"] == "resolved")
        .unwrap();
    assert_eq!(notice["severity"], "ok", "{notice}");
    assert!(
        !ended("done").is_empty(),
        "resolved without a successful backup"
    );
    drop(d);
}

/// Its source directory removed: the config backups fail.
#[test]
fn failing_scheduled_backups_reach_the_webhook_as_critical_then_resolved() {
    scheduled_failures_reach_the_webhook(
        "alert-e2e",
        "config",
        "config",
        |_| (),
        |b| {
            let source = b.root.join("etc/myrvm");
            fs::rename(&source, b.root.join("etc/myrvm.away")).unwrap();
        },
        |b, ()| {
            let source = b.root.join("etc/myrvm");
            fs::rename(b.root.join("etc/myrvm.away"), &source).unwrap();
        },
    );
}

/// The database held exclusively by another program (the platform in
/// exclusive locking mode, having written, inside a write transaction):
/// the database backups wait their bounded time (30 s), then fail as
/// locked. (It must have written: a database whose files are unchanged
/// since the last archive is archived without being opened.)
#[test]
fn a_locked_database_reaches_the_webhook_as_critical_then_resolved() {
    scheduled_failures_reach_the_webhook(
        "alert-e2e-locked",
        "database",
        "locked",
        |_| (),
        |b| {
            let c = rusqlite::Connection::open(b.db_path()).unwrap();
            c.execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE; \
                 INSERT INTO deposits(barcode, grams, cents) VALUES ('locked', 1.0, 25); \
                 BEGIN EXCLUSIVE; \
                 INSERT INTO deposits(barcode, grams, cents) VALUES ('held', 2.0, 25);",
            )
            .unwrap();
            c
        },
        |_, c| {
            c.execute_batch("COMMIT").unwrap();
            drop(c);
        },
    );
}

/// `backup_dir` on a small tmpfs, unmounted (lazily: the daemon may still
/// hold it) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the file system of `dir` with a file of the test's own until at
/// most `left` bytes are free (0: to the last byte); returns the file. The
/// daemon may be writing meanwhile: a transient ENOSPC is waited out.
fn fill(dir: &std::path::Path, left: u64) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    let deadline = Instant::now() + patience();
    loop {
        let s = rustix::fs::statvfs(dir).unwrap();
        let free = s.f_bavail * s.f_frsize;
        if free <= left {
            break;
        }
        let n = (free - left).min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) && left == 0 => break,
            Err(e) if e.raw_os_error() == Some(28) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
        assert!(Instant::now() < deadline, "cannot fill {}", dir.display());
    }
    let _ = f.sync_all();
    filler
}

/// Append to `filler` until its file system has no byte free.
fn top_up(filler: &std::path::Path) {
    let Ok(mut f) = fs::OpenOptions::new().append(true).open(filler) else {
        return;
    };
    let chunk = vec![0x5au8; 64 << 10];
    for _ in 0..1024 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A full `backup_dir`: the file system has room left for the small
/// files (state, outbox, monitor) but not for the next archive, which
/// fails with ENOSPC; freeing the space lets the next backup succeed.
#[test]
fn a_full_backup_dir_reaches_the_webhook_as_critical_then_resolved() {
    if !require_root("a_full_backup_dir_reaches_the_webhook_as_critical_then_resolved") {
        return;
    }
    // What is left free: room for the small files, far less than the
    // 1 MiB of new incompressible data the next archive must hold.
    const LEFT: u64 = 192 << 10;
    scheduled_failures_reach_the_webhook(
        "alert-e2e-full",
        "config",
        "space",
        |b| Tmpfs::mount(&b.backups, "48m"),
        |b| {
            // Filled first (the backups meanwhile are small incrementals),
            // then 1 MiB of new data that the next archive cannot hold.
            let filler = fill(&b.backups, LEFT);
            fs::write(
                b.root.join("etc/myrvm/new-firmware.bin"),
                pseudo_random(1 << 20, 7),
            )
            .unwrap();
            filler
        },
        |_, filler| fs::remove_file(filler).unwrap(),
    );
}

/// `backup_dir` with not one byte free: the outbox cannot store an alert
/// (nor state.json a failure count), yet the alerts still reach the
/// webhook, sent from memory: the storage finding (critical, saying how
/// little is free) and a critical finding naming the strategy whose
/// backups stopped; freed, the storage finding is resolved.
#[test]
fn a_backup_dir_without_a_byte_free_still_reaches_the_webhook() {
    if !require_root("a_backup_dir_without_a_byte_free_still_reaches_the_webhook") {
        return;
    }
    let port = free_port();
    let rx = Receiver::start(port, |_| 200, Duration::ZERO);
    let b = Board::new("alert-e2e-no-byte");
    let _mount = Tmpfs::mount(&b.backups, "16m");
    write_e2e_config(&b, "config", port);
    b.populate();
    let d = Daemon::start(&b);
    let got = |rule: &str, subject: &str| -> Vec<serde_json::Value> {
        rx.got()
            .iter()
            .filter_map(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
            .filter(|j| j["rule"] == rule && j["subject"] == subject)
            .collect()
    };
    wait_for("a first config archive", || {
        fs::read_dir(b.backups.join("config")).is_ok_and(|r| r.count() > 0)
    });
    // Fill it to the last byte (the test's own file), and keep it full
    // while waiting: a failed archive's cleanup frees its bytes again, and
    // an outbox write could then succeed (seen under the emulator).
    let filler = fill(&b.backups, 0);
    let context = || format!("log:\n{}", d.log_text());
    wait_for_or(
        "a critical storage alert and a critical alert naming config",
        || {
            top_up(&filler);
            let storage = got("storage", "backup_dir");
            let config = rx
                .got()
                .iter()
                .filter_map(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
                .any(|j| j["subject"] == "config" && j["severity"] == "critical");
            storage.iter().any(|j| j["severity"] == "critical") && config
        },
        context,
    );
    let storage = got("storage", "backup_dir");
    let critical = storage
        .iter()
        .find(|j| j["severity"] == "critical")
        .unwrap();
    assert!(
        critical["reason"].as_str().unwrap().contains("free"),
        "{critical}"
    );
    assert!(
        d.log_text().contains("cannot store alert"),
        "the outbox was not full after all: {}",
        d.log_text()
    );
    fs::remove_file(&filler).unwrap();
    wait_for_or(
        "the storage finding resolved",
        || {
            got("storage", "backup_dir")
                .iter()
                .any(|j| j["kind"] == "resolved")
        },
        context,
    );
    drop(d);
}
