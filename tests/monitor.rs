//! Monitoring through the real binary: `check` exit codes on a healthy
//! and an overdue store, the size rule on a collapsed database, and the
//! daemon's `ALERTS`/`REPORT`, with an alert that fires on failing
//! backups and resolves after a good one.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn patience() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(30)
    }
}

/// A board whose config has `keys` on top and `[monitoring]` `monitoring`
/// at the end. Free space thresholds are off: the test machine's disk is
/// not the board's.
fn board(name: &str, keys: &str, monitoring: &str) -> Board {
    let b = Board::new(name);
    b.write_config(keys);
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(&format!(
        "\n[monitoring]\nfree_warning_percent = 0\nfree_critical_percent = 0\nstorage_rounds = 1\n{monitoring}\n"
    ));
    fs::write(&b.config, text).unwrap();
    b.populate();
    b
}

fn check(b: &Board, json: bool) -> (i32, String) {
    let args: &[&str] = if json {
        &["check", "--json"]
    } else {
        &["check"]
    };
    let out = b.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn finding<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            format!(
                "{}/{}",
                f["rule"].as_str().unwrap(),
                f["subject"].as_str().unwrap()
            ) == key
        })
        .unwrap_or_else(|| panic!("no finding {key} in {v}"))
}

#[test]
fn check_is_ok_on_fresh_backups_and_critical_when_overdue() {
    let b = board("check-age", "", "");
    let (code, out) = check(&b, false);
    assert_eq!(code, 1, "never backed up is a warning: {out}");
    assert!(out.contains("WARNING backup_age database"), "{out}");
    b.ok(&["backup", "--all"]);
    let (code, out) = check(&b, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("RVM-BACKUP OK: all "), "{out}");
    let (code, out) = check(&b, true);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(finding(&v, "backup_age/logs")["severity"], "ok");
    // `check` writes nothing: no tracker file.
    assert!(!b.backups.join("monitor.json").exists());

    // The same store under a one-second schedule is soon overdue.
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        format!("backup_interval = \"1s\"\nbackup_jitter = \"1s\"\n{text}"),
    )
    .unwrap();
    let deadline = Instant::now() + patience();
    let (code, out) = loop {
        // The strategies were backed up one after another, so they turn
        // critical one after another: wait for the one asserted on.
        let (code, out) = check(&b, false);
        if (code == 2 && out.contains("CRITICAL backup_age config")) || Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("RVM-BACKUP CRITICAL:"), "{out}");
    assert!(
        out.contains("CRITICAL backup_age config: newest successful backup is"),
        "{out}"
    );
    let (code, out) = check(&b, true);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let age = finding(&v, "backup_age/database");
    assert_eq!(age["severity"], "critical", "{age}");
    assert!(
        age["figures"]["age_s"].as_i64().unwrap()
            > age["figures"]["critical_after_s"].as_i64().unwrap()
    );
}

#[test]
fn check_exits_unknown_on_a_bad_config_or_usage() {
    let b = board("check-unknown", "", "");
    assert_eq!(check(&b, false).0, 1);
    let out = b.run(&["check", "--frob"]);
    assert_eq!(out.status.code(), Some(3));
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        text.replace("storage_rounds = 1", "storage_rounds = 0"),
    )
    .unwrap();
    let (code, out) = check(&b, false);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("UNKNOWN") && out.contains("storage_rounds"),
        "{out}"
    );
    // A key others may read does not load: that is critical, and the rest
    // is still judged.
    fs::write(&b.config, text).unwrap();
    b.ok(&["backup", "--all"]);
    fs::set_permissions(&b.key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) = check(&b, false);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("CRITICAL key_file key: the key does not load") && out.contains("chmod 600"),
        "{out}"
    );
}

