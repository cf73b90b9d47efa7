//! `rvm-backup demo`: the quick start on a fresh machine.
//!
//! Builds a small sample board (a WAL-mode SQLite database, config files,
//! logs, an application tree with a symlink, an empty file and names with
//! spaces and non-ASCII), writes a config and a key for it, then runs the
//! real operations (through the operations layer, as the CLI does): a
//! backup of every strategy, verify of all archives, and a restore of every
//! strategy into `DIR/restored`, and checks the result byte for byte.
//! A rerun cleans only a directory the demo made itself (marker file).
//! With `--serve` it then runs the daemon on that config in the foreground
//! (socket `DIR/run/control.sock`), until Ctrl-C.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{msg, IoContext, Result};
use crate::ops::{RestoreRequest, Session, Which};
use crate::out::{human_bytes, Out};
use crate::progress::Progress;
use crate::restore::Selector;

/// Marks a directory as the demo's own: only then are its `board`,
/// `backups` and `restored` subdirectories removed by a rerun.
const MARKER: &str = ".rvm-backup-demo";

pub fn run(args: &[String], quiet: bool, out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let serve = args.iter().any(|a| a == "--serve");
    args.retain(|a| a != "--serve");
    let dir = match args.as_slice() {
        [] => PathBuf::from("demo"),
        [flag, d] if flag == "--dir" => PathBuf::from(d),
        _ => {
            return Err(crate::error::Error::Usage(
                "demo takes only --dir DIR and --serve".into(),
            ))
        }
    };
    fs::create_dir_all(&dir).at("create", &dir)?;
    let dir = fs::canonicalize(&dir).at("resolve", &dir)?;
    let board = dir.join("board");
    let backups = dir.join("backups");
    let restored = dir.join("restored");
    let ours = dir.join(MARKER).is_file();
    for p in [&board, &backups, &restored] {
        if fs::symlink_metadata(p).is_ok() {
            if !ours {
                return Err(msg(format!(
                    "{} exists and was not made by the demo; choose another directory with --dir",
                    p.display()
                )));
            }
            fs::remove_dir_all(p).at("clean", p)?;
        }
    }
    fs::write(dir.join(MARKER), "made by `rvm-backup demo`\n").at("write", &dir.join(MARKER))?;
    make_board(&board)?;
    let config = dir.join("rvm-backup.toml");
    let key = dir.join("master.key");
    fs::write(&config, sample_config(&dir, &board, &backups, &key)).at("write", &config)?;
    if !key.exists() {
        crate::keys::generate(&key)?;
    }
    let cfg = config.display().to_string();
    let mut say = |line: &str| {
        if !quiet {
            out.line(line)
        }
    };
    let session = Session::open(Config::load(&config)?)?;
    let progress = || Progress::new(quiet);
    for s in session.all_strategies()? {
        let r = smol::block_on(session.backup(s, &mut progress()))?;
        if let Some(p) = r.problem {
            return Err(msg(format!("demo backup of {s}: {p}")));
        }
        say(&format!(
            "backup {s}: {} ({} files, {}), verified",
            r.meta.id,
            r.meta.files,
            human_bytes(r.meta.content_bytes)
        ));
    }
    let report = smol::block_on(session.verify(&Which::All, &mut progress(), |_, _| {}))?;
    if report.failures() > 0 {
        return Err(msg(format!(
            "demo: {} archives failed verification",
            report.failures()
        )));
    }
    say(&format!(
        "verify --all: {} archives OK",
        report.checked.len()
    ));
    for s in session.all_strategies()? {
        let req = RestoreRequest {
            strategy: s,
            selector: Selector::Latest,
            target: Some(restored.clone()),
            file: None,
            accept_damaged: false,
        };
        let r = smol::block_on(session.restore(&req, &mut progress()))?;
        say(&format!(
            "restore {s}: {} into {} ({} files)",
            r.id,
            restored.display(),
            r.files
        ));
    }
    let compared = compare_tree(&board, &restored, &["__pycache__"])?;
    compare_database(
        &board.join("var/lib/myrvm/rvm.sqlite"),
        &restored
            .join(board.strip_prefix("/").unwrap_or(&board))
            .join("var/lib/myrvm/rvm.sqlite"),
    )?;
    say(&format!("demo OK: {compared} entries restored byte for byte into {}; the database matches row for row", restored.display()));
    say(&format!("try: rvm-backup --config {cfg} list --json"));
    if serve {
        say("starting the daemon; from another terminal try:");
        say(&format!("  rvm-backup --config {cfg} ctl STATUS"));
        say(&format!("  rvm-backup --config {cfg} ctl BACKUP all"));
        say(&format!("  rvm-backup --config {cfg} ctl HISTORY"));
        say("stop it with Ctrl-C");
        drop(session);
        return crate::daemon::run(&config);
    }
    Ok(0)
}

fn sample_config(dir: &Path, board: &Path, backups: &Path, key: &Path) -> String {
    let b = board.display();
    format!(
        "# Written by `rvm-backup demo`.\nenvironment = \"development\"\nbackup_dir = \"{}\"\nkey_file = \"{}\"\n\
         socket = \"{}/run/control.sock\"\nbackup_interval = \"10m\"\nbackup_jitter = \"30s\"\n\n\
         [database]\npath = \"{b}/var/lib/myrvm/rvm.sqlite\"\n\n[config]\npaths = [\"{b}/etc/myrvm\"]\n\n\
         [logs]\npaths = [\"{b}/var/log/myrvm\"]\n\n[application]\npaths = [\"{b}/opt/myrvm\"]\nexclude = [\"*.pyc\", \"__pycache__\"]\n",
        backups.display(),
        key.display(),
        dir.display()
    )
}

