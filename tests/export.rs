//! `export --to DIR` onto a real FAT32 stick (fusefat): a complete set
//! (MANIFEST, key.sealed, pool) with FAT-safe names and several parts per
//! archive; re-export copies only what changed; `export_keep` drops old
//! sets and collects the pool; a pulled stick, a full stick, a read-only
//! stick, a directory that is no stick and a tampered pool file; SIGKILL
//! at random instants; after each failure the set left on the stick
//! restores on a dead board with only the recovery key; and the daemon's
//! `EXPORT` verb.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{patience, Daemon};
use common::stick::Stick;
use common::*;
use rvm_backup::recovery_set::{is_fat_safe, Manifest};

const MACHINE_ID: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";

/// A fleet recovery key pair: the private key file and the config line.
fn recovery_key(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("rvm-recovery.key");
    let public = common::recovery_keygen(&file);
    (file, format!("recovery_public_key = \"{public}\""))
}

/// A populated board configured for export: 64K parts, a recovery key, a
/// machine id of its own; `extra` adds config lines.
fn board(name: &str, extra: &str) -> Board {
    let b = Board::new(name);
    let (_, line) = recovery_key(b.tmp.path());
    let mid = b.tmp.path().join("machine-id");
    fs::write(&mid, format!("{MACHINE_ID}\n")).unwrap();
    b.write_config(&format!(
        "max_part_size = \"64K\"\n{line}\nmachine_id_file = \"{}\"\n{extra}",
        mid.display()
    ));
    b.populate();
    // Incompressible content: several 64K parts.
    fs::write(b.root.join("opt/myrvm/blob.bin"), pseudo_random(300_000, 7)).unwrap();
    b.ok(&["backup", "--all"]);
    b
}

fn stick(name: &str, mib: u64) -> Option<Stick> {
    Stick::new(name, mib)
}

/// The one board directory on the stick.
fn board_dir(stick: &Path) -> PathBuf {
    let root = stick.join("rvm-backup");
    let dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// Complete sets (with a MANIFEST), oldest first.
fn complete_sets(stick: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(board_dir(stick))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("set-"))
        .filter(|n| board_dir(stick).join(n).join("MANIFEST").is_file())
        .collect();
    v.sort();
    v
}

/// Open a set's manifest with the board's key ring and check every file
/// it names against its size and SHA-256; returns the manifest.
fn check_set(b: &Board, stick: &Path, set: &str) -> Manifest {
    let bd = board_dir(stick);
    let bytes = fs::read(bd.join(set).join("MANIFEST")).unwrap();
    let ring = rvm_backup::keys::load(&b.key).unwrap();
    let m = Manifest::open(&bytes, Some(&ring), true).unwrap();
    assert_eq!(m.set, set);
    assert!(m.encrypted);
    let sealed = m.sealed_key.clone().expect("a sealed key");
    let mut files = vec![(bd.join(set).join(&sealed.name), sealed)];
    for a in &m.archives {
        for f in &a.files {
            files.push((bd.join("pool").join(&f.name), f.clone()));
        }
    }
    for (p, f) in files {
        let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(data.len() as u64, f.bytes, "{}", p.display());
        assert_eq!(
            rvm_backup::crypto::sha256(&data),
            f.digest(),
            "{}",
            p.display()
        );
    }
    m
}

/// `verify --all` over the stick's pool, as a store of its own.
fn verify_pool(b: &Board, stick: &Path) {
    let cfg = b.tmp.path().join("pool.toml");
    fs::write(
        &cfg,
        format!(
            "backup_dir = \"{}\"\nkey_file = \"{}\"\n",
            board_dir(stick).join("pool").display(),
            b.key.display()
        ),
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--quiet", "verify", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify of the pool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn export(b: &Board, s: &Stick) -> String {
    b.ok(&["export", "--to", s.dir.to_str().unwrap()])
}

/// Every name under `dir` is FAT-safe.
fn all_fat_safe(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(is_fat_safe(&n), "{n:?} in {}", dir.display());
        if e.file_type().unwrap().is_dir() {
            all_fat_safe(&e.path());
        }
    }
}

fn line_of<'a>(out: &'a str, strategy: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{strategy} ")))
        .unwrap_or_else(|| panic!("no {strategy} line in {out}"))
}

