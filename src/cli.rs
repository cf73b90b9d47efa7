//! The command line of DESIGN.md: parsing and the one-shot commands.
//!
//! Every command returns `Result`; `main` prints an error as one line
//! (`rvm-backup: error: …`) and exits 1 (2 for bad usage). Nothing input can
//! reach panics.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::error::{msg, Error, Result};
use crate::progress::Progress;
use crate::restore::Selector;
use crate::store::{Listed, Store};
use crate::strategy::Strategy;

pub const USAGE: &str = "\
usage: rvm-backup [--config FILE] [--quiet] COMMAND [ARGS]

commands:
  keygen --out FILE                  new random master key (mode 0600); prints its id
  backup [STRATEGY...|--all]         back up now (strategies: database config logs application)
  list [STRATEGY] [--json]           list archives (from their sidecars)
  verify [ID...|--all]               read every byte of archives and check it
  restore STRATEGY [ID|latest] [--at TIME] [--target DIR] [--file PATH]
                                     restore an archive (in place unless --target)
  prune [--dry-run]                  apply retention (keep_* and retention_days)
  daemon                             scheduler, jobs and control socket, in the foreground
  ctl [--socket PATH] LINE...        send one request line to the daemon; exits 1 on ERR
  audit verify                       check the audit log's hash chain
  demo [--dir DIR]                   make a sample board tree, back it up, verify and restore it
  help                               this text

config: --config FILE, else $RVM_BACKUP_CONFIG, else /etc/rvm-backup/rvm-backup.toml";

/// Options that apply to every command.
struct Global {
    config: Option<PathBuf>,
    quiet: bool,
}

/// Run the command line; returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    crate::logger::init(log::LevelFilter::Warn);
    let args: Vec<String> = match args.into_iter().map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("rvm-backup: error: argument {bad:?} is not valid UTF-8");
            return 2;
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rvm-backup: error: {e}");
            if matches!(e, Error::Usage(_)) {
                2
            } else {
                1
            }
        }
    }
}

fn run(args: Vec<String>) -> Result<i32> {
    let (global, rest) = split_global(args)?;
    let Some((command, args)) = rest.split_first() else {
        println!("{USAGE}");
        return Ok(2);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(0)
        }
        "--version" | "version" => {
            println!("rvm-backup {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "keygen" => keygen(args),
        "demo" => crate::demo::run(args, global.quiet),
        "ctl" => {
            let mut args = args.to_vec();
            let socket = match take_value(&mut args, "--socket")? {
                Some(s) => PathBuf::from(s),
                // A platform service may not be allowed to read the config:
                // then the default socket, unless a config was named.
                None => match Config::load(&Config::locate(global.config.as_deref())) {
                    Ok(c) => c.socket,
                    Err(e) if global.config.is_some() => return Err(e.into()),
                    Err(_) => PathBuf::from(crate::config::DEFAULT_SOCKET),
                },
            };
            ctl(&socket, &args)
        }
        "backup" | "list" | "verify" | "restore" | "prune" | "daemon" | "audit" => {
            let cfg = Config::load(&Config::locate(global.config.as_deref()))?;
            crate::logger::init(if global.quiet {
                cfg.log_level.min(log::LevelFilter::Warn)
            } else {
                cfg.log_level
            });
            let ctx = Ctx {
                cfg,
                quiet: global.quiet,
            };
            match command.as_str() {
                "backup" => ctx.backup(args),
                "list" => ctx.list(args),
                "verify" => ctx.verify(args),
                "prune" => ctx.prune(args),
                "daemon" => {
                    no_unknown_flags(args)?;
                    crate::daemon::run(&ctx.cfg.file)
                }
                "audit" => audit(&ctx.cfg, args),
                _ => ctx.restore(args),
            }
        }
        other => Err(Error::Usage(format!("unknown command {other:?}"))),
    }
}

fn split_global(args: Vec<String>) -> Result<(Global, Vec<String>)> {
    let mut global = Global {
        config: None,
        quiet: false,
    };
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                global.config =
                    Some(PathBuf::from(it.next().ok_or_else(|| {
                        Error::Usage("--config needs a file".into())
                    })?))
            }
            "--quiet" | "-q" => global.quiet = true,
            _ => rest.push(a),
        }
    }
    Ok((global, rest))
}

/// Pull `--flag VALUE` out of `args`.
fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    if i + 1 >= args.len() {
        return Err(Error::Usage(format!("{flag} needs a value")));
    }
    let v = args.remove(i + 1);
    args.remove(i);
    Ok(Some(v))
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn no_unknown_flags(args: &[String]) -> Result<()> {
    match args.iter().find(|a| a.starts_with('-')) {
        Some(f) => Err(Error::Usage(format!("unknown option {f}"))),
        None => Ok(()),
    }
}

fn keygen(args: &[String]) -> Result<i32> {
    let mut args = args.to_vec();
    let out = take_value(&mut args, "--out")?
        .ok_or_else(|| Error::Usage("keygen needs --out FILE".into()))?;
    no_unknown_flags(&args)?;
    if let Some(extra) = args.first() {
        return Err(Error::Usage(format!("unexpected argument {extra:?}")));
    }
    let key = crate::keys::generate(Path::new(&out))?;
    println!("{}", key.id());
    Ok(0)
}

