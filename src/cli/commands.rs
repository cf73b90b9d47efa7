//! The one-shot commands: parse their arguments, call the operations
//! layer, print the reports.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{msg, Error, Result};
use crate::ops::{RestoreRequest, Session, Which};
use crate::out::{error_line, human_bytes, Out};
use crate::progress::Progress;
use crate::restore::Selector;

use super::{
    no_arguments, no_unknown_flags, parse_strategies, parse_strategy, take_flag, take_value,
};

/// `keygen --out FILE`, `keygen --recovery --out FILE`, `keygen --rotate`,
/// `keygen --list`. Only the last two read the config (for `key_file`).
pub(super) fn keygen(config: Option<&Path>, args: &[String], out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let recovery = take_flag(&mut args, "--recovery");
    let rotate = take_flag(&mut args, "--rotate");
    let list = take_flag(&mut args, "--list");
    let file = take_value(&mut args, "--out")?;
    no_unknown_flags(&args)?;
    no_arguments(&args)?;
    match (recovery, rotate, list, file) {
        (false, false, false, Some(file)) => {
            let key = crate::keys::generate(Path::new(&file))?;
            out.line(&key.id().to_string());
        }
        (true, false, false, Some(file)) => {
            let public = crate::recovery::generate(Path::new(&file))?;
            out.line(&format!(
                "recovery_public_key = \"{public}\"  # recovery key id {}",
                public.id()
            ));
        }
        (false, true, false, None) => {
            let cfg = Config::load(&Config::locate(config))?;
            let ring = crate::keys::rotate(&cfg.key_file)?;
            let id = ring.writing().id();
            out.line(&id.to_string());
            let mut note = format!(
                "key ring {} now holds {} keys; new archives are written with {id}; reload the daemon (SIGHUP) so it uses it",
                cfg.key_file.display(),
                ring.keys().len()
            );
            if cfg.recovery_public_key.is_some() {
                note.push_str(", and export again so the recovery stick holds the new key");
            }
            out.line(&note);
        }
        (false, false, true, None) => {
            let cfg = Config::load(&Config::locate(config))?;
            keys_in_use(Session::open(cfg)?, out)?;
        }
        _ => {
            return Err(Error::Usage(
                "keygen takes one of: --out FILE, --recovery --out FILE, --rotate, --list".into(),
            ))
        }
    }
    Ok(0)
}

/// `keygen --list`: every key id of the ring (oldest first, the writing key
/// marked) with how many archives of the store use it; then keys archives
/// need that the ring lacks.
fn keys_in_use(session: Session, out: &mut Out) -> Result<()> {
    use crate::crypto::KeyId;
    use crate::format::FormatError;
    let ring = session
        .key()
        .ok_or_else(|| msg("no key file is configured or present; nothing to list"))?;
    let listing = session.list(None);
    let mut used: Vec<(KeyId, u64)> = Vec::new();
    let mut count = |id: KeyId| match used.iter_mut().find(|(k, _)| *k == id) {
        Some((_, n)) => *n += 1,
        None => used.push((id, 1)),
    };
    let mut plain = 0u64;
    for a in &listing.archives {
        if a.meta.encrypted {
            count(a.meta.key_id);
        } else {
            plain += 1;
        }
    }
    let mut unreadable = 0u64;
    for (_, e) in &listing.problems {
        match e {
            Error::Archive {
                source: FormatError::WrongKey { needed, .. } | FormatError::NeedKey(needed),
                ..
            } => count(*needed),
            _ => unreadable += 1,
        }
    }
    let uses = |id: KeyId| used.iter().find(|(k, _)| *k == id).map_or(0, |(_, n)| *n);
    let writing = ring.writing().id();
    for id in ring.ids() {
        let n = uses(id);
        let mark = if id == writing { "writing" } else { "" };
        out.line(&format!("{id}  {mark:<7}  {n} archive{}", plural(n)));
    }
    for (id, n) in used.iter().filter(|(id, _)| ring.get(*id).is_none()) {
        out.line(&format!(
            "{id}  MISSING  {n} archive{} need this key, which the key ring lacks",
            plural(*n)
        ));
    }
    if plain > 0 {
        out.line(&format!("unencrypted: {plain} archive{}", plural(plain)));
    }
    if unreadable > 0 {
        out.line(&format!(
            "{unreadable} sidecar{} could not be read (see `rvm-backup list`)",
            plural(unreadable)
        ));
    }
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `audit verify`: check the audit log's chain and head.
pub(super) fn audit(cfg: &Config, args: &[String], out: &mut Out) -> Result<i32> {
    match args {
        [v] if v == "verify" => {
            let state = crate::audit::verify(&cfg.audit_log)?;
            out.line(&format!(
                "audit log {} OK: {} records, chain intact",
                cfg.audit_log.display(),
                state.records
            ));
            Ok(0)
        }
        _ => Err(Error::Usage("audit takes one subcommand: verify".into())),
    }
}

pub(super) struct Ctx<'a> {
    pub session: Session,
    pub quiet: bool,
    pub out: &'a mut Out,
}

