//! The `[monitoring]` config table: every threshold the rules use, each
//! bounded and checked while the config is read (so a wrong value names its
//! key and line), each with a default.
//!
//! Age-like thresholds are counted in *schedule periods* (a strategy's
//! `interval`, or one day for a daily `at`), so the defaults follow the
//! schedule: a strategy backed up hourly is late after 2 hours, a daily one
//! after 2 days.
//!
//! Invariant: a warning threshold is never beyond its critical one
//! ([`Thresholds::check`], called when the config is parsed).

use std::time::Duration;

use serde::Deserialize;

use crate::config::{BoundedCount, BoundedDuration, BoundedSize};

/// How long `repeat` and `duration_limit` may be: 1s to 30d.
pub type MonitorDuration = BoundedDuration<1, { 30 * 86_400 }>;

/// `[monitoring]` as written; absent keys take the defaults below.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSection {
    age_warning: Option<BoundedCount<1, 1000>>,
    age_critical: Option<BoundedCount<1, 1000>>,
    failures_warning: Option<BoundedCount<1, 1000>>,
    failures_critical: Option<BoundedCount<1, 1000>>,
    verified_warning: Option<BoundedCount<1, 1000>>,
    verified_critical: Option<BoundedCount<1, 1000>>,
    free_warning_percent: Option<BoundedCount<0, 99>>,
    free_critical_percent: Option<BoundedCount<0, 99>>,
    storage_rounds: Option<BoundedCount<1, 1000>>,
    size_history: Option<BoundedCount<3, { MAX_SIZE_HISTORY as u32 }>>,
    size_shrink_warning_percent: Option<BoundedCount<1, 99>>,
    size_shrink_critical_percent: Option<BoundedCount<1, 99>>,
    size_grow_warning_percent: Option<BoundedCount<101, 100_000>>,
    size_min_bytes: Option<BoundedSize<0, { 1 << 40 }>>,
    duration_limit: Option<MonitorDuration>,
    duration_factor: Option<BoundedCount<2, 1000>>,
    duration_min: Option<MonitorDuration>,
    drill_time_target: Option<MonitorDuration>,
    drill_age_warning: Option<BoundedCount<1, 1000>>,
    export_warning: Option<BoundedCount<1, 1000>>,
    export_critical: Option<BoundedCount<1, 1000>>,
    pitr_lag_warning: Option<MonitorDuration>,
    pitr_lag_critical: Option<MonitorDuration>,
    offsite_lag_warning: Option<MonitorDuration>,
    offsite_lag_critical: Option<MonitorDuration>,
    offsite_failures_warning: Option<BoundedCount<1, 1000>>,
    offsite_failures_critical: Option<BoundedCount<1, 1000>>,
    confirm: Option<BoundedCount<1, 100>>,
    repeat: Option<MonitorDuration>,
}

/// The most archives a strategy's size median looks back on.
pub const MAX_SIZE_HISTORY: usize = 50;

/// The effective thresholds (see docs/operations.md "Monitoring").
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Backup age, in schedule periods (default 2 and 4).
    pub age_warning: u32,
    pub age_critical: u32,
    /// Consecutive failed runs (default 1 and 3).
    pub failures_warning: u32,
    pub failures_critical: u32,
    /// Age of the newest verified archive, in periods (default 4 and 8).
    pub verified_warning: u32,
    pub verified_critical: u32,
    /// Free space on backup_dir's file system, percent (default 10 and 5).
    pub free_warning_percent: u32,
    pub free_critical_percent: u32,
    /// Warning when fewer than this many more rounds of backups fit at the
    /// current growth (default 3); critical when the next round does not.
    pub storage_rounds: u32,
    /// How many earlier archives the size median is taken over (default 10).
    pub size_history: usize,
    /// Newest content below this percent of the median: warning (default
    /// 50: halved) and critical (default 10: shrank by 90%).
    pub size_shrink_warning_percent: u32,
    pub size_shrink_critical_percent: u32,
    /// Newest content above this percent of the median: warning (400).
    pub size_grow_warning_percent: u32,
    /// Medians below this many bytes are not judged (default 64 KiB).
    pub size_min_bytes: u64,
    /// A job running or having run longer than this (default: the
    /// strategy's period, at least 10 minutes).
    pub duration_limit: Option<Duration>,
    /// … or longer than this many times its median (default 5), when over
    /// `duration_min` (default 1 minute).
    pub duration_factor: u32,
    pub duration_min: Duration,
    /// A drill whose restore took longer than this: warning (default none).
    pub drill_time_target: Option<Duration>,
    /// No drill for this many `drill_interval`s: warning (default 2).
    pub drill_age_warning: u32,
    /// Last export older than this many `export_interval`s (default 2, 7).
    pub export_warning: u32,
    pub export_critical: u32,
    /// WAL shipping (point-in-time recovery): commits may wait this long,
    /// plus one `pitr_sync_interval`, before they are in the store
    /// (default 1 minute and 10 minutes).
    pub pitr_lag_warning: Duration,
    pub pitr_lag_critical: Duration,
    /// Offsite store: the oldest restore point (archive file or WAL
    /// segment) not yet confirmed remotely may be this old (default
    /// `None`: 2 `[offsite] interval`s plus an hour, and 4 plus a day).
    pub offsite_lag_warning: Option<Duration>,
    pub offsite_lag_critical: Option<Duration>,
    /// Offsite syncs failed in a row (default 2 and 6).
    pub offsite_failures_warning: u32,
    pub offsite_failures_critical: u32,
    /// Evaluations in a row that must agree before a change of state is
    /// believed (default 2; 1 believes every change at once).
    pub confirm: u32,
    /// A firing alert is sent again after this long (default 12h).
    pub repeat: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        MonitoringSection::default().resolve()
    }
}

