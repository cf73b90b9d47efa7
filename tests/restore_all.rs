//! Full-system restore (`restore --all [--at TIME]`, `RESTORE all`) and the
//! recovery hooks around in-place restores, through the real binary.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TREES: [&str; 3] = ["etc/myrvm", "opt/myrvm", "var/log/myrvm"];

/// Newest `created` of the archives listed so far (RFC 3339).
fn newest_created(b: &Board) -> String {
    b.list()
        .iter()
        .map(|v| v["created"].as_str().unwrap().to_string())
        .max()
        .unwrap()
}

/// Wait until the clock is past `created` by a whole second, so the next
/// archives carry a later time (archives have second resolution).
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Change every strategy's sources.
fn change_everything(b: &Board) {
    fs::write(b.root.join("etc/myrvm/plain.env"), b"A=changed\n").unwrap();
    fs::write(b.root.join("etc/myrvm/new.conf"), b"new\n").unwrap();
    fs::write(b.root.join("opt/myrvm/with space.conf"), b"changed code\n").unwrap();
    fs::write(b.root.join("var/log/myrvm/platform.log"), b"rotated away\n").unwrap();
    make_db(&b.db_path(), 300); // 300 more rows
}

fn without_excluded(mut s: BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    s.retain(|p, _| {
        let p = p.to_string_lossy();
        !p.contains("__pycache__") && !p.ends_with(".pyc")
    });
    s
}

fn trees(b: &Board, base: &Path) -> Vec<BTreeMap<PathBuf, String>> {
    TREES
        .iter()
        .map(|t| without_excluded(snapshot(&b.in_target(base, &b.root.join(t)))))
        .collect()
}

#[test]
fn restore_all_at_t1_brings_back_every_strategy_as_of_t1() {
    let b = Board::new("rall-at");
    b.populate();
    b.ok(&["backup", "--all"]);
    let t1 = newest_created(&b);
    let trees_t1: Vec<_> = TREES
        .iter()
        .map(|t| without_excluded(snapshot(&b.root.join(t))))
        .collect();
    let db_t1 = db_dump(&b.db_path());
    next_second();
    change_everything(&b);
    b.ok(&["backup", "--all"]);
    let db_t2 = db_dump(&b.db_path());
    assert_ne!(db_t1, db_t2);
    let ids_t1: Vec<String> = ["config", "application", "database", "logs"]
        .iter()
        .map(|s| b.ids(s)[0].clone())
        .collect();

    let target = b.tmp.path().join("restored-t1");
    let out = bin()
        .arg("--config")
        .arg(&b.config)
        .args(["restore", "--all", "--at", &t1, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per strategy, in the restore order, naming the T1 archives;
    // then the summary.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (line, id) in lines.iter().zip(&ids_t1) {
        assert!(line.contains(id.as_str()), "{line} should name {id}");
    }
    assert!(
        lines[4].starts_with("restored all 4 strategies as of"),
        "{stdout}"
    );
    assert_eq!(trees(&b, &target), trees_t1, "trees differ from T1");
    let db = b.in_target(&target, &b.db_path());
    assert_eq!(db_dump(&db), db_t1, "database differs from T1");

    // Without --at: the newest archives (T2).
    let latest = b.tmp.path().join("restored-latest");
    b.ok(&["restore", "--all", "--target", latest.to_str().unwrap()]);
    assert_eq!(db_dump(&b.in_target(&latest, &b.db_path())), db_t2);

    // --file and a strategy do not go with --all.
    let err = b.fails(&["restore", "--all", "--file", "/etc/x", "--target", "/tmp/x"]);
    assert!(err.contains("--file"), "{err}");
    let err = b.fails(&["restore", "--all", "config"]);
    assert!(err.contains("no strategy"), "{err}");
}

#[test]
fn at_before_a_strategys_first_backup_names_it_and_restores_nothing() {
    let b = Board::new("rall-early");
    b.populate();
    b.ok(&["backup", "config"]);
    let t0 = newest_created(&b);
    next_second();
    b.ok(&["backup", "--all"]);
    let target = b.tmp.path().join("restored");
    let err = b.fails(&[
        "restore",
        "--all",
        "--at",
        &t0,
        "--target",
        target.to_str().unwrap(),
    ]);
    for s in ["database", "logs", "application"] {
        assert!(err.contains(&format!("no {s} archive from")), "{s}: {err}");
    }
    assert!(!err.contains("no config archive"), "{err}");
    assert!(err.contains("nothing was restored"), "{err}");
    assert!(!target.exists(), "something was restored into {target:?}");
    // A time before every backup: every strategy is named.
    let err = b.fails(&["restore", "--all", "--at", "2000-01-01T00:00:00Z"]);
    assert!(err.contains("4 configured strategies"), "{err}");
}

#[test]
fn a_damaged_archive_is_refused_before_anything_is_touched() {
    let b = Board::new("rall-damaged");
    b.populate();
    b.ok(&["backup", "--all"]);
    // The logs archive is restored last: if it were not checked first,
    // the other three would already be in place.
    let id = b.ids("logs")[0].clone();
    let part = archive_files(&b.backups, &id)
        .into_iter()
        .find(|p| p.extension().unwrap() == "rvb")
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&part, &bytes).unwrap();
    let target = b.tmp.path().join("restored");
    let err = b.fails(&["restore", "--all", "--target", target.to_str().unwrap()]);
    assert!(
        err.contains(&id) && err.contains("fails verification"),
        "{err}"
    );
    assert!(err.contains("nothing was restored"), "{err}");
    assert!(!target.exists(), "something was restored into {target:?}");
    // In place too: the live board stays as it is.
    change_everything(&b);
    let before = snapshot(&b.root);
    b.fails(&["restore", "--all"]);
    assert_eq!(snapshot(&b.root), before, "the live board was touched");
}

