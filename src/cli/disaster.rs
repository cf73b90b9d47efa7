//! `disaster-restore [--from DIR|s3] [--recovery-key FILE] [--target DIR]
//! [--dry-run] [--boot]`: parse, wait for the stick at boot, run the
//! operation, write its account to the stick and the log. `--from s3`
//! first brings the newest set down from the offsite store into a staging
//! directory (`ops::offsite::fetch`) and restores from that.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::{disaster_restore, DisasterOptions};
use crate::out::Out;
use crate::progress::Progress;

use super::{no_arguments, no_unknown_flags, take_flag, take_value};

pub(super) fn run(cfg: Config, args: &[String], quiet: bool, out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let from = take_value(&mut args, "--from")?;
    let recovery_key = take_value(&mut args, "--recovery-key")?.map(PathBuf::from);
    let target = take_value(&mut args, "--target")?.map(PathBuf::from);
    let dry_run = take_flag(&mut args, "--dry-run");
    let boot = take_flag(&mut args, "--boot");
    no_unknown_flags(&args)?;
    no_arguments(&args)?;
    if from.as_deref().is_some_and(|f| f.starts_with("s3:")) {
        return Err(Error::Usage(
            "--from s3 takes no bucket or path: the store is the config's [offsite] section".into(),
        ));
    }
    if from.as_deref() == Some("s3") {
        if boot {
            return Err(Error::Usage(
                "--boot waits for a recovery stick; run `disaster-restore --from s3` by hand"
                    .into(),
            ));
        }
        return from_store(cfg, recovery_key, target, dry_run, quiet, out);
    }
    let from = from.map_or_else(|| cfg.export_dir.clone(), PathBuf::from);
    let target = super::commands::absolute_target(target)?;
    if let Some(t) = &target {
        if t.starts_with(&from) {
            return Err(Error::Usage(format!(
                "--target {} lies on the stick {}: restore somewhere else",
                t.display(),
                from.display()
            )));
        }
    }
    if boot {
        if !cfg.recovery_enabled {
            say(
                out,
                quiet,
                "disaster-restore: recovery_enabled = false in the config: nothing to do",
            );
            return Ok(0);
        }
        let wait = crate::ops::boot_wait(&cfg);
        if !crate::ops::wait_for_stick(&from, wait) {
            if crate::ops::restore_interrupted(&cfg) {
                // Half old, half new: say so, and fail, so that the platform
                // (which requires the recovery unit) does not start on it.
                eprintln!(
                    "rvm-backup: error: a disaster restore was interrupted and the recovery stick is not at {} (waited {}): the board is only partly restored. Plug the stick in and reboot (or, if it was restoring from the offsite store, run `rvm-backup disaster-restore --from s3` again).",
                    from.display(),
                    crate::config::format_secs(wait.as_secs())
                );
                return Ok(1);
            }
            let why = if wait.is_zero() {
                "this board is in service (its live database is there), so boot does not wait for one".to_string()
            } else {
                format!("after {}", crate::config::format_secs(wait.as_secs()))
            };
            say(
                out,
                quiet,
                &format!(
                    "disaster-restore: no recovery stick at {} ({why}): nothing to do",
                    from.display(),
                ),
            );
            return Ok(0);
        }
    }
    let options = DisasterOptions {
        from: from.clone(),
        recovery_key,
        target,
        dry_run,
        store: None,
    };
    let mut progress = Progress::new(quiet);
    // At boot, only a board that needed restoring fails the unit (which
    // keeps the platform down); a board in service starts whatever the
    // stick holds, and the account says what went wrong.
    let in_service = boot && crate::ops::boot_wait(&cfg).is_zero();
    let report = smol::block_on(disaster_restore(cfg, options, &mut progress));
    let text = report.text();
    if dry_run {
        for l in text.lines() {
            out.line(l);
        }
        return Ok(report.exit_code());
    }
    // The account goes to stderr (the journal under systemd) whatever
    // --quiet says, and onto the stick when there is one.
    for l in text.lines() {
        eprintln!("rvm-backup: {l}");
    }
    if crate::ops::has_sets_dir(&from) {
        match crate::ops::write_result(&from, report.started, &text) {
            Ok(p) => say(
                out,
                quiet,
                &format!("disaster-restore: the account is on the stick as {}", p.display()),
            ),
            Err(e) => eprintln!(
                "rvm-backup: warning: the account could not be written to the stick ({e}); it is in the system journal"
            ),
        }
    }
    if in_service && report.exit_code() != 0 {
        eprintln!(
            "rvm-backup: the board is in service (its live database is there): the boot goes on"
        );
        return Ok(0);
    }
    Ok(report.exit_code())
}

/// `--from s3`: bring the newest complete set down from the offsite
/// store into the staging directory, restore from it as from a stick,
/// and remove what was staged once the restore is done.
fn from_store(
    cfg: Config,
    recovery_key: Option<PathBuf>,
    target: Option<PathBuf>,
    dry_run: bool,
    quiet: bool,
    out: &mut Out,
) -> Result<i32> {
    let target = super::commands::absolute_target(target)?;
    let stage = cfg.backup_dir.join(crate::ops::STAGE_DIR);
    if let Some(t) = target.as_ref().filter(|t| t.starts_with(&stage)) {
        return Err(Error::Usage(format!(
            "--target {} lies in the staging directory {}: restore somewhere else",
            t.display(),
            stage.display()
        )));
    }
    let mut progress = Progress::new(quiet);
    let staged = smol::block_on(crate::ops::stage_from_offsite(
        &cfg,
        recovery_key.as_deref(),
        &mut progress,
    ))?;
    say(
        out,
        quiet,
        &format!("disaster-restore: {}", staged.describe()),
    );
    let options = DisasterOptions {
        from: staged.dir.clone(),
        recovery_key,
        target,
        dry_run,
        store: Some(staged.store.clone()),
    };
    let mut report = smol::block_on(disaster_restore(cfg, options, &mut progress));
    report.notes.insert(0, staged.describe());
    report.notes.extend(staged.notes.iter().cloned());
    let text = report.text();
    if dry_run {
        for l in text.lines() {
            out.line(l);
        }
    } else {
        for l in text.lines() {
            eprintln!("rvm-backup: {l}");
        }
    }
    // Once restored, the staged files have done their work; after a
    // failure they stay, so the next run resumes without downloading
    // them again.
    if !dry_run && report.outcome == crate::ops::DisasterOutcome::Restored {
        for p in staged.remove() {
            eprintln!("rvm-backup: warning: {p}");
        }
    }
    Ok(report.exit_code())
}

fn say(out: &mut Out, quiet: bool, line: &str) {
    if !quiet {
        out.line(line);
    }
}