struct Ctx {
    cfg: Config,
    quiet: bool,
}

impl Ctx {
    fn store(&self) -> Store {
        Store::for_config(&self.cfg)
    }

    /// The master key when encryption is on; otherwise the key if one is
    /// there (older archives may still be encrypted).
    fn key(&self) -> Result<Option<MasterKey>> {
        if self.cfg.encryption_enabled || self.cfg.key_file.exists() {
            crate::keys::load(&self.cfg.key_file).map(Some)
        } else {
            Ok(None)
        }
    }

    fn progress(&self) -> Progress {
        Progress::new(self.quiet)
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            println!("{line}");
        }
    }

    fn backup(&self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let all = take_flag(&mut args, "--all");
        no_unknown_flags(&args)?;
        let strategies = if all || args.is_empty() {
            let c = self.cfg.configured();
            if c.is_empty() {
                return Err(msg(format!("{} configures no strategy: add a [database], [config], [logs] or [application] section", self.cfg.file.display())));
            }
            c
        } else {
            parse_strategies(&args)?
        };
        let key = if self.cfg.encryption_enabled {
            Some(crate::keys::load(&self.cfg.key_file)?)
        } else {
            None
        };
        let store = self.store();
        let lock = store.lock()?;
        let mut failed = 0;
        for s in strategies {
            let mut progress = self.progress();
            let outcome = smol::block_on(crate::backup::run(
                &self.cfg,
                &store,
                &lock,
                s,
                key.as_ref(),
                &mut progress,
            ));
            // Where the daemon and `HEALTH` look.
            let result = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
            crate::state::update(&self.cfg.backup_dir, s, |r| {
                r.record_run(result, crate::timefmt::now_unix())
            });
            match outcome {
                Ok(m) => self.say(&format!(
                    "{}  {} files, {} read, {} stored in {:.1} s{}",
                    m.id,
                    m.files,
                    human_bytes(m.content_bytes),
                    human_bytes(m.archive_bytes),
                    m.duration_ms as f64 / 1000.0,
                    if m.changed_while_read > 0 {
                        format!(", {} changed while read", m.changed_while_read)
                    } else {
                        String::new()
                    }
                )),
                Err(e) => {
                    eprintln!("rvm-backup: error: backup {s} failed: {e}");
                    failed += 1;
                }
            }
        }
        Ok(if failed > 0 { 1 } else { 0 })
    }

    fn list(&self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let json = take_flag(&mut args, "--json");
        no_unknown_flags(&args)?;
        let only = match args.as_slice() {
            [] => None,
            [s] => Some(parse_strategy(s)?),
            _ => return Err(Error::Usage("list takes at most one strategy".into())),
        };
        let key = self.key()?;
        let listing = self.store().list(only, key.as_ref());
        for a in &listing.archives {
            if json {
                println!("{}", a.to_json());
            } else {
                println!(
                    "{}  {}  {:>6} files  {:>10}  {}",
                    a.meta.id,
                    crate::timefmt::rfc3339(a.meta.created),
                    a.meta.files,
                    human_bytes(a.meta.archive_bytes),
                    if a.meta.encrypted {
                        format!("key {}", a.meta.key_id)
                    } else {
                        "unencrypted".into()
                    }
                );
            }
        }
        for (path, e) in &listing.problems {
            eprintln!("rvm-backup: error: {}: {e}", path.display());
        }
        Ok(if listing.problems.is_empty() { 0 } else { 1 })
    }

    fn verify(&self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let all = take_flag(&mut args, "--all");
        no_unknown_flags(&args)?;
        let key = self.key()?;
        let listing = self.store().list(None, key.as_ref());
        let chosen: Vec<&Listed> = if all || args.is_empty() {
            listing.archives.iter().collect()
        } else {
            args.iter()
                .map(|id| crate::store::resolve(&listing.archives, id))
                .collect::<Result<_>>()?
        };
        let mut failed = 0;
        if all || args.is_empty() {
            for (path, e) in &listing.problems {
                eprintln!("rvm-backup: error: FAILED {}: {e}", path.display());
                failed += 1;
            }
        }
        for a in chosen {
            let mut progress = self.progress();
            match smol::block_on(crate::verify::verify(a, key.as_ref(), &mut progress)) {
                Ok(v) => self.say(&format!(
                    "OK {}  {} entries, {}",
                    a.meta.id,
                    v.entries,
                    human_bytes(v.content_bytes)
                )),
                Err(e) => {
                    eprintln!("rvm-backup: error: FAILED {}: {e}", a.meta.id);
                    failed += 1;
                }
            }
        }
        Ok(if failed > 0 { 1 } else { 0 })
    }

    fn prune(&self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let dry_run = take_flag(&mut args, "--dry-run");
        no_unknown_flags(&args)?;
        if let Some(extra) = args.first() {
            return Err(Error::Usage(format!("unexpected argument {extra:?}")));
        }
        let key = self.key()?;
        let store = self.store();
        // A dry run changes nothing, so it needs no lock.
        let lock = if dry_run { None } else { Some(store.lock()?) };
        let (plans, archives) =
            crate::prune::plan(&self.cfg, &store, key.as_ref(), crate::timefmt::now_unix())?;
        for p in &plans {
            for d in &p.decisions {
                let verdict = if d.keep {
                    "keep"
                } else if dry_run {
                    "would delete"
                } else {
                    "delete"
                };
                self.say(&format!(
                    "{verdict:<12} {}  ({})",
                    d.id,
                    d.reasons.join(", ")
                ));
            }
        }
        if let Some(lock) = &lock {
            crate::prune::apply(&plans, &archives, lock)?;
        }
        Ok(0)
    }

    fn restore(&self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let at = take_value(&mut args, "--at")?;
        let target = take_value(&mut args, "--target")?.map(PathBuf::from);
        let file = take_value(&mut args, "--file")?.map(PathBuf::from);
        no_unknown_flags(&args)?;
        let (strategy, which) = match args.as_slice() {
            [s] => (parse_strategy(s)?, None),
            [s, w] => (parse_strategy(s)?, Some(w.clone())),
            _ => return Err(Error::Usage("restore needs STRATEGY [ID|latest]".into())),
        };
        let selector = match (which.as_deref(), at) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "give either an archive id or --at, not both".into(),
                ))
            }
            (_, Some(t)) => Selector::At(crate::timefmt::parse(&t).map_err(Error::Usage)?),
            (None | Some("latest"), None) => Selector::Latest,
            (Some(id), None) => Selector::Id(id.to_string()),
        };
        if let Some(f) = &file {
            if !crate::restore::is_plain_absolute(f) {
                return Err(Error::Usage(format!(
                    "--file {} must be an absolute path as `list` shows it",
                    f.display()
                )));
            }
        }
        let target = match target {
            Some(t) if !t.is_absolute() => Some(
                std::env::current_dir()
                    .map_err(|e| msg(format!("no working directory: {e}")))?
                    .join(t),
            ),
            t => t,
        };
        let key = self.key()?;
        let listing = self.store().list(Some(strategy), key.as_ref());
        for (path, e) in &listing.problems {
            log::warn!("ignoring unreadable sidecar {}: {e}", path.display());
        }
        let archive = match crate::restore::select(&listing.archives, strategy, &selector) {
            Ok(a) => a,
            // An unreadable sidecar (wrong key, damage) explains better than
            // "no archive".
            Err(e) => return Err(listing.problems.into_iter().next().map_or(e, |(_, p)| p)),
        };
        let mut progress = self.progress();
        let r = smol::block_on(crate::restore::run(
            archive,
            key.as_ref(),
            target.as_deref(),
            file.as_deref(),
            false,
            &mut progress,
        ))?;
        self.say(&format!(
            "restored {}: {} files, {} dirs, {} symlinks, {}{}",
            r.id,
            r.files,
            r.dirs,
            r.symlinks,
            human_bytes(r.bytes),
            r.previous_database
                .map(|p| format!("; previous database kept as {}", p.display()))
                .unwrap_or_default()
        ));
        Ok(0)
    }
}

