//! `disaster-restore`: bring a board back from a recovery set on a USB
//! stick (`recovery_set` for the layout), by itself at boot or by hand.
//!
//! Order of work, so that a refusal leaves everything as it was:
//! 1. scan the stick (`scan`): complete sets grouped by board; choose the
//!    board (the only one; else the one with this machine id; else the
//!    one with this hostname; else refuse listing them) and its newest
//!    complete set;
//! 2. decide (`journal::decide`, not with `--target`): an interrupted
//!    restore always resumes; a request marker on the stick always
//!    restores; otherwise nothing is done when the board was restored
//!    from this set before or is not freshly imaged (a live database
//!    newer than the set's database archive, or a backup newer than the
//!    set);
//! 3. open the set (`unlock`): the key, the manifest's tag, the hash of
//!    every file it names; then, under the restore, a full verification of
//!    every archive (`Session::restore_chosen`), all before anything is
//!    touched;
//! 4. write the journal, restore config, application, database, logs
//!    through the operations layer (hooks, staged publication), updating
//!    the journal after each; then record the set in the marker, remove
//!    the journal and consume the request marker.
//!
//! The outcome is a [`DisasterReport`]; the front end writes its text to
//! the stick (`RESULT-<time>.txt`) and to the log. With `--target` nothing
//! is decided or recorded (the live board is not touched); `--dry-run`
//! does steps 1 to 3 and writes nothing anywhere.

mod journal;
mod leftovers;
mod scan;
mod stick;
mod unlock;

use std::path::PathBuf;
use std::time::Instant;

use crate::config::Config;
use crate::out::human_bytes;
use crate::progress::Progress;
use crate::recovery_set::{BoardIdentity, Manifest};
use crate::store::{Listed, Store};
use crate::timefmt::rfc3339;

use super::restore_all::{ChosenRestore, Step};
use super::Session;

pub use journal::DoneStrategy;
pub(crate) use stick::{has_sets_dir, wait_for_stick, write_result};
// For `disaster-restore --from s3` (`ops::offsite::fetch`): a set in the
// store is opened with the same key sources and code as one on a stick.
pub(in crate::ops) use scan::FoundSet;
pub(in crate::ops) use unlock::{unlock as unlock_set, KeySources};

const LABEL: &str = "disaster-restore";

