//! What `disaster-restore` remembers on the board, in `backup_dir`, and
//! the rule that decides whether a board is restored.
//!
//! - `disaster-restore.json` (the journal): which set is being restored,
//!   since when, and which strategies are done. Written crash-safely
//!   before the first strategy is touched and after each one; removed when
//!   all are done. Its presence means "a restore was interrupted": the
//!   next run finishes it (restoring a strategy again is safe).
//! - `restored-sets.json` (the marker): the sets this board was restored
//!   from (board, set, when), the last [`MAX_RESTORED`]. A set listed
//!   there is never restored again without a request marker on the stick.
//!
//! Both are small JSON files read bounded, without following symlinks;
//! a damaged journal counts as an interrupted restore of an unknown set
//! (so the restore is redone from the start), a damaged marker as empty.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_regular, write_atomic, Follow};

pub(crate) const JOURNAL_FILE: &str = "disaster-restore.json";
pub(crate) const RESTORED_FILE: &str = "restored-sets.json";
/// Most sets remembered in the marker.
pub(crate) const MAX_RESTORED: usize = 100;
const MAX_FILE_LEN: usize = 256 << 10;

/// One strategy a restore finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneStrategy {
    pub strategy: String,
    pub id: String,
    /// When the archive was made (Unix seconds).
    pub created: i64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Unix seconds.
    pub finished: i64,
    /// Restored by an earlier, interrupted run (not stored).
    #[serde(skip)]
    pub earlier: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Journal {
    pub version: u32,
    pub board: String,
    pub set: String,
    pub started: i64,
    pub done: Vec<DoneStrategy>,
    /// The process ids of the runs that worked on it: their staged names
    /// (`.rvm-restore-PID-…`) are theirs to sweep.
    #[serde(default)]
    pub pids: Vec<u32>,
}

impl Journal {
    pub fn new(board: &str, set: &str, now: i64) -> Journal {
        Journal {
            version: 1,
            board: board.into(),
            set: set.into(),
            started: now,
            done: Vec::new(),
            pids: Vec::new(),
        }
    }

