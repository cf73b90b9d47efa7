//! Shared helpers for the integration tests: scratch directories, a sample
//! board with a config and key, the real binary, and tree comparison.
#![allow(dead_code)]

pub mod craft;
pub mod daemon;
pub mod http;
pub mod offsite;
pub mod prom;
pub mod proxy;
pub mod reference;
pub mod s3;
pub mod stick;
pub mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("rvb-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The real binary; under `cross/test-aarch64.sh` it runs through the
/// emulator named by `RVM_BACKUP_TEST_RUNNER` (no binfmt_misc needed).
pub fn bin() -> Command {
    let exe = env!("CARGO_BIN_EXE_rvm-backup");
    match std::env::var("RVM_BACKUP_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or_default());
            c.args(words).arg(exe);
            c
        }
        _ => Command::new(exe),
    }
}

/// A run's stdout then stderr, as text (for checks and failure messages).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How long one run of the binary may take before a test calls it hung:
/// far beyond any run in this suite, so that a hang fails the test with
/// what the program printed instead of stalling CI until its own limit.
pub fn run_limit() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        // Under nextest's 10-minute limit for a test (.config/nextest.toml),
        // so that this message, with the thread states, is what a hang shows.
        Duration::from_secs(480)
    } else {
        Duration::from_secs(240)
    }
}

/// `cmd.output()`, but killed and failed after [`run_limit`] with its
/// output so far.
pub fn output_within(mut cmd: Command, what: &str) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait_output_within(child, what)
}

/// A started child's output (stdout and stderr piped), failed after
/// [`run_limit`] like [`output_within`].
pub fn wait_output_within(mut child: std::process::Child, what: &str) -> Output {
    use std::io::Read;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + run_limit();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let threads = thread_states(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {:?}; its threads were:\n{threads}it printed: {}",
                run_limit(),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// One line per thread of process `pid`, for a hang report: name, state,
/// kernel wait channel and the system call it is in (the first field of
/// /proc/PID/task/TID/syscall, -1 when running), and the process's command
/// line, which tells whether it ever started the program (under qemu-user a
/// child still showing the test binary never reached its exec).
pub fn thread_states(pid: u32) -> String {
    let read = |p: PathBuf| {
        fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).trim().replace('\0', " "))
            .unwrap_or_else(|e| format!("({e})"))
    };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let mut out = format!("  command line: {}\n", read(proc.join("cmdline")));
    let mut tasks: Vec<PathBuf> = match fs::read_dir(proc.join("task")) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => return format!("{out}  (no threads: {e})\n"),
    };
    tasks.sort();
    for t in tasks {
        let stat = read(t.join("stat"));
        // The state is the first field after the parenthesised name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default();
        let syscall = read(t.join("syscall"));
        out.push_str(&format!(
            "  thread {} {:?}: state {state}, waiting in {}, syscall {}\n",
            t.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            read(t.join("comm")),
            read(t.join("wchan")),
            syscall.split_whitespace().next().unwrap_or("?"),
        ));
    }
    out
}

/// A scratch board: source trees, a database, a config, a key.
pub struct Board {
    pub tmp: TempDir,
    pub root: PathBuf,
    pub backups: PathBuf,
    pub config: PathBuf,
    pub key: PathBuf,
}

impl Board {
    pub fn new(name: &str) -> Board {
        Board::with_config(name, "")
    }

