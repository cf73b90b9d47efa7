//! Restore from the offsite store against a real SeaweedFS (see
//! `common::s3`): `offsite sync` publishes a recovery set under
//! `<prefix>sets/` (and no new one while nothing changed); a dead board
//! with no stick, only its config, the `[offsite]` secret and the fleet
//! recovery key, comes back with `disaster-restore --from s3`: every tree
//! byte for byte and the database to the last commit shipped as a WAL
//! segment. A tampered or forged newest set is refused and the older one
//! used; a wrong recovery key, an empty prefix, wrong credentials and an
//! unreachable endpoint are one clear line each, with nothing restored.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::daemon::{patience, Daemon};
use common::offsite::{one_error_line, run};
use common::reference::{assert_restored, reference};
use common::s3::Seaweed;
use common::writer::Writer;
use common::{bin, output_within, recovery_keygen, text, Board, TempDir};
use rvm_backup::offsite::pace::Pacer;
use rvm_backup::offsite::s3::Body;

const PREFIX: &str = "fleet/board-7/";
const MID: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";

/// The board's config with `extra` top-level lines, a machine id, and an
/// `[offsite]` section pointing at `endpoint` with `prefix` and `secret`.
fn configure(b: &Board, extra: &str, endpoint: &str, bucket: &str, prefix: &str, secret: &str) {
    let mid = b.tmp.path().join("machine-id");
    fs::write(&mid, format!("{MID}\n")).unwrap();
    b.write_config(&format!(
        "backup_enabled = false\nmachine_id_file = \"{}\"\nmax_part_size = \"64K\"\n{extra}",
        mid.display()
    ));
    set_offsite(b, endpoint, bucket, prefix, secret);
}

fn set_offsite(b: &Board, endpoint: &str, bucket: &str, prefix: &str, secret: &str) {
    common::offsite::configure(b, endpoint, bucket, prefix, secret, "");
}

fn ok(b: &Board, args: &[&str]) -> String {
    let (out, err) = common::offsite::ok_both(b, args);
    let t = format!("{out}{err}");
    assert!(!t.contains("panicked"), "{t}");
    t
}