fn copied_total(out: &str) -> u64 {
    let l = out.lines().find(|l| l.starts_with("total: ")).unwrap();
    l.strip_prefix("total: copied ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{l}"))
}

#[test]
fn export_writes_a_complete_set_and_reexport_copies_only_what_changed() {
    let b = board("export-basic", "");
    let Some(s) = stick("export-basic", 64) else {
        return;
    };
    let out = export(&b, &s);
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 1, "{out}");
    let m = check_set(&b, &s.dir, &sets[0]);
    assert_eq!(m.archives.len(), 4);
    assert_eq!(m.machine_id, MACHINE_ID);
    let app = m
        .archives
        .iter()
        .find(|a| a.strategy == "application")
        .unwrap();
    assert!(app.files.len() > 3, "several 64K parts: {:?}", app.files);
    all_fat_safe(&s.dir.join("rvm-backup"));
    verify_pool(&b, &s.dir);
    assert!(copied_total(&out) > 300_000, "{out}");
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(b.backups.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["database"]["last_export_ok"], true);
    assert_eq!(st["database"]["last_export_set"], sets[0].as_str());

    // Nothing changed: nothing copied, a new set all the same.
    let again = export(&b, &s);
    assert_eq!(copied_total(&again), 0, "{again}");
    assert!(line_of(&again, "application").contains("already on the stick"));

    // One new backup: only that archive is copied.
    fs::write(b.root.join("etc/myrvm/plain.env"), b"A=2\n").unwrap();
    b.ok(&["backup", "config"]);
    let third = export(&b, &s);
    assert!(line_of(&third, "config").contains("copied"), "{third}");
    for other in ["database", "logs", "application"] {
        assert!(
            line_of(&third, other).contains("already on the stick"),
            "{third}"
        );
    }
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 3, "export_keep defaults to 3");
    let m = check_set(&b, &s.dir, sets.last().unwrap());
    // The new config archive is an incremental: its set names its parent
    // (already on the stick) too, so the set restores on its own.
    let config = b
        .list()
        .into_iter()
        .rfind(|v| v["strategy"] == "config")
        .unwrap();
    let parent = config["parent"]
        .as_str()
        .expect("an incremental")
        .to_string();
    let listed = m.archives.iter().find(|a| a.strategy == "config").unwrap();
    assert_eq!(listed.id, config["id"].as_str().unwrap());
    assert!(
        listed
            .files
            .iter()
            .any(|f| f.name == format!("config/{parent}.meta")),
        "{:?}",
        listed.files
    );
    assert!(!pool_files_of(&s.dir, "config", &parent).is_empty());

    // A database incremental: its set names its whole chain too.
    common::make_db(&b.db_path(), 5);
    b.ok(&["backup", "database"]);
    export(&b, &s);
    let m = check_set(&b, &s.dir, complete_sets(&s.dir).last().unwrap());
    let db = b
        .list()
        .into_iter()
        .rfind(|v| v["strategy"] == "database")
        .unwrap();
    let parent = db["parent"].as_str().expect("an incremental").to_string();
    let listed = m
        .archives
        .iter()
        .find(|a| a.strategy == "database")
        .unwrap();
    assert_eq!(listed.id, db["id"].as_str().unwrap());
    assert!(
        listed
            .files
            .iter()
            .any(|f| f.name == format!("database/{parent}.meta")),
        "{:?}",
        listed.files
    );
}

#[test]
fn export_keep_drops_old_sets_and_collects_the_pool() {
    let b = board("export-keep", "export_keep = 2");
    let Some(s) = stick("export-keep", 64) else {
        return;
    };
    let mut config_ids = Vec::new();
    for i in 0..3 {
        if i > 0 {
            fs::write(b.root.join("etc/myrvm/plain.env"), format!("A={i}\n")).unwrap();
            // Full archives: an incremental's set also names its chain.
            b.ok(&["backup", "--full", "config"]);
        }
        config_ids.push(b.ids("config").last().unwrap().clone());
        export(&b, &s);
    }
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 2, "{sets:?}");
    for set in &sets {
        check_set(&b, &s.dir, set);
    }
    let pool_config: Vec<String> = fs::read_dir(board_dir(&s.dir).join("pool/config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !pool_config.iter().any(|n| n.starts_with(&config_ids[0])),
        "the first config archive is referenced by no set any more: {pool_config:?}"
    );
    for id in &config_ids[1..] {
        assert!(
            pool_config.iter().any(|n| n == &format!("{id}.meta")),
            "{id}: {pool_config:?}"
        );
    }
    // A foreign file in the board directory and the pool stays.
    let foreign = board_dir(&s.dir).join("pool/config/NOTES.TXT");
    fs::write(&foreign, b"mine").unwrap();
    export(&b, &s);
    assert_eq!(fs::read(&foreign).unwrap(), b"mine");
    verify_pool(&b, &s.dir);
}