#[test]
fn a_collapsed_database_raises_the_size_rule() {
    let b = board("check-size", "", "");
    for _ in 0..4 {
        b.ok(&["backup", "database"]);
    }
    let (_, out) = check(&b, true);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(finding(&v, "size/database")["severity"], "ok", "{v}");
    // Most rows go, and the file shrinks with them.
    let c = rusqlite::Connection::open(b.db_path()).unwrap();
    c.execute_batch("DELETE FROM deposits WHERE id > 100; VACUUM;")
        .unwrap();
    drop(c);
    b.ok(&["backup", "database"]);
    let (code, out) = check(&b, true);
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let size = finding(&v, "size/database");
    assert_eq!(size["severity"], "critical", "{size}");
    assert!(
        size["reason"].as_str().unwrap().contains("shrank"),
        "{size}"
    );
    assert_eq!(size["figures"]["rows"], 100, "{size}");
    assert_eq!(size["figures"]["median_rows"], 2000, "{size}");
    let (_, human) = check(&b, false);
    assert!(
        human.contains("CRITICAL size database: archive database-"),
        "{human}"
    );
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(b: &Board) -> Daemon {
        let socket = b.tmp.path().join("run/control.sock");
        let log = fs::File::create(b.tmp.path().join("daemon.log")).unwrap();
        let child = bin()
            .arg("--config")
            .arg(&b.config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { child, socket };
        let deadline = Instant::now() + patience();
        while !d.request("PING").starts_with("OK") {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn request(&self, line: &str) -> String {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return String::new();
        };
        s.set_read_timeout(Some(patience())).unwrap();
        if s.write_all(format!("{line}\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut reply = String::new();
        let _ = BufReader::new(s).read_line(&mut reply);
        reply
    }

    fn json(&self, line: &str) -> serde_json::Value {
        let r = self.request(line);
        let body = r
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("{line}: {r}"));
        serde_json::from_str(body).unwrap()
    }

    fn run_job(&self, line: &str) -> serde_json::Value {
        let v = self.json(line);
        let id = v["job"]
            .as_u64()
            .or_else(|| v["jobs"][0].as_u64())
            .unwrap_or_else(|| panic!("{v}"));
        let deadline = Instant::now() + patience();
        loop {
            let j = self.json(&format!("JOB {id}"));
            if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Wait until `ALERTS` satisfies `ok`; returns it.
    fn alerts_until(
        &self,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + patience();
        loop {
            let a = self.json("ALERTS");
            if ok(&a) {
                return a;
            }
            assert!(Instant::now() < deadline, "{what}: {a}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn firing(a: &serde_json::Value, key: &str) -> bool {
    a["firing"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["key"] == key)
}

/// A board whose config runs the daemon's monitor every second, with the
/// socket at `run/control.sock` and no scheduled backups.
fn daemon_board(name: &str) -> Board {
    let b = Board::new(name);
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\nbackup_enabled = false\nbackup_monitoring_interval = \"1s\"\n",
        b.tmp.path().join("run/control.sock").display()
    ));
    b
}

#[test]
fn the_daemon_fires_on_failing_backups_and_resolves_after_a_good_one() {
    let b = daemon_board("monitor-daemon");
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(
        "\n[monitoring]\nfree_warning_percent = 0\nfree_critical_percent = 0\nstorage_rounds = 1\n",
    );
    fs::write(&b.config, text).unwrap();
    b.populate();
    let d = Daemon::start(&b);
    for s in ["database", "config", "logs", "application"] {
        assert_eq!(d.run_job(&format!("BACKUP {s}"))["state"], "done");
    }
    let a =
        d.alerts_until("all fresh", |a| {
            a["findings"].as_array().unwrap().iter().any(|f| {
                f["rule"] == "backup_age" && f["subject"] == "config" && f["severity"] == "ok"
            })
        });
    assert_eq!(a["monitoring"], true);
    assert!(!firing(&a, "failures/database"), "{a}");

    let r = d.json("REPORT");
    let db = &r["strategies"]["database"];
    assert!(
        db["newest_archive"]
            .as_str()
            .unwrap()
            .starts_with("database-"),
        "{r}"
    );
    assert!(db["age_s"].as_i64().unwrap() >= 0, "{r}");
    assert_eq!(db["archive_count"], 1, "{r}");
    assert!(
        db["size_trend"]["recent_content_bytes"]
            .as_array()
            .unwrap()
            .len()
            == 1,
        "{r}"
    );
    assert!(
        r["storage"]["backup_dir"]["free_bytes"].as_u64().is_some(),
        "{r}"
    );
    assert!(r["alerts"]["findings"]["ok"].as_u64().unwrap() > 10, "{r}");

    // The database goes missing: backups fail, the failures rule fires.
    let moved = b.db_path().with_extension("away");
    fs::rename(b.db_path(), &moved).unwrap();
    assert_eq!(d.run_job("BACKUP database")["state"], "failed");
    let a = d.alerts_until("failures/database fires", |a| {
        firing(a, "failures/database")
    });
    let f = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "failures" && f["subject"] == "database")
        .unwrap()
        .clone();
    assert_eq!(f["state"], "warning", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("failed"), "{f}");
    let health = d.json("HEALTH");
    assert!(
        health["findings"].to_string().contains("failures"),
        "{health}"
    );

    // Back, and a good backup: the alert resolves.
    fs::rename(&moved, b.db_path()).unwrap();
    assert_eq!(d.run_job("BACKUP database")["state"], "done");
    d.alerts_until("failures/database resolves", |a| {
        !firing(a, "failures/database")
    });
    let log = fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("[WARNING]") && log.contains("database: failures:"),
        "{log}"
    );
    assert!(log.contains("[RESOLVED]"), "{log}");
    // The tracker's state is on disk, for the next start.
    let saved = fs::read_to_string(b.backups.join("monitor.json")).unwrap();
    assert!(saved.contains("failures"), "{saved}");
}

#[test]
fn a_damaged_archive_found_by_verify_is_critical_until_verify_passes() {
    let b = board("check-verify", "", "");
    b.ok(&["backup", "--all"]);
    let id = b.ids("config")[0].clone();
    let part = archive_files(&b.backups, &id)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".rvb"))
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    fs::write(&part, &bytes).unwrap();
    assert!(!b.run(&["verify", "--all"]).status.success());
    let (code, out) = check(&b, true);
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let f = finding(&v, "verification/config");
    assert_eq!(f["severity"], "critical", "{f}");
    assert!(f["reason"].as_str().unwrap().contains(&id), "{f}");
    assert_eq!(finding(&v, "verification/logs")["severity"], "ok", "{v}");
    // Repaired: the next verify passes, and the finding clears.
    bytes[n / 2] ^= 0x55;
    fs::write(&part, &bytes).unwrap();
    b.ok(&["verify", "--all"]);
    assert_eq!(check(&b, false).0, 0);
}

/// The `pitr` rule (continuous protection) through the real daemon: ok
/// while the WAL ships, in `check --json`, `ALERTS` and `METRICS`; a store
/// where segments cannot be written makes shipping fail, the rule fires
/// (warning with the error, then critical as the lag passes
/// `pitr_lag_critical` plus the sync interval) and resolves once shipping
/// works again; `check` without the daemon says nothing ships.
#[test]
fn the_pitr_rule_follows_the_shipper() {
    let b = daemon_board("monitor-pitr");
    let text = fs::read_to_string(&b.config).unwrap().replacen(
        "pitr = false\n",
        "pitr = true\npitr_sync_interval = \"200ms\"\n",
        1,
    );
    fs::write(
        &b.config,
        format!(
            "{text}\n[monitoring]\nfree_warning_percent = 0\nfree_critical_percent = 0\nstorage_rounds = 1\npitr_lag_warning = \"3s\"\npitr_lag_critical = \"6s\"\n"
        ),
    )
    .unwrap();
    b.populate();
    let d = Daemon::start(&b);
    let state = |a: &serde_json::Value, key: &str| -> Option<String> {
        a["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                format!(
                    "{}/{}",
                    f["rule"].as_str().unwrap(),
                    f["subject"].as_str().unwrap()
                ) == key
            })
            .map(|f| f["state"].as_str().unwrap_or("").to_string())
    };
    let deadline = Instant::now() + patience();
    while d.json("STATUS")["pitr"]["last_ok_unix_ms"].is_null() {
        assert!(Instant::now() < deadline, "nothing shipped");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.alerts_until("pitr/database ok", |a| {
        state(a, "pitr/database").as_deref() == Some("ok")
    });
    let (code, out) = check(&b, true);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    let f = finding(&v, "pitr/database");
    assert_eq!(f["severity"], "ok", "{f}");
    assert!(f["figures"]["lag_s"].as_i64().is_some(), "{f}");
    assert_eq!(f["figures"]["critical_after_s"], 7, "{f}");
    assert!(code <= 1, "{out}");
    let metrics = d.json("METRICS")["text"].as_str().unwrap().to_string();
    for want in [
        "rvm_backup_pitr_last_ship_timestamp_seconds ",
        "rvm_backup_pitr_segments ",
        "rvm_backup_pitr_error 0",
        "rvm_backup_rule_state{rule=\"pitr\",subject=\"database\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }

    // Segments cannot be written (a file where the WAL directory was):
    // a commit makes the step fail, every new generation fails too.
    let wal_dir = b.backups.join("database-wal");
    let away = b.backups.join("database-wal.away");
    fs::rename(&wal_dir, &away).unwrap();
    fs::write(&wal_dir, b"in the way").unwrap();
    let c = rusqlite::Connection::open(b.db_path()).unwrap();
    c.execute_batch("CREATE TABLE after_the_break(n); INSERT INTO after_the_break VALUES (1);")
        .unwrap();
    drop(c);
    let a = d.alerts_until("pitr/database critical", |a| {
        firing(a, "pitr/database") && state(a, "pitr/database").as_deref() == Some("critical")
    });
    let reason = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "pitr" && f["subject"] == "database")
        .map(|f| f["reason"].to_string())
        .unwrap();
    assert!(reason.contains("WAL shipping fails"), "{reason}");
    let metrics = d.json("METRICS")["text"].as_str().unwrap().to_string();
    assert!(metrics.contains("rvm_backup_pitr_error 1"), "{metrics}");
    assert!(
        metrics.contains("rvm_backup_rule_state{rule=\"pitr\",subject=\"database\"} 2"),
        "{metrics}"
    );

    // Repaired: a new generation starts and the alert resolves.
    fs::remove_file(&wal_dir).unwrap();
    fs::rename(&away, &wal_dir).unwrap();
    d.alerts_until("pitr/database resolves", |a| !firing(a, "pitr/database"));
    drop(d);

    // No daemon: nothing ships the WAL, and check says so.
    let (code, out) = check(&b, true);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    let f = finding(&v, "pitr/database");
    assert_eq!(f["severity"], "warning", "{f}");
    assert!(
        f["reason"].as_str().unwrap().contains("does not answer"),
        "{f}"
    );
    assert!(code >= 1, "{out}");
}