/// `ctl LINE…`: one request to the daemon, its reply on stdout.
fn ctl(socket: &Path, args: &[String]) -> Result<i32> {
    use std::io::{BufRead, BufReader, Write};
    if args.is_empty() {
        return Err(Error::Usage(
            "ctl needs a request, e.g. `rvm-backup ctl STATUS`".into(),
        ));
    }
    let line = args.join(" ");
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        msg(format!(
            "cannot reach the daemon on {}: {e} (is `rvm-backup daemon` running?)",
            socket.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| msg(e.to_string()))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| msg(format!("cannot send to the daemon: {e}")))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| msg(format!("no reply from the daemon: {e}")))?;
    if reply.is_empty() {
        return Err(msg("the daemon closed the connection without a reply"));
    }
    print!("{reply}");
    Ok(if reply.starts_with("OK") { 0 } else { 1 })
}

/// `audit verify`: check the audit log's chain and head.
fn audit(cfg: &Config, args: &[String]) -> Result<i32> {
    match args {
        [v] if v == "verify" => {
            let state = crate::audit::verify(&cfg.audit_log)?;
            println!(
                "audit log {} OK: {} records, chain intact",
                cfg.audit_log.display(),
                state.records
            );
            Ok(0)
        }
        _ => Err(Error::Usage("audit takes one subcommand: verify".into())),
    }
}

fn parse_strategy(s: &str) -> Result<Strategy> {
    Strategy::parse(s).ok_or_else(|| {
        Error::Usage(format!(
            "unknown strategy {s:?}: use database, config, logs or application"
        ))
    })
}

fn parse_strategies(args: &[String]) -> Result<Vec<Strategy>> {
    let mut v: Vec<Strategy> = args
        .iter()
        .map(|a| parse_strategy(a))
        .collect::<Result<_>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
