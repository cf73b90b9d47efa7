//! The daemon and the offsite store (a real SeaweedFS, see `common::s3`):
//! a scheduled backup lands in the bucket with no CLI sync; the `OFFSITE`
//! verb syncs and is audited; metrics show what was shipped; wrong
//! credentials and an unreachable endpoint are one clear log line, a
//! critical alert at a webhook, and never a hang; `STATUS` answers while a
//! large upload runs.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{patience, Daemon};
use common::s3::Seaweed;
use common::{prom, Board};

const PREFIX: &str = "fleet/board-7/";

/// Write `b`'s config: daemon keys, `[offsite]` at `endpoint` with
/// `secret`, monitoring every second believing the first evaluation, and
/// a webhook sink at `hook` (a port) when given.
fn configure(b: &Board, top: &str, endpoint: &str, secret: &str, offsite: &str, hook: Option<u16>) {
    let socket = b.tmp.path().join("run/control.sock");
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\nbackup_jitter = \"1s\"\nbackup_monitoring_interval = \"1s\"\n{top}",
        socket.display()
    ));
    let monitoring = "\n[monitoring]\nconfirm = 1\nfree_warning_percent = 0\nfree_critical_percent = 0\noffsite_failures_warning = 1\noffsite_failures_critical = 1";
    common::offsite::configure(
        b,
        endpoint,
        "rvm-fleet",
        PREFIX,
        secret,
        &format!("{offsite}\n{monitoring}"),
    );
    let mut text = fs::read_to_string(&b.config).unwrap();
    if let Some(port) = hook {
        text.push_str(&format!(
            "\n[[alert]]\ntype = \"webhook\"\nname = \"platform\"\nurl = \"http://127.0.0.1:{port}/rvm\"\nmin_severity = \"warning\"\n"
        ));
    }
    fs::write(&b.config, text).unwrap();
}

fn socket(b: &Board) -> std::path::PathBuf {
    b.tmp.path().join("run/control.sock")
}

fn log_text(b: &Board) -> String {
    fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
}

fn wait_for(b: &Board, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            log_text(b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The local files a sync ships (relative to the backup directory).
fn shippable(backups: &std::path::Path) -> Vec<String> {
    common::offsite::shippable(backups)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// A webhook receiver on its own thread: every request body it got.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let got = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if let Some((_, body)) = common::http::read_request(&mut conn) {
                    got.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Hook { port, bodies }
    }

    /// A body naming `rule` as critical, if one came.
    fn critical(&self, rule: &str) -> Option<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains(rule) && b.contains("critical"))
            .cloned()
    }
}