/// `restore --all` reads each archive once: it stages every strategy
/// (checking it as it writes) before publishing any. Damage at the very end
/// of the last strategy's archive (its final frame and tail, read after
/// every entry of every strategy was staged) must still leave everything as
/// it was: no target, no staged name left behind, the live board
/// unchanged, and in place the platform started again.
#[test]
fn damage_at_the_end_of_the_last_archive_leaves_everything_as_it_was() {
    let b = board_with_hooks("rall-tail", "30s");
    b.populate();
    b.ok(&["backup", "--all"]);
    let id = b.ids("logs")[0].clone();
    let part = archive_files(&b.backups, &id)
        .into_iter()
        .rfind(|p| p.extension().unwrap() == "rvb")
        .unwrap();
    let pristine = fs::read(&part).unwrap();
    // The last byte (the tail), then a byte of the final frame's tag.
    for back in [1, 20] {
        let mut bytes = pristine.clone();
        let at = bytes.len() - back;
        bytes[at] ^= 0x01;
        fs::write(&part, &bytes).unwrap();
        let target = b.tmp.path().join(format!("restored-{back}"));
        let err = b.fails(&["restore", "--all", "--target", target.to_str().unwrap()]);
        assert!(
            err.contains(&id) && err.contains("fails verification"),
            "{err}"
        );
        assert!(err.contains("nothing was restored"), "{err}");
        assert!(!target.exists(), "something was left in {target:?}");
        // In place: the other three strategies were staged beside the live
        // files; none of them may be published, none left behind.
        change_everything(&b);
        let before = snapshot(&b.root);
        let hooks_before = hook_log(&b).len();
        let err = b.fails(&["restore", "--all"]);
        assert!(err.contains("nothing was restored"), "{err}");
        assert_eq!(snapshot(&b.root), before, "the live board was touched");
        let hooks: Vec<String> = hook_log(&b)
            .into_iter()
            .skip(hooks_before)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            hooks,
            vec!["stop", "start"],
            "the platform was not started again"
        );
    }
    // Undamaged again, the same restore goes through.
    fs::write(&part, &pristine).unwrap();
    b.ok(&["restore", "--all"]);
}