    /// A board whose config has `extra` top-level lines.
    pub fn with_config(name: &str, extra: &str) -> Board {
        let tmp = TempDir::new(name);
        let root = tmp.path().join("board");
        let b = Board {
            backups: tmp.path().join("backups"),
            config: tmp.path().join("rvm-backup.toml"),
            key: tmp.path().join("master.key"),
            root,
            tmp,
        };
        fs::create_dir_all(&b.root).unwrap();
        b.write_config(extra);
        let out = bin()
            .args(["keygen", "--out"])
            .arg(&b.key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        b
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("var/lib/myrvm/rvm.sqlite")
    }

    pub fn write_config(&self, extra: &str) {
        let r = self.root.display();
        let text = format!(
            "{extra}\nbackup_dir = \"{}\"\nkey_file = \"{}\"\n\n[database]\npath = \"{r}/var/lib/myrvm/rvm.sqlite\"\npitr = false\n\n\
             [config]\npaths = [\"{r}/etc/myrvm\"]\n\n[logs]\npaths = [\"{r}/var/log/myrvm\"]\n\n\
             [application]\npaths = [\"{r}/opt/myrvm\"]\nexclude = [\"*.pyc\", \"__pycache__\"]\n",
            self.backups.display(),
            self.key.display()
        );
        fs::write(&self.config, text).unwrap();
    }

    /// Turn WAL shipping on (the shared config has it off), at a short
    /// sync interval.
    pub fn enable_pitr(&self) {
        let cfg = fs::read_to_string(&self.config).unwrap().replacen(
            "pitr = false\n",
            "pitr = true\npitr_sync_interval = \"200ms\"\n",
            1,
        );
        fs::write(&self.config, cfg).unwrap();
    }

    /// Put `socket = "<scratch>/rvm.sock"` at the top of the config (for
    /// a daemon); its path.
    pub fn add_socket(&self) -> PathBuf {
        let socket = self.tmp.path().join("rvm.sock");
        let cfg = fs::read_to_string(&self.config).unwrap();
        fs::write(
            &self.config,
            format!("socket = \"{}\"\n{cfg}", socket.display()),
        )
        .unwrap();
        socket
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--quiet")
            .args(args);
        output_within(cmd, &format!("rvm-backup {args:?}"))
    }

    /// Run and expect success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rvm-backup {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and expect failure with one clear line and no panic; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "rvm-backup {args:?} should have failed"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "panic: {err}"
        );
        assert!(err.contains("error:"), "no error line: {err}");
        err
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        self.ok(&["list", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn ids(&self, strategy: &str) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|v| v["strategy"] == strategy)
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Where a restore with `--target t` puts a source path.
    pub fn in_target(&self, target: &Path, source: &Path) -> PathBuf {
        target.join(source.strip_prefix("/").unwrap())
    }

    /// Fill the board with every kind of thing a tree backup must keep.
    pub fn populate(&self) {
        make_tree(&self.root.join("etc/myrvm"), 1);
        make_tree(&self.root.join("opt/myrvm"), 2);
        let logs = self.root.join("var/log/myrvm");
        fs::create_dir_all(&logs).unwrap();
        let mut log = String::new();
        for i in 0..5000 {
            log.push_str(&format!(
                "2026-11-24 10:00:{:02} INFO deposit id={i}\n",
                i % 60
            ));
        }
        fs::write(logs.join("platform.log"), &log).unwrap();
        fs::write(logs.join("platform.log.1"), &log[..log.len() / 2]).unwrap();
        let py = self.root.join("opt/myrvm/__pycache__");
        fs::create_dir_all(&py).unwrap();
        fs::write(py.join("x.cpython-311.pyc"), b"junk").unwrap();
        fs::write(self.root.join("opt/myrvm/old.pyc"), b"junk").unwrap();
        make_db(&self.db_path(), 2000);
    }
}

/// A tree with spaces, non-ASCII, an empty file, modes, nanosecond
/// mtimes, nested dirs, relative and absolute symlinks, random content.
pub fn make_tree(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub dir/ünïcødé")).unwrap();
    let files: [(&str, u32, Vec<u8>); 5] = [
        ("plain.env", 0o644, b"A=1\nB=2\n".to_vec()),
        ("with space.conf", 0o600, b"x = \"y z\"\n".to_vec()),
        ("empty", 0o640, Vec::new()),
        (
            "sub dir/ünïcødé/çafé.txt",
            0o755,
            "ÿ€ non-ascii content\n".as_bytes().to_vec(),
        ),
        ("sub dir/random.bin", 0o644, pseudo_random(200_000, seed)),
    ];
    for (i, (name, mode, content)) in files.iter().enumerate() {
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        let t = UNIX_EPOCH + Duration::new(1_700_000_000 + i as u64 * 1000, 123_456_789 + i as u32);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(FileTimes::new().set_modified(t))
            .unwrap();
    }
    std::os::unix::fs::symlink("plain.env", dir.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute target", dir.join("link-absolute")).unwrap();
    fs::set_permissions(dir.join("sub dir"), fs::Permissions::from_mode(0o750)).unwrap();
}

/// The seed of a random test: `RVM_BACKUP_SEED` if set (to repeat a run),
/// else the clock; printed either way, with how to repeat it.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("RVM_BACKUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (repeat with RVM_BACKUP_SEED={seed})");
    seed
}

/// A xorshift64 generator from `seed` (never stuck at zero).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn make_db(path: &Path, rows: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS deposits(id INTEGER PRIMARY KEY, barcode TEXT, grams REAL, cents INT, blob BLOB);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO deposits(barcode, grams, cents, blob) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                format!("{:013}", i * 7919),
                i as f64 * 0.5,
                25,
                vec![i as u8; i % 50]
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Every row of every table, as text: equal dumps mean equal databases.
pub fn db_dump(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut out: Vec<String> = c
        .prepare(
            "SELECT type || ' ' || name || ' ' || ifnull(sql, '') FROM sqlite_schema ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in tables {
        let mut s = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .unwrap();
        let n = s.column_count();
        let rows: Vec<String> = s
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.extend(rows.into_iter().map(|r| format!("{t}: {r}")));
    }
    out
}

/// Kind, mode, mtime (files), content or link target of everything below
/// `dir`, keyed by relative path. Two equal snapshots mean equal trees.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let desc = if m.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            format!("dir {:o}", m.mode())
        } else {
            let content = fs::read(&p).unwrap();
            format!(
                "file {:o} {}.{} {} {:x}",
                m.mode(),
                m.mtime(),
                m.mtime_nsec(),
                content.len(),
                fxhash(&content)
            )
        };
        out.insert(rel, desc);
    }
    out
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Assert that `restored` holds `src` exactly (ignoring excluded names).
pub fn assert_same_tree(src: &Path, restored: &Path) {
    let mut a = snapshot(src);
    a.retain(|p, _| {
        !p.to_string_lossy().contains("__pycache__") && !p.to_string_lossy().ends_with(".pyc")
    });
    let b = snapshot(restored);
    // The tree's top directory may differ in mode only if the test made it.
    for (p, desc) in &a {
        assert_eq!(b.get(p), Some(desc), "{} differs", p.display());
    }
    assert_eq!(
        a.len(),
        b.len(),
        "restored tree has extra entries: {:?}",
        b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
    );
}

