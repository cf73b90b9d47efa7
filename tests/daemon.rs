//! The daemon through its real socket: access control and the audit trail,
//! hostile clients, systemd notify, signals, kills and the scheduler.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Daemon {
    child: Child,
    socket: PathBuf,
}

/// Emulated runs (qemu) are slow: scale waits.
fn patience() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(20)
    }
}

fn board_with_socket(name: &str, extra: &str) -> Board {
    let b = Board::new(name);
    let socket = b.tmp.path().join("run/control.sock");
    // Tables ([access…]) go after the strategy sections, plain keys before.
    let (tables, keys): (Vec<&str>, Vec<&str>) = extra
        .lines()
        .partition(|l| l.starts_with('[') || l.starts_with("uids"));
    b.write_config(&format!(
        "socket = \"{}\"\nenvironment = \"development\"\n{}",
        socket.display(),
        keys.join("\n")
    ));
    let mut text = fs::read_to_string(&b.config).unwrap();
    text.push_str(&tables.join("\n"));
    fs::write(&b.config, text + "\n").unwrap();
    b
}

impl Daemon {
    fn start(b: &Board, env: &[(&str, String)]) -> Daemon {
        let socket = b.tmp.path().join("run/control.sock");
        let log = fs::File::create(b.tmp.path().join("daemon.log")).unwrap();
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&b.config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let d = Daemon { child, socket };
        let deadline = Instant::now() + patience();
        // Ready means answering, not just bound: the daemon binds first and
        // cleans the store before it serves.
        while !d.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = String::new();
        s.write_all(b"PING\n").is_ok()
            && BufReader::new(s).read_line(&mut reply).is_ok()
            && reply.starts_with("OK")
    }