/// What the front end asks for.
#[derive(Clone, Debug)]
pub struct DisasterOptions {
    /// The stick's mount point.
    pub from: PathBuf,
    pub recovery_key: Option<PathBuf>,
    /// Restore under this directory instead of in place.
    pub target: Option<PathBuf>,
    pub dry_run: bool,
    /// `--from s3`: the offsite store (in words) that `from` is a staged
    /// copy of; the account names it and its advice fits it.
    pub store: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DisasterOutcome {
    Restored,
    /// Nothing was restored, on purpose: why.
    NothingToDo(String),
    /// `--dry-run`: whether a real run would restore, and why (not).
    DryRun {
        would_restore: bool,
        why: String,
    },
    /// Something failed: what, in words (with what to do).
    Failed(String),
}

/// The set a run used, as its manifest describes it.
#[derive(Clone, Debug)]
pub struct SetInfo {
    pub board: String,
    pub set: String,
    pub hostname: String,
    pub machine_id: String,
    pub created: i64,
    /// Whether the manifest's tag was checked yet.
    pub authenticated: bool,
}

/// One archive of the chosen set.
#[derive(Clone, Debug)]
pub struct PlannedArchive {
    pub strategy: String,
    pub id: String,
    pub created: i64,
    pub entries: u64,
    pub content_bytes: u64,
    /// Bytes of its files on the stick.
    pub stick_bytes: u64,
}

/// Everything a run did and found, for the result file and the log.
#[derive(Clone, Debug)]
pub struct DisasterReport {
    pub options: DisasterOptions,
    pub started: i64,
    pub seconds: f64,
    pub set: Option<SetInfo>,
    pub key_source: Option<String>,
    pub archives: Vec<PlannedArchive>,
    /// Strategies restored, in order (an interrupted run's first).
    pub restored: Vec<DoneStrategy>,
    /// Incomplete sets, consumed markers, warnings.
    pub notes: Vec<String>,
    pub outcome: DisasterOutcome,
}

impl DisasterReport {
    /// 0 for a restore, nothing to do, or a dry run that checked out.
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            DisasterOutcome::Failed(_) => 1,
            _ => 0,
        }
    }

    /// The plain-English account written to the stick and the log.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let mut line = |s: &str| {
            t.push_str(s);
            t.push('\n');
        };
        let o = &self.options;
        line(&format!(
            "rvm-backup disaster-restore, {} (board time, UTC)",
            rfc3339(self.started)
        ));
        match &o.store {
            Some(store) => line(&format!(
                "From: the offsite store {store} (brought down into {})",
                o.from.display()
            )),
            None => line(&format!("Stick: {}", o.from.display())),
        }
        if let Some(target) = &o.target {
            line(&format!(
                "Into: {} (the live board was not touched)",
                target.display()
            ));
        }
        line("");
        let headline = match &self.outcome {
            DisasterOutcome::Restored => {
                "RESULT: RESTORED. The board was restored from the recovery set below.".to_string()
            }
            DisasterOutcome::NothingToDo(why) => format!("RESULT: NOTHING RESTORED. {why}"),
            DisasterOutcome::DryRun {
                would_restore: true,
                why,
            } => format!("RESULT: DRY RUN, nothing written. A real run WOULD RESTORE: {why}."),
            DisasterOutcome::DryRun {
                would_restore: false,
                why,
            } => format!("RESULT: DRY RUN, nothing written. A real run would NOT restore: {why}"),
            DisasterOutcome::Failed(why) => format!(
                "RESULT: FAILED. {}: {why}",
                if self.restored.is_empty() {
                    "Nothing was restored"
                } else {
                    "The restore is NOT complete"
                }
            ),
        };
        line(&headline);
        line("");
        if let Some(s) = &self.set {
            line(&format!(
                "Recovery set: {} of board {} (hostname {}, machine id {}), written {}{}",
                s.set,
                s.board,
                if s.hostname.is_empty() {
                    "unknown"
                } else {
                    &s.hostname
                },
                if s.machine_id.is_empty() {
                    "unknown"
                } else {
                    &s.machine_id
                },
                rfc3339(s.created),
                if s.authenticated {
                    ""
                } else {
                    " (not yet checked)"
                }
            ));
        }
        if let Some(k) = &self.key_source {
            line(&format!("Opened with: {k}"));
        }
        if !self.archives.is_empty() {
            line("Archives in the set:");
            for a in &self.archives {
                line(&format!(
                    "  {:<11} {}  as of {}  {} entries, {} ({} on the stick)",
                    a.strategy,
                    a.id,
                    rfc3339(a.created),
                    a.entries,
                    human_bytes(a.content_bytes),
                    human_bytes(a.stick_bytes)
                ));
            }
        }
        if !self.restored.is_empty() {
            line("Restored:");
            for r in &self.restored {
                line(&format!(
                    "  {:<11} {}  as of {}  {} files, {} in {:.1} s{}",
                    r.strategy,
                    r.id,
                    rfc3339(r.created),
                    r.files,
                    human_bytes(r.bytes),
                    r.seconds,
                    if r.earlier {
                        " (by an earlier run that was interrupted)"
                    } else {
                        ""
                    }
                ));
            }
            let left: Vec<&str> = self
                .archives
                .iter()
                .filter(|a| !self.restored.iter().any(|r| r.id == a.id))
                .map(|a| a.strategy.as_str())
                .collect();
            if !left.is_empty() {
                line(&format!("NOT restored: {}", left.join(", ")));
            }
        }
        line(&format!("Total time: {:.1} s", self.seconds));
        for n in &self.notes {
            line(&format!("Note: {n}"));
        }
        line("");
        line(&format!("What to do next: {}", self.next_step()));
        t
    }

    fn next_step(&self) -> String {
        if self.options.store.is_some() {
            return self.next_step_from_store();
        }
        match &self.outcome {
            DisasterOutcome::Restored if self.options.target.is_some() => {
                "look at the restored files under the target directory; nothing on the live board was changed.".into()
            }
            DisasterOutcome::Restored => {
                "nothing. The board runs on the restored data. The stick may stay in: it does not restore this board again unless a RESTORE-REQUEST file is put on it.".into()
            }
            DisasterOutcome::NothingToDo(_) => {
                "nothing, unless this board really must be restored from the stick: then put an empty file named RESTORE-REQUEST on the stick's top folder and reboot the board.".into()
            }
            DisasterOutcome::DryRun { .. } => "run it again without --dry-run to restore.".into(),
            DisasterOutcome::Failed(_) if !self.restored.is_empty() => {
                "keep the stick in and reboot the board (or run disaster-restore again): the restore continues where it stopped. If it fails again, call support and give them this file.".into()
            }
            DisasterOutcome::Failed(_) => {
                "do what the message above says, then reboot the board (or run disaster-restore again). If the set was changed or damaged, use another stick. If it still fails, call support and give them this file.".into()
            }
        }
    }
}

