//! What the rules judge, gathered once per evaluation: per strategy its
//! schedule, what `state.json` remembers and its newest archives; free
//! space where backups and exports go; the key file's mode; the job that
//! is running.
//!
//! Invariants: gathering is bounded and in fixed memory: at most
//! `size_history + 1` sidecars per strategy are read (the newest, chosen by
//! name, see `Store::newest`), `state.json` is read once, nothing else
//! grows with the store. It writes nothing. The audit chain is not
//! checked here: verifying it reads the whole log (megabytes of hashing),
//! too long for the daemon's single thread at every evaluation; `rvm-backup
//! audit verify` does it on demand.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::ops::Session;
use crate::state::Remembered;
use crate::strategy::Strategy;

/// Everything one evaluation of the rules looks at.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub strategies: Vec<StrategyFacts>,
    /// Free space on `backup_dir`'s file system (`None`: unknown).
    pub storage: Option<Space>,
    /// Free space on the recovery stick, when export is in use and a
    /// stick is mounted that reports its size.
    pub stick: Option<Space>,
    /// Whether export is in use (an export was ever recorded).
    pub export_used: bool,
    pub export_interval_s: u64,
    pub drill_interval_s: u64,
    pub recovery_timeout_s: u64,
    /// The largest random delay added to scheduled runs.
    pub jitter_s: u64,
    pub key_file: KeyFile,
    /// The daemon's running job, if any.
    pub running: Option<Running>,
    /// When watching began (the daemon's start); `None` for `check`. A
    /// strategy never backed up is judged by the time since then.
    pub watch_since: Option<i64>,
    /// WAL shipping, when `[database] pitr` is on (filled by the caller:
    /// the shipper lives in the daemon).
    pub pitr: Option<PitrFacts>,
    /// The daemon's offsite syncs, when `[offsite]` is configured (filled
    /// by the caller: the syncs run in the daemon).
    pub offsite: Option<OffsiteFacts>,
}

/// What the offsite rules judge.
#[derive(Clone, Debug)]
pub struct OffsiteFacts {
    /// `[offsite] interval` in seconds.
    pub interval_s: u64,
    pub status: crate::offsite::status::OffsiteStatus,
}

/// What the `pitr` rule judges: the daemon's shipper.
#[derive(Clone, Debug)]
pub struct PitrFacts {
    pub sync_interval_s: u64,
    /// The shipper's state, or why it could not be asked (`check` when
    /// the daemon does not answer).
    pub shipper: Result<crate::pitr::PitrStatus, String>,
    /// Since when the shipper runs (the daemon's start): a shipper that
    /// never shipped is judged by the time since.
    pub since: Option<i64>,
}

/// The pitr facts for `cfg` (`None` when point-in-time recovery is off
/// or there is no `[database]`).
pub fn pitr(
    cfg: &Config,
    shipper: Result<crate::pitr::PitrStatus, String>,
    since: Option<i64>,
) -> Option<PitrFacts> {
    let db = cfg.database.as_ref().filter(|d| d.pitr_enabled())?;
    Some(PitrFacts {
        sync_interval_s: db.pitr_sync().as_secs().max(1),
        shipper,
        since,
    })
}

#[derive(Clone, Debug)]
pub struct StrategyFacts {
    pub strategy: Strategy,
    /// The schedule period in seconds: its interval, or a day for `at`.
    pub period_s: u64,
    pub daily: bool,
    /// What `state.json` remembers about it.
    pub state: Remembered,
    /// Its newest archives, oldest first (at most `size_history + 1`).
    pub archives: Vec<ArchiveFacts>,
    /// How many archives it has in the store.
    pub archive_count: usize,
    /// Sidecars among the newest that could not be read: "file: error".
    pub unreadable: Vec<String>,
}