/// The files of the pool directory of `strategy` whose names start with `id`.
fn pool_files_of(stick: &Path, strategy: &str, id: &str) -> Vec<String> {
    fs::read_dir(board_dir(stick).join("pool").join(strategy))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(id))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_stick_pulled_mid_export_leaves_the_previous_set_complete() {
    let b = board("export-pull", "");
    let Some(mut s) = stick("export-pull", 96) else {
        return;
    };
    export(&b, &s);
    let exported = expected(&b);
    let before = complete_sets(&s.dir);
    assert_eq!(before.len(), 1);
    // A big new application archive, so the export takes a while.
    fs::write(
        b.root.join("opt/myrvm/big.bin"),
        pseudo_random(24 << 20, 11),
    )
    .unwrap();
    b.ok(&["backup", "application"]);
    let new_id = b.ids("application").last().unwrap().clone();
    let mut child = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["--quiet", "export", "--to"])
        .arg(&s.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while pool_files_of(&s.dir, "application", &new_id).len() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before the stick could be pulled"
        );
        assert!(
            Instant::now() < deadline,
            "the export never started copying"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    s.pull();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the export passed with the stick pulled"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("error:") && err.contains("stick"), "{err}");
    assert!(
        !s.dir.join("rvm-backup").exists(),
        "nothing was written onto the board's own disk"
    );

    s.mount();
    assert_eq!(complete_sets(&s.dir), before, "no new set counts");
    check_set(&b, &s.dir, &before[0]);
    verify_pool(&b, &s.dir);
    assert_restorable(&b, &s.dir, &exported);
    // Plugged in again: the next export finishes the job and cleans up.
    export(&b, &s);
    let after = complete_sets(&s.dir);
    assert_eq!(after.len(), 2);
    let m = check_set(&b, &s.dir, after.last().unwrap());
    assert!(m.archives.iter().any(|a| a.id == new_id));
    let tmp: Vec<String> = pool_files_of(&s.dir, "application", &new_id)
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn a_full_stick_is_a_clear_error_and_the_previous_set_stays() {
    let b = board("export-full", "");
    let Some(s) = stick("export-full", 34) else {
        return;
    };
    // Someone else's file fills most of the stick.
    fs::write(s.dir.join("FILLER.BIN"), vec![0u8; 24 << 20]).unwrap();
    export(&b, &s);
    let exported = expected(&b);
    let before = complete_sets(&s.dir);
    assert_eq!(before.len(), 1);
    fs::write(
        b.root.join("opt/myrvm/big.bin"),
        pseudo_random(10 << 20, 22),
    )
    .unwrap();
    b.ok(&["backup", "application"]);
    let err = b.fails(&["export", "--to", s.dir.to_str().unwrap()]);
    assert!(
        err.contains("is full")
            && err.contains("bytes were needed")
            && err.contains("previous set is intact"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert_eq!(complete_sets(&s.dir), before);
    check_set(&b, &s.dir, &before[0]);
    verify_pool(&b, &s.dir);
    assert_restorable(&b, &s.dir, &exported);
    let tmp: Vec<String> = fs::read_dir(board_dir(&s.dir).join("pool/application"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "the temporary file was removed: {tmp:?}");
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(b.backups.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["application"]["last_export_ok"], false);
    assert_eq!(st["application"]["last_export_set"], before[0].as_str());
    assert_eq!(
        fs::metadata(s.dir.join("FILLER.BIN")).unwrap().len(),
        24 << 20
    );
}

#[test]
fn read_only_sticks_and_places_without_a_stick_are_refused() {
    let b = board("export-refused", "");
    // A plain directory on the board's own disk.
    let plain = b.tmp.path().join("not-a-stick");
    fs::create_dir_all(&plain).unwrap();
    let err = b.fails(&["export", "--to", plain.to_str().unwrap()]);
    assert!(err.contains("no stick mounted at"), "{err}");
    assert_eq!(fs::read_dir(&plain).unwrap().count(), 0);
    let err = b.fails(&["export", "--to", "/nonexistent/stick"]);
    assert!(err.contains("no stick mounted at"), "{err}");
    // A tmpfs is no stick either.
    if Path::new("/dev/shm").is_dir() {
        let shm = PathBuf::from(format!("/dev/shm/rvb-export-{}", std::process::id()));
        fs::create_dir_all(&shm).unwrap();
        let err = b.fails(&["export", "--to", shm.to_str().unwrap()]);
        fs::remove_dir_all(&shm).unwrap();
        assert!(err.contains("not FAT/ext"), "{err}");
    }
    // The configured export_dir is the default.
    let err = b.fails(&["export"]);
    assert!(
        err.contains("no stick mounted at /media/rvm-recovery"),
        "{err}"
    );

    let Some(mut s) = stick("export-ro", 64) else {
        return;
    };
    s.unmount();
    s.mount_read_only();
    let err = b.fails(&["export", "--to", s.dir.to_str().unwrap()]);
    assert!(
        err.contains("read-only") && err.contains("write-protect"),
        "{err}"
    );
}

#[test]
fn encryption_without_a_recovery_key_is_refused_with_the_fix() {
    let b = Board::new("export-nokey");
    b.populate();
    b.ok(&["backup", "config"]);
    let Some(s) = stick("export-nokey", 64) else {
        return;
    };
    let err = b.fails(&["export", "--to", s.dir.to_str().unwrap()]);
    assert!(
        err.contains("recovery_public_key") && err.contains("keygen --recovery"),
        "{err}"
    );
    assert!(!s.dir.join("rvm-backup").exists());
}

/// A board whose disaster restore was interrupted (its journal is in
/// backup_dir) exports nothing: its half-restored state must not push the
/// good sets off the stick.
#[test]
fn no_export_while_a_disaster_restore_is_unfinished() {
    let b = board("export-journal", "");
    let Some(s) = stick("export-journal", 64) else {
        return;
    };
    let journal = b.backups.join("disaster-restore.json");
    fs::write(
        &journal,
        r#"{"version":1,"board":"b","set":"set-20261126T150000Z","started":1,"done":[],"pids":[]}"#,
    )
    .unwrap();
    let err = b.fails(&["export", "--to", s.dir.to_str().unwrap()]);
    assert!(err.contains("interrupted"), "{err}");
    assert!(!s.dir.join("rvm-backup").exists());
    fs::remove_file(&journal).unwrap();
    export(&b, &s);
}

#[test]
fn a_damaged_pool_file_is_found_and_copied_again() {
    let b = board("export-tamper", "");
    let Some(s) = stick("export-tamper", 64) else {
        return;
    };
    export(&b, &s);
    let id = b.ids("application").last().unwrap().clone();
    let part = board_dir(&s.dir).join(format!("pool/application/{id}.001.rvb"));
    let bytes = fs::read(&part).unwrap();
    // In place (fusefat cannot truncate a file).
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(&[bytes[100] ^ 0x40]).unwrap();
    }
    assert_ne!(fs::read(&part).unwrap(), bytes);
    let out = export(&b, &s);
    let line = line_of(&out, "application");
    assert!(
        line.contains("copied 64.0 KiB") || line.contains("copied"),
        "{out}"
    );
    assert_eq!(copied_total(&out), bytes.len() as u64, "{out}");
    for set in complete_sets(&s.dir) {
        check_set(&b, &s.dir, &set);
    }
}

#[test]
fn an_unencrypted_board_writes_an_unauthenticated_set_without_a_key() {
    let b = board("export-plain", "encryption_enabled = false");
    let Some(s) = stick("export-plain", 64) else {
        return;
    };
    export(&b, &s);
    let sets = complete_sets(&s.dir);
    let set_dir = board_dir(&s.dir).join(&sets[0]);
    assert!(!set_dir.join("key.sealed").exists());
    let m = Manifest::open(&fs::read(set_dir.join("MANIFEST")).unwrap(), None, false).unwrap();
    assert!(!m.encrypted && m.sealed_key.is_none());
}

#[test]
fn the_daemon_exports_on_request_and_on_schedule() {
    let Some(s) = stick("export-daemon", 64) else {
        return;
    };
    let b = board("export-daemon", "");
    let socket = prepend_config(
        &b,
        &format!(
            "backup_enabled = false\nexport_dir = \"{}\"",
            s.dir.display()
        ),
    );
    let d = Daemon::start(&b, &socket);

    let job = d.json(&format!("EXPORT {}", s.dir.display()))["job"]
        .as_u64()
        .unwrap();
    let j = d.wait_job(job);
    assert_eq!(j["state"], "done", "{j}");
    assert!(j["outcome"].as_str().unwrap().contains("verified"), "{j}");
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 1);
    check_set(&b, &s.dir, &sets[0]);
    let status = d.json("STATUS");
    assert_eq!(status["last_export"]["ok"], true, "{status}");
    assert_eq!(status["last_export"]["set"], sets[0].as_str(), "{status}");
    assert_eq!(
        status["strategies"]["config"]["last_export"]["set"],
        sets[0].as_str()
    );
    // Without a directory: export_dir.
    let job = d.json("EXPORT")["job"].as_u64().unwrap();
    assert_eq!(d.wait_job(job)["state"], "done");
    assert_eq!(complete_sets(&s.dir).len(), 2);
    // Bad requests.
    let r = d.try_request("EXPORT relative/dir").unwrap();
    assert!(r.starts_with("ERR 400"), "{r}");
    let r = d.try_request("EXPORT /a /b").unwrap();
    assert!(r.starts_with("ERR 400"), "{r}");
    // A directory that holds no stick: the job fails and says why.
    let job = d.json(&format!("EXPORT {}", b.tmp.path().display()))["job"]
        .as_u64()
        .unwrap();
    let j = d.wait_job(job);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["outcome"]
            .as_str()
            .unwrap()
            .contains("no stick mounted at"),
        "{j}"
    );
    let history = d.json("HISTORY").to_string();
    assert!(history.contains("export to"), "{history}");
}

/// Put top-level lines (and a socket in the board's scratch space) in
/// front of the board's config; returns the socket.
fn prepend_config(b: &Board, lines: &str) -> PathBuf {
    let socket = b.tmp.path().join("run/control.sock");
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        format!("socket = \"{}\"\n{lines}\n{text}", socket.display()),
    )
    .unwrap();
    socket
}