/// A board whose config has `[recovery]` hooks running `hook.sh PHASE`,
/// which appends `PHASE $RVM_BACKUP_PHASE <checksum of plain.env>` to
/// `hooks.log`; `start` fails while `fail-start` exists (removing it), and
/// `stop` sleeps while `slow-stop` exists.
fn board_with_hooks(name: &str, timeout: &str) -> Board {
    let b = Board::with_config(name, &format!("recovery_timeout = \"{timeout}\""));
    let dir = b.tmp.path();
    let script = dir.join("hook.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             d={d}\n\
             echo \"$1 $RVM_BACKUP_PHASE $(cksum < {env})\" >> $d/hooks.log\n\
             if [ \"$1\" = stop ] && [ -e $d/slow-stop ]; then sleep 30; fi\n\
             if [ \"$1\" = start ] && [ -e $d/fail-start ]; then rm $d/fail-start; echo platform refused to start >&2; exit 1; fi\n\
             exit 0\n",
            d = dir.display(),
            env = b.root.join("etc/myrvm/plain.env").display()
        ),
    )
    .unwrap();
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(&format!(
        "\n[recovery]\nstop = [\"/bin/sh\", \"{s}\", \"stop\"]\nstart = [\"/bin/sh\", \"{s}\", \"start\"]\n",
        s = script.display()
    ));
    fs::write(&b.config, text).unwrap();
    b
}

fn hook_log(b: &Board) -> Vec<String> {
    fs::read_to_string(b.tmp.path().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            // "PHASE ENV CKSUM SIZE" -> "PHASE ENV CKSUM"
            let w: Vec<&str> = l.split_whitespace().collect();
            w[..3.min(w.len())].join(" ")
        })
        .collect()
}