    fn request(&self, line: &str) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(patience())).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        reply
    }

    fn json(&self, line: &str) -> serde_json::Value {
        let r = self.request(line);
        let body = r
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("{line}: {r}"));
        serde_json::from_str(body).unwrap()
    }

    /// Wait for a job to end; returns its final state.
    fn wait_job(&self, id: u64) -> serde_json::Value {
        let deadline = Instant::now() + patience() * 3;
        loop {
            let j = self.json(&format!("JOB {id}"));
            if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Wait until job `id` is running and part-way through the phase that
    /// starts with `phase` (some bytes done, well before all); returns its
    /// state then. Fails if it ends first.
    fn wait_mid_job(&self, id: u64, phase: &str) -> serde_json::Value {
        let deadline = Instant::now() + patience();
        loop {
            let j = self.json(&format!("JOB {id}"));
            let (done, total) = (j["bytes_done"].as_u64(), j["bytes_total"].as_u64());
            // Well before the end, so the caller can act while it runs.
            // (A tree backup does not know its total: 0.)
            let early = total.map(|t| if t == 0 { u64::MAX } else { t / 4 * 3 });
            let in_phase = j["phase"].as_str().is_some_and(|p| p.starts_with(phase));
            if j["state"] == "running" && in_phase && done.is_some_and(|d| d > 0) && done < early {
                return j;
            }
            assert!(
                matches!(j["state"].as_str(), Some("queued" | "running")),
                "job {id} ended before it could be caught mid-way: {j}"
            );
            assert!(Instant::now() < deadline, "job {id} never got going: {j}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + patience();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ctl LINE` run as `uid` (with gid 0 so it may open the 0660 socket).
fn ctl_as(b: &Board, uid: u32, line: &str) -> (bool, String) {
    let out = bin()
        .uid(uid)
        .gid(0)
        .arg("--config")
        .arg(&b.config)
        .arg("ctl")
        .arg(line)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn roles_decide_and_every_attempt_is_audited() {
    if !require_root("roles_decide_and_every_attempt_is_audited") {
        return;
    }
    let b = board_with_socket(
        "roles",
        "[access.operator]\nuids = [4101]\n[access.reader]\nuids = [4102]\n",
    );
    b.populate();
    let d = Daemon::start(&b, &[]);
    let (ok, r) = ctl_as(&b, 4103, "PING");
    assert!(ok && r.starts_with("OK"), "{r}");
    for line in ["STATUS", "BACKUP config", "RESTORE config"] {
        let (ok, r) = ctl_as(&b, 4103, line);
        assert!(!ok && r.starts_with("ERR 403"), "no role, {line}: {r}");
    }
    let (ok, r) = ctl_as(&b, 4102, "STATUS");
    assert!(ok, "reader STATUS: {r}");
    let (ok, r) = ctl_as(&b, 4102, "BACKUP config");
    assert!(!ok && r.contains("403"), "reader BACKUP: {r}");
    let (ok, r) = ctl_as(&b, 4101, "BACKUP config");
    assert!(ok, "operator BACKUP: {r}");
    let (ok, r) = ctl_as(&b, 4101, "RESTORE config");
    assert!(
        !ok && r.contains("403") && r.contains("admin"),
        "operator RESTORE: {r}"
    );
    let backup = d.json("BACKUP config")["jobs"][0].as_u64().unwrap();
    assert_eq!(d.wait_job(backup)["state"], "done");
    let target = b.tmp.path().join("restored");
    let job = d.json(&format!(
        "RESTORE config latest target={}",
        target.display()
    ))["job"]
        .as_u64()
        .unwrap();
    assert_eq!(d.wait_job(job)["state"], "done");
    let src = b.root.join("etc/myrvm");
    assert_same_tree(&src, &b.in_target(&target, &src));
    d.stop();

    let audit = b.backups.join("audit.log");
    let text = fs::read_to_string(&audit).unwrap();
    let has = |uid: &str, what: &str, result: &str| {
        text.lines().any(|l| {
            l.contains(&format!("\"uid\":{uid}")) && l.contains(what) && l.contains(result)
        })
    };
    assert!(has("4103", "BACKUP config", "refused 403"), "{text}");
    assert!(has("4103", "RESTORE config", "refused 403"));
    assert!(has("4102", "BACKUP config", "refused 403"));
    assert!(has("4101", "BACKUP config", "accepted"));
    assert!(has("4101", "RESTORE config", "refused 403"));
    assert!(has("0", "RESTORE config", "accepted"));
    assert!(
        !text
            .lines()
            .any(|l| l.contains("\"uid\":4102") && l.contains("STATUS")),
        "reads are not audited"
    );
    b.ok(&["audit", "verify"]);

    let lines: Vec<&str> = text.lines().collect();
    fs::write(&audit, text.replacen("refused 403", "accepted", 1)).unwrap();
    assert!(b.fails(&["audit", "verify"]).contains("chain is broken"));
    let without_one: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| *l)
        .collect();
    fs::write(&audit, without_one.join("\n") + "\n").unwrap();
    b.fails(&["audit", "verify"]);
    fs::write(&audit, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    b.fails(&["audit", "verify"]);
}

#[test]
fn one_uid_cannot_take_every_connection() {
    if !require_root("one_uid_cannot_take_every_connection") {
        return;
    }
    let b = board_with_socket("peruid", "");
    b.populate();
    let d = Daemon::start(&b, &[]);
    // Connect as uid 4200 from a thread of our own: SO_PEERCRED records the
    // connecting thread's credentials, and the thread ends with them.
    let socket = d.socket.clone();
    let conns: Vec<UnixStream> = std::thread::spawn(move || {
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(4200)).unwrap();
        (0..9)
            .map(|_| {
                let s = UnixStream::connect(&socket).unwrap();
                // One at a time, so the daemon has counted the earlier ones.
                std::thread::sleep(Duration::from_millis(50));
                s
            })
            .collect()
    })
    .join()
    .unwrap();
    let mut ninth = &conns[8];
    ninth.set_read_timeout(Some(patience())).unwrap();
    let mut reply = String::new();
    let _ = BufReader::new(&mut ninth).read_to_string(&mut reply);
    assert_eq!(reply, "ERR 503 too many connections from uid 4200\n");
    // The first eight are served; root still gets an answer.
    let mut first = &conns[0];
    first.set_read_timeout(Some(patience())).unwrap();
    first.write_all(b"PING\n").unwrap();
    let mut line = String::new();
    BufReader::new(first).read_line(&mut line).unwrap();
    assert!(line.starts_with("OK"), "{line}");
    for _ in 0..10 {
        assert!(d.request("PING").starts_with("OK"));
    }
    // A closed connection frees its slot.
    drop(conns);
    std::thread::sleep(Duration::from_millis(200));
    let (ok, out) = ctl_as(&b, 4200, "PING");
    assert!(ok, "{out}");
}

#[test]
fn hostile_clients_do_not_disturb_others() {
    let b = board_with_socket("hostile", "");
    b.populate();
    let d = Daemon::start(&b, &[]);
    // A line over 4 KiB: ERR 413, then the connection is closed.
    let mut big = UnixStream::connect(&d.socket).unwrap();
    big.set_read_timeout(Some(patience())).unwrap();
    let _ = big.write_all(&vec![b'A'; 1 << 20]);
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_to_string(&mut reply);
    assert!(reply.starts_with("ERR 413"), "{reply}");
    // Also when the newline arrives in the same read.
    let mut big = UnixStream::connect(&d.socket).unwrap();
    big.set_read_timeout(Some(patience())).unwrap();
    let mut line = vec![b'A'; 5000];
    line.extend_from_slice(b"\nPING\n");
    big.write_all(&line).unwrap();
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_to_string(&mut reply);
    assert_eq!(
        reply.lines().collect::<Vec<_>>(),
        vec!["ERR 413 line longer than 4096 bytes; closing"],
        "{reply}"
    );
    // Silent, half-line and garbage clients stay connected meanwhile.
    let mut idle = Vec::new();
    for i in 0..10 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        match i % 3 {
            0 => {}
            1 => s.write_all(b"STAT").unwrap(),
            _ => s.write_all(&[0xff, 0x00, 0x1b, 0x80]).unwrap(),
        }
        idle.push(s);
    }
    for _ in 0..50 {
        assert!(d.request("PING").starts_with("OK"));
    }
    let mut garbage = UnixStream::connect(&d.socket).unwrap();
    garbage.write_all(b"\x00\xffgarbage\nPING\n").unwrap();
    let mut r = BufReader::new(garbage);
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    assert!(first.starts_with("ERR 400"), "{first}");
    let mut second = String::new();
    r.read_line(&mut second).unwrap();
    assert!(
        second.starts_with("OK"),
        "the connection survives a bad line: {second}"
    );
    assert!(d.request("FROB").starts_with("ERR 400"));
    assert!(d.request("JOB 999").starts_with("ERR 404"));
    assert!(d.request("METRICS").starts_with("OK {\"content_type\""));
    assert!(d.request("BACKUP nosuch").starts_with("ERR 400"));
    drop(idle);
    assert!(d.stop().success());
}

#[test]
fn systemd_notify_gets_ready_and_watchdog() {
    let b = board_with_socket("notify", "");
    b.populate();
    let notify = b.tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(patience())).unwrap();
    let d = Daemon::start(
        &b,
        &[
            ("NOTIFY_SOCKET", notify.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
            ("JOURNAL_STREAM", "8:1234".into()),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let wanted = |seen: &[String]| {
        seen.iter().any(|m| m == "READY=1")
            && seen.iter().any(|m| m == "WATCHDOG=1")
            && seen.iter().any(|m| m.starts_with("STATUS="))
    };
    while !wanted(&seen) {
        let n = sock.recv(&mut buf).expect("no notification");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(seen[0], "READY=1", "READY comes first: {seen:?}");
    assert!(d.stop().success());
    // Under journald every log line carries its syslog priority.
    let log = fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap();
    assert!(
        log.lines().any(|l| l.starts_with("<6>info: daemon ready")),
        "{log}"
    );
}

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_broken() {
    let b = board_with_socket(
        "hup",
        "backup_enabled = false
",
    );
    b.populate();
    let d = Daemon::start(&b, &[]);
    assert_eq!(d.json("STATUS")["backup_enabled"], false);
    let hup = |d: &Daemon| {
        std::process::Command::new("kill")
            .arg("-HUP")
            .arg(d.child.id().to_string())
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        text.replace(
            "backup_enabled = false",
            "backup_enabled = true\nbackup_interval = \"3h\"",
        ),
    )
    .unwrap();
    hup(&d);
    let deadline = Instant::now() + patience();
    while d.json("STATUS")["backup_enabled"] != true {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(&b.config, "this is = = not toml").unwrap();
    hup(&d);
    assert!(
        d.request("PING").starts_with("OK"),
        "a broken config must not kill the daemon"
    );
    assert_eq!(
        d.json("STATUS")["backup_enabled"],
        true,
        "the old config stays"
    );
    assert!(d.stop().success());
    let audit = fs::read_to_string(b.backups.join("audit.log")).unwrap();
    assert!(
        audit.contains("\"what\":\"reload\",\"who\"") || audit.contains("reload"),
        "{audit}"
    );
    assert!(audit.contains("failed: config"), "{audit}");
}

fn big_board(name: &str) -> Board {
    let b = board_with_socket(name, "backup_enabled = false\n");
    b.populate();
    let assets = b.root.join("opt/myrvm/assets");
    fs::create_dir_all(&assets).unwrap();
    for i in 0..20 {
        fs::write(
            assets.join(format!("blob{i}.bin")),
            pseudo_random(4_000_000, i),
        )
        .unwrap();
    }
    b
}

#[test]
fn sigkill_mid_job_restarts_clean() {
    let b = big_board("kill");
    let d = Daemon::start(&b, &[]);
    let job = d.json("BACKUP config")["jobs"][0].as_u64().unwrap();
    d.wait_job(job);
    let job = d.json("BACKUP application")["jobs"][0].as_u64().unwrap();
    d.wait_mid_job(job, "backup");
    let mid: Vec<String> = backup_files(&b.backups);
    drop(d); // SIGKILL, mid-job
    let partial = mid
        .iter()
        .find(|n| n.starts_with("application-") && n.ends_with(".tmp"))
        .unwrap_or_else(|| panic!("a backup part-way through has temporaries: {mid:?}"));
    let partial_id = partial.split('.').next().unwrap();
    assert!(
        !b.ids("application").iter().any(|id| id == partial_id),
        "the killed backup {partial_id} is listed"
    );
    let d = Daemon::start(&b, &[]);
    for name in backup_files(&b.backups) {
        assert!(!name.ends_with(".tmp"), "restart left {name}");
    }
    b.ok(&["verify", "--all"]);
    b.ok(&["audit", "verify"]);
    assert!(d.request("PING").starts_with("OK"));
    d.stop();
    b.ok(&["audit", "verify"]);
}

#[test]
fn sigterm_ends_the_running_job_cleanly() {
    let b = big_board("term");
    let d = Daemon::start(&b, &[]);
    let job = d.json("BACKUP application")["jobs"][0].as_u64().unwrap();
    let deadline = Instant::now() + patience();
    while d.json(&format!("JOB {job}"))["state"] == "queued" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    assert!(d.stop().success());
    assert!(t.elapsed() < patience());
    let names = backup_files(&b.backups);
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    b.ok(&["verify", "--all"]);
    b.ok(&["audit", "verify"]);
}

#[test]
fn cancel_leaves_nothing_half_written() {
    let b = big_board("cancel");
    let d = Daemon::start(&b, &[]);
    let job = d.json("BACKUP application")["jobs"][0].as_u64().unwrap();
    d.wait_mid_job(job, "backup");
    let listed = b.ids("application");
    let r = d.request(&format!("CANCEL {job}"));
    assert!(r.starts_with("OK"), "{r}");
    let end = d.wait_job(job);
    assert_eq!(end["state"], "cancelled", "{end}");
    assert_eq!(
        b.ids("application"),
        listed,
        "the cancelled backup is not listed"
    );
    let names = backup_files(&b.backups);
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert!(d.request(&format!("CANCEL {job}")).starts_with("ERR 409"));
    let status = d.json("STATUS");
    assert_eq!(
        status["strategies"]["application"]["failures"], 0,
        "a cancel is not a failure: {status}"
    );
    assert!(
        status["strategies"]["application"]["next_in_s"].is_u64(),
        "still scheduled: {status}"
    );
}

#[test]
fn scheduled_backups_run_and_catch_up_once_after_restart() {
    let b = board_with_socket(
        "sched",
        "backup_interval = \"2s\"\nbackup_jitter = \"1s\"\n",
    );
    b.populate();
    let d = Daemon::start(&b, &[]);
    // First start: every strategy runs soon; then again after the interval.
    let deadline = Instant::now() + patience();
    while b.ids("config").len() < 2 {
        assert!(Instant::now() < deadline, "no second scheduled backup");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = d.json("STATUS");
    assert!(
        status["strategies"]["config"]["last_success"].is_string(),
        "{status}"
    );
    d.stop();
    // Pretend the board was off for a week: one catch-up run, not hundreds.
    let state = b.backups.join("state.json");
    let text = fs::read_to_string(&state).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for s in ["database", "config", "logs", "application"] {
        v[s]["last_success"] = serde_json::json!(rvm_backup::timefmt::now_unix() - 7 * 86_400);
    }
    fs::write(&state, v.to_string()).unwrap();
    b.write_config(&format!(
        "socket = \"{}\"\nbackup_interval = \"1h\"\nbackup_jitter = \"1s\"\n",
        b.tmp.path().join("run/control.sock").display()
    ));
    let before = b.ids("config").len();
    let d = Daemon::start(&b, &[]);
    let deadline = Instant::now() + patience();
    while b.ids("config").len() == before {
        assert!(Instant::now() < deadline, "no catch-up run");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.ids("config").len(), before + 1, "catch up exactly once");
    d.stop();
}

#[test]
fn a_live_socket_is_never_taken_over() {
    let b = board_with_socket("twice", "backup_enabled = false\n");
    let d = Daemon::start(&b, &[]);
    let out = b.run(&["daemon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another rvm-backup daemon"));
    assert!(
        d.request("PING").starts_with("OK"),
        "the first daemon still answers"
    );
    b.ok(&["audit", "verify"]); // the refused daemon wrote nothing
    let meta = fs::metadata(&d.socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        fs::metadata(d.socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    drop(d); // SIGKILL leaves a stale socket behind
    let d = Daemon::start(&b, &[]);
    assert!(
        d.request("PING").starts_with("OK"),
        "a stale socket is replaced"
    );
}

#[test]
fn a_failed_start_leaves_no_socket_behind() {
    let b = board_with_socket("failstart", "backup_enabled = false\n");
    let lock = rvm_backup::store::Store::new(&b.backups).lock().unwrap();
    let out = b.run(&["daemon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another rvm-backup run"));
    assert!(
        !b.tmp.path().join("run/control.sock").exists(),
        "the socket of a failed start must go"
    );
    drop(lock);
    let d = Daemon::start(&b, &[]);
    assert!(d.request("PING").starts_with("OK"));
}

/// A freshly imaged board has no master key yet: the daemon's first start
/// makes one (0600) when the store is empty, and backs up with it. A board
/// whose key went missing while it has archives is refused: a new key
/// would not read them.
#[test]
fn the_first_start_of_a_fresh_board_makes_its_key() {
    use std::os::unix::fs::PermissionsExt;
    let b = board_with_socket("firstkey", "backup_enabled = false\n");
    b.populate();
    fs::remove_file(&b.key).unwrap();
    let d = Daemon::start(&b, &[]);
    let mode = fs::metadata(&b.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let job = d.json("BACKUP config")["jobs"][0].as_u64().unwrap();
    assert_eq!(d.wait_job(job)["state"], "done");
    assert!(d.stop().success());
    let log = fs::read_to_string(b.tmp.path().join("daemon.log")).unwrap();
    assert!(log.contains("made a new master key"), "{log}");
    // The key goes missing on a board with archives: no new key.
    fs::remove_file(&b.key).unwrap();
    let out = b.run(&["daemon"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!b.key.exists());
}

/// A restore of very many small files yields after every entry: PING is
/// answered within a second throughout (systemd's watchdog needs it).
#[test]
fn ping_answers_within_a_second_during_a_restore_of_many_files() {
    // 100,000 files natively; fewer under the emulator, which is ~20x slower.
    let count: usize = if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        10_000
    } else {
        100_000
    };
    let b = board_with_socket("manyfiles", "backup_enabled = false\n");
    let app = b.root.join("opt/myrvm");
    for i in 0..count {
        let dir = app.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::File::create(dir.join(format!("f{i:06}"))).unwrap();
    }
    b.ok(&["backup", "application"]);
    let d = Daemon::start(&b, &[]);
    let target = b.tmp.path().join("restored");
    let job = d.json(&format!(
        "RESTORE application latest target={}",
        target.display()
    ))["job"]
        .as_u64()
        .unwrap();
    let mut worst = Duration::ZERO;
    let mut pings = 0;
    let deadline = Instant::now() + patience() * 6;
    let end = loop {
        let t = Instant::now();
        assert!(d.request("PING").starts_with("OK"));
        worst = worst.max(t.elapsed());
        pings += 1;
        let j = d.json(&format!("JOB {job}"));
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            break j;
        }
        assert!(Instant::now() < deadline, "restore never ended: {j}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(end["state"], "done", "{end}");
    eprintln!("{pings} PINGs during the restore of {count} files, slowest {worst:?}");
    assert!(worst < Duration::from_secs(1), "PING took {worst:?}");
    let restored = target.join(app.strip_prefix("/").unwrap());
    let n: usize = fs::read_dir(&restored)
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(n, count);
}