impl DisasterReport {
    fn next_step_from_store(&self) -> String {
        match &self.outcome {
            DisasterOutcome::Restored if self.options.target.is_some() => {
                "look at the restored files under the target directory; nothing on the live board was changed.".into()
            }
            DisasterOutcome::Restored => "nothing. The board runs on the restored data; the staged copy was removed.".into(),
            DisasterOutcome::NothingToDo(_) => format!(
                "nothing, unless this board really must be restored from the store: then put an empty file named RESTORE-REQUEST into {} and run disaster-restore --from s3 again.",
                self.options.from.display()
            ),
            DisasterOutcome::DryRun { .. } => "run it again without --dry-run to restore (what was brought down is used again).".into(),
            DisasterOutcome::Failed(_) if !self.restored.is_empty() => {
                "run disaster-restore --from s3 again: the restore continues where it stopped. If it fails again, call support and give them this account.".into()
            }
            DisasterOutcome::Failed(_) => {
                "do what the message above says, then run disaster-restore --from s3 again. If it still fails, call support and give them this account.".into()
            }
        }
    }
}

fn set_info(m: &Manifest, authenticated: bool) -> SetInfo {
    SetInfo {
        board: m.board.clone(),
        set: m.set.clone(),
        hostname: m.hostname.clone(),
        machine_id: m.machine_id.clone(),
        created: m.created,
        authenticated,
    }
}

fn planned(m: &Manifest) -> Vec<PlannedArchive> {
    m.in_restore_order()
        .into_iter()
        .map(|a| PlannedArchive {
            strategy: a.strategy.clone(),
            id: a.id.clone(),
            created: a.created,
            entries: a.entries,
            content_bytes: a.content_bytes,
            stick_bytes: a.files.iter().map(|f| f.bytes).fold(0, u64::saturating_add),
        })
        .collect()
}

/// Run a disaster restore (see the module doc). Never fails: a failure
/// is the report's outcome.
pub async fn disaster_restore(
    cfg: Config,
    options: DisasterOptions,
    progress: &mut Progress,
) -> DisasterReport {
    let clock = Instant::now();
    let mut report = DisasterReport {
        options,
        started: crate::timefmt::now_unix(),
        seconds: 0.0,
        set: None,
        key_source: None,
        archives: Vec::new(),
        restored: Vec::new(),
        notes: Vec::new(),
        outcome: DisasterOutcome::Restored,
    };
    report.outcome = match run(&cfg, &mut report, progress).await {
        Ok(o) => o,
        Err(why) => DisasterOutcome::Failed(why),
    };
    report.seconds = clock.elapsed().as_secs_f64();
    report
}

/// How long `--boot` waits for the stick. A board that is clearly in
/// service (its live database exists, or with no database configured, it
/// has made a backup) and has no interrupted restore does not wait: the
/// stick is looked for once, so a healthy board without a stick starts its
/// platform without delay. A freshly imaged card, or one whose restore was
/// interrupted, waits up to `recovery_timeout` for the stick to appear.
pub fn boot_wait(cfg: &Config) -> std::time::Duration {
    if restore_interrupted(cfg) {
        return cfg.recovery_timeout;
    }
    let in_service = match &cfg.database {
        Some(_) => live_db(cfg).is_some(),
        None => crate::state::load(&cfg.backup_dir)
            .values()
            .any(|r| r.last_success.is_some()),
    };
    if in_service {
        std::time::Duration::ZERO
    } else {
        cfg.recovery_timeout
    }
}

/// Whether a disaster restore was started and not finished (its journal
/// is in `backup_dir`).
pub fn restore_interrupted(cfg: &Config) -> bool {
    journal::load_journal(&cfg.backup_dir).is_some()
}

/// The live database's path and mtime, if it exists.
fn live_db(cfg: &Config) -> Option<(PathBuf, i64)> {
    use std::os::unix::fs::MetadataExt;
    let path = cfg.database.as_ref()?.path.0.clone();
    let m = std::fs::symlink_metadata(&path).ok()?;
    Some((path, m.mtime()))
}

