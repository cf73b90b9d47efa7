//! Jobs: long work the daemon does one at a time, in submission order.
//!
//! A job has an id, a kind, who asked for it, a state and a progress
//! counter. Submitting work equal to a job already queued or running returns
//! that job instead of queueing a duplicate. The last `HISTORY` finished
//! jobs are kept for `HISTORY` and `JOB`; older ones are forgotten.
//!
//! Offsite syncs ([`JobKind::Offsite`]) run in a lane of their own (the
//! daemon's offsite task, beside the job runner: an upload over a slow
//! link must not hold back a backup): [`Jobs::start_next`] and
//! [`Jobs::running`] are about the other jobs, [`Jobs::start_next_offsite`]
//! and [`Jobs::running_offsite`] about syncs. A sync folds only into a
//! queued one, not into a running one: a sync asked for while one runs
//! (there may be new files it did not see) makes exactly one more.

use std::collections::VecDeque;

use serde_json::{json, Value};

use crate::audit::Actor;
use crate::ops::RestoreRequest;
use crate::progress::Counter;
use crate::restore::Selector;
use crate::strategy::Strategy;

const HISTORY: usize = 50;
/// Finished offsite syncs kept (one may end per WAL segment: they must not
/// push every other job out of `HISTORY`).
const OFFSITE_HISTORY: usize = 5;
/// Jobs that may wait in the queue (requests beyond get `ERR 503`).
pub const MAX_QUEUED: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// A backup of one strategy; `true`: a full archive even where an
    /// incremental would be made (`BACKUP … full`).
    Backup(Strategy, bool),
    /// Archive ids; empty means all.
    Verify(Vec<String>),
    Restore(RestoreRequest),
    /// Every configured strategy as of `at` (the newest when `None`).
    RestoreAll {
        at: Option<i64>,
        target: Option<std::path::PathBuf>,
        accept_damaged: bool,
    },
    Prune {
        dry_run: bool,
    },
    /// A recovery drill of these strategies (in this order).
    Drill(Vec<Strategy>),
    /// A recovery set onto the stick at this directory (`export_dir`
    /// when `None`).
    Export(Option<std::path::PathBuf>),
    /// Ship what the offsite store does not hold yet (`offsite sync`).
    Offsite,
}

