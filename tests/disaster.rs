//! `disaster-restore` on a real FAT32 stick: export from a working board,
//! kill the board (source trees, database, backup_dir and master key
//! gone), bring it back with only the stick and the fleet's recovery key;
//! and every refusal: no key, a wrong key, a tampered set, other boards'
//! sets, a healthy board, a second run; SIGKILL at random instants.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::reference::{assert_restored, reference, TREES};
use common::stick::{new_result, results, Stick};
use common::{bin, db_dump, recovery_keygen, test_seed, text, xorshift, Board, TempDir};

const MIB: u64 = 64;

/// A board that can export: a recovery key pair, a machine id of its own,
/// small parts (several per archive on the stick).
struct Fixture {
    b: Board,
    /// The fleet's recovery private key (not on the board).
    recovery: PathBuf,
    machine_id: PathBuf,
    _keys: TempDir,
}

impl Fixture {
    fn new(name: &str, machine_id: &str) -> Fixture {
        Fixture::with_key(name, machine_id, None)
    }

    /// `recovery`: share another fixture's recovery key pair.
    fn with_key(name: &str, machine_id: &str, recovery: Option<(&Path, &str)>) -> Fixture {
        let keys = TempDir::new(&format!("{name}-keys"));
        let (recovery, public) = match recovery {
            Some((p, public)) => (p.to_path_buf(), public.to_string()),
            None => {
                let p = keys.path().join("fleet-recovery.key");
                let public = recovery_keygen(&p);
                (p, public)
            }
        };
        let b = Board::new(name);
        let mid = b.tmp.path().join("machine-id");
        fs::write(&mid, format!("{machine_id}\n")).unwrap();
        let f = Fixture {
            recovery,
            machine_id: mid,
            _keys: keys,
            b,
        };
        f.b.write_config(&f.extra(&public, ""));
        f
    }

    fn extra(&self, public: &str, more: &str) -> String {
        format!(
            "recovery_public_key = \"{public}\"\nmachine_id_file = \"{}\"\nmax_part_size = \"64K\"\n{more}",
            self.machine_id.display()
        )
    }

    fn public(&self) -> String {
        let text = fs::read_to_string(&self.b.config).unwrap();
        text.split("recovery_public_key = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }

    /// Populate, back up, change a file of each tree and back up again
    /// (so the exported tree archives are incrementals, whose chains the
    /// set must carry), export onto the stick.
    fn export_to(&self, stick: &Path) {
        self.b.populate();
        self.b.ok(&["backup"]);
        for t in TREES {
            fs::write(
                self.b.root.join(t).join("changed.txt"),
                "after the full one\n",
            )
            .unwrap();
        }
        self.b.ok(&["backup"]);
        for s in ["config", "logs", "application"] {
            let newest = self
                .b
                .list()
                .into_iter()
                .rfind(|v| v["strategy"] == s)
                .unwrap();
            assert!(newest["parent"].is_string(), "{s} is not incremental");
        }
        export(&self.b, stick);
    }

    fn disaster(&self, stick: &Path, more: &[&str]) -> Output {
        let mut c = bin();
        c.arg("--config")
            .arg(&self.b.config)
            .args(["disaster-restore", "--from"])
            .arg(stick)
            .args(more);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "panic: {err}");
        out
    }
}

/// `export --to STICK` (the real command).
fn export(b: &Board, stick: &Path) {
    b.ok(&["export", "--to", stick.to_str().unwrap()]);
}

/// The card died: trees, database, backup_dir and master key are gone.
fn kill(b: &Board) {
    for d in ["etc", "opt", "var"] {
        let _ = fs::remove_dir_all(b.root.join(d));
    }
    let _ = fs::remove_dir_all(&b.backups);
    fs::remove_file(&b.key).unwrap();
}

fn stick_listing(stick: &Path) -> Vec<(PathBuf, u64)> {
    let mut v = Vec::new();
    let mut stack = vec![stick.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            v.push((e.path(), m.len()));
        }
    }
    v.sort();
    v
}