    pub fn is_for(&self, board: &str, set: &str) -> bool {
        self.board == board && self.set == set
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RestoredSet {
    pub board: String,
    pub set: String,
    pub finished: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RestoredSets {
    version: u32,
    sets: Vec<RestoredSet>,
}

pub(crate) fn journal_path(backup_dir: &Path) -> PathBuf {
    backup_dir.join(JOURNAL_FILE)
}

fn restored_path(backup_dir: &Path) -> PathBuf {
    backup_dir.join(RESTORED_FILE)
}

/// Read a small JSON file: `Ok(None)` when absent, `Err` when present but
/// unusable.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    match read_regular(path, MAX_FILE_LEN, Follow::No) {
        Ok((_, bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is damaged ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{} cannot be read ({e})", path.display())),
    }
}

/// The journal of an interrupted restore, if any. A journal that cannot
/// be read is an interrupted restore of an unknown set.
pub(crate) fn load_journal(backup_dir: &Path) -> Option<Journal> {
    match read_json::<Journal>(&journal_path(backup_dir)) {
        Ok(j) => j,
        Err(e) => {
            log::warn!("{e}: treating it as an interrupted restore, to be redone from the start");
            Some(Journal::new("", "", 0))
        }
    }
}

/// Write the journal crash-safely (creating `backup_dir` if needed).
pub(crate) fn save_journal(backup_dir: &Path, j: &Journal) -> crate::error::Result<()> {
    use crate::error::IoContext;
    std::fs::create_dir_all(backup_dir).at("create", backup_dir)?;
    let text = serde_json::to_vec_pretty(j).unwrap_or_default();
    write_atomic(&journal_path(backup_dir), &text, 0o644)
}

/// Remove the journal (this program's own file) durably.
pub(crate) fn remove_journal(backup_dir: &Path) -> crate::error::Result<()> {
    use crate::error::IoContext;
    let p = journal_path(backup_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => crate::fsutil::sync_dir(backup_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at("remove", &p),
    }
}

/// When this board was restored from `board`/`set`, if ever.
pub(crate) fn restored_at(backup_dir: &Path, board: &str, set: &str) -> Option<i64> {
    let sets = read_json::<RestoredSets>(&restored_path(backup_dir))
        .unwrap_or_else(|e| {
            log::warn!("{e}: no earlier restore is known");
            None
        })
        .unwrap_or_default();
    sets.sets
        .iter()
        .rev()
        .find(|s| s.board == board && s.set == set)
        .map(|s| s.finished)
}

/// Add `board`/`set` to the marker (keeping the last [`MAX_RESTORED`]).
pub(crate) fn record_restored(
    backup_dir: &Path,
    board: &str,
    set: &str,
    now: i64,
) -> crate::error::Result<()> {
    let path = restored_path(backup_dir);
    let mut sets = read_json::<RestoredSets>(&path)
        .ok()
        .flatten()
        .unwrap_or_default();
    sets.version = 1;
    sets.sets.push(RestoredSet {
        board: board.into(),
        set: set.into(),
        finished: now,
    });
    let skip = sets.sets.len().saturating_sub(MAX_RESTORED);
    sets.sets.drain(..skip);
    let text = serde_json::to_vec_pretty(&sets).unwrap_or_default();
    write_atomic(&path, &text, 0o644)
}

/// What the decision rule looks at (gathered by the caller).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub board: String,
    pub set: String,
    /// When the set was written.
    pub set_created: i64,
    pub journal: Option<Journal>,
    /// A request marker on the stick (its name).
    pub request: Option<String>,
    /// When this board was restored from this set before.
    pub restored_at: Option<i64>,
    /// The live database: its path and mtime, when it exists.
    pub live_db: Option<(PathBuf, i64)>,
    /// When the set's database archive was made.
    pub db_archive_created: Option<i64>,
    /// The newest successful backup `state.json` records.
    pub last_backup: Option<i64>,
}

/// Whether to restore.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Restore; `resume` holds the strategies an interrupted run of the
    /// same set already finished. `why` in words.
    Restore {
        resume: Vec<DoneStrategy>,
        why: String,
    },
    /// Do nothing, and why (in words, with how to override).
    Nothing(String),
}

const OVERRIDE: &str = "To restore it anyway, put an empty file named RESTORE-REQUEST on the stick's top folder and run disaster-restore again (or reboot the board)";

/// The rule (see the module doc of `ops::disaster`).
pub(crate) fn decide(f: Facts) -> Decision {
    use crate::timefmt::rfc3339;
    if let Some(j) = f.journal {
        return if j.is_for(&f.board, &f.set) {
            let n = j.done.len();
            Decision::Restore {
                resume: j.done,
                why: format!(
                    "an earlier restore of this set (started {}) was interrupted after {n} strateg{}: finishing it",
                    rfc3339(j.started),
                    if n == 1 { "y" } else { "ies" }
                ),
            }
        } else {
            Decision::Restore {
                resume: Vec::new(),
                why: if j.set.is_empty() {
                    "an earlier restore was interrupted (its journal is unreadable): restoring everything again".into()
                } else {
                    format!(
                        "an earlier restore from {}/{} was interrupted; this set is restored in full instead",
                        j.board, j.set
                    )
                },
            }
        };
    }
    if let Some(name) = f.request {
        return Decision::Restore {
            resume: Vec::new(),
            why: format!("the stick carries the request marker {name}"),
        };
    }
    if let Some(t) = f.restored_at {
        return Decision::Nothing(format!(
            "this board was already restored from this set on {}. {OVERRIDE}",
            rfc3339(t)
        ));
    }
    if let (Some((path, mtime)), Some(created)) = (&f.live_db, f.db_archive_created) {
        if *mtime > created {
            return Decision::Nothing(format!(
                "this board is not freshly imaged: its live database {} was changed at {}, after the set's database archive was made ({}), so restoring would lose newer data. {OVERRIDE}",
                path.display(),
                rfc3339(*mtime),
                rfc3339(created)
            ));
        }
    }
    if let Some(t) = f.last_backup.filter(|t| *t > f.set_created) {
        return Decision::Nothing(format!(
            "this board is not freshly imaged: it made a successful backup at {}, after the set was written ({}). {OVERRIDE}",
            rfc3339(t),
            rfc3339(f.set_created)
        ));
    }
    Decision::Restore {
        resume: Vec::new(),
        why: "the board looks freshly imaged (no newer database, no newer backup, not restored from this set before)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            board: "b".into(),
            set: "set-20261126T150000Z".into(),
            set_created: 1000,
            db_archive_created: Some(900),
            ..Facts::default()
        }
    }

    fn done(s: &str) -> DoneStrategy {
        DoneStrategy {
            strategy: s.into(),
            id: format!("{s}-x"),
            created: 900,
            files: 1,
            bytes: 2,
            seconds: 0.5,
            finished: 950,
            earlier: false,
        }
    }

    #[test]
    fn fresh_board_is_restored() {
        assert!(matches!(decide(facts()), Decision::Restore { resume, .. } if resume.is_empty()));
        let mut f = facts();
        f.live_db = Some(("/db".into(), 900));
        f.last_backup = Some(1000);
        assert!(matches!(decide(f), Decision::Restore { .. }));
    }

    #[test]
    fn healthy_or_restored_board_is_left_alone() {
        let mut f = facts();
        f.live_db = Some(("/db".into(), 901));
        assert!(
            matches!(decide(f), Decision::Nothing(w) if w.contains("not freshly imaged") && w.contains("RESTORE-REQUEST"))
        );
        let mut f = facts();
        f.last_backup = Some(1001);
        assert!(matches!(decide(f), Decision::Nothing(w) if w.contains("successful backup")));
        let mut f = facts();
        f.restored_at = Some(1100);
        assert!(matches!(decide(f), Decision::Nothing(w) if w.contains("already restored")));
    }

    #[test]
    fn request_and_journal_override() {
        let mut f = facts();
        f.restored_at = Some(1100);
        f.live_db = Some(("/db".into(), 5000));
        f.request = Some("RESTORE-REQUEST.txt".into());
        assert!(
            matches!(decide(f), Decision::Restore { why, .. } if why.contains("RESTORE-REQUEST.txt"))
        );
        let mut f = facts();
        f.live_db = Some(("/db".into(), 5000));
        let mut j = Journal::new("b", "set-20261126T150000Z", 940);
        j.done.push(done("config"));
        f.journal = Some(j);
        match decide(f) {
            Decision::Restore { resume, why } => {
                assert_eq!(resume, vec![done("config")]);
                assert!(why.contains("interrupted"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let mut f = facts();
        let mut j = Journal::new("b", "set-20250101T000000Z", 940);
        j.done.push(done("config"));
        f.journal = Some(j);
        assert!(matches!(decide(f), Decision::Restore { resume, .. } if resume.is_empty()));
    }

    #[test]
    fn journal_and_marker_files() {
        let d = std::env::temp_dir().join(format!("rvb-djournal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(load_journal(&d), None);
        let mut j = Journal::new("b", "set-20261126T150000Z", 10);
        save_journal(&d, &j).unwrap();
        j.done.push(done("config"));
        save_journal(&d, &j).unwrap();
        assert_eq!(load_journal(&d), Some(j));
        remove_journal(&d).unwrap();
        remove_journal(&d).unwrap();
        assert_eq!(load_journal(&d), None);
        std::fs::write(journal_path(&d), b"{garbage").unwrap();
        assert_eq!(load_journal(&d).map(|j| j.set), Some(String::new()));
        assert_eq!(restored_at(&d, "b", "s"), None);
        for i in 0..(MAX_RESTORED as i64 + 5) {
            record_restored(&d, "b", &format!("s{i}"), i).unwrap();
        }
        assert_eq!(restored_at(&d, "b", "s0"), None, "oldest dropped");
        assert_eq!(restored_at(&d, "b", "s104"), Some(104));
        std::fs::write(restored_path(&d), b"[").unwrap();
        assert_eq!(restored_at(&d, "b", "s104"), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