impl Ctx<'_> {
    fn progress(&self) -> Progress {
        Progress::new(self.quiet)
    }

    /// An informational line (`--quiet` drops it).
    fn say(&mut self, line: &str) {
        if !self.quiet {
            self.out.line(line);
        }
    }

    pub fn backup(mut self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let all = take_flag(&mut args, "--all");
        let full = take_flag(&mut args, "--full");
        no_unknown_flags(&args)?;
        let strategies = if all || args.is_empty() {
            self.session.all_strategies()?
        } else {
            parse_strategies(&args)?
        };
        let mut failed = 0;
        for s in strategies {
            let mut progress = self.progress();
            match smol::block_on(self.session.backup_with(s, full, &mut progress)) {
                Ok(r) => {
                    let m = &r.meta;
                    let line = format!(
                        "{}  {} files, {} read, {} stored in {:.1} s, verified{}{}",
                        m.id,
                        m.files,
                        human_bytes(m.content_bytes),
                        human_bytes(m.archive_bytes),
                        m.duration_ms as f64 / 1000.0,
                        if m.changed_while_read > 0 {
                            format!(", {} changed while read", m.changed_while_read)
                        } else {
                            String::new()
                        },
                        match &m.parent {
                            Some(p) => format!(", incremental on {p}"),
                            None => String::new(),
                        }
                    );
                    self.say(&line);
                    if let Some(problem) = &r.problem {
                        error_line(&format!("backup {s}: {problem}"));
                        failed += 1;
                    }
                }
                Err(e) => {
                    error_line(&format!("backup {s} failed: {e}"));
                    failed += 1;
                }
            }
        }
        Ok(if failed > 0 { 1 } else { 0 })
    }

    pub fn list(self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let json = take_flag(&mut args, "--json");
        no_unknown_flags(&args)?;
        let only = match args.as_slice() {
            [] => None,
            [s] => Some(parse_strategy(s)?),
            _ => return Err(Error::Usage("list takes at most one strategy".into())),
        };
        let listing = self.session.list(only);
        for a in &listing.archives {
            if json {
                self.out.line(&a.to_json().to_string());
            } else {
                self.out.line(&format!(
                    "{}  {}  {:>6} files  {:>10}  {}{}{}",
                    a.meta.id,
                    crate::timefmt::rfc3339(a.meta.created),
                    a.meta.files,
                    human_bytes(a.meta.archive_bytes),
                    if a.meta.encrypted {
                        format!("key {}", a.meta.key_id)
                    } else {
                        "unencrypted".into()
                    },
                    match a.meta.db_check.as_deref() {
                        Some(c) if c != "ok" => format!("  DAMAGED SOURCE: {c}"),
                        _ => String::new(),
                    },
                    match &a.meta.parent {
                        Some(p) => format!("  incremental on {p}"),
                        None => String::new(),
                    }
                ));
            }
        }
        if matches!(only, None | Some(crate::strategy::Strategy::Database)) {
            for r in self.session.pitr_ranges() {
                if json {
                    self.out.line(&r.to_json().to_string());
                } else {
                    self.out.line(&format!(
                        "pitr {}  restorable {} .. {}  {} segments{}",
                        r.generation,
                        crate::pitr::rfc3339_nanos(r.first),
                        crate::pitr::rfc3339_nanos(r.last),
                        r.segments,
                        r.problem
                            .as_deref()
                            .map(|p| format!("  UNUSABLE: {p}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        for (path, e) in &listing.problems {
            error_line(&format!("{}: {e}", path.display()));
        }
        Ok(if listing.problems.is_empty() { 0 } else { 1 })
    }

    /// `metrics`: the metrics the daemon's `METRICS` gives, in the
    /// Prometheus text format, for setups without the daemon's socket or
    /// node_exporter (rule states and the outbox are the daemon's; none
    /// here).
    pub fn metrics(self, args: &[String]) -> Result<i32> {
        no_unknown_flags(args)?;
        no_arguments(args)?;
        let text = crate::monitor::metrics::text(&self.session, &[], None, None);
        self.out.line(text.trim_end_matches('\n'));
        Ok(0)
    }

    pub fn verify(self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let all = take_flag(&mut args, "--all");
        no_unknown_flags(&args)?;
        let which = if all || args.is_empty() {
            Which::All
        } else {
            Which::Ids(args)
        };
        let mut progress = self.progress();
        let (quiet, out) = (self.quiet, self.out);
        let report = smol::block_on(self.session.verify(&which, &mut progress, |id, r| match r {
            Ok(v) if !quiet => out.line(&format!(
                "OK {id}  {} entries, {}",
                v.entries,
                human_bytes(v.content_bytes)
            )),
            Ok(_) => {}
            Err(e) => error_line(&format!("FAILED {id}: {e}")),
        }))?;
        for (path, e) in &report.unreadable {
            error_line(&format!("FAILED {}: {e}", path.display()));
        }
        let mut failures = report.failures();
        if matches!(which, Which::All) {
            for (id, r) in smol::block_on(self.session.verify_pitr()) {
                match r {
                    Ok(n) if !quiet => out.line(&format!("OK pitr {id}  {n} WAL segments")),
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        error_line(&format!("FAILED pitr {id}: {e}"));
                    }
                }
            }
        }
        Ok(if failures > 0 { 1 } else { 0 })
    }

    pub fn prune(mut self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let dry_run = take_flag(&mut args, "--dry-run");
        no_unknown_flags(&args)?;
        no_arguments(&args)?;
        let report = self.session.prune(dry_run)?;
        let mut lines = Vec::new();
        for d in report.plans.iter().flat_map(|p| &p.decisions) {
            let verdict = if d.keep {
                "keep"
            } else if dry_run {
                "would delete"
            } else {
                "delete"
            };
            lines.push(format!(
                "{verdict:<12} {}  ({})",
                d.id,
                d.reasons.join(", ")
            ));
        }
        for l in lines {
            self.say(&l);
        }
        Ok(0)
    }

    pub fn restore(mut self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let at = take_value(&mut args, "--at")?;
        let target = take_value(&mut args, "--target")?.map(PathBuf::from);
        let file = take_value(&mut args, "--file")?.map(PathBuf::from);
        let accept_damaged = take_flag(&mut args, "--accept-damaged");
        let all = take_flag(&mut args, "--all");
        let offsite = match take_value(&mut args, "--from")?.as_deref() {
            None => false,
            Some("offsite") if all => {
                return Err(Error::Usage(
                    "--from offsite restores one strategy; for the whole board use `disaster-restore --from s3`".into(),
                ))
            }
            Some("offsite") => true,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "restore --from takes only `offsite` (got {other:?})"
                )))
            }
        };
        no_unknown_flags(&args)?;
        if all {
            return self.restore_all(&args, at, target, file, accept_damaged);
        }
        let (strategy, which) = match args.as_slice() {
            [s] => (parse_strategy(s)?, None),
            [s, w] => (parse_strategy(s)?, Some(w.clone())),
            _ => {
                return Err(Error::Usage(
                    "restore needs STRATEGY [ID|latest], or --all".into(),
                ))
            }
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
        let target = absolute_target(target)?;
        let req = RestoreRequest {
            strategy,
            selector,
            target,
            file,
            accept_damaged,
        };
        let mut progress = self.progress();
        let r = if offsite {
            smol::block_on(self.session.restore_from_offsite(&req, &mut progress))?
        } else {
            smol::block_on(self.session.restore(&req, &mut progress))?
        };
        if let Some(p) = &r.pitr {
            self.say(p);
        }
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

    /// `restore --all [--at TIME] [--target DIR] [--accept-damaged]`.
    fn restore_all(
        mut self,
        args: &[String],
        at: Option<String>,
        target: Option<PathBuf>,
        file: Option<PathBuf>,
        accept_damaged: bool,
    ) -> Result<i32> {
        if file.is_some() {
            return Err(Error::Usage(
                "--file restores one entry of one strategy; it cannot go with --all".into(),
            ));
        }
        if let Some(extra) = args.first() {
            return Err(Error::Usage(format!(
                "restore --all takes no strategy or archive id (got {extra:?}); use --at TIME for a point in time"
            )));
        }
        let at = at
            .map(|t| crate::timefmt::parse(&t).map_err(Error::Usage))
            .transpose()?;
        let target = absolute_target(target)?;
        let mut progress = self.progress();
        let report =
            smol::block_on(
                self.session
                    .restore_all(at, target, accept_damaged, &mut progress),
            )?;
        let mut files = 0u64;
        let mut bytes = 0u64;
        for r in &report.restored {
            files = files.saturating_add(r.files);
            bytes = bytes.saturating_add(r.bytes);
            self.say(&format!(
                "restored {:<11} {}  created {}  {} files, {} in {:.1} s{}",
                r.strategy.name(),
                r.id,
                crate::timefmt::rfc3339(r.created),
                r.files,
                human_bytes(r.bytes),
                r.seconds,
                r.previous_database
                    .as_ref()
                    .map(|p| format!("; previous database kept as {}", p.display()))
                    .unwrap_or_default()
            ));
            if let Some(p) = &r.pitr {
                self.say(&format!("  {}: {p}", r.strategy.name()));
            }
        }
        self.say(&format!(
            "restored all {} strategies{} {}: {} files, {} in {:.1} s",
            report.restored.len(),
            report
                .at
                .map(|t| format!(" as of {}", crate::timefmt::rfc3339(t)))
                .unwrap_or_else(|| " (newest archives)".into()),
            if report.in_place {
                "in place"
            } else {
                "into the target"
            },
            files,
            human_bytes(bytes),
            report.seconds
        ));
        Ok(0)
    }

    /// `drill [STRATEGY...|--all] [--json]`: one line per strategy (a JSON
    /// object with `--json`); exit 1 when any drill failed.
    pub fn drill(self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let all = take_flag(&mut args, "--all");
        let json = take_flag(&mut args, "--json");
        no_unknown_flags(&args)?;
        if all && !args.is_empty() {
            return Err(Error::Usage("give strategies or --all, not both".into()));
        }
        let strategies = if args.is_empty() {
            self.session.all_strategies()?
        } else {
            parse_strategies(&args)?
        };
        let mut progress = self.progress();
        let report = smol::block_on(self.session.drill(&strategies, &mut progress))?;
        for o in &report.outcomes {
            if json {
                self.out.line(&o.to_json().to_string());
            } else {
                let verdict = if o.ok { "OK    " } else { "FAILED" };
                self.out.line(&format!("{verdict} {}", o.describe()));
            }
            if !o.ok {
                error_line(&format!(
                    "drill {} failed: {}",
                    o.strategy,
                    o.error.as_deref().unwrap_or("")
                ));
            }
        }
        Ok(if report.all_ok() { 0 } else { 1 })
    }
}

impl Ctx<'_> {
    /// `export [--to DIR]`: one line per strategy (what was copied or was
    /// on the stick already), the set, the total.
    pub fn export(self, args: &[String]) -> Result<i32> {
        let mut args = args.to_vec();
        let to = take_value(&mut args, "--to")?;
        no_unknown_flags(&args)?;
        no_arguments(&args)?;
        let to = absolute_target(to.map(PathBuf::from))?;
        let mut progress = self.progress();
        let r = smol::block_on(self.session.export(to.as_deref(), &mut progress))?;
        for a in &r.archives {
            let what = if a.copied_bytes == 0 {
                format!("already on the stick, {}", human_bytes(a.reused_bytes))
            } else if a.reused_bytes == 0 {
                format!("copied {}", human_bytes(a.copied_bytes))
            } else {
                format!(
                    "copied {}, {} already on the stick",
                    human_bytes(a.copied_bytes),
                    human_bytes(a.reused_bytes)
                )
            };
            self.out
                .line(&format!("{:<12} {}  {what}", a.strategy.name(), a.id));
        }
        self.out.line(&format!(
            "set {} written to {} and verified{}",
            r.set,
            r.board_dir.display(),
            if r.encrypted {
                ", key ring sealed to the recovery key"
            } else {
                " (unencrypted: no key on the stick)"
            }
        ));
        if !r.removed_sets.is_empty() {
            self.out
                .line(&format!("removed older sets: {}", r.removed_sets.join(" ")));
        }
        self.out.line(&format!(
            "total: copied {} bytes ({}), already on the stick {} bytes ({})",
            r.copied(),
            human_bytes(r.copied()),
            r.reused(),
            human_bytes(r.reused())
        ));
        Ok(0)
    }
}

/// A relative `--target` is taken from the working directory.
pub(super) fn absolute_target(target: Option<PathBuf>) -> Result<Option<PathBuf>> {
    Ok(match target {
        Some(t) if !t.is_absolute() => Some(
            std::env::current_dir()
                .map_err(|e| msg(format!("no working directory: {e}")))?
                .join(t),
        ),
        t => t,
    })
}