fn make_board(board: &Path) -> Result<()> {
    let w = |rel: &str, content: &[u8]| -> Result<()> {
        let p = board.join(rel);
        fs::create_dir_all(crate::fsutil::parent(&p)).at("create", &p)?;
        fs::write(&p, content).at("write", &p)
    };
    for i in 0..5 {
        w(
            &format!("etc/myrvm/service{i}.env"),
            format!("RVM_SERVICE={i}\nRVM_TOKEN={:x}\n", i * 7919).as_bytes(),
        )?;
    }
    w("etc/myrvm/with space é.conf", b"name = \"caf\xc3\xa9\"\n")?;
    w("etc/myrvm/empty.conf", b"")?;
    let mut log = String::new();
    for i in 0..20_000 {
        log.push_str(&format!(
            "2026-11-24 10:{:02}:{:02} INFO deposit accepted id={i}\n",
            i / 60 % 60,
            i % 60
        ));
    }
    w("var/log/myrvm/platform.log", log.as_bytes())?;
    w("var/log/myrvm/platform.log.1", log.as_bytes())?;
    w("opt/myrvm/app/main.py", b"print('rvm')\n")?;
    w("opt/myrvm/app/__pycache__/main.cpython-311.pyc", b"\0junk")?;
    w("opt/myrvm/app/run.sh", b"#!/bin/sh\nexec python3 main.py\n")?;
    let run = board.join("opt/myrvm/app/run.sh");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o750)).at("chmod", &run)?;
    let link = board.join("opt/myrvm/current");
    std::os::unix::fs::symlink("app", &link).at("symlink", &link)?;
    let mut blob = vec![0u8; 300_000];
    crate::crypto::fill_random(&mut blob).at("randomize", board)?;
    w("opt/myrvm/assets/logo.bin", &blob)?;
    make_database(&board.join("var/lib/myrvm/rvm.sqlite"))
}

fn make_database(path: &Path) -> Result<()> {
    fs::create_dir_all(crate::fsutil::parent(path)).at("create", path)?;
    let sql = |e: rusqlite::Error| msg(format!("sample database: {e}"));
    let conn = rusqlite::Connection::open(path).map_err(sql)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE deposits(id INTEGER PRIMARY KEY, ts TEXT, barcode TEXT, material TEXT, refund_cents INT);
         BEGIN;",
    )
    .map_err(sql)?;
    for i in 0..5000 {
        conn.execute(
            "INSERT INTO deposits(ts, barcode, material, refund_cents) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                format!("2026-11-24T10:{:02}:00Z", i % 60),
                format!("{:013}", i * 7_919),
                ["PET", "ALU", "GLASS"][i % 3],
                25
            ],
        )
        .map_err(sql)?;
    }
    conn.execute_batch("COMMIT;").map_err(sql)
}

/// Compare `src` with its copy under `restored` (content, mode, mtime,
/// symlink targets); names matching `skip` must be absent from the copy.
pub fn compare_tree(src: &Path, restored: &Path, skip: &[&str]) -> Result<u64> {
    let copy_of = |p: &Path| restored.join(p.strip_prefix("/").unwrap_or(p));
    let mut count = 0;
    let mut stack = vec![src.to_path_buf()];
    while let Some(p) = stack.pop() {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let c = copy_of(&p);
        if skip.iter().any(|s| name == *s) || name.ends_with(".pyc") {
            if c.exists() {
                return Err(msg(format!("{} should have been excluded", c.display())));
            }
            continue;
        }
        if name.starts_with("rvm.sqlite") {
            continue; // compared row by row instead
        }
        let a = fs::symlink_metadata(&p).at("stat", &p)?;
        let b = fs::symlink_metadata(&c).at("stat restored", &c)?;
        let differs = |what: &str| {
            msg(format!(
                "{} differs from the original in {what}",
                c.display()
            ))
        };
        if a.file_type().is_symlink() {
            if fs::read_link(&p).at("read link", &p)? != fs::read_link(&c).at("read link", &c)? {
                return Err(differs("link target"));
            }
        } else {
            if a.mode() != b.mode() {
                return Err(differs("mode"));
            }
            if a.is_file() {
                if (a.mtime(), a.mtime_nsec()) != (b.mtime(), b.mtime_nsec()) {
                    return Err(differs("mtime"));
                }
                if fs::read(&p).at("read", &p)? != fs::read(&c).at("read", &c)? {
                    return Err(differs("content"));
                }
            }
            if a.is_dir() {
                for e in fs::read_dir(&p).at("read", &p)? {
                    stack.push(e.at("read", &p)?.path());
                }
            }
        }
        count += 1;
    }
    Ok(count)
}

/// Compare two databases table by table, row by row.
pub fn compare_database(a: &Path, b: &Path) -> Result<()> {
    let dump = |p: &Path| -> rusqlite::Result<Vec<String>> {
        let c = rusqlite::Connection::open(p)?;
        let mut tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for t in tables.drain(..) {
            let mut stmt = c.prepare(&format!(
                "SELECT * FROM \"{}\" ORDER BY rowid",
                t.replace('"', "\"\"")
            ))?;
            let n = stmt.column_count();
            let rows = stmt.query_map([], |r| {
                (0..n)
                    .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?;
            for row in rows {
                out.push(format!("{t}|{}", row?.join("|")));
            }
        }
        Ok(out)
    };
    let sql = |e: rusqlite::Error| msg(format!("comparing databases: {e}"));
    if dump(a).map_err(sql)? != dump(b).map_err(sql)? {
        return Err(msg(format!(
            "restored database {} differs from {}",
            b.display(),
            a.display()
        )));
    }
    Ok(())
}