/// The archive files (parts and sidecars) of one id.
pub fn archive_files(backups: &Path, id: &str) -> Vec<PathBuf> {
    let strategy = id.split('-').next().unwrap();
    let mut v: Vec<PathBuf> = fs::read_dir(backups.join(strategy))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(id))
        .collect();
    v.sort();
    v
}

/// All file names below the backup dir (to spot leftovers).
pub fn backup_files(backups: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for s in ["database", "config", "logs", "application"] {
        if let Ok(rd) = fs::read_dir(backups.join(s)) {
            v.extend(rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    v.sort();
    v
}

/// A fleet recovery key pair made by `keygen --recovery --out FILE`: the
/// public half (`rvmrec1:…`) it printed for the config.
pub fn recovery_keygen(file: &Path) -> String {
    let out = bin()
        .args(["keygen", "--recovery", "--out"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let public = text.split('"').nth(1).unwrap_or_default().to_string();
    assert!(public.starts_with("rvmrec1:"), "{text}");
    public
}

/// True when the tests run as root. A test that needs root calls this
/// first: under CI (`CI` set) not being root is a failure, never a silent
/// pass; on a developer's machine the test says it was skipped.
pub fn require_root(test: &str) -> bool {
    let root = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root, and CI must run it: run the suite as root"
        );
        eprintln!("SKIPPED {test}: needs root (CI runs it as root)");
    }
    root
}