fn cksum_of(p: &Path) -> String {
    let out = std::process::Command::new("cksum")
        .stdin(fs::File::open(p).unwrap())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn pre_restore_copies(b: &Board) -> Vec<String> {
    fs::read_dir(b.db_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".pre-restore-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect()
}

#[test]
fn in_place_restore_all_runs_stop_and_start_around_the_swap() {
    let b = board_with_hooks("rall-hooks", "30s");
    b.populate();
    let env = b.root.join("etc/myrvm/plain.env");
    let old = cksum_of(&env);
    b.ok(&["backup", "--all"]);
    let db_t1 = db_dump(&b.db_path());
    change_everything(&b);
    let changed = cksum_of(&env);
    b.ok(&["restore", "--all"]);
    // stop saw the changed board, start the restored one.
    assert_eq!(
        hook_log(&b),
        vec![format!("stop stop {changed}"), format!("start start {old}")]
    );
    assert_eq!(db_dump(&b.db_path()), db_t1);
    assert_eq!(pre_restore_copies(&b).len(), 1);
    // A restore into a target runs no hooks.
    b.ok(&[
        "restore",
        "--all",
        "--target",
        b.tmp.path().join("t").to_str().unwrap(),
    ]);
    assert_eq!(hook_log(&b).len(), 2);
}

#[test]
fn a_failing_start_rolls_the_database_back() {
    let b = board_with_hooks("rall-rollback", "30s");
    b.populate();
    let env = b.root.join("etc/myrvm/plain.env");
    b.ok(&["backup", "--all"]);
    let restored_env = fs::read(&env).unwrap();
    change_everything(&b);
    let db_now = db_dump(&b.db_path());
    fs::write(b.tmp.path().join("fail-start"), b"").unwrap();
    let err = b.fails(&["restore", "--all"]);
    assert!(err.contains("ROLLED BACK"), "{err}");
    assert!(err.contains("platform refused to start"), "{err}");
    assert!(
        err.contains("started again on the rolled-back database"),
        "{err}"
    );
    assert!(err.contains("no pre-restore copy"), "{err}");
    // The database is the one from before the restore, row for row; the
    // trees stay restored (they have no pre-restore copy).
    assert_eq!(db_dump(&b.db_path()), db_now);
    assert!(pre_restore_copies(&b).is_empty(), "the copy was put back");
    assert_eq!(fs::read(&env).unwrap(), restored_env);
    let log = hook_log(&b);
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[0].starts_with("stop ") && log[1].starts_with("start ") && log[2].starts_with("start ")
    );

    // One strategy the same way.
    fs::write(b.tmp.path().join("fail-start"), b"").unwrap();
    let err = b.fails(&["restore", "database"]);
    assert!(err.contains("ROLLED BACK"), "{err}");
    assert_eq!(db_dump(&b.db_path()), db_now);
}

#[test]
fn a_stop_that_times_out_aborts_before_anything_changed() {
    let b = board_with_hooks("rall-stop", "1s");
    b.populate();
    b.ok(&["backup", "--all"]);
    change_everything(&b);
    // (Reading the database leaves its -wal/-shm: read it before the snapshot.)
    let db_before = db_dump(&b.db_path());
    let before = snapshot(&b.root);
    fs::write(b.tmp.path().join("slow-stop"), b"").unwrap();
    let t = Instant::now();
    let err = b.fails(&["restore", "--all"]);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(
        err.contains("did not finish within recovery_timeout"),
        "{err}"
    );
    assert!(err.contains("aborted before anything was touched"), "{err}");
    assert_eq!(snapshot(&b.root), before, "the board changed");
    assert_eq!(db_dump(&b.db_path()), db_before);
    let before = snapshot(&b.root);
    // One strategy the same way.
    let err = b.fails(&["restore", "config"]);
    assert!(
        err.contains("did not finish within recovery_timeout"),
        "{err}"
    );
    assert_eq!(snapshot(&b.root), before, "the board changed");
}

#[test]
fn hook_commands_are_checked_when_the_config_loads() {
    let b = Board::new("rall-badhook");
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str("\n[recovery]\nstop = [\"systemctl\", \"stop\", \"myrvm\"]\n");
    fs::write(&b.config, text).unwrap();
    let err = b.fails(&["list"]);
    assert!(err.contains("absolute") && err.contains("stop"), "{err}");
}

struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ask(socket: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{line}: {reply}"));
    serde_json::from_str(body).unwrap()
}

#[test]
fn the_daemon_restores_all_as_a_job() {
    if !require_root("the_daemon_restores_all_as_a_job") {
        return;
    }
    let b = Board::new("rall-daemon");
    let socket = b.tmp.path().join("run/control.sock");
    b.write_config(&format!(
        "socket = \"{}\"\nbackup_enabled = false",
        socket.display()
    ));
    b.populate();
    b.ok(&["backup", "--all"]);
    let db = db_dump(&b.db_path());
    let log = fs::File::create(b.tmp.path().join("daemon.log")).unwrap();
    let child = bin()
        .arg("--config")
        .arg(&b.config)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon(child, socket.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&d.1).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = b.tmp.path().join("restored");
    let j = ask(&socket, &format!("RESTORE all target={}", target.display()));
    let id = j["job"].as_u64().unwrap();
    let job = loop {
        let j = ask(&socket, &format!("JOB {id}"));
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            break j;
        }
        assert!(Instant::now() < deadline, "job never ended: {j}");
        std::thread::sleep(Duration::from_millis(30));
    };
    assert_eq!(job["state"], "done", "{job}");
    assert!(
        job["what"]
            .as_str()
            .unwrap()
            .starts_with("restore all latest into"),
        "{job}"
    );
    assert!(
        job["outcome"]
            .as_str()
            .unwrap()
            .starts_with("restored all 4 strategies"),
        "{job}"
    );
    assert_eq!(db_dump(&b.in_target(&target, &b.db_path())), db);
    let audit = fs::read_to_string(b.backups.join("audit.log")).unwrap();
    assert!(audit.contains("RESTORE all target="), "{audit}");
}