const MID_A: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";
const MID_B: &str = "bbbbbbbbbbbb404aaa1f6d2a48adfda4";
const MID_C: &str = "cccccccccccc404aaa1f6d2a48adfda4";
const MID_NEW: &str = "0123456789ab404aaa1f6d2a48adfda4";

/// The Must-show case: export, dead board, only the stick and the
/// recovery key: every strategy byte for byte, the database row for row,
/// a readable account on the stick. Then a second run restores nothing,
/// and a request marker makes it restore again (and is consumed).
#[test]
fn dead_board_comes_back_from_the_stick_and_the_recovery_key() {
    let Some(stick) = Stick::new("disaster-main", MIB) else {
        return;
    };
    let f = Fixture::new("disaster-main", MID_A);
    f.export_to(&stick.dir);
    let r = reference(&f.b, "reference");
    kill(&f.b);
    // The freshly imaged card has a new machine id.
    fs::write(&f.machine_id, format!("{MID_NEW}\n")).unwrap();
    let out = f.disaster(
        &stick.dir,
        &["--recovery-key", f.recovery.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&f.b, &r);
    let account = new_result(&stick.dir, &[]);
    eprintln!("{account}");
    assert!(account.contains("RESULT: RESTORED"), "{account}");
    for s in ["config", "application", "database", "logs"] {
        assert!(
            account.contains(&format!("  {s}")),
            "{s} missing: {account}"
        );
    }
    assert!(account.contains("recovery key"), "{account}");
    assert!(
        !f.b.backups.join("disaster-restore.json").exists(),
        "the journal is removed when done"
    );
    assert!(f.b.backups.join("restored-sets.json").exists());

    // Second run: nothing to do, nothing touched.
    fs::write(f.b.root.join("etc/myrvm/plain.env"), "changed since\n").unwrap();
    let out = f.disaster(
        &stick.dir,
        &["--recovery-key", f.recovery.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already restored"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(f.b.root.join("etc/myrvm/plain.env")).unwrap(),
        "changed since\n"
    );

    // With a request marker: restored again, the marker renamed.
    fs::write(stick.dir.join("RESTORE-REQUEST"), "").unwrap();
    let before = results(&stick.dir);
    let out = f.disaster(
        &stick.dir,
        &["--recovery-key", f.recovery.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&f.b, &r);
    assert!(!stick.dir.join("RESTORE-REQUEST").exists());
    assert!(
        fs::read_dir(&stick.dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("RESTORE-REQUEST-DONE-")),
        "the marker is renamed, not deleted"
    );
    assert!(new_result(&stick.dir, &before).contains("consumed"));

    // The board goes on: the key ring the set was sealed with is back in
    // key_file (its own died with the card), so it backs up and reads its
    // archives with it.
    let ring = fs::read_to_string(&f.b.key).unwrap();
    assert_eq!(ring.lines().count(), 1, "one key, the set's");
    f.b.ok(&["backup", "--all"]);
    f.b.ok(&["verify", "--all"]);
}

/// No key anywhere, or another fleet's recovery key: nothing restored,
/// and the message names the recovery key the set is sealed to; the
/// same for the wrong key as the config's `recovery_key_file`. Then the
/// right key as `recovery_key_file` opens it, and on a board dead again
/// the key on the stick itself as rvm-recovery.key does.
#[test]
fn without_the_right_recovery_key_nothing_is_restored() {
    let Some(stick) = Stick::new("disaster-nokey", MIB) else {
        return;
    };
    let f = Fixture::new("disaster-nokey", MID_A);
    f.export_to(&stick.dir);
    let r = reference(&f.b, "reference");
    kill(&f.b);
    let out = f.disaster(&stick.dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    let public = f.public();
    let id = said.split("sealed to recovery key ").nth(1).unwrap_or("");
    assert!(
        !id.is_empty() && said.contains("rvm-recovery.key"),
        "{said}"
    );
    assert!(new_result(&stick.dir, &[]).contains("FAILED"));
    assert!(!f.b.root.join("etc").exists(), "nothing touched");
    assert!(!f.b.backups.join("disaster-restore.json").exists());

    let other = TempDir::new("other-fleet");
    let wrong = other.path().join("wrong.key");
    recovery_keygen(&wrong);
    let out = f.disaster(&stick.dir, &["--recovery-key", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not the one the set is sealed to"),
        "{}",
        text(&out)
    );
    assert!(!f.b.root.join("etc").exists(), "nothing touched");
    assert!(!public.is_empty());

    // The config's recovery_key_file is a key source of its own: the
    // wrong key there is refused in the same way…
    let configured = |key: &Path| {
        f.b.write_config(&f.extra(
            &public,
            &format!("recovery_key_file = \"{}\"\n", key.display()),
        ))
    };
    configured(&wrong);
    let out = f.disaster(&stick.dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("not the one the set is sealed to") && said.contains("wrong.key"),
        "{said}"
    );
    assert!(!f.b.root.join("etc").exists(), "nothing touched");
    // … and the right one restores, with no key on the stick and none on
    // the command line.
    configured(&f.recovery);
    let before = common::stick::results(&stick.dir);
    let out = f.disaster(&stick.dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&f.b, &r);
    let account = format!("{}{}", text(&out), new_result(&stick.dir, &before));
    assert!(
        account.contains(&f.recovery.display().to_string()),
        "the account names the configured key file: {account}"
    );

    // Dead again, without recovery_key_file: the key on the stick.
    f.b.write_config(&f.extra(&public, ""));
    for d in ["etc", "opt", "var"] {
        let _ = fs::remove_dir_all(f.b.root.join(d));
    }
    let _ = fs::remove_dir_all(&f.b.backups);
    let _ = fs::remove_file(&f.b.key);
    fs::write(
        stick.dir.join("rvm-recovery.key"),
        fs::read(&f.recovery).unwrap(),
    )
    .unwrap();
    let out = f.disaster(&stick.dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&f.b, &r);
}

/// Flip one byte of a pool part, or edit the MANIFEST: refused before
/// anything is touched, naming what is wrong.
#[test]
fn a_tampered_set_is_refused_before_anything_is_touched() {
    let Some(stick) = Stick::new("disaster-tamper", MIB) else {
        return;
    };
    let f = Fixture::new("disaster-tamper", MID_A);
    f.export_to(&stick.dir);
    kill(&f.b);
    fs::create_dir_all(f.b.root.join("etc/myrvm")).unwrap();
    fs::write(f.b.root.join("etc/myrvm/plain.env"), "live\n").unwrap();
    let key = f.recovery.to_str().unwrap().to_string();
    let board_dir = fs::read_dir(stick.dir.join("rvm-backup"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let part = fs::read_dir(board_dir.join("pool/application"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".001.rvb"))
        .expect("a second part");
    let good = fs::read(&part).unwrap();
    let at = good.len() / 2;
    // Overwrite one byte in place (fusefat refuses O_TRUNC on a file).
    let flip = |byte: u8| {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.write_all_at(&[byte], at as u64).unwrap();
        f.sync_all().unwrap();
    };
    flip(good[at] ^ 0x40);
    let out = f.disaster(&stick.dir, &["--recovery-key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&*part.file_name().unwrap().to_string_lossy())
            && text(&out).contains("does not match"),
        "{}",
        text(&out)
    );
    let untouched = |f: &Fixture| {
        assert_eq!(
            fs::read_to_string(f.b.root.join("etc/myrvm/plain.env")).unwrap(),
            "live\n"
        );
        assert!(!f.b.db_path().exists());
        assert!(!f.b.backups.join("disaster-restore.json").exists());
    };
    untouched(&f);
    flip(good[at]);

    let set = fs::read_dir(&board_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("set-"))
        .unwrap();
    let manifest = set.join("MANIFEST");
    let text0 = fs::read_to_string(&manifest).unwrap();
    // Still well-formed, but claims other content.
    let edited = text0.replacen("\"entries\":", "\"entries\":1", 1);
    assert_ne!(edited, text0);
    fs::remove_file(&manifest).unwrap();
    fs::write(&manifest, &edited).unwrap();
    let out = f.disaster(&stick.dir, &["--recovery-key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("MANIFEST"), "{}", text(&out));
    untouched(&f);
}

/// The process ids in the restore journal (`disaster-restore.json` in
/// backup_dir): the runs that worked on the restore it records. Empty
/// without a journal.
fn journal_pids(b: &Board) -> Vec<u64> {
    fs::read(b.backups.join("disaster-restore.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|j| {
            j["pids"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
        })
        .unwrap_or_default()
}

/// A SIGKILL at random instants, then a rerun: the board ends complete
/// and correct. Every other kill is aimed at the restore proper: a random
/// instant after the run's restore journal appears (its share of an
/// uninterrupted run, measured first), and the test proves that
/// at least one landed mid-restore: after the kill, the journal is there
/// and names the killed run (not only verification, which touches
/// nothing, was cut short).
#[test]
fn sigkill_at_random_instants_then_rerun() {
    let Some(stick) = Stick::new("disaster-kill", MIB) else {
        return;
    };
    let seed = test_seed("sigkill_at_random_instants_then_rerun");
    let f = Fixture::new("disaster-kill", MID_A);
    f.export_to(&stick.dir);
    let r = reference(&f.b, "reference");
    kill(&f.b);
    fs::write(
        stick.dir.join("rvm-recovery.key"),
        fs::read(&f.recovery).unwrap(),
    )
    .unwrap();
    let spawn = || {
        bin()
            .arg("--config")
            .arg(&f.b.config)
            .args(["--quiet", "disaster-restore", "--from"])
            .arg(&stick.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one uninterrupted run takes here, and when its journal
    // appears (the kills land within it, whatever the machine's speed).
    let t0 = std::time::Instant::now();
    let mut child = spawn();
    let mut journal_at = None;
    let st = loop {
        if journal_at.is_none() && f.b.backups.join("disaster-restore.json").exists() {
            journal_at = Some(t0.elapsed());
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let full = t0.elapsed();
    assert!(st.success(), "the uninterrupted run failed");
    assert_restored(&f.b, &r);
    // Not seen (a restore faster than the polling): aim at the second half.
    let journal_at = journal_at.unwrap_or(full / 2);
    eprintln!("an uninterrupted run took {full:?}, its journal appeared after {journal_at:?}");
    let mut next = xorshift(seed);
    let mut interrupted = 0;
    let mut mid_restore = 0;
    // The windows shrink to the fastest runs seen (warm caches): the
    // whole run, and the part of it after the journal appears.
    let mut window = full;
    let mut rest = full.saturating_sub(journal_at);
    for round in 0..8 {
        // A fresh disaster each round; up to three kills, then a rerun.
        for d in ["etc", "opt", "var"] {
            let _ = fs::remove_dir_all(f.b.root.join(d));
        }
        let _ = fs::remove_dir_all(&f.b.backups);
        for kill in 0..3 {
            // Every other kill is aimed at the restore itself: it waits
            // for this run's journal, then a random part of the rest.
            let u = (next() % 1000) as f64 / 1000.0;
            let aimed = (round + kill) % 2 == 0;
            let mut started = std::time::Instant::now();
            let mut child = spawn();
            let delay = if aimed {
                let pid = u64::from(child.id());
                while !journal_pids(&f.b).contains(&pid) && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                started = std::time::Instant::now();
                rest.mul_f64(u)
            } else {
                window.mul_f64(u)
            };
            std::thread::sleep(delay);
            let _ = child.kill();
            let st = child.wait().unwrap();
            let in_restore = journal_pids(&f.b).contains(&u64::from(child.id()));
            eprintln!(
                "round {round}, kill {kill} {}after {delay:?}: {st}{}",
                if aimed {
                    "(aimed: once the journal is there) "
                } else {
                    ""
                },
                if in_restore { ", mid-restore" } else { "" }
            );
            if st.success() {
                let took = started.elapsed().mul_f64(0.9);
                if aimed {
                    rest = rest.min(took);
                } else {
                    window = window.min(took);
                }
                break;
            }
            interrupted += 1;
            if in_restore {
                mid_restore += 1;
            }
        }
        let out = f.disaster(&stick.dir, &[]);
        assert!(
            out.status.success(),
            "seed {seed}, round {round}: {}",
            text(&out)
        );
        assert_restored(&f.b, &r);
        assert!(
            !f.b.backups.join("disaster-restore.json").exists(),
            "seed {seed}, round {round}: journal left"
        );
    }
    eprintln!(
        "{interrupted} runs were killed before they finished, {mid_restore} of them mid-restore"
    );
    assert!(interrupted > 0, "seed {seed}: no run was interrupted");
    assert!(
        mid_restore > 0,
        "seed {seed}: no kill landed after the restore journal was written"
    );
    // And once more: nothing to do.
    let out = f.disaster(&stick.dir, &[]);
    assert!(out.status.success());
    assert!(text(&out).contains("already restored"), "{}", text(&out));
}

/// Two other boards' sets on the stick: refused, listing both.
#[test]
fn other_boards_sets_are_refused_listing_the_boards() {
    let Some(stick) = Stick::new("disaster-others", MIB) else {
        return;
    };
    let a = Fixture::new("disaster-a", MID_A);
    a.export_to(&stick.dir);
    let b = Fixture::with_key("disaster-b", MID_B, Some((&a.recovery, &a.public())));
    b.export_to(&stick.dir);
    let c = Fixture::with_key("disaster-c", MID_C, Some((&a.recovery, &a.public())));
    kill(&c.b);
    let out = c.disaster(
        &stick.dir,
        &["--recovery-key", a.recovery.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("none matches")
            && said.contains("3d1219c7c4c5")
            && said.contains("bbbbbbbbbbbb"),
        "{said}"
    );
    assert!(!c.b.root.join("etc").exists());
    // Board B's own machine id picks board B's sets.
    let r = reference(&b.b, "reference");
    kill(&b.b);
    let out = b.disaster(
        &stick.dir,
        &["--recovery-key", a.recovery.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&b.b, &r);
}

/// A stick left in on a healthy board (its database changed since the
/// export): nothing restored. --dry-run touches nothing; --target restores
/// under the target and records nothing.
#[test]
fn healthy_board_dry_run_and_target() {
    let Some(stick) = Stick::new("disaster-healthy", MIB) else {
        return;
    };
    let f = Fixture::new("disaster-healthy", MID_A);
    f.export_to(&stick.dir);
    let r = reference(&f.b, "reference");
    // The platform keeps writing: the live database is newer than the set.
    std::thread::sleep(Duration::from_millis(1100));
    common::make_db(&f.b.db_path(), 3);
    let live = db_dump(&f.b.db_path());
    let key = f.recovery.to_str().unwrap().to_string();
    let out = f.disaster(&stick.dir, &["--recovery-key", &key]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not freshly imaged"), "{}", text(&out));
    assert_eq!(db_dump(&f.b.db_path()), live);
    assert!(new_result(&stick.dir, &[]).contains("NOTHING RESTORED"));

    // --target: restored under the target, nothing recorded.
    let target = TempDir::new("disaster-target");
    let out = f.disaster(
        &stick.dir,
        &[
            "--recovery-key",
            &key,
            "--target",
            target.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    for t in TREES {
        common::assert_same_tree(
            &r.copy.path().join(t),
            &f.b.in_target(target.path(), &f.b.root.join(t)),
        );
    }
    assert_eq!(db_dump(&f.b.in_target(target.path(), &f.b.db_path())), r.db);
    assert_eq!(db_dump(&f.b.db_path()), live, "the live board is untouched");
    assert!(!f.b.backups.join("restored-sets.json").exists());

    // --dry-run on a dead board: the plan, nothing written anywhere.
    kill(&f.b);
    let before = stick_listing(&stick.dir);
    let out = f.disaster(&stick.dir, &["--recovery-key", &key, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("WOULD RESTORE") && said.contains("database-"),
        "{said}"
    );
    assert_eq!(stick_listing(&stick.dir), before, "the stick is untouched");
    assert!(!f.b.root.join("etc").exists() && !f.b.backups.exists());
}

/// --boot: off when recovery_enabled = false; no stick in time is
/// nothing to do; --from s3 needs an [offsite] section and is not for --boot.
#[test]
fn boot_mode_and_s3() {
    let f = Fixture::new("disaster-boot", MID_A);
    let empty = TempDir::new("no-stick");
    let public = f.public();
    f.b.write_config(&f.extra(&public, "recovery_timeout = \"1s\""));
    let out = f.disaster(empty.path(), &["--boot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no recovery stick"), "{}", text(&out));
    f.b.write_config(&f.extra(&public, "recovery_enabled = false"));
    let out = f.disaster(empty.path(), &["--boot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recovery_enabled = false"),
        "{}",
        text(&out)
    );
    let out = f.disaster(Path::new("s3"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no [offsite] section"),
        "{}",
        text(&out)
    );
    let out = f.disaster(Path::new("s3"), &["--boot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Without --boot, a directory without sets is a failure.
    let out = f.disaster(empty.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("rvm-backup"), "{}", text(&out));
    assert!(
        results(empty.path()).is_empty(),
        "no account where no stick is"
    );
}

/// --boot on a board in service (its live database is there) does not
/// wait `recovery_timeout` for a stick that is not there: a healthy board
/// without a stick boots without delay. The timeout here is a day; the
/// bound checked is ten minutes, so only a wait that ignores the rule fails.
#[test]
fn boot_does_not_wait_on_a_board_in_service() {
    let f = Fixture::new("disaster-boot-healthy", MID_A);
    f.b.populate();
    let empty = TempDir::new("no-stick-healthy");
    let public = f.public();
    f.b.write_config(&f.extra(&public, "recovery_timeout = \"1d\""));
    let mut child = bin()
        .arg("--config")
        .arg(&f.b.config)
        .args(["disaster-restore", "--boot", "--from"])
        .arg(empty.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("--boot waited for a stick on a board in service");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("in service"), "{}", text(&out));
}

/// --boot with an interrupted restore (its journal in backup_dir) and no
/// stick: the board is half restored, so the unit fails (the platform,
/// which requires it, stays down) and says what to do. Even with the live
/// database there, an interrupted restore is never "in service".
#[test]
fn boot_fails_when_an_interrupted_restore_cannot_be_finished() {
    let f = Fixture::new("disaster-boot-interrupted", MID_A);
    f.b.populate();
    let empty = TempDir::new("no-stick-interrupted");
    let public = f.public();
    f.b.write_config(&f.extra(&public, "recovery_timeout = \"1s\""));
    fs::create_dir_all(&f.b.backups).unwrap();
    fs::write(
        f.b.backups.join("disaster-restore.json"),
        r#"{"version":1,"board":"b","set":"set-20261126T150000Z","started":1,"done":[],"pids":[]}"#,
    )
    .unwrap();
    let out = f.disaster(empty.path(), &["--boot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    // Without the journal the same board boots on.
    fs::remove_file(f.b.backups.join("disaster-restore.json")).unwrap();
    let out = f.disaster(empty.path(), &["--boot"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A write-protected stick: the board is restored all the same; the
/// account could not go onto the stick, which is a warning only.
#[test]
fn a_read_only_stick_still_restores() {
    let Some(mut stick) = Stick::new("disaster-ro", MIB) else {
        return;
    };
    let f = Fixture::new("disaster-ro", MID_A);
    f.export_to(&stick.dir);
    let r = reference(&f.b, "reference");
    kill(&f.b);
    stick.unmount();
    stick.mount_read_only();
    let out = f.disaster(
        &stick.dir,
        &["--recovery-key", f.recovery.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&f.b, &r);
    assert!(
        text(&out).contains("could not be written to the stick"),
        "{}",
        text(&out)
    );
    assert!(results(&stick.dir).is_empty());
}
