//! Point-in-time recovery through the real binary and daemon: a writer
//! commits numbered rows while the daemon ships the WAL; at marks it
//! pauses and records a time T_k; `restore database --at T_k` must give
//! exactly the rows committed before T_k, across the daemon's own
//! checkpoints, a checkpoint made by the application, a graceful daemon
//! restart and a SIGKILL of the daemon. Then a tampered and a missing
//! segment make the restore refuse.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon::{patience, Daemon};
use common::writer::Writer;
use common::*;
use rusqlite::Connection;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The salts in the WAL header.
fn wal_salts(db: &Path) -> [u8; 8] {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = fs::read(PathBuf::from(wal)).unwrap();
    bytes[16..24].try_into().unwrap()
}

fn status(d: &Daemon) -> serde_json::Value {
    d.json("STATUS")["pitr"].clone()
}

/// Wait until the daemon's generation is not `old` (a new one started).
fn wait_generation(d: &Daemon, old: Option<&str>) -> String {
    let deadline = Instant::now() + patience();
    loop {
        let s = status(d);
        if let Some(g) = s["generation"].as_str() {
            if Some(g) != old {
                return g.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no new generation: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pause the writer: wait until everything committed was shipped, then
/// pick a whole second T with no commit in [T, T+1) and return it.
fn pause(d: &Daemon, committed_at_ms: i64) -> i64 {
    let deadline = Instant::now() + patience();
    loop {
        let s = status(d);
        if s["last_commit_unix_ms"]
            .as_i64()
            .is_some_and(|t| t >= committed_at_ms - 50)
        {
            break;
        }
        assert!(Instant::now() < deadline, "nothing shipped: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = now_ms() / 1000 + 1;
    while now_ms() < (t + 1) * 1000 + 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    t
}

fn restore_at(b: &Board, t: i64, name: &str) -> (PathBuf, String) {
    restore_what_at(b, "database", t, name)
}

/// `restore WHAT --at T --target <tmp>/NAME` (WHAT: `database` or
/// `--all`): the restored database's path and what the command printed.
fn restore_what_at(b: &Board, what: &str, t: i64, name: &str) -> (PathBuf, String) {
    let target = b.tmp.path().join(name);
    // Not --quiet: the reached commit is what the operator reads.
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["restore", what, "--at", &rfc3339(t), "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "restore {what} --at {}: {text}",
        rfc3339(t)
    );
    (b.in_target(&target, &b.db_path()), text)
}

fn rows(db: &Path) -> (i64, i64, i64) {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    c.query_row(
        "SELECT count(*), coalesce(min(n),0), coalesce(max(n),0) FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn show_log(b: &Board) {
    eprintln!(
        "daemon log:\n{}",
        fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
    );
}

fn board() -> Board {
    let b = Board::with_config("pitr", "backup_enabled = false");
    // The shared board turns shipping off for the other suites.
    b.enable_pitr();
    fs::create_dir_all(b.db_path().parent().unwrap()).unwrap();
    b
}

#[test]
fn restore_to_points_in_time_across_checkpoints_restarts_and_kills() {
    let b = board();
    let socket = b.add_socket();
    let mut w = Writer::open(&b.db_path());
    w.commit(50);
    let d = Daemon::start(&b, &socket);
    let g1 = wait_generation(&d, None);

    // Points: (T, rows committed before T).
    let mut points = Vec::new();
    let salts = wal_salts(&b.db_path());
    w.commit(300);
    points.push((pause(&d, now_ms()), w.last()));
    w.commit(400); // past the daemon's checkpoint threshold
    points.push((pause(&d, now_ms()), w.last()));
    // The daemon checkpointed and restarted the WAL (new salts) and the
    // chain went on: still the first generation.
    assert_ne!(
        wal_salts(&b.db_path()),
        salts,
        "the daemon never restarted the WAL"
    );
    assert_eq!(status(&d)["generations_started"], 1, "{}", status(&d));

    // The application checkpoints by itself: refused (our read mark) or,
    // if it got through, a new generation; never a gap.
    w.conn.busy_timeout(Duration::from_millis(100)).unwrap();
    let busy: i64 = w
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .unwrap();
    w.conn.busy_timeout(Duration::from_secs(30)).unwrap();
    w.commit(100);
    points.push((pause(&d, now_ms()), w.last()));
    if busy == 1 {
        assert_eq!(status(&d)["generations_started"], 1, "{}", status(&d));
    }

    // A graceful restart: a new generation.
    show_log(&b);
    d.terminate();
    w.commit(50);
    let d = Daemon::start(&b, &socket);
    let g2 = wait_generation(&d, Some(&g1));
    let salts = wal_salts(&b.db_path());
    w.commit(600); // past the threshold again, with a new daemon's connections
    points.push((pause(&d, now_ms()), w.last()));
    assert_ne!(
        wal_salts(&b.db_path()),
        salts,
        "the daemon never restarted the WAL"
    );
    assert_eq!(status(&d)["generations_started"], 1, "{}", status(&d));

    // SIGKILL while the writer keeps committing.
    w.commit(100);
    show_log(&b);
    drop(d);
    w.commit(100);
    let d = Daemon::start(&b, &socket);
    let g3 = wait_generation(&d, Some(&g2));
    w.commit(150);
    points.push((pause(&d, now_ms()), w.last()));

    // The list shows the ranges.
    let ranges: Vec<serde_json::Value> = b
        .list()
        .into_iter()
        .filter(|v| v["kind"] == "pitr")
        .collect();
    eprintln!(
        "{}\n{ranges:?}",
        fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
    );
    assert!(ranges.len() >= 3, "{ranges:?}");
    assert!(ranges.iter().any(|r| r["generation"] == g3.as_str()));
    drop(d);

    for (k, (t, n)) in points.iter().enumerate() {
        let (db, out) = restore_at(&b, *t, &format!("at{k}"));
        assert!(out.contains("restored to the commit at"), "{out}");
        eprintln!("point {k} at {}: {out}", rfc3339(*t));
        assert_eq!(
            rows(&db),
            (*n, 1, *n),
            "restore at point {k} ({})",
            rfc3339(*t)
        );
    }

    // verify --all checks every chain too.
    b.ok(&["verify", "--all"]);

    // In place (the daemon is stopped, the application closed): the live
    // database is swapped for the replayed one, the old one kept aside.
    let (t1, n1) = points[1];
    drop(w);
    // What a restore killed half-way left in its scratch directory is
    // cleared by the next one, not left to pile up.
    let stale = b.backups.join(".pitr-restore");
    fs::create_dir_all(stale.join("var/lib")).unwrap();
    fs::write(stale.join("var/lib/half-written"), b"x").unwrap();
    b.ok(&["restore", "database", "--at", &rfc3339(t1)]);
    assert_eq!(rows(&b.db_path()), (n1, 1, n1), "in-place restore");
    assert!(
        !stale.exists(),
        "the stale scratch directory is still there"
    );
    let kept = fs::read_dir(b.db_path().parent().unwrap())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".pre-restore-")
        })
        .count();
    assert!(kept >= 1, "the previous database was not kept");

    // A tampered segment: the restore refuses and says so.
    let g1_dir = b.backups.join("database-wal").join(&g1);
    let seg = g1_dir.join("000000000001.rvw");
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (t0, _) = points[0];
    let err = b.fails(&[
        "restore",
        "database",
        "--at",
        &rfc3339(t0),
        "--target",
        b.tmp.path().join("tampered").to_str().unwrap(),
    ]);
    assert!(err.contains("damaged or was tampered"), "{err}");
    let v = b.run(&["verify", "--all"]);
    let verr = String::from_utf8_lossy(&v.stderr);
    assert!(!v.status.success(), "verify passed a tampered segment");
    assert!(verr.contains("FAILED pitr") && verr.contains(&g1), "{verr}");
    let tampered_db = b.in_target(&b.tmp.path().join("tampered"), &b.db_path());
    assert!(
        !tampered_db.exists(),
        "a refused restore published a database"
    );
    // A missing segment: refused too.
    bytes[mid] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    fs::remove_file(&seg).unwrap();
    let err = b.fails(&[
        "restore",
        "database",
        "--at",
        &rfc3339(t0),
        "--target",
        b.tmp.path().join("missing").to_str().unwrap(),
    ]);
    assert!(err.contains("missing"), "{err}");

    // Retention: with pitr_retention = "1s" a daemon start prunes every
    // generation but the newest; the newest point stays restorable.
    let cfg = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        cfg.replacen("pitr = true\n", "pitr = true\npitr_retention = \"1s\"\n", 1),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let d = Daemon::start(&b, &socket);
    let g5 = wait_generation(&d, Some(&g3));
    let gens = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(b.backups.join("database-wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + patience();
    while gens().contains(&g2) {
        assert!(
            Instant::now() < deadline,
            "old generations never pruned: {:?}",
            gens()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let left = gens();
    assert!(left.contains(&g5) && !left.contains(&g1), "{left:?}");
    // The kept generation's snapshot archive is kept by prune.
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["prune", "--dry-run"])
        .output()
        .unwrap();
    let pruned = String::from_utf8_lossy(&out.stdout);
    assert!(
        pruned
            .lines()
            .any(|l| l.contains(&g5) && l.contains("point-in-time generation")),
        "{pruned}"
    );
}

/// The WAL's bound under a steady writer (issue 9: "no WAL growth beyond
/// the configured threshold"): the daemon checkpoints when the WAL reaches
/// its checkpoint point (750 frames, a probe every 50 ms), not only on its
/// sync tick. With a tick of an hour no tick comes during the test: before
/// the probe the WAL grew by every frame the writer made (thousands here).
/// Bound asserted: the threshold (1000 frames) plus half of it (plus all
/// of it under the qemu runner, where a step's ship and checkpoint take far
/// longer against the writer's pace): room for a step later than 50 ms;
/// the benchmark (benches/wal-shipping.py) measures the strict threshold.
#[test]
fn the_wal_stays_near_the_checkpoint_threshold_between_ticks() {
    const THRESHOLD: u64 = 1000; // src/pitr/shipper.rs CHECKPOINT_FRAMES
    let b = Board::with_config("pitr", "backup_enabled = false");
    let socket = b.tmp.path().join("rvm.sock");
    let cfg = fs::read_to_string(&b.config).unwrap();
    let cfg = cfg.replacen(
        "pitr = false\n",
        "pitr = true\npitr_sync_interval = \"1h\"\n",
        1,
    );
    fs::write(
        &b.config,
        format!("socket = \"{}\"\n{cfg}", socket.display()),
    )
    .unwrap();
    fs::create_dir_all(b.db_path().parent().unwrap()).unwrap();
    let mut w = Writer::open(&b.db_path());
    w.commit(20);
    let page: u64 = w
        .conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let d = Daemon::start(&b, &socket);
    wait_generation(&d, None);
    let wal = PathBuf::from(format!("{}-wal", b.db_path().display()));
    let frames = || (fs::metadata(&wal).unwrap().len().saturating_sub(32)) / (page + 24);
    let bound = if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        2 * THRESHOLD
    } else {
        THRESHOLD + THRESHOLD / 2
    };
    let mut restarts = 0;
    let mut salts = wal_salts(&b.db_path());
    for _ in 0..25 {
        w.commit(100);
        let now = wal_salts(&b.db_path());
        if now != salts {
            restarts += 1;
            salts = now;
        }
        // The file's length is its high-water mark (a restart rewrites it
        // from the start and never shortens it).
        let n = frames();
        assert!(
            n <= bound,
            "the WAL grew to {n} frames (threshold {THRESHOLD}, bound {bound}): {}",
            status(&d)
        );
    }
    eprintln!(
        "WAL high-water mark: {} frames, {restarts} restarts seen",
        frames()
    );
    assert!(
        restarts >= 2,
        "the daemon never restarted the WAL between ticks"
    );
    assert_eq!(status(&d)["generations_started"], 1, "{}", status(&d));
    assert!(
        status(&d)["segments"].as_u64().unwrap() >= 3,
        "{}",
        status(&d)
    );
    drop(d);
}

/// `restore --all --at T` takes the database to T through the WAL
/// segments, as `restore database --at T` does, when point-in-time data
/// covers T; before every generation it says which archive it used.
#[test]
fn restore_all_at_a_time_replays_the_wal() {
    let b = board();
    let socket = b.add_socket();
    b.populate();
    let mut w = Writer::open(&b.db_path());
    w.commit(30);
    let before = w.last();
    b.ok(&["backup", "--all"]);
    // T0: after every archive, a whole second before the daemon starts.
    let t0 = now_ms() / 1000 + 1;
    while now_ms() < (t0 + 1) * 1000 + 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon::start(&b, &socket);
    wait_generation(&d, None);
    w.commit(200);
    let t1 = pause(&d, now_ms());
    let n1 = w.last();
    w.commit(100); // after T1: must not come back
    let t2 = pause(&d, now_ms());
    drop(d);

    let all_at = |t: i64, name: &str| restore_what_at(&b, "--all", t, name);
    let (db, out) = all_at(t1, "all1");
    assert!(out.contains("database: restored to the commit at"), "{out}");
    assert_eq!(rows(&db), (n1, 1, n1), "restore --all at T1: {out}");
    // The trees came back too.
    assert!(out.contains("restored all 4 strategies"), "{out}");
    let (db, out) = all_at(t2, "all2");
    assert_eq!(
        rows(&db),
        (w.last(), 1, w.last()),
        "restore --all at T2: {out}"
    );
    // Before the first generation: the archive, and it says so.
    let (db, out) = all_at(t0, "all0");
    assert!(
        out.contains("no point-in-time restore point is closer"),
        "{out}"
    );
    assert_eq!(rows(&db), (before, 1, before), "restore --all at T0: {out}");

    // A tampered segment refuses the whole restore before anything is
    // written.
    let gen_dir = fs::read_dir(b.backups.join("database-wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let seg = gen_dir.join("000000000001.rvw");
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let target = b.tmp.path().join("tampered");
    let err = b.fails(&[
        "restore",
        "--all",
        "--at",
        &rfc3339(t1),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(
        err.contains("fail verification") && err.contains("nothing was restored"),
        "{err}"
    );
    assert!(
        !target.exists() || fs::read_dir(&target).unwrap().next().is_none(),
        "a refused restore --all wrote into the target"
    );
}
