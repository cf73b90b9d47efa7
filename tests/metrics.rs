//! Metrics for the fleet through the real binary: the node_exporter
//! textfile the daemon writes after every job, the `METRICS` verb and
//! `rvm-backup metrics`, parsed with Prometheus's own Python parser
//! (`prometheus_client`) and compared with `state.json` and `list`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{patience, Daemon};
use common::prom;
use common::*;

/// Start the daemon on the board's socket (`run/control.sock`).
fn start(b: &Board) -> Daemon {
    Daemon::start(b, &b.tmp.path().join("run/control.sock"))
}

/// Queue backups and wait for each job to end; returns their states.
fn backup(d: &Daemon, what: &str) -> Vec<String> {
    let ids = d.json(&format!("BACKUP {what}"))["jobs"].clone();
    ids.as_array()
        .unwrap()
        .iter()
        .map(|id| {
            d.wait_job(id.as_u64().unwrap())["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A populated board whose daemon writes the textfile into `prom/`.
fn board(name: &str) -> (Board, PathBuf) {
    let b = Board::new(name);
    let prom_dir = b.tmp.path().join("prom");
    fs::create_dir_all(&prom_dir).unwrap();
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\ntextfile_dir = \"{}\"\n",
        b.tmp.path().join("run/control.sock").display(),
        prom_dir.display()
    ));
    b.populate();
    (b, prom_dir)
}

/// A sample's value found by its exact text before the value, e.g.
/// `rvm_backup_archives{strategy="logs"}`.
fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn state(b: &Board) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(b.backups.join("state.json")).unwrap()).unwrap()
}

const STRATEGIES: [&str; 4] = ["database", "config", "logs", "application"];