#[test]
fn the_daemon_exports_on_its_own_when_a_stick_is_there() {
    let Some(s) = stick("export-sched", 64) else {
        return;
    };
    let b = board("export-sched", "");
    let socket = prepend_config(
        &b,
        &format!(
            "backup_interval = \"1d\"\nexport_interval = \"1s\"\nexport_dir = \"{}\"",
            s.dir.display()
        ),
    );
    let d = Daemon::start(&b, &socket);
    let deadline = Instant::now() + patience() * 3;
    loop {
        let status = d.json("STATUS");
        if status["last_export"]["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled export: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    let sets = complete_sets(&s.dir);
    assert!(!sets.is_empty());
    check_set(&b, &s.dir, sets.last().unwrap());
}

/// What the board's trees and database hold now: what a set exported now
/// must restore (excluded names left out).
struct Expected {
    trees: Vec<(PathBuf, std::collections::BTreeMap<PathBuf, String>)>,
    db: Vec<String>,
}

const TREES: [&str; 3] = ["etc/myrvm", "opt/myrvm", "var/log/myrvm"];

fn expected(b: &Board) -> Expected {
    let trees = TREES
        .iter()
        .map(|t| {
            let src = b.root.join(t);
            let mut snap = snapshot(&src);
            snap.retain(|p, _| {
                let p = p.to_string_lossy();
                !p.contains("__pycache__") && !p.ends_with(".pyc")
            });
            (src, snap)
        })
        .collect();
    Expected {
        trees,
        db: db_dump(&b.db_path()),
    }
}

/// The newest complete set on the stick is really restorable, as on a
/// dead board: `disaster-restore --target T --from STICK --recovery-key
/// KEY` with a config whose master key and backup_dir are gone (only the
/// fleet's recovery key opens the set) puts back exactly `e`.
fn assert_restorable(b: &Board, stick: &Path, e: &Expected) {
    let scratch = TempDir::new("export-restorable");
    let text = fs::read_to_string(&b.config).unwrap();
    let dead = text
        .replace(
            &format!("key_file = \"{}\"", b.key.display()),
            &format!(
                "key_file = \"{}\"",
                scratch.path().join("gone.key").display()
            ),
        )
        .replace(
            &format!("backup_dir = \"{}\"", b.backups.display()),
            &format!(
                "backup_dir = \"{}\"",
                scratch.path().join("backups").display()
            ),
        );
    assert_ne!(dead, text);
    let cfg = scratch.path().join("dead.toml");
    fs::write(&cfg, dead).unwrap();
    let target = scratch.path().join("target");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(&cfg)
        .args(["disaster-restore", "--from"])
        .arg(stick)
        .arg("--recovery-key")
        .arg(b.tmp.path().join("rvm-recovery.key"))
        .arg("--target")
        .arg(&target);
    let out = output_within(cmd, "disaster-restore --target");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "disaster-restore: {said}");
    assert!(!said.contains("panicked"), "{said}");
    for (src, snap) in &e.trees {
        let restored = b.in_target(&target, src);
        assert_eq!(
            &snapshot(&restored),
            snap,
            "{} as restored from the stick",
            src.display()
        );
    }
    assert_eq!(
        db_dump(&b.in_target(&target, &b.db_path())),
        e.db,
        "database rows restored from the stick"
    );
}

/// SIGKILL of `export` at random instants (seeded, printed): after each,
/// every complete set on the stick is whole (each file its manifest's
/// size and hash) and the set before the killed export is still there;
/// the set left newest restores on a dead board; a rerun completes.
#[test]
fn export_killed_at_random_instants_leaves_the_previous_set_whole() {
    let b = board("export-kill", "");
    let Some(s) = stick("export-kill", 96) else {
        return;
    };
    let seed = test_seed("export_killed_at_random_instants");
    let mut next = xorshift(seed);
    // The first window: the first export's time (it copies everything).
    let t0 = Instant::now();
    export(&b, &s);
    let mut window = t0.elapsed();
    let mut previous = complete_sets(&s.dir);
    assert_eq!(previous.len(), 1);
    let mut exported = expected(&b);
    let mut interrupted = 0;
    for round in 0..8 {
        // Something new to copy: a fresh application archive.
        fs::write(
            b.root.join(format!("opt/myrvm/new-{round}.bin")),
            pseudo_random(512 << 10, seed ^ round),
        )
        .unwrap();
        b.ok(&["backup", "application"]);
        let new_id = b.ids("application").last().unwrap().clone();
        let now = expected(&b);
        let delay = window.mul_f64((next() % 1000) as f64 / 1000.0);
        let started = Instant::now();
        let mut child = bin()
            .arg("--config")
            .arg(&b.config)
            .args(["--quiet", "export", "--to"])
            .arg(&s.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let st = child.wait().unwrap();
        let sets = complete_sets(&s.dir);
        eprintln!(
            "round {round}: killed after {delay:?}: {st}; {} files of the new archive on the stick; complete sets {sets:?}",
            pool_files_of(&s.dir, "application", &new_id).len()
        );
        let last = previous.last().unwrap();
        assert!(
            sets.contains(last),
            "seed {seed}, round {round}: the previous set {last} is gone: {sets:?}"
        );
        for set in &sets {
            check_set(&b, &s.dir, set);
        }
        if sets.last() != Some(last) {
            // The kill came after the new set was complete.
            exported = now;
        } else {
            interrupted += 1;
        }
        // Kills that all land early widen the window; a finished export
        // bounds it.
        if st.success() {
            window = started.elapsed().mul_f64(0.9);
        } else {
            window = window.mul_f64(1.8);
        }
        previous = sets;
    }
    eprintln!("{interrupted} of 8 exports were killed before their set was complete");
    assert!(interrupted > 0, "seed {seed}: no export was interrupted");
    // The newest complete set restores what the board held when it was
    // exported.
    assert_restorable(&b, &s.dir, &exported);
    // A rerun completes, with nothing half-written left behind.
    export(&b, &s);
    let sets = complete_sets(&s.dir);
    assert_ne!(sets.last(), previous.last(), "no new set");
    check_set(&b, &s.dir, sets.last().unwrap());
    let tmp: Vec<String> = fs::read_dir(board_dir(&s.dir).join("pool/application"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert_restorable(&b, &s.dir, &expected(&b));
}