impl JobKind {
    pub fn describe(&self) -> String {
        match self {
            JobKind::Backup(s, false) => format!("backup {s}"),
            JobKind::Backup(s, true) => format!("backup {s} full"),
            JobKind::Verify(ids) if ids.is_empty() => "verify all".into(),
            JobKind::Verify(ids) => format!("verify {}", ids.join(" ")),
            JobKind::Restore(RestoreRequest {
                strategy,
                selector,
                target,
                file,
                accept_damaged,
            }) => {
                let which = match selector {
                    Selector::Latest => "latest".to_string(),
                    Selector::Id(id) => id.clone(),
                    Selector::At(t) => format!("at {}", crate::timefmt::rfc3339(*t)),
                };
                let into = target
                    .as_ref()
                    .map(|t| format!(" into {}", t.display()))
                    .unwrap_or_default();
                let only = file
                    .as_ref()
                    .map(|f| format!(" file {}", f.display()))
                    .unwrap_or_default();
                let damaged = if *accept_damaged {
                    " accepting a damaged source"
                } else {
                    ""
                };
                format!("restore {strategy} {which}{only}{into}{damaged}")
            }
            JobKind::RestoreAll {
                at,
                target,
                accept_damaged,
            } => format!(
                "restore all {}{}{}",
                at.map_or_else(
                    || "latest".to_string(),
                    |t| format!("at {}", crate::timefmt::rfc3339(t))
                ),
                target
                    .as_ref()
                    .map(|t| format!(" into {}", t.display()))
                    .unwrap_or_default(),
                if *accept_damaged {
                    " accepting a damaged source"
                } else {
                    ""
                }
            ),
            JobKind::Prune { dry_run } => if *dry_run { "prune (dry run)" } else { "prune" }.into(),
            JobKind::Drill(strategies) => {
                let names: Vec<&str> = strategies.iter().map(|s| s.name()).collect();
                format!("drill {}", names.join(" "))
            }
            JobKind::Export(None) => "export".into(),
            JobKind::Export(Some(dir)) => format!("export to {}", dir.display()),
            JobKind::Offsite => "offsite sync".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub actor: Actor,
    pub state: JobState,
    pub progress: Counter,
    pub queued_at: i64,
    /// When it started running (the monitor's duration rule).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
}

impl Job {
    pub fn to_json(&self) -> Value {
        let (done, total) = self.progress.get();
        json!({
            "id": self.id,
            "what": self.kind.describe(),
            "state": format!("{:?}", self.state).to_lowercase(),
            "phase": self.progress.phase(),
            "bytes_done": done,
            "bytes_total": total,
            "queued": crate::timefmt::rfc3339(self.queued_at),
            "finished": self.finished_at.map(crate::timefmt::rfc3339),
            "outcome": self.outcome,
        })
    }
}

#[derive(Default)]
pub struct Jobs {
    next_id: u64,
    jobs: VecDeque<Job>,
}

impl Jobs {
    /// Queue work; returns the job id and whether it is new.
    /// `None` when the queue is full (`MAX_QUEUED` jobs waiting) and the
    /// work is not the scheduler's (its jobs fold into one per kind, so
    /// they are few, and a full queue must not stop scheduled backups).
    pub fn submit(&mut self, kind: JobKind, actor: Actor) -> Option<(u64, bool)> {
        let active = |j: &&Job| match j.kind {
            JobKind::Offsite => j.state == JobState::Queued,
            _ => matches!(j.state, JobState::Queued | JobState::Running),
        };
        if let Some(j) = self.jobs.iter().filter(active).find(|j| j.kind == kind) {
            return Some((j.id, false));
        }
        if actor != Actor::Scheduler && self.queued() >= MAX_QUEUED {
            return None;
        }
        self.next_id += 1;
        self.jobs.push_back(Job {
            id: self.next_id,
            kind,
            actor,
            state: JobState::Queued,
            progress: Default::default(),
            queued_at: crate::timefmt::now_unix(),
            started_at: None,
            finished_at: None,
            outcome: None,
        });
        self.forget_old();
        Some((self.next_id, true))
    }

    fn forget_old(&mut self) {
        let ended_sync = |j: &Job| {
            j.kind == JobKind::Offsite && !matches!(j.state, JobState::Queued | JobState::Running)
        };
        while self.jobs.iter().filter(|j| ended_sync(j)).count() > OFFSITE_HISTORY {
            match self.jobs.iter().position(ended_sync) {
                Some(i) => {
                    self.jobs.remove(i);
                }
                None => break,
            }
        }
        while self.jobs.len() > HISTORY {
            match self
                .jobs
                .iter()
                .position(|j| !matches!(j.state, JobState::Queued | JobState::Running))
            {
                Some(i) => {
                    self.jobs.remove(i);
                }
                None => break,
            }
        }
    }

    /// The next queued job (not a sync), now marked running.
    pub fn start_next(&mut self) -> Option<(u64, JobKind, Counter)> {
        self.start_first(|k| *k != JobKind::Offsite)
    }

    /// The queued sync, now marked running.
    pub fn start_next_offsite(&mut self) -> Option<(u64, JobKind, Counter)> {
        self.start_first(|k| *k == JobKind::Offsite)
    }

    fn start_first(&mut self, lane: impl Fn(&JobKind) -> bool) -> Option<(u64, JobKind, Counter)> {
        let j = self
            .jobs
            .iter_mut()
            .find(|j| j.state == JobState::Queued && lane(&j.kind))?;
        j.state = JobState::Running;
        j.started_at = Some(crate::timefmt::now_unix());
        Some((j.id, j.kind.clone(), j.progress.clone()))
    }

    /// Whether a sync is queued.
    pub fn offsite_queued(&self) -> Option<u64> {
        self.jobs
            .iter()
            .find(|j| j.state == JobState::Queued && j.kind == JobKind::Offsite)
            .map(|j| j.id)
    }

    pub fn finish(&mut self, id: u64, state: JobState, outcome: String) {
        if let Some(j) = self.get_mut(id) {
            j.state = state;
            j.finished_at = Some(crate::timefmt::now_unix());
            j.outcome = Some(outcome);
        }
    }

    pub fn get(&self, id: u64) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    /// The running job (not a sync).
    pub fn running(&self) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.state == JobState::Running && j.kind != JobKind::Offsite)
    }

