//! Recovery drills through the real binary: `drill --all --json` on a
//! populated board, a damaged archive, a database that does not match the
//! row counts its sidecar recorded, and the daemon's `DRILL` verb with
//! `HISTORY` and `HEALTH`.

mod common;

use std::fs;

use common::daemon::Daemon;
use common::*;
use rvm_backup::format::sidecar;

fn drill_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn state(b: &Board) -> serde_json::Value {
    serde_json::from_slice(&fs::read(b.backups.join("state.json")).unwrap()).unwrap()
}

/// Nothing named like a drill's scratch directory is left in the store.
fn no_scratch_left(b: &Board) {
    let left: Vec<String> = fs::read_dir(&b.backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".drill-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// Flip one byte in the middle of the (first) part of archive `id`.
fn damage(b: &Board, id: &str) {
    let part = archive_files(&b.backups, id)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "rvb"))
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    let pos = bytes.len() / 2;
    bytes[pos] ^= 0x10;
    fs::write(&part, bytes).unwrap();
}

#[test]
fn drill_all_json_reports_every_strategy_ok_and_cleans_up() {
    let b = Board::new("drill-all");
    b.populate();
    b.ok(&["backup", "--all"]);
    // The database archive recorded what the drill checks (block 3).
    let db = b.ids("database")[0].clone();
    let meta = read_meta(&b, "database", &db);
    assert!(meta.schema_sha256.is_some());
    assert_eq!(meta.tables, vec![("deposits".to_string(), 2000)]);

    let out = b.ok(&["drill", "--all", "--json"]);
    let lines = drill_lines(&out);
    let names: Vec<&str> = lines
        .iter()
        .map(|v| v["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["database", "config", "logs", "application"],
        "{out}"
    );
    for v in &lines {
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{v}");
        assert!(v["bytes"].as_u64().is_some_and(|n| n > 0), "{v}");
        let s = v["strategy"].as_str().unwrap();
        assert_eq!(v["id"].as_str(), b.ids(s).last().map(String::as_str), "{v}");
        assert!(v.get("error").is_none(), "{v}");
    }
    no_scratch_left(&b);
    let st = state(&b);
    for s in names {
        assert_eq!(st[s]["last_drill_ok"], true, "{st}");
        assert!(st[s]["last_drill"].as_i64().is_some(), "{st}");
        assert!(st[s]["last_drill_seconds"].as_f64().is_some(), "{st}");
    }
    // The board itself was not touched, and the text form says OK.
    let text = b.ok(&["drill", "config"]);
    assert!(text.starts_with("OK") && text.contains("config-"), "{text}");
    no_scratch_left(&b);
}

#[test]
fn a_damaged_archive_fails_its_drill_and_the_others_still_run() {
    let b = Board::new("drill-damaged");
    b.populate();
    b.ok(&["backup", "--all"]);
    let id = b.ids("logs")[0].clone();
    damage(&b, &id);
    let out = b.run(&["drill", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drill logs failed"), "{stderr}");
    let lines = drill_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines.len(), 4);
    for v in &lines {
        let bad = v["strategy"] == "logs";
        assert_eq!(v["ok"], !bad, "{v}");
        if bad {
            assert_eq!(v["id"], id.as_str());
            assert!(v["error"].as_str().is_some_and(|e| e.contains(&id)), "{v}");
        }
    }
    no_scratch_left(&b);
    let st = state(&b);
    assert_eq!(st["logs"]["last_drill_ok"], false, "{st}");
    assert!(st["logs"]["last_drill_error"].as_str().is_some());
    assert_eq!(st["config"]["last_drill_ok"], true, "{st}");

    // No archive at all is a failed drill too, with what to do.
    fs::remove_dir_all(b.backups.join("config")).unwrap();
    let err = b.fails(&["drill", "config"]);
    assert!(err.contains("backup config"), "{err}");
}

fn read_meta(b: &Board, strategy: &str, id: &str) -> sidecar::Meta {
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let bytes = fs::read(b.backups.join(strategy).join(format!("{id}.meta"))).unwrap();
    sidecar::decode(&bytes, Some(&key)).unwrap().1
}

/// Re-sign archive `id`'s sidecar after `change` (as only the key holder
/// could): the archive itself stays intact.
fn rewrite_meta(b: &Board, id: &str, change: impl FnOnce(&mut sidecar::Meta)) {
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let path = b.backups.join("database").join(format!("{id}.meta"));
    let (header, mut meta) = sidecar::decode(&fs::read(&path).unwrap(), Some(&key)).unwrap();
    change(&mut meta);
    let bytes = sidecar::encode(&meta, &header, &header.protection(Some(&key)).unwrap());
    fs::write(&path, bytes).unwrap();
}

#[test]
fn a_database_that_differs_from_its_recorded_counts_or_schema_fails() {
    let b = Board::new("drill-counts");
    b.populate();
    b.ok(&["backup", "database"]);
    let id = b.ids("database")[0].clone();
    rewrite_meta(&b, &id, |m| m.tables = vec![("deposits".into(), 1999)]);
    let out = b.run(&["drill", "database", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = &drill_lines(&String::from_utf8_lossy(&out.stdout))[0];
    assert_eq!(v["ok"], false);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("\"deposits\" has 2000 rows") && e.contains("1999"),
        "{e}"
    );
    rewrite_meta(&b, &id, |m| {
        m.tables = vec![("deposits".into(), 2000)];
        m.schema_sha256 = Some([0; 32]);
    });
    let out = b.run(&["drill", "database", "--json"]);
    let v = &drill_lines(&String::from_utf8_lossy(&out.stdout))[0];
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("schema"), "{v}");
    // A sidecar from before block 3 (nothing recorded) passes on the
    // restore's own checks (hashes, integrity_check).
    rewrite_meta(&b, &id, |m| {
        m.tables.clear();
        m.schema_sha256 = None;
    });
    b.ok(&["drill", "database"]);
    no_scratch_left(&b);
}

#[test]
fn the_daemon_drills_on_request_and_raises_a_failed_drill() {
    let tmp_socket = |b: &Board| b.tmp.path().join("run/control.sock");
    let b = Board::new("drill-daemon");
    let socket = tmp_socket(&b);
    b.write_config(&format!(
        "socket = \"{}\"\nbackup_enabled = false\ndrill_interval = \"7d\"",
        socket.display()
    ));
    b.populate();
    b.ok(&["backup", "--all"]);
    let d = Daemon::start(&b, &socket);

    let job = d.json("DRILL all")["job"].as_u64().unwrap();
    let j = d.wait_job(job);
    assert_eq!(j["state"], "done", "{j}");
    assert!(
        j["outcome"].as_str().unwrap().contains("drill passed"),
        "{j}"
    );
    let history = d.json("HISTORY");
    assert!(
        history["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == job && h["what"] == "drill database config logs application"),
        "{history}"
    );
    let status = d.json("STATUS");
    assert_eq!(
        status["strategies"]["database"]["last_drill"]["ok"], true,
        "{status}"
    );
    assert_eq!(d.json("HEALTH")["healthy"], true);

    let id = b.ids("application")[0].clone();
    damage(&b, &id);
    let job = d.json("DRILL application")["job"].as_u64().unwrap();
    let j = d.wait_job(job);
    assert_eq!(j["state"], "failed", "{j}");
    let outcome = j["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("application") && outcome.contains(&id),
        "{j}"
    );
    let health = d.json("HEALTH");
    assert_eq!(health["healthy"], false, "{health}");
    let problems = health["problems"].to_string();
    assert!(
        problems.contains("application: the last recovery drill"),
        "{health}"
    );
    let status = d.json("STATUS");
    assert_eq!(
        status["strategies"]["application"]["last_drill"]["ok"], false,
        "{status}"
    );
    // Audited: the request and the job's outcome.
    let audit = fs::read_to_string(b.backups.join("audit.log")).unwrap();
    assert!(audit.contains("\"what\":\"DRILL application\""), "{audit}");
    assert!(audit.contains("drill application"), "{audit}");
    no_scratch_left(&b);
}
