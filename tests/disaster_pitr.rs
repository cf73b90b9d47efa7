//! The Must-show of issue 9 on a real FAT32 stick: a board backs up and
//! exports, then keeps committing numbered rows while the daemon ships
//! the WAL to its store and, continuously, to the stick; the card dies;
//! `disaster-restore --from STICK` brings back every row the daemon
//! shipped (more than the exported archive holds), not just the archive.
//! Pulling the stick does not stop shipping to the store. Then a tampered
//! last segment on the stick: the restore stops at the
//! segment before it and says so.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon::{patience, Daemon};
use common::stick::{new_result, results, Stick};
use common::writer::Writer;
use common::{bin, recovery_keygen, Board, TempDir};
use rusqlite::Connection;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Rows of `t`: (count, max); the database must pass integrity_check.
fn rows(db: &Path) -> (i64, i64) {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    c.query_row("SELECT count(*), coalesce(max(n),0) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

fn pitr(d: &Daemon) -> serde_json::Value {
    d.json("STATUS")["pitr"].clone()
}

fn show_log(b: &Board) -> String {
    fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
}

/// Wait until everything committed before `committed_at_ms` was shipped
/// to the store and every segment of the generation is on the stick.
fn wait_on_stick(b: &Board, d: &Daemon, committed_at_ms: i64) -> serde_json::Value {
    let deadline = Instant::now() + patience();
    loop {
        let s = pitr(d);
        let shipped = s["last_commit_unix_ms"]
            .as_i64()
            .is_some_and(|t| t >= committed_at_ms);
        let on_stick = s["stick_segments"]
            .as_u64()
            .is_some_and(|n| s["segments"].as_u64() == Some(n) && n > 0);
        if shipped && on_stick {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped to the stick: {s}\n{}",
            show_log(b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stick's generation directory of `g` (one board on the stick), or
/// None while the daemon has not made the board's directory yet.
fn stick_generation(stick: &Path, g: &str) -> Option<PathBuf> {
    let board = fs::read_dir(stick.join("rvm-backup"))
        .ok()?
        .next()?
        .ok()?
        .path();
    Some(board.join("wal").join(g))
}

/// The card died: trees, database, backup_dir and master key are gone.
fn kill(b: &Board) {
    for d in ["etc", "opt", "var"] {
        let _ = fs::remove_dir_all(b.root.join(d));
    }
    let _ = fs::remove_dir_all(&b.backups);
    fs::remove_file(&b.key).unwrap();
    assert!(!b.db_path().exists());
}

fn disaster(b: &Board, stick: &Path, recovery: &Path) -> String {
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["disaster-restore", "--from"])
        .arg(stick)
        .arg("--recovery-key")
        .arg(recovery)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(out.status.success(), "disaster-restore: {text}");
    text
}

#[test]
fn a_dead_card_comes_back_to_the_last_shipped_commit() {
    let Some(mut stick) = Stick::new("disaster-pitr", 64) else {
        return;
    };
    let keys = TempDir::new("disaster-pitr-keys");
    let recovery = keys.path().join("fleet-recovery.key");
    let public = recovery_keygen(&recovery);
    let b = Board::new("disaster-pitr");
    let mid = b.tmp.path().join("machine-id");
    fs::write(&mid, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
    let socket = b.tmp.path().join("rvm.sock");
    b.write_config(&format!(
        "backup_enabled = false\nsocket = \"{}\"\nexport_dir = \"{}\"\nrecovery_public_key = \"{public}\"\nmachine_id_file = \"{}\"\nmax_part_size = \"64K\"\n",
        socket.display(),
        stick.dir.display(),
        mid.display()
    ));
    b.enable_pitr();
    b.populate();
    let mut w = Writer::open(&b.db_path());
    w.commit(20);
    b.ok(&["backup"]);
    w.commit(30);

    // The daemon starts a generation; with the stick in, it exports a set
    // whose database archive is that generation's snapshot.
    let d = Daemon::start(&b, &socket);
    let deadline = Instant::now() + patience() * 2;
    let g = loop {
        if let Some(g) = pitr(&d)["generation"].as_str() {
            // Polled before the daemon has written anything to the stick
            // (the board directory does not exist yet): not there is "wait".
            let seg0 = stick_generation(&stick.dir, g).map(|d| d.join("000000000000.rvw"));
            if seg0.is_some_and(|p| p.exists()) {
                break g.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no set with the generation's segments on the stick: {}\n{}",
            pitr(&d),
            show_log(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let at_snapshot = w.last();

    // More commits, shipped to the store and the stick, in two batches
    // (so the second is in later segments than the first).
    let t = w.commit_and_date(&b.db_path(), 150);
    wait_on_stick(&b, &d, t);
    let first_batch = w.last();
    let t = w.commit_and_date(&b.db_path(), 150);
    let s = wait_on_stick(&b, &d, t);
    let shipped = w.last();
    eprintln!("generation {g}, status {s}");
    assert!(s["stick_error"].is_null(), "{s}");

    // The stick is pulled: shipping to the store goes on, nothing breaks.
    stick.pull();
    w.commit(50);
    let committed = now_ms();
    let deadline = Instant::now() + patience();
    loop {
        let s = pitr(&d);
        if s["last_commit_unix_ms"]
            .as_i64()
            .is_some_and(|t| t >= committed - 50)
        {
            assert!(s["stick_segments"].is_null(), "no stick, no count: {s}");
            assert!(s["last_error"].is_null(), "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shipping stopped with the stick pulled: {s}\n{}",
            show_log(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.terminate();
    stick.mount();
    let w_after = w.last();
    drop(w);

    // The card dies; only the stick and the fleet's recovery key are left.
    kill(&b);
    let out = disaster(&b, &stick.dir, &recovery);
    let account = new_result(&stick.dir, &[]);
    eprintln!("{out}\n{account}");
    assert!(account.contains("RESULT: RESTORED"), "{account}");
    let (count, max) = rows(&b.db_path());
    assert_eq!(
        (count, max),
        (shipped, shipped),
        "every row shipped to the stick comes back (the archive had at most {at_snapshot}; the {} committed after the stick was pulled never reached it)",
        w_after - shipped
    );
    assert!(shipped > at_snapshot);
    assert!(account.contains("restored to the commit at"), "{account}");
    assert!(!account.contains("WARNING"), "{account}");

    // A tampered last segment on the stick: the restore stops at the one
    // before it, and says so.
    let dir = stick_generation(&stick.dir, &g).expect("the board's directory on the stick");
    let mut segs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rvw"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "{segs:?}");
    let last = segs.last().unwrap();
    let bytes = fs::read(last).unwrap();
    let mid = bytes.len() / 2;
    {
        // One byte, in place (fusefat refuses O_TRUNC on a file).
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(last).unwrap();
        f.write_all_at(&[bytes[mid] ^ 0x55], mid as u64).unwrap();
        f.sync_all().unwrap();
    }
    fs::write(stick.dir.join("RESTORE-REQUEST"), "").unwrap();
    let before = results(&stick.dir);
    disaster(&b, &stick.dir, &recovery);
    let account = new_result(&stick.dir, &before);
    eprintln!("{account}");
    assert!(account.contains("RESULT: RESTORED"), "{account}");
    assert!(account.contains("WARNING"), "{account}");
    assert!(account.contains("restored to the commit at"), "{account}");
    let (count, max) = rows(&b.db_path());
    assert_eq!(count, max, "the rows are a prefix");
    assert!(
        (first_batch..shipped).contains(&max),
        "restored to {max}: not before the first batch ({first_batch}), not the tampered tail ({shipped})"
    );
}
