//! `restore`: pick one archive of a strategy and restore it, under the
//! store lock so that no prune removes it meanwhile.
//!
//! An in-place restore (no target) runs the `[recovery]` hooks around it:
//! `stop` before anything is touched (a failure or timeout aborts the
//! restore), `start` after it was published. When `start` fails, a replaced
//! database is rolled back to its `NAME.pre-restore-<time>` copy and
//! `start` runs once more; restored file trees stay (they have no
//! pre-restore copy). Without hooks an in-place restore is unchanged.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{msg, Error, IoContext, Result};
use crate::hooks::{self, Phase};
use crate::progress::Progress;
use crate::restore::{Restored, Selector};
use crate::store::{Listed, StoreLock};
use crate::strategy::Strategy;

use super::{select, Session};

/// What to restore, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub strategy: Strategy,
    pub selector: Selector,
    /// `None`: in place; else each file lands at `target/<original path>`.
    pub target: Option<PathBuf>,
    /// Only this entry (an absolute path as `list` shows it).
    pub file: Option<PathBuf>,
    /// Restore a database archive whose source failed its integrity check.
    pub accept_damaged: bool,
}

impl Session {
    pub async fn restore(&self, req: &RestoreRequest, progress: &mut Progress) -> Result<Restored> {
        let mut listing = self.list(Some(req.strategy));
        for (path, e) in &listing.problems {
            log::warn!("ignoring unreadable sidecar {}: {e}", path.display());
        }
        if let (Strategy::Database, Selector::At(t), None) =
            (req.strategy, &req.selector, &req.file)
        {
            if let Some(plan) = self.pitr_plan(*t) {
                let _lock = self.restore_lock()?;
                if req.target.is_some() {
                    return self.pitr_restore(plan, *t, req, progress).await;
                }
                let stopped = self.stop_platform().await?;
                let outcome = self.pitr_restore(plan, *t, req, progress).await;
                let restored = match &outcome {
                    Ok(r) => Published {
                        databases: r.previous_database.iter().cloned().collect(),
                        new_database: true,
                        trees: Vec::new(),
                    },
                    Err(_) => Published::default(),
                };
                return self.start_platform(stopped, outcome, &restored).await;
            }
        }
        let archive = &select::by_selector(&mut listing, req.strategy, &req.selector)?.clone();
        let _lock = self.restore_lock()?;
        let archives = &listing.archives;
        let run = |progress| {
            crate::restore::run(
                archive,
                archives,
                self.key.as_ref(),
                req.target.as_deref(),
                req.file.as_deref(),
                req.accept_damaged,
                progress,
            )
        };
        if req.target.is_some() {
            return run(progress).await;
        }
        let stopped = self.stop_platform().await?;
        let outcome = run(progress).await;
        let restored = match &outcome {
            Ok(r) => Published {
                databases: r.previous_database.iter().cloned().collect(),
                new_database: req.strategy == Strategy::Database,
                trees: if req.strategy == Strategy::Database {
                    Vec::new()
                } else {
                    vec![req.strategy]
                },
            },
            Err(_) => Published::default(),
        };
        self.start_platform(stopped, outcome, &restored).await
    }