/// What the text must say, checked on the text itself and, when python3
/// has `prometheus_client`, on what the real parser makes of it.
fn check_against_store(b: &Board, text: &str, parser: bool, what: &str) {
    let st = state(b);
    let listed = b.list();
    for s in STRATEGIES {
        let last_success = st[s]["last_success"].as_i64().unwrap() as f64;
        let mine: Vec<&serde_json::Value> = listed.iter().filter(|a| a["strategy"] == s).collect();
        let newest = mine.last().unwrap();
        let stored: u64 = mine.iter().map(|a| a["bytes"].as_u64().unwrap()).sum();
        let label = format!("{{strategy=\"{s}\"}}");
        assert_eq!(
            line_value(
                text,
                &format!("rvm_backup_last_success_timestamp_seconds{label}")
            ),
            Some(last_success),
            "{what}: {s}\n{text}"
        );
        assert_eq!(
            line_value(text, &format!("rvm_backup_archives{label}")),
            Some(mine.len() as f64),
            "{what}: {s}"
        );
        if !parser {
            continue;
        }
        let samples = prom::parse(text);
        assert!(
            samples.iter().all(|x| x.timestamp.is_none()),
            "{what}: timestamps in {text}"
        );
        assert!(samples.iter().all(|x| x.kind == "gauge"), "{what}");
        let v = |name: &str| prom::value(&samples, name, Some(("strategy", s)));
        assert_eq!(
            v("rvm_backup_last_success_timestamp_seconds"),
            Some(last_success),
            "{what}: {s}"
        );
        assert_eq!(v("rvm_backup_archives"), Some(mine.len() as f64), "{what}");
        assert_eq!(v("rvm_backup_stored_bytes"), Some(stored as f64), "{what}");
        assert_eq!(
            v("rvm_backup_last_archive_bytes"),
            newest["bytes"].as_f64(),
            "{what}: {s}"
        );
        assert_eq!(
            v("rvm_backup_last_content_bytes"),
            newest["content_bytes"].as_f64(),
            "{what}: {s}"
        );
        assert_eq!(v("rvm_backup_consecutive_failures"), Some(0.0), "{what}");
        assert!(v("rvm_backup_last_duration_seconds").is_some_and(|d| d >= 0.0));
        assert_eq!(prom::value(&samples, "rvm_backup_up", None), Some(1.0));
        let info = samples
            .iter()
            .find(|x| x.name == "rvm_backup_build_info")
            .unwrap();
        assert!(info.labels["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()));
        // tmpfs and ext4 report their size; only FUSE reports 0 (left out).
        let size = prom::value(&samples, "rvm_backup_filesystem_size_bytes", None);
        let free = prom::value(&samples, "rvm_backup_filesystem_free_bytes", None);
        if let (Some(size), Some(free)) = (size, free) {
            assert!(size > 0.0 && free <= size, "{what}: {free} of {size}");
        }
    }
}

#[test]
fn textfile_and_metrics_verb_parse_and_carry_the_last_success_per_strategy() {
    let parser = prom::available("metrics");
    let (b, prom_dir) = board("metrics");
    let d = start(&b);
    let file = prom_dir.join("rvm_backup.prom");
    // Written at start, before any backup: no success to tell of yet.
    let deadline = Instant::now() + patience();
    while !file.exists() {
        assert!(Instant::now() < deadline, "no textfile written at start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = fs::read_to_string(&file).unwrap();
    assert!(first.contains("rvm_backup_up 1\n"), "{first}");
    assert!(!first.contains("rvm_backup_last_success_timestamp_seconds{"));
    if parser {
        prom::parse(&first);
    }

    assert_eq!(backup(&d, "all"), ["done"; 4]);
    // The daemon rewrote it when the last job ended.
    let text = fs::read_to_string(&file).unwrap();
    check_against_store(&b, &text, parser, "textfile");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
    let names: Vec<String> = fs::read_dir(&prom_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rvm_backup.prom"], "a temporary file was left");

    let reply = d.try_request("METRICS").unwrap();
    assert_eq!(reply.matches('\n').count(), 1, "one line: {reply}");
    let m = d.json("METRICS");
    assert_eq!(m["content_type"], "text/plain; version=0.0.4");
    check_against_store(&b, m["text"].as_str().unwrap(), parser, "METRICS");

    // A failed backup shows at once: a failure count and its time.
    fs::remove_dir_all(b.root.join("etc/myrvm")).unwrap();
    assert_eq!(backup(&d, "config"), ["failed"]);
    let text = fs::read_to_string(&file).unwrap();
    let st = state(&b);
    assert_eq!(
        line_value(
            &text,
            "rvm_backup_consecutive_failures{strategy=\"config\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            "rvm_backup_last_failure_timestamp_seconds{strategy=\"config\"}"
        ),
        st["config"]["last_failure"].as_f64(),
        "{text}"
    );
    if parser {
        prom::parse(&text);
    }
    drop(d);
}

#[test]
fn metrics_command_prints_the_same_figures() {
    let parser = prom::available("metrics_command");
    let (b, _) = board("metrics-cli");
    b.ok(&["backup", "--all"]);
    let text = b.ok(&["metrics"]);
    assert!(text.ends_with('\n') && !text.ends_with("\n\n"), "{text:?}");
    check_against_store(&b, &text, parser, "rvm-backup metrics");
    let err = b.fails(&["metrics", "extra"]);
    assert!(err.contains("unexpected argument"), "{err}");
}

#[test]
fn a_bad_textfile_dir_is_logged_and_the_daemon_goes_on() {
    let (b, prom_dir) = board("metrics-bad-dir");
    // A file where the directory should be.
    fs::remove_dir(&prom_dir).unwrap();
    fs::write(&prom_dir, "not a directory").unwrap();
    let d = start(&b);
    assert_eq!(backup(&d, "config"), ["done"]);
    assert!(d.json("METRICS")["text"]
        .as_str()
        .unwrap()
        .contains("rvm_backup_last_success_timestamp_seconds{strategy=\"config\"}"));
    drop(d);
    let log = fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap();
    assert!(log.contains("is not a directory"), "{log}");
    assert_eq!(
        log.matches("metrics textfile not written (").count(),
        1,
        "said once, not at every job: {log}"
    );
    assert_eq!(fs::read_to_string(&prom_dir).unwrap(), "not a directory");
}