impl MonitoringSection {
    pub fn resolve(&self) -> Thresholds {
        Thresholds {
            age_warning: self.age_warning.map_or(2, |v| v.0),
            age_critical: self.age_critical.map_or(4, |v| v.0),
            failures_warning: self.failures_warning.map_or(1, |v| v.0),
            failures_critical: self.failures_critical.map_or(3, |v| v.0),
            verified_warning: self.verified_warning.map_or(4, |v| v.0),
            verified_critical: self.verified_critical.map_or(8, |v| v.0),
            free_warning_percent: self.free_warning_percent.map_or(10, |v| v.0),
            free_critical_percent: self.free_critical_percent.map_or(5, |v| v.0),
            storage_rounds: self.storage_rounds.map_or(3, |v| v.0),
            size_history: self.size_history.map_or(10, |v| v.0 as usize),
            size_shrink_warning_percent: self.size_shrink_warning_percent.map_or(50, |v| v.0),
            size_shrink_critical_percent: self.size_shrink_critical_percent.map_or(10, |v| v.0),
            size_grow_warning_percent: self.size_grow_warning_percent.map_or(400, |v| v.0),
            size_min_bytes: self.size_min_bytes.map_or(64 << 10, |v| v.0),
            duration_limit: self.duration_limit.map(|d| d.0),
            duration_factor: self.duration_factor.map_or(5, |v| v.0),
            duration_min: self.duration_min.map_or(Duration::from_secs(60), |d| d.0),
            drill_time_target: self.drill_time_target.map(|d| d.0),
            drill_age_warning: self.drill_age_warning.map_or(2, |v| v.0),
            export_warning: self.export_warning.map_or(2, |v| v.0),
            export_critical: self.export_critical.map_or(7, |v| v.0),
            pitr_lag_warning: self
                .pitr_lag_warning
                .map_or(Duration::from_secs(60), |d| d.0),
            pitr_lag_critical: self
                .pitr_lag_critical
                .map_or(Duration::from_secs(600), |d| d.0),
            offsite_lag_warning: self.offsite_lag_warning.map(|d| d.0),
            offsite_lag_critical: self.offsite_lag_critical.map(|d| d.0),
            offsite_failures_warning: self.offsite_failures_warning.map_or(2, |v| v.0),
            offsite_failures_critical: self.offsite_failures_critical.map_or(6, |v| v.0),
            confirm: self.confirm.map_or(2, |v| v.0),
            repeat: self.repeat.map_or(Duration::from_secs(12 * 3600), |d| d.0),
        }
    }
}

impl Thresholds {
    /// Warning thresholds must come before critical ones: the message
    /// names both keys.
    pub fn check(&self) -> Result<(), String> {
        let pairs: [(&str, u32, &str, u32, bool); 7] = [
            (
                "offsite_failures_warning",
                self.offsite_failures_warning,
                "offsite_failures_critical",
                self.offsite_failures_critical,
                true,
            ),
            (
                "age_warning",
                self.age_warning,
                "age_critical",
                self.age_critical,
                true,
            ),
            (
                "failures_warning",
                self.failures_warning,
                "failures_critical",
                self.failures_critical,
                true,
            ),
            (
                "verified_warning",
                self.verified_warning,
                "verified_critical",
                self.verified_critical,
                true,
            ),
            (
                "export_warning",
                self.export_warning,
                "export_critical",
                self.export_critical,
                true,
            ),
            (
                "free_warning_percent",
                self.free_warning_percent,
                "free_critical_percent",
                self.free_critical_percent,
                false,
            ),
            (
                "size_shrink_warning_percent",
                self.size_shrink_warning_percent,
                "size_shrink_critical_percent",
                self.size_shrink_critical_percent,
                false,
            ),
        ];
        for (wk, w, ck, c, rising) in pairs {
            let bad = if rising { w > c } else { w < c };
            if bad {
                let order = if rising { "at most" } else { "at least" };
                return Err(format!(
                    "[monitoring] {wk} = {w} must be {order} {ck} = {c}: a warning comes before the critical state"
                ));
            }
        }
        if self.pitr_lag_warning > self.pitr_lag_critical {
            return Err(format!(
                "[monitoring] pitr_lag_warning = {}s must be at most pitr_lag_critical = {}s: a warning comes before the critical state",
                self.pitr_lag_warning.as_secs(),
                self.pitr_lag_critical.as_secs()
            ));
        }
        if let (Some(w), Some(c)) = (self.offsite_lag_warning, self.offsite_lag_critical) {
            if w > c {
                return Err(format!(
                    "[monitoring] offsite_lag_warning = {}s must be at most offsite_lag_critical = {}s: a warning comes before the critical state",
                    w.as_secs(),
                    c.as_secs()
                ));
            }
        }
        Ok(())
    }
}