#[test]
fn a_scheduled_backup_goes_offsite_and_the_offsite_verb_is_audited() {
    let Some(s3) = Seaweed::new("daemon-ship") else {
        return;
    };
    let b = Board::new("offsite-daemon-ship");
    b.populate();
    // One scheduled round of backups soon after start (never backed up),
    // then not for an hour; the offsite interval is a day, so only the
    // backups' triggers can ship them.
    configure(
        &b,
        "backup_interval = \"1h\"\n",
        &s3.endpoint(),
        common::s3::SECRET,
        "interval = \"1d\"",
        None,
    );
    let d = Daemon::start(&b, &socket(&b));
    // Every strategy's archive is made, then in the bucket: no CLI sync.
    wait_for(&b, "four sidecars", || {
        shippable(&b.backups)
            .iter()
            .filter(|k| k.ends_with(".meta"))
            .count()
            >= 4
    });
    wait_for(&b, "every local file in the bucket", || {
        let remote: Vec<String> = s3
            .objects(PREFIX)
            .into_iter()
            .map(|o| o.key.strip_prefix(PREFIX).unwrap().to_string())
            .collect();
        shippable(&b.backups).iter().all(|k| remote.contains(k))
    });
    wait_for(&b, "STATUS to show the sync", || {
        let o = d.json("STATUS")["offsite"].clone();
        o["last_success"].is_i64() && o["pending"]["objects"] == 0
    });
    let st = d.json("STATUS")["offsite"].clone();
    assert_eq!(st["enabled"], true, "{st}");
    assert_eq!(st["consecutive_failures"], 0, "{st}");
    assert!(st["bytes_shipped"].as_u64().unwrap() > 0, "{st}");
    // OFFSITE: a job like BACKUP's, that ends done, audited with the peer.
    let job = d.json("OFFSITE")["job"].as_u64().unwrap();
    let end = d.wait_job(job);
    assert_eq!(end["state"], "done", "{end}");
    assert_eq!(end["what"], "offsite sync", "{end}");
    assert!(
        end["outcome"]
            .as_str()
            .unwrap()
            .contains("shipped 0 objects"),
        "everything was there already: {end}"
    );
    let audit = fs::read_to_string(b.backups.join("audit.log")).unwrap();
    assert!(
        audit.contains(r#""what":"OFFSITE""#)
            && audit.contains(&format!("accepted {{\\\"job\\\":{job}}}")),
        "the request is audited: {audit}"
    );
    assert!(
        audit.contains(&format!("job {job} offsite sync")),
        "its outcome is audited: {audit}"
    );
    // The metrics parse and show what was shipped.
    let text = d.json("METRICS")["text"].as_str().unwrap().to_string();
    let shipped = text
        .lines()
        .find_map(|l| l.strip_prefix("rvm_backup_offsite_shipped_bytes_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(shipped.is_some_and(|v| v > 0.0), "{text}");
    if prom::available("offsite_daemon") {
        let samples = prom::parse(&text);
        let v = |name: &str| prom::value(&samples, name, None);
        assert!(v("rvm_backup_offsite_shipped_bytes_total").is_some_and(|v| v > 0.0));
        assert_eq!(v("rvm_backup_offsite_pending_objects"), Some(0.0));
        assert_eq!(v("rvm_backup_offsite_consecutive_failures"), Some(0.0));
        assert!(v("rvm_backup_offsite_last_success_timestamp_seconds").is_some());
    }
    d.terminate();
}

/// A daemon on a store that will not take the sync: the failure is one
/// clear log line, a critical `rule` alert at the webhook, STATUS answers
/// throughout, and the job ends (no hang).
fn failing_store(
    name: &str,
    endpoint: &str,
    secret: &str,
    rule: &str,
    says: &str,
) -> (Board, Daemon, Hook) {
    let hook = Hook::start();
    let b = Board::new(name);
    b.populate();
    configure(
        &b,
        "backup_enabled = false\n",
        endpoint,
        secret,
        "interval = \"1h\"",
        Some(hook.port),
    );
    let d = Daemon::start(&b, &socket(&b));
    wait_for(&b, "the first sync to fail", || {
        d.json("STATUS")["offsite"]["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    let st = d.json("STATUS")["offsite"].clone();
    assert!(st["last_error"].as_str().unwrap().contains(says), "{st}");
    wait_for(&b, "a critical alert at the webhook", || {
        hook.critical(rule).is_some()
    });
    let alert = hook.critical(rule).unwrap();
    assert!(alert.contains(says), "the alert says why: {alert}");
    // One clear line per failure, at error level, telling what to do.
    let log = log_text(&b);
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("offsite sync failed"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    for l in &failures {
        assert!(l.contains(says) && l.contains("[offsite]"), "{l}");
    }
    assert!(!log.contains("panicked"), "{log}");
    // OFFSITE does not wait for the backoff; it fails again, in bounded time.
    let job = d.json("OFFSITE")["job"].as_u64().unwrap();
    let t = Instant::now();
    let end = d.wait_job(job);
    assert_eq!(end["state"], "failed", "{end}");
    assert!(end["outcome"].as_str().unwrap().contains(says), "{end}");
    assert!(t.elapsed() < patience(), "no hang");
    assert!(
        d.json("STATUS")["offsite"]["consecutive_failures"]
            .as_u64()
            .unwrap()
            >= 2
    );
    (b, d, hook)
}

#[test]
fn wrong_credentials_alert_critically_and_never_hang() {
    let Some(s3) = Seaweed::new("daemon-creds") else {
        return;
    };
    let (b, d, hook) = failing_store(
        "offsite-daemon-creds",
        &s3.endpoint(),
        "not-the-secret",
        "offsite_credentials",
        "rejected the credentials",
    );
    // `check` judges the daemon's syncs too (from its STATUS).
    let out = b.run(&["check", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| { f["rule"] == "offsite_credentials" && f["severity"] == "critical" }),
        "{text}"
    );
    // The right secret (read at every sync): the next sync works and the
    // alert is resolved at the webhook.
    fs::write(
        b.tmp.path().join("s3.secret"),
        format!("{}\n", common::s3::SECRET),
    )
    .unwrap();
    let job = d.json("OFFSITE")["job"].as_u64().unwrap();
    let end = d.wait_job(job);
    assert_eq!(end["state"], "done", "{end}");
    wait_for(&b, "the recovery notice at the webhook", || {
        hook.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|x| x.contains("offsite_credentials") && x.contains("resolved"))
    });
    assert_eq!(d.json("STATUS")["offsite"]["consecutive_failures"], 0);
    d.terminate();
}

#[test]
fn an_unreachable_endpoint_alerts_and_never_hangs() {
    // A port nobody listens on (bound, then let go).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_b, d, _hook) = failing_store(
        "offsite-daemon-unreachable",
        &format!("http://127.0.0.1:{port}"),
        "whatever",
        "offsite_failures",
        "cannot reach the offsite store",
    );
    d.terminate();
}

#[test]
fn status_answers_while_a_large_object_is_hashed_and_sent() {
    let Some(s3) = Seaweed::new("daemon-busy") else {
        return;
    };
    let b = Board::new("offsite-daemon-busy");
    b.populate();
    // One large, incompressible file: its archive goes up as one object
    // (multipart_size at its largest), hashed and sent in one request.
    let seed = common::test_seed("status_answers_while_a_large_object_is_hashed_and_sent");
    let big = b.root.join("opt/myrvm/big.bin");
    fs::write(&big, common::pseudo_random(64 << 20, seed)).unwrap();
    configure(
        &b,
        "backup_enabled = false\n",
        &s3.endpoint(),
        common::s3::SECRET,
        "interval = \"1d\"\nmultipart_size = \"512M\"",
        None,
    );
    b.ok(&["backup", "application"]);
    let d = Daemon::start(&b, &socket(&b));
    // The sync started at start; ask STATUS while it runs.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut asked = 0u32;
    let deadline = started + patience() * 3;
    loop {
        let t = Instant::now();
        let st = d.json("STATUS");
        worst = worst.max(t.elapsed());
        asked += 1;
        if st["offsite"]["last_sync"].is_i64() {
            assert_eq!(st["offsite"]["consecutive_failures"], 0, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "the sync never ended: {st}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    eprintln!("{asked} STATUS during a sync of {took:?}, slowest {worst:?}");
    // Relative, not absolute (qemu is slow everywhere alike): a sync that
    // held the thread while it hashed or sent the 64 MiB would hold one
    // STATUS for a good part of the whole sync.
    assert!(asked >= 5, "the sync was too quick to tell: {took:?}");
    assert!(
        worst * 5 < took,
        "STATUS waited {worst:?} during a sync of {took:?}"
    );
    let remote: Vec<String> = s3.objects(PREFIX).into_iter().map(|o| o.key).collect();
    assert!(
        remote
            .iter()
            .any(|k| k.starts_with(&format!("{PREFIX}application/"))),
        "{remote:?}"
    );
    d.terminate();
}

/// The `.rvw` files under the bucket's prefix, and locally.
fn segments(s3: &Seaweed, b: &Board) -> (usize, usize) {
    let remote = s3
        .objects(PREFIX)
        .iter()
        .filter(|o| o.key.ends_with(".rvw"))
        .count();
    let local = shippable(&b.backups)
        .iter()
        .filter(|k| k.ends_with(".rvw"))
        .count();
    (remote, local)
}

#[test]
fn shipped_wal_segments_go_offsite_without_waiting_for_the_interval() {
    let Some(s3) = Seaweed::new("daemon-wal") else {
        return;
    };
    let b = Board::new("offsite-daemon-wal");
    configure(
        &b,
        "backup_enabled = false\n",
        &s3.endpoint(),
        common::s3::SECRET,
        "interval = \"1d\"",
        None,
    );
    b.enable_pitr();
    fs::create_dir_all(b.db_path().parent().unwrap()).unwrap();
    let mut w = common::writer::Writer::open(&b.db_path());
    w.commit(50);
    let d = Daemon::start(&b, &socket(&b));
    wait_for(&b, "a generation", || {
        d.json("STATUS")["pitr"]["generation"].is_string()
    });
    // Segments written after the snapshot's backup: only their own
    // triggers can ship them (no backups run, the interval is a day).
    for round in 1..=2 {
        let before = d.json("STATUS")["pitr"]["segments"].as_u64().unwrap_or(0);
        w.commit(200);
        wait_for(&b, &format!("round {round}: a new segment"), || {
            d.json("STATUS")["pitr"]["segments"].as_u64().unwrap_or(0) > before
        });
        wait_for(
            &b,
            &format!("round {round}: every segment in the bucket"),
            || {
                let (remote, local) = segments(&s3, &b);
                local > 0 && remote >= local
            },
        );
    }
    let st = d.json("STATUS")["offsite"].clone();
    assert_eq!(st["consecutive_failures"], 0, "{st}");
    d.terminate();
}