    /// The store lock for a restore; a store on a read-only medium (a
    /// write-protected recovery stick) cannot be pruned meanwhile, so it
    /// is restored from without the lock.
    pub(super) fn restore_lock(&self) -> Result<Option<StoreLock>> {
        if !self.lock_store {
            return Ok(None);
        }
        match self.store.lock() {
            Ok(lock) => Ok(Some(lock)),
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
            {
                log::info!(
                    "{} is read-only: restoring without the store lock",
                    self.store.root().display()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Restore one chosen archive (the caller holds the lock).
    pub(super) async fn restore_archive(
        &self,
        archive: &Listed,
        target: Option<&Path>,
        accept_damaged: bool,
        progress: &mut Progress,
    ) -> Result<Restored> {
        let listing = self.list(Some(archive.meta.strategy));
        crate::restore::run(
            archive,
            &listing.archives,
            self.key.as_ref(),
            target,
            None,
            accept_damaged,
            progress,
        )
        .await
    }

    /// Run `[recovery] stop` (if configured) before an in-place restore.
    /// An error means nothing was touched.
    pub(super) async fn stop_platform(&self) -> Result<Stopped> {
        let hooks = &self.cfg.recovery;
        let mut stopped = Stopped {
            start: hooks.start.clone(),
            timeout: self.cfg.recovery_timeout,
            armed: false,
        };
        if let Some(stop) = &hooks.stop {
            // Armed before the command runs: if this is cancelled while the
            // stop command runs, the platform is started again.
            stopped.armed = stopped.start.is_some();
            if let Err(e) = hooks::run(Phase::Stop, stop, self.cfg.recovery_timeout).await {
                stopped.armed = false;
                // A stop that failed half-way may have stopped something:
                // start it again so the board keeps working.
                let again = match &stopped.start {
                    Some(start) => match hooks::run(Phase::Start, start, stopped.timeout).await {
                        Ok(_) => "; the start command was run to bring the platform back".into(),
                        Err(s) => format!("; bringing the platform back failed too: {s}"),
                    },
                    None => String::new(),
                };
                return Err(msg(format!(
                    "{e}; the restore was aborted before anything was touched{again}"
                )));
            }
        } else {
            stopped.armed = stopped.start.is_some();
        }
        Ok(stopped)
    }

    /// Run `[recovery] start` after an in-place restore; when it fails,
    /// roll the replaced databases back and start once more. Returns the
    /// restore's own outcome, or an error saying what was rolled back.
    pub(super) async fn start_platform<T>(
        &self,
        mut stopped: Stopped,
        outcome: Result<T>,
        published: &Published,
    ) -> Result<T> {
        let Some(start) = stopped.start.clone() else {
            return outcome;
        };
        // Still armed while it runs: cancelled now, start is still owed.
        let first = hooks::run(Phase::Start, &start, stopped.timeout).await;
        stopped.armed = false;
        let restored = match (outcome, first) {
            (Ok(v), Ok(_)) => return Ok(v),
            (Err(e), Ok(_)) => {
                return Err(msg(format!(
                    "{e}; the platform was started again ([recovery] start)"
                )))
            }
            (Err(e), Err(s)) => {
                return Err(msg(format!(
                    "{e}; starting the platform again failed too: {s}; start it by hand"
                )))
            }
            (Ok(_), Err(s)) => s,
        };
        let mut said = vec![format!("the restore was published, but {restored}")];
        let mut rolled_back = false;
        for previous in &published.databases {
            match roll_back_database(previous) {
                Ok(live) => {
                    rolled_back = true;
                    said.push(format!(
                        "ROLLED BACK: {} is the pre-restore database again (the restored one was discarded)",
                        live.display()
                    ));
                }
                Err(e) => said.push(format!(
                    "the database could NOT be rolled back ({e}); the pre-restore copy is {}",
                    previous.display()
                )),
            }
        }
        if published.new_database && published.databases.is_empty() {
            said.push(
                "there was no live database before the restore, so there is nothing to roll back to; the restored database stays".into(),
            );
        }
        if !published.trees.is_empty() {
            let names: Vec<&str> = published.trees.iter().map(|s| s.name()).collect();
            said.push(format!(
                "the restored {} tree(s) stay in place: file trees have no pre-restore copy to roll back to",
                names.join(", ")
            ));
        }
        if rolled_back {
            match hooks::run(Phase::Start, &start, stopped.timeout).await {
                Ok(_) => said.push("the platform was started again on the rolled-back database".into()),
                Err(s) => said.push(format!(
                    "starting it again after the rollback failed too: {s}; the platform is NOT running, start it by hand"
                )),
            }
        } else {
            said.push("the platform is probably NOT running: fix it and start it by hand".into());
        }
        Err(msg(said.join("; ")))
    }
}

/// What an in-place restore put in place, for a rollback.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Pre-restore copies of replaced live databases.
    pub databases: Vec<PathBuf>,
    /// A database was restored in place.
    pub new_database: bool,
    /// File-tree strategies restored in place.
    pub trees: Vec<Strategy>,
}

/// The platform was (or may have been) stopped: `start` is owed. Dropped
/// while armed (a cancelled job), it starts the platform in the background.
pub(super) struct Stopped {
    start: Option<hooks::HookCommand>,
    timeout: std::time::Duration,
    armed: bool,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let (true, Some(start)) = (self.armed, &self.start) {
            log::warn!(
                "the restore was cancelled after the platform was stopped: starting it again"
            );
            hooks::spawn_detached(Phase::Start, start, self.timeout);
        }
    }
}

fn with_suffix(name: &[u8], suffix: &str) -> Vec<u8> {
    let mut v = name.to_vec();
    v.extend_from_slice(suffix.as_bytes());
    v
}

/// Put the pre-restore copy `previous` (`DIR/NAME.pre-restore-<time>`)
/// back over `DIR/NAME`, with its side files. Order, for a crash at any
/// point: the restored database's own `-wal`/`-shm`/`-journal` go first
/// (the restored image stays whole without them), then one rename puts the
/// old database back, then its side files follow (its WAL was folded in
/// when it was saved, so until then it is at most an empty file), then the
/// directory is synced. Returns the live path.
pub(super) fn roll_back_database(previous: &Path) -> Result<PathBuf> {
    let name = previous
        .file_name()
        .map(OsStrExt::as_bytes)
        .ok_or_else(|| msg(format!("{} names no file", previous.display())))?;
    const MARK: &[u8] = b".pre-restore-";
    let cut = name
        .windows(MARK.len())
        .rposition(|w| w == MARK)
        .filter(|&i| i > 0)
        .ok_or_else(|| msg(format!("{} is not a pre-restore copy", previous.display())))?;
    let live = &name[..cut];
    let parent = previous.parent().unwrap_or(Path::new("/"));
    let shown = parent.join(OsStr::from_bytes(live));
    let dir = crate::safefs::Dir::open_path(parent).at("open the directory of", &shown)?;
    if dir.stat(name).at("inspect", previous)?.is_none() {
        return Err(msg(format!("{} is gone", previous.display())));
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = with_suffix(live, suffix);
        if dir.stat(&side).at("inspect", &shown)?.is_some() {
            dir.unlink(&side).ctx(|| {
                format!(
                    "cannot remove the {suffix} file of the restored {}",
                    shown.display()
                )
            })?;
        }
    }
    dir.rename(name, live).ctx(|| {
        format!(
            "cannot put {} back as {}",
            previous.display(),
            shown.display()
        )
    })?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = with_suffix(name, suffix);
        if dir.stat(&side).at("inspect", previous)?.is_some() {
            dir.rename(&side, &with_suffix(live, suffix))
                .ctx(|| format!("cannot put back the {suffix} file of {}", shown.display()))?;
        }
    }
    dir.fsync()
        .ctx(|| format!("cannot sync the directory of {}", shown.display()))?;
    log::warn!(
        "rolled back: {} is the pre-restore database again",
        shown.display()
    );
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_puts_the_copy_and_its_side_files_back() {
        let dir = std::env::temp_dir().join(format!("rvm-rollback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.join(n), t).unwrap();
        w("rvm.sqlite", "restored");
        w("rvm.sqlite-wal", "restored wal");
        w("rvm.sqlite-shm", "restored shm");
        w("rvm.sqlite.pre-restore-20261126T120000Z", "old");
        w("rvm.sqlite.pre-restore-20261126T120000Z-wal", "old wal");
        let live =
            roll_back_database(&dir.join("rvm.sqlite.pre-restore-20261126T120000Z")).unwrap();
        assert_eq!(live, dir.join("rvm.sqlite"));
        let r = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
        assert_eq!(r("rvm.sqlite").as_deref(), Some("old"));
        assert_eq!(r("rvm.sqlite-wal").as_deref(), Some("old wal"));
        assert_eq!(r("rvm.sqlite-shm"), None);
        assert_eq!(r("rvm.sqlite.pre-restore-20261126T120000Z"), None);
        assert!(roll_back_database(&dir.join("rvm.sqlite")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