    /// The running sync.
    pub fn running_offsite(&self) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.state == JobState::Running && j.kind == JobKind::Offsite)
    }

    pub fn queued(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.state == JobState::Queued)
            .count()
    }

    pub fn all(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_folded_and_order_kept() {
        let mut j = Jobs::default();
        let (a, new_a) = j
            .submit(JobKind::Backup(Strategy::Config, false), Actor::Scheduler)
            .unwrap();
        let (b, new_b) = j
            .submit(JobKind::Backup(Strategy::Config, false), Actor::Daemon)
            .unwrap();
        let (c, _) = j
            .submit(JobKind::Backup(Strategy::Logs, false), Actor::Scheduler)
            .unwrap();
        assert!(new_a && !new_b && a == b && c != a);
        assert_eq!(j.start_next().unwrap().0, a);
        assert_eq!(
            j.submit(JobKind::Backup(Strategy::Config, false), Actor::Scheduler)
                .unwrap()
                .0,
            a,
            "running job folds too"
        );
        j.finish(a, JobState::Done, "ok".into());
        assert_ne!(
            j.submit(JobKind::Backup(Strategy::Config, false), Actor::Scheduler)
                .unwrap()
                .0,
            a
        );
        assert_eq!(j.start_next().unwrap().0, c);
    }

    #[test]
    fn the_queue_is_bounded_but_never_for_the_scheduler() {
        let mut j = Jobs::default();
        let peer = Actor::Peer { uid: 1002, pid: 1 };
        for i in 0..MAX_QUEUED {
            assert!(j
                .submit(JobKind::Verify(vec![i.to_string()]), peer.clone())
                .is_some());
        }
        assert!(j
            .submit(JobKind::Verify(vec!["x".into()]), peer.clone())
            .is_none());
        // The same work folds into its queued job, and the scheduler still gets in.
        assert!(j.submit(JobKind::Verify(vec!["7".into()]), peer).is_some());
        assert!(j
            .submit(JobKind::Backup(Strategy::Config, false), Actor::Scheduler)
            .is_some());
    }

    #[test]
    fn syncs_have_their_own_lane_and_coalesce_into_one_more() {
        let mut j = Jobs::default();
        let (b, _) = j
            .submit(JobKind::Backup(Strategy::Config, false), Actor::Scheduler)
            .unwrap();
        let (s1, _) = j.submit(JobKind::Offsite, Actor::Daemon).unwrap();
        // The runner takes the backup, never the sync; the sync lane the sync.
        assert_eq!(j.start_next_offsite().unwrap().0, s1);
        assert!(j.start_next_offsite().is_none());
        assert_eq!(j.start_next().unwrap().0, b);
        assert!(j.start_next().is_none());
        assert_eq!(j.running().unwrap().id, b);
        assert_eq!(j.running_offsite().unwrap().id, s1);
        // Asked for while one runs: one more, however often asked.
        let (s2, new) = j.submit(JobKind::Offsite, Actor::Daemon).unwrap();
        assert!(new && s2 != s1);
        for _ in 0..5 {
            assert_eq!(
                j.submit(JobKind::Offsite, Actor::Daemon).unwrap(),
                (s2, false)
            );
        }
        assert_eq!(j.offsite_queued(), Some(s2));
        j.finish(s1, JobState::Done, "ok".into());
        assert_eq!(j.start_next_offsite().unwrap().0, s2);
        assert_eq!(j.offsite_queued(), None);
        // Many syncs later, the backup is still in the history (a sync
        // ended since the last submission may be one over).
        j.finish(s2, JobState::Done, "ok".into());
        j.finish(b, JobState::Done, "ok".into());
        for _ in 0..(2 * HISTORY) {
            let (id, _) = j.submit(JobKind::Offsite, Actor::Daemon).unwrap();
            j.start_next_offsite();
            j.finish(id, JobState::Done, String::new());
        }
        assert!(j.get(b).is_some());
        assert!(j.all().filter(|x| x.kind == JobKind::Offsite).count() <= OFFSITE_HISTORY + 1);
    }

    #[test]
    fn history_is_bounded() {
        let mut j = Jobs::default();
        for i in 0..200 {
            let (id, _) = j
                .submit(JobKind::Verify(vec![i.to_string()]), Actor::Scheduler)
                .unwrap();
            j.start_next();
            j.finish(id, JobState::Done, String::new());
        }
        assert!(j.all().count() <= HISTORY);
    }
}