/// The names of the complete sets (with a MANIFEST) in the store.
fn remote_sets(s3: &Seaweed, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = s3
        .objects(&format!("{prefix}sets/"))
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(&format!("{prefix}sets/"))?
                .strip_suffix("/MANIFEST")
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// The card died: trees, database, backup_dir and master key are gone;
/// the config, the `[offsite]` secret and the recovery key are left.
fn kill(b: &Board) {
    for d in ["etc", "opt", "var"] {
        let _ = fs::remove_dir_all(b.root.join(d));
    }
    let _ = fs::remove_dir_all(&b.backups);
    let _ = fs::remove_file(&b.key);
    assert!(!b.db_path().exists());
}

fn from_s3(b: &Board, recovery: &Path) -> Output {
    let mut c = bin();
    c.arg("--config")
        .arg(&b.config)
        .args(["disaster-restore", "--from", "s3", "--recovery-key"])
        .arg(recovery);
    output_within(c, "disaster-restore --from s3")
}

/// Regular files below `dir` (none when it is missing).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Wait until the daemon shipped everything committed before `at_ms`.
fn wait_shipped(b: &Board, d: &Daemon, at_ms: i64) -> serde_json::Value {
    let deadline = Instant::now() + patience();
    loop {
        let s = d.json("STATUS")["pitr"].clone();
        if s["last_commit_unix_ms"]
            .as_i64()
            .is_some_and(|t| t >= at_ms)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped: {s}\n{}",
            fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Must-show: archives and WAL in the store, a dead board with no
/// stick, only the config and the recovery key: every strategy back byte
/// for byte, the database at the last shipped commit.
#[test]
fn a_dead_board_comes_back_from_the_store_to_the_last_shipped_commit() {
    let Some(s3) = Seaweed::new("offsite-restore") else {
        return;
    };
    let keys = TempDir::new("offsite-restore-keys");
    let recovery = keys.path().join("fleet-recovery.key");
    let public = recovery_keygen(&recovery);
    let b = Board::new("offsite-restore");
    let socket = b.tmp.path().join("rvm.sock");
    configure(
        &b,
        &format!(
            "socket = \"{}\"\nrecovery_public_key = \"{public}\"\n",
            socket.display()
        ),
        &s3.endpoint(),
        &s3.bucket,
        PREFIX,
        common::s3::SECRET,
    );
    b.enable_pitr();
    b.populate();
    let mut w = Writer::open(&b.db_path());
    w.commit(20);
    ok(&b, &["--quiet", "backup", "--all"]);

    // The daemon starts a generation and ships its segments; two batches
    // of commits after the snapshot.
    let d = Daemon::start(&b, &socket);
    let deadline = Instant::now() + patience() * 2;
    while d.json("STATUS")["pitr"]["generation"].as_str().is_none() {
        assert!(Instant::now() < deadline, "no generation");
        std::thread::sleep(Duration::from_millis(100));
    }
    let at_snapshot = w.last();
    let t = w.commit_and_date(&b.db_path(), 100);
    wait_shipped(&b, &d, t);
    let t = w.commit_and_date(&b.db_path(), 100);
    let s = wait_shipped(&b, &d, t);
    d.terminate();
    let shipped = w.last();
    drop(w);
    eprintln!("pitr status {s}");
    assert!(shipped > at_snapshot);

    // Everything goes to the store; the daemon's own syncs (after the
    // backup and the segments) or this one publish the set.
    let out = ok(&b, &["offsite", "sync"]);
    assert!(
        out.contains("published") || out.contains("is current"),
        "{out}"
    );
    let sets = remote_sets(&s3, PREFIX);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(s3
        .objects(PREFIX)
        .iter()
        .any(|o| o.key.contains("/database-wal/") && o.key.ends_with(".rvw")));
    // Nothing changed: no new set.
    let out = ok(&b, &["offsite", "sync"]);
    assert!(out.contains("is current"), "{out}");
    assert_eq!(remote_sets(&s3, PREFIX), sets);
    // The set in the store holds no plaintext of the board.
    let manifest = s3.get(&format!("{PREFIX}sets/{}/MANIFEST", sets[0]));
    let m = String::from_utf8_lossy(&manifest);
    assert!(m.starts_with("rvm-backup recovery set v1\n"), "{m}");
    assert!(m.contains("hmac-sha256 "), "{m}");

    let r = reference(&b, "offsite-restore-ref");
    kill(&b);
    // A dry run brings the set down and restores nothing; the staged
    // files stay for the real run, which fetches only what is not right
    // (one part damaged meanwhile, one temporary left by a power cut).
    let mut c = bin();
    c.arg("--config")
        .arg(&b.config)
        .args([
            "disaster-restore",
            "--from",
            "s3",
            "--dry-run",
            "--recovery-key",
        ])
        .arg(&recovery);
    let o = output_within(c, "disaster-restore --from s3 --dry-run");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("DRY RUN"), "{t}");
    assert!(t.contains("0 B staged already"), "{t}");
    assert!(!b.root.join("etc/myrvm").exists() && !b.db_path().exists());
    let stage = b.backups.join("offsite-restore");
    let mut parts: Vec<PathBuf> = files_below(&stage)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rvb"))
        .collect();
    parts.sort();
    assert!(parts.len() >= 4, "{parts:?}");
    let damaged = &parts[0];
    let mut bytes = fs::read(damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(damaged, &bytes).unwrap();
    fs::write(format!("{}.tmp", parts[1].display()), b"half a download").unwrap();

    let o = from_s3(&b, &recovery);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "{t}");
    assert!(t.contains("RESULT: RESTORED"), "{t}");
    assert!(!t.contains("0 B staged already"), "{t}");
    assert!(t.contains("From: the offsite store s3://"), "{t}");
    assert!(!t.contains("Stick:"), "{t}");
    assert!(
        !t.contains(" 0 B downloaded"),
        "the damaged part is fetched again: {t}"
    );
    assert!(t.contains(&sets[0]), "{t}");
    assert!(t.contains("restored to the commit at"), "{t}");
    assert_restored(&b, &r);
    let rows: i64 = rusqlite::Connection::open(b.db_path())
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, shipped, "every shipped row came back");
    // The board has its key ring back, and the staged files are gone.
    assert!(b.key.exists());
    assert!(files_below(&stage).is_empty(), "{:?}", files_below(&stage));
}

/// A copy of an object under another key (a forged set).
fn put_raw(s3: &Seaweed, key: &str, bytes: &[u8], overwrite: bool) {
    let mut c = s3.client();
    if overwrite {
        smol::block_on(c.call(
            "PUT",
            Some(key),
            &[],
            &[],
            Body::Bytes(bytes),
            &mut Pacer::new(None),
            None,
            "PUT",
        ))
        .unwrap();
    } else {
        s3.put(key, bytes);
    }
}

/// Without a recovery public key no set is published (and the sync says
/// so); with one, a set per change. A tampered newest set and a forged
/// newer one are refused, and the older set is used. A wrong recovery key,
/// an empty prefix, wrong credentials and no server: one line each, and
/// nothing is restored.
#[test]
fn tampered_sets_wrong_keys_and_unreachable_stores_are_refused() {
    let Some(s3) = Seaweed::new("offsite-refuse") else {
        return;
    };
    let keys = TempDir::new("offsite-refuse-keys");
    let recovery = keys.path().join("fleet-recovery.key");
    let public = recovery_keygen(&recovery);
    let wrong = keys.path().join("other-recovery.key");
    recovery_keygen(&wrong);
    let b = Board::new("offsite-refuse");
    configure(
        &b,
        "",
        &s3.endpoint(),
        &s3.bucket,
        PREFIX,
        common::s3::SECRET,
    );
    b.populate();
    ok(&b, &["--quiet", "backup", "--all"]);

    // Encryption on, no recovery key: archives go, no set, and it says so.
    let out = ok(&b, &["--quiet", "offsite", "sync"]);
    assert!(out.contains("no recovery set published"), "{out}");
    assert!(out.contains("recovery_public_key"), "{out}");
    assert!(remote_sets(&s3, PREFIX).is_empty());

    configure(
        &b,
        &format!("recovery_public_key = \"{public}\"\n"),
        &s3.endpoint(),
        &s3.bucket,
        PREFIX,
        common::s3::SECRET,
    );
    ok(&b, &["offsite", "sync"]);
    let first = remote_sets(&s3, PREFIX);
    assert_eq!(first.len(), 1, "{first:?}");
    let old = reference(&b, "offsite-refuse-old");

    // A change: a new config archive, a second set (named later).
    fs::write(b.root.join("etc/myrvm/plain.env"), b"A=changed\n").unwrap();
    ok(&b, &["--quiet", "backup", "config"]);
    ok(&b, &["offsite", "sync"]);
    let both = remote_sets(&s3, PREFIX);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[1] > both[0]);

    // The newest set is changed in the store (one byte of its JSON) and a
    // newer one is forged from it: both refused, the first set used.
    let key = format!("{PREFIX}sets/{}/MANIFEST", both[1]);
    let good = s3.get(&key);
    let text_m = String::from_utf8(good.clone()).unwrap();
    let tampered = text_m.replacen("\"entries\":", "\"entries\":1", 1);
    assert_ne!(tampered, text_m);
    put_raw(&s3, &key, tampered.as_bytes(), true);
    let forged = "set-29991231T235959Z";
    let sealed = s3.get(&format!("{PREFIX}sets/{}/key.sealed", both[1]));
    put_raw(
        &s3,
        &format!("{PREFIX}sets/{forged}/key.sealed"),
        &sealed,
        false,
    );
    put_raw(
        &s3,
        &format!("{PREFIX}sets/{forged}/MANIFEST"),
        text_m.replace(&both[1], forged).as_bytes(),
        false,
    );

    kill(&b);
    // A wrong recovery key: one line, nothing restored, nothing staged.
    let o = from_s3(&b, &wrong);
    let line = one_error_line(&o);
    assert!(line.contains("no key opens"), "{line}");
    assert!(!b.root.join("etc/myrvm").exists());
    assert!(
        files_below(&b.backups).is_empty(),
        "{:?}",
        files_below(&b.backups)
    );

    // The right key: the first set, with the refused ones noted.
    let o = from_s3(&b, &recovery);
    let t = text(&o);
    eprintln!("{t}");
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&first[0]), "{t}");
    assert!(
        t.contains(&format!("set {forged} in the store was not used")),
        "{t}"
    );
    assert!(
        t.contains(&format!("set {} in the store was not used", both[1])),
        "{t}"
    );
    assert_restored(&b, &old);

    // Restored from that set already: nothing to do, the staged files
    // stay; a request marker in the staging directory restores again.
    let stage = b.backups.join("offsite-restore");
    fs::remove_file(b.root.join("etc/myrvm/plain.env")).unwrap();
    let o = from_s3(&b, &recovery);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NOTHING RESTORED"), "{}", text(&o));
    assert!(!b.root.join("etc/myrvm/plain.env").exists());
    assert!(!files_below(&stage).is_empty());
    fs::write(stage.join("RESTORE-REQUEST"), b"").unwrap();
    let o = from_s3(&b, &recovery);
    assert!(text(&o).contains("RESULT: RESTORED"), "{}", text(&o));
    assert_restored(&b, &old);

    // One archive from the store on a board that has its key again but
    // no local archives: the newest config archive (the changed file).
    let _ = fs::remove_dir_all(b.backups.join("config"));
    let into = TempDir::new("offsite-one");
    let target = into.path().to_str().unwrap();
    ok(
        &b,
        &[
            "restore", "config", "latest", "--from", "offsite", "--target", target,
        ],
    );
    let restored = b.in_target(into.path(), &b.root.join("etc/myrvm/plain.env"));
    assert_eq!(fs::read(&restored).unwrap(), b"A=changed\n");
    assert!(
        files_below(&stage.join("store")).is_empty(),
        "{:?}",
        files_below(&stage)
    );
    let o = run(&b, &["restore", "--all", "--from", "offsite"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // An empty prefix, wrong credentials, no server: one line each.
    set_offsite(
        &b,
        &s3.endpoint(),
        &s3.bucket,
        "fleet/nobody/",
        common::s3::SECRET,
    );
    let line = one_error_line(&from_s3(&b, &recovery));
    assert!(line.contains("holds no recovery set"), "{line}");
    set_offsite(&b, &s3.endpoint(), &s3.bucket, PREFIX, "not-the-secret");
    let line = one_error_line(&from_s3(&b, &recovery));
    assert!(line.contains("rejected the credentials"), "{line}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    set_offsite(
        &b,
        &format!("http://127.0.0.1:{port}"),
        &s3.bucket,
        PREFIX,
        common::s3::SECRET,
    );
    let line = one_error_line(&from_s3(&b, &recovery));
    assert!(line.contains("cannot reach the offsite store"), "{line}");
}