/// One archive, as far as the rules care.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchiveFacts {
    pub id: String,
    pub created: i64,
    pub content_bytes: u64,
    pub archive_bytes: u64,
    pub duration_ms: u64,
    /// Database archives: the source's integrity check (`"ok"` or why not).
    pub db_check: Option<String>,
    /// Database archives: rows of all tables together, when counted.
    pub rows: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    pub path: PathBuf,
    pub total: u64,
    /// Bytes available to an unprivileged writer (`f_bavail`).
    pub avail: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum KeyFile {
    /// Not needed (no encryption) and not there.
    #[default]
    NotUsed,
    /// Its permission bits.
    Mode(u32),
    /// Encryption is on, but the file is missing.
    Missing,
    /// It cannot be looked at.
    Error(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    /// What the job does, as `HISTORY` says it.
    pub what: String,
    /// The strategy of a backup job.
    pub backup: Option<Strategy>,
    /// Whether it is a restore (judged against `recovery_timeout`).
    pub restore: bool,
    /// Unix time it started.
    pub started: i64,
}

impl StrategyFacts {
    pub fn newest(&self) -> Option<&ArchiveFacts> {
        self.archives.last()
    }
}

/// Free space of the file system holding `path`; `None` when unknown
/// (it cannot be asked, or it reports a total of 0, as fusefat does).
pub fn space(path: &Path) -> Option<Space> {
    let st = rustix::fs::statvfs(path).ok()?;
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    if total == 0 {
        return None;
    }
    Some(Space {
        path: path.to_path_buf(),
        total,
        avail: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// The schedule period of strategy `s` in seconds, and whether it is daily.
pub fn period(cfg: &Config, s: Strategy) -> Option<(u64, bool)> {
    let (interval, at) = cfg.schedule(s)?;
    Some(match at {
        Some(_) => (86_400, true),
        None => (interval.as_secs().max(1), false),
    })
}

fn key_file(cfg: &Config) -> KeyFile {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(&cfg.key_file) {
        Ok(m) => KeyFile::Mode(m.mode() & 0o7777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cfg.encryption_enabled {
                KeyFile::Missing
            } else {
                KeyFile::NotUsed
            }
        }
        Err(e) => KeyFile::Error(e.to_string()),
    }
}

fn archive_facts(a: &crate::store::Listed) -> ArchiveFacts {
    let m = &a.meta;
    ArchiveFacts {
        id: m.id.clone(),
        created: m.created,
        content_bytes: m.content_bytes,
        archive_bytes: m.archive_bytes,
        duration_ms: m.duration_ms,
        db_check: m.db_check.clone(),
        rows: (!m.tables.is_empty())
            .then(|| m.tables.iter().fold(0u64, |n, (_, r)| n.saturating_add(*r))),
    }
}

/// Gather the facts for `session`'s config, yielding to the executor
/// after each strategy (each reads up to `size_history + 1` sidecars).
pub async fn gather(
    session: &Session,
    running: Option<Running>,
    watch_since: Option<i64>,
) -> Facts {
    let cfg = session.config();
    let state = crate::state::load(&cfg.backup_dir);
    let n = cfg.monitoring.size_history + 1;
    let mut strategies = Vec::new();
    for s in cfg.configured() {
        let Some((period_s, daily)) = period(cfg, s) else {
            continue;
        };
        let (archives, count, problems) = session.store().newest(s, n, session.key());
        strategies.push(StrategyFacts {
            strategy: s,
            period_s,
            daily,
            state: state.get(&s).cloned().unwrap_or_default(),
            archives: archives.iter().map(archive_facts).collect(),
            archive_count: count,
            unreadable: problems
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect(),
        });
        smol::future::yield_now().await;
    }
    let export_used = state.values().any(|r| r.last_export.is_some());
    let stick = if export_used {
        crate::recovery_set::stick::check(&cfg.export_dir, &cfg.backup_dir)
            .ok()
            .and_then(|_| space(&cfg.export_dir))
    } else {
        None
    };
    Facts {
        strategies,
        storage: space(&cfg.backup_dir),
        stick,
        export_used,
        export_interval_s: cfg.export_interval.as_secs(),
        drill_interval_s: cfg.drill_interval.as_secs(),
        recovery_timeout_s: cfg.recovery_timeout.as_secs(),
        jitter_s: cfg.backup_jitter.as_secs(),
        key_file: key_file(cfg),
        running,
        watch_since,
        pitr: None,
        offsite: None,
    }
}
