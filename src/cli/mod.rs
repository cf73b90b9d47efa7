//! The command line of DESIGN.md: global options, dispatch, argument
//! helpers. Commands are in `commands` (one-shot operations, through the
//! operations layer) and `ctl` (the daemon's client).
//!
//! Every command returns `Result`; `main` prints an error as one line
//! (`rvm-backup: error: …`) and exits 1 (2 for bad usage). Nothing input can
//! reach panics, and no output error aborts the process (see `out`).

mod check;
mod commands;
mod ctl;
mod disaster;
mod offsite;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::out::{error_line, Out};
use crate::strategy::Strategy;

pub const USAGE: &str = "\
usage: rvm-backup [--config FILE] [--quiet] COMMAND [ARGS]

commands:
  keygen --out FILE                  new random master key (mode 0600); prints its id
  keygen --rotate                    add a new writing key to the key ring in key_file
  keygen --list                      key ids of the ring and how many archives use each
  keygen --recovery --out FILE       fleet recovery key pair: private half in FILE (0600),
                                     prints the recovery_public_key line for the config
  backup [STRATEGY...|--all] [--full]
                                     back up now (strategies: database config logs application);
                                     incremental (changed files and pages) unless --full
  list [STRATEGY] [--json]           list archives (from their sidecars)
  verify [ID...|--all]               read every byte of archives and check it
  restore STRATEGY [ID|latest] [--at TIME] [--target DIR] [--file PATH] [--accept-damaged] [--from offsite]
                                     restore an archive (in place unless --target);
                                     --from offsite: the archive from the [offsite] store
  restore --all [--at TIME] [--target DIR] [--accept-damaged]
                                     full-system restore: every strategy as of TIME
  disaster-restore [--from DIR|s3] [--recovery-key FILE] [--target DIR] [--dry-run] [--boot]
                                     restore the board from the newest recovery set on a
                                     stick (DIR: default export_dir), or with --from s3 from
                                     the [offsite] store; --boot: what the boot unit runs
                                     (waits up to recovery_timeout for the stick)
  prune [--dry-run]                  apply retention (keep_* and retention_days)
  drill [STRATEGY...|--all] [--json] recovery test: restore the newest archives into
                                     scratch space, check and time them; exits 1 on a failure
  export [--to DIR]                  write a verified recovery set onto the stick mounted at DIR
                                     (default: export_dir); re-export copies only what changed
  offsite sync                       ship archives, sidecars and WAL segments to the [offsite]
                                     S3 store (resumable; never overwrites)
  offsite list [--json]              the objects under this board's prefix
  offsite verify [--read]            check every local file's object (size; --read: content)
  offsite prune --credentials FILE [--keep N] [--dry-run]
                                     delete from the store what local retention dropped, with a
                                     separate identity allowed to delete (keeps the newest N)
  metrics                            the metrics in the Prometheus text format (what METRICS gives)
  daemon                             scheduler, jobs and control socket, in the foreground
  ctl [--socket PATH] LINE...        send one request line to the daemon; exits 1 on ERR
  alert test [--severity S] [--socket PATH]
                                     have the daemon send a test alert to every [[alert]]
                                     sink (S: warning (default), critical or ok)
  check [--json]                     evaluate the monitoring rules once; exit 0 OK, 1 WARNING,
                                     2 CRITICAL, 3 UNKNOWN (for the platform's monitoring)
  audit verify                       check the audit log's hash chain
  demo [--dir DIR] [--serve]         make a sample board tree, back it up, verify and restore it
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
    let mut out = Out::new();
    let args: Vec<String> = match args.into_iter().map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            error_line(&format!("argument {bad:?} is not valid UTF-8"));
            return 2;
        }
    };
    let code = match run(args, &mut out) {
        Ok(code) => code,
        Err(e) => {
            error_line(&e.to_string());
            if matches!(e, Error::Usage(_)) {
                2
            } else {
                1
            }
        }
    };
    out.finish(code)
}

fn run(args: Vec<String>, out: &mut Out) -> Result<i32> {
    let (global, rest) = split_global(args)?;
    let Some((command, args)) = rest.split_first() else {
        out.line(USAGE);
        return Ok(2);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            out.line(USAGE);
            Ok(0)
        }
        "--version" | "version" => {
            out.line(&format!("rvm-backup {}", env!("CARGO_PKG_VERSION")));
            Ok(0)
        }
        "keygen" => commands::keygen(global.config.as_deref(), args, out),
        "demo" => crate::demo::run(args, global.quiet, out),
        "ctl" => ctl::run(global.config.as_deref(), args, out),
        "alert" => ctl::alert(global.config.as_deref(), args, out),
        "check" => check::run(global.config.as_deref(), args, out),
        "backup" | "list" | "verify" | "restore" | "prune" | "drill" | "export" | "daemon"
        | "audit" | "disaster-restore" | "metrics" | "offsite" => {
            let cfg = Config::load(&Config::locate(global.config.as_deref()))?;
            crate::logger::init(if global.quiet {
                cfg.log_level.min(log::LevelFilter::Warn)
            } else {
                cfg.log_level
            });
            match command.as_str() {
                "daemon" => {
                    no_unknown_flags(args)?;
                    no_arguments(args)?;
                    crate::daemon::run(&cfg.file)
                }
                "audit" => commands::audit(&cfg, args, out),
                "disaster-restore" => disaster::run(cfg, args, global.quiet, out),
                "offsite" => {
                    let session = crate::ops::Session::open(cfg)?;
                    offsite::run(session, args, global.quiet, out)
                }
                _ => {
                    let session = crate::ops::Session::open(cfg)?;
                    let ctx = commands::Ctx {
                        session,
                        quiet: global.quiet,
                        out,
                    };
                    match command.as_str() {
                        "backup" => ctx.backup(args),
                        "list" => ctx.list(args),
                        "verify" => ctx.verify(args),
                        "prune" => ctx.prune(args),
                        "drill" => ctx.drill(args),
                        "export" => ctx.export(args),
                        "metrics" => ctx.metrics(args),
                        _ => ctx.restore(args),
                    }
                }
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

fn no_arguments(args: &[String]) -> Result<()> {
    match args.first() {
        Some(extra) => Err(Error::Usage(format!("unexpected argument {extra:?}"))),
        None => Ok(()),
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