async fn run(
    cfg: &Config,
    report: &mut DisasterReport,
    progress: &mut Progress,
) -> Result<DisasterOutcome, String> {
    let opts = report.options.clone();
    let stick = opts.from.as_path();
    let found = scan::scan(stick)?;
    report.notes.extend(found.incomplete.iter().cloned());
    let me = BoardIdentity::current_or_hostname(&cfg.machine_id_file);
    let board = scan::choose_board(&found, &me)?;
    let set = board
        .newest()
        .ok_or_else(|| "the board has no complete set".to_string())?;
    report.set = Some(set_info(&set.manifest, false));
    report.archives = planned(&set.manifest);

    // 2. Decide, before any key is looked for: a stick left in on a
    // healthy board costs one scan per boot, nothing more.
    let requests = stick::request_markers(stick);
    let earlier = if opts.target.is_some() {
        None
    } else {
        journal::load_journal(&cfg.backup_dir)
    };
    // Runs that were interrupted: their staged files are swept.
    let mut pids = earlier.as_ref().map(|j| j.pids.clone()).unwrap_or_default();
    let decision = if opts.target.is_some() {
        journal::Decision::Restore {
            resume: Vec::new(),
            why: "--target restores into a directory, whatever the board's state".into(),
        }
    } else {
        let db_archive_created = set
            .manifest
            .archives
            .iter()
            .find(|a| a.strategy() == Some(crate::strategy::Strategy::Database))
            .map(|a| a.created);
        journal::decide(journal::Facts {
            board: set.manifest.board.clone(),
            set: set.manifest.set.clone(),
            set_created: set.manifest.created,
            journal: earlier,
            request: requests.first().cloned(),
            restored_at: journal::restored_at(
                &cfg.backup_dir,
                &set.manifest.board,
                &set.manifest.set,
            ),
            live_db: live_db(cfg),
            db_archive_created,
            last_backup: crate::state::load(&cfg.backup_dir)
                .values()
                .filter_map(|r| r.last_success)
                .max(),
        })
    };
    let (resume, why) = match decision {
        journal::Decision::Nothing(why) if !opts.dry_run => {
            return Ok(DisasterOutcome::NothingToDo(why))
        }
        journal::Decision::Nothing(why) => (None, why),
        journal::Decision::Restore { resume, why } => (Some(resume), why),
    };

    // 3. Open the set: key, tag, every file's hash, then the archives.
    let keys = unlock::KeySources {
        explicit: opts.recovery_key.as_deref(),
        configured: cfg.recovery_key_file.as_deref(),
        stick,
    };
    let opened = unlock::unlock(cfg, set, &keys)?;
    report.key_source = Some(opened.key_source.clone());
    report.set = Some(set_info(&opened.manifest, true));
    report.archives = planned(&opened.manifest);
    let pool = board.pool();
    unlock::check_files(&set.dir, &pool, &opened.manifest)?;
    let session = Session::over_store(cfg.clone(), opened.ring, Store::new(&pool));
    let chosen = chosen_archives(&session, &opened.manifest)?;
    if opts.dry_run {
        session
            .check_chosen(&chosen, false, LABEL, progress)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(DisasterOutcome::DryRun {
            would_restore: resume.is_some(),
            why,
        });
    }
    let resume = resume.unwrap_or_default();
    log::info!("{LABEL}: {why}");

    // 4. Restore, journalled (in place only).
    let in_place = opts.target.is_none();
    let _lock = if in_place {
        Some(Store::for_config(cfg).lock().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut journal =
        journal::Journal::new(&opened.manifest.board, &opened.manifest.set, report.started);
    for mut d in resume {
        d.earlier = true;
        journal.done.push(d);
    }
    let swept_pids = pids.clone();
    pids.push(std::process::id());
    pids.dedup();
    let keep = pids.len().saturating_sub(64);
    journal.pids = pids.split_off(keep);
    // Where interrupted runs may have left staged names: every tree
    // (deep) and the database's directory (shallow).
    let sweep_roots: Vec<(PathBuf, bool)> = if in_place {
        chosen
            .iter()
            .flat_map(|a| {
                let db = a.meta.strategy == crate::strategy::Strategy::Database;
                a.meta.sources.iter().filter_map(move |s| {
                    let p = PathBuf::from(s);
                    if db {
                        p.parent().map(|d| (d.to_path_buf(), false))
                    } else {
                        Some((p, true))
                    }
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    report.restored = journal.done.clone();
    let left: Vec<Listed> = chosen
        .into_iter()
        .filter(|a| !journal.done.iter().any(|d| d.id == a.meta.id))
        .collect();
    // The point-in-time segments of the set's database archive, if the
    // stick holds them: the database comes back to the last shipped commit.
    let database_wal = left
        .iter()
        .find(|a| a.meta.strategy == crate::strategy::Strategy::Database)
        .and_then(|a| super::export::stick_generation(&board.dir, &a.meta.id));
    let backup_dir = cfg.backup_dir.clone();
    let restored = &mut report.restored;
    let notes = &mut report.notes;
    let outcome = session
        .restore_chosen(
            ChosenRestore {
                archives: left,
                target: opts.target.clone(),
                accept_damaged: false,
                label: LABEL,
                database_wal,
                database_at: None,
                stage_all_first: false,
            },
            progress,
            &mut |step| {
                if let Step::Verified = step {
                    // The journal is written below, before anything is
                    // replaced: from here on a power cut resumes.
                    log::info!(
                        "{LABEL}: every archive to restore verified; restoring now (a power cut from here on resumes)"
                    );
                    for (root, deep) in &sweep_roots {
                        leftovers::sweep(root, *deep, &swept_pids);
                    }
                }
                if let Step::Restored(r) = step {
                    if let Some(p) = &r.pitr {
                        log::info!("{LABEL}: database: {p}");
                        notes.push(format!("database: {p}"));
                    }
                    let d = DoneStrategy {
                        strategy: r.strategy.name().into(),
                        id: r.id.clone(),
                        created: r.created,
                        files: r.files,
                        bytes: r.bytes,
                        seconds: r.seconds,
                        finished: crate::timefmt::now_unix(),
                        earlier: false,
                    };
                    restored.push(d.clone());
                    journal.done.push(d);
                }
                if in_place {
                    journal::save_journal(&backup_dir, &journal)?;
                }
                Ok(())
            },
        )
        .await;
    if let Err(e) = outcome {
        return Err(format!(
            "{e}{}",
            if in_place {
                ". The journal in backup_dir remembers what was done: the next run finishes the restore"
            } else {
                ""
            }
        ));
    }
    if in_place {
        // The board goes on with the key ring the set was sealed with: its
        // own key died with the card, and without it the daemon cannot
        // start and the restored board's archives are unreadable.
        if let Some(ring) = session.key() {
            let note = match crate::keys::adopt(&cfg.key_file, ring) {
                Ok(crate::keys::Adopted::Written) => format!(
                    "the board's key ring was put back in {} from the set",
                    cfg.key_file.display()
                ),
                Ok(crate::keys::Adopted::Merged(n)) => format!(
                    "{n} key(s) of the set were added to {} (its own writing key stays)",
                    cfg.key_file.display()
                ),
                Ok(crate::keys::Adopted::Unchanged) => format!(
                    "{} already holds the set's keys",
                    cfg.key_file.display()
                ),
                Err(e) => {
                    return Err(format!(
                        "everything was restored, but the key ring could not be written to {} ({e}); the daemon cannot back up until it is. Run disaster-restore again",
                        cfg.key_file.display()
                    ))
                }
            };
            log::info!("{LABEL}: {note}");
            report.notes.push(note);
        }
        let now = crate::timefmt::now_unix();
        journal::record_restored(
            &cfg.backup_dir,
            &opened.manifest.board,
            &opened.manifest.set,
            now,
        )
        .map_err(|e| format!("everything was restored, but the restore could not be recorded ({e}); the next run may restore again"))?;
        journal::remove_journal(&cfg.backup_dir).map_err(|e| e.to_string())?;
        report
            .notes
            .extend(stick::consume_requests(stick, &requests, now));
    }
    Ok(DisasterOutcome::Restored)
}

/// The manifest's archives, as the pool's sidecars describe them, in
/// restore order; every part they name must be a file the manifest
/// vouches for.
fn chosen_archives(session: &Session, m: &Manifest) -> Result<Vec<Listed>, String> {
    let mut listing = session.list(None);
    let mut chosen = Vec::new();
    for a in m.in_restore_order() {
        let Some(found) = listing.archives.iter().position(|l| l.meta.id == a.id) else {
            let why = listing
                .problems
                .iter()
                .find(|(p, _)| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&a.id))
                })
                .map(|(_, e)| e.to_string())
                .unwrap_or_else(|| "its sidecar is missing".into());
            return Err(format!(
                "archive {} of the set cannot be read ({why}); nothing was restored",
                a.id
            ));
        };
        let l = listing.archives.swap_remove(found);
        let named = |name: &str| {
            a.files
                .iter()
                .any(|f| f.name == format!("{}/{name}", a.strategy))
        };
        let sidecar = format!("{}{}", l.meta.id, crate::store::SIDECAR_EXT);
        if let Some(p) = std::iter::once(sidecar.as_str())
            .chain(l.meta.parts.iter().map(|p| p.name.as_str()))
            .find(|n| !named(n))
        {
            return Err(format!(
                "archive {} uses {p}, which the manifest does not vouch for; nothing was restored",
                a.id
            ));
        }
        chosen.push(l);
    }
    Ok(chosen)
}
