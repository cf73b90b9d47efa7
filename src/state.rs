//! What rvm-backup remembers between runs, per strategy: last success and
//! failure, consecutive failures, the last error and the newest archive
//! that passed verification. One JSON file, `backup_dir/state.json`,
//! replaced crash-safely; a missing or unreadable file means "nothing
//! known yet" (with a warning), never a refusal to back up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil::write_atomic;
use crate::strategy::Strategy;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
    pub failures: u32,
    pub last_error: Option<String>,
    pub last_verified: Option<String>,
    /// Unix time of the last recovery drill of this strategy.
    #[serde(default)]
    pub last_drill: Option<i64>,
    /// Whether it passed.
    #[serde(default)]
    pub last_drill_ok: Option<bool>,
    /// Why it failed (`None` when it passed).
    #[serde(default)]
    pub last_drill_error: Option<String>,
    /// How long the restore and its checks took (the recovery time).
    #[serde(default)]
    pub last_drill_seconds: Option<f64>,
    /// Unix time of the last export of a recovery set (recorded on every
    /// configured strategy: a set holds them all).
    #[serde(default)]
    pub last_export: Option<i64>,
    /// Whether it wrote a complete, verified set.
    #[serde(default)]
    pub last_export_ok: Option<bool>,
    /// Why it failed (`None` when it passed).
    #[serde(default)]
    pub last_export_error: Option<String>,
    /// The set it wrote (`set-<UTC time>`); kept from the last good export
    /// when a later one fails.
    #[serde(default)]
    pub last_export_set: Option<String>,
}

pub type State = BTreeMap<Strategy, Remembered>;

impl Remembered {
    /// Note how a backup run ended at Unix time `now`.
    pub fn record_run(&mut self, outcome: std::result::Result<(), String>, now: i64) {
        match outcome {
            Ok(()) => {
                self.last_success = Some(now);
                self.failures = 0;
            }
            Err(e) => {
                self.last_failure = Some(now);
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(e);
            }
        }
    }
}

impl Remembered {
    /// Note how a recovery drill ended at Unix time `now`: `Ok(seconds)`
    /// or `Err((seconds, why))`.
    pub fn record_drill(&mut self, outcome: std::result::Result<f64, (f64, String)>, now: i64) {
        self.last_drill = Some(now);
        let (ok, seconds, error) = match outcome {
            Ok(s) => (true, s, None),
            Err((s, e)) => (false, s, Some(e)),
        };
        self.last_drill_ok = Some(ok);
        self.last_drill_seconds = Some(seconds);
        self.last_drill_error = error;
    }
}

impl Remembered {
    /// Note how an export ended at Unix time `now`: `Ok(set name)` or
    /// `Err(why)`.
    pub fn record_export(&mut self, outcome: std::result::Result<String, String>, now: i64) {
        self.last_export = Some(now);
        match outcome {
            Ok(set) => {
                self.last_export_ok = Some(true);
                self.last_export_error = None;
                self.last_export_set = Some(set);
            }
            Err(e) => {
                self.last_export_ok = Some(false);
                self.last_export_error = Some(e);
            }
        }
    }
}

/// [`update`] for several strategies at once (one read, one write).
pub fn update_many(backup_dir: &Path, strategies: &[Strategy], change: impl Fn(&mut Remembered)) {
    let mut state = load(backup_dir);
    for s in strategies {
        change(state.entry(*s).or_default());
    }
    if let Err(e) = save(backup_dir, &state) {
        log::error!("cannot save {}: {e}", path(backup_dir).display());
    }
}

/// Re-read the file, change one strategy's record, write it back. The
/// daemon and one-shot runs both write it, so nobody keeps a copy.
pub fn update(backup_dir: &Path, s: Strategy, change: impl FnOnce(&mut Remembered)) {
    let mut state = load(backup_dir);
    change(state.entry(s).or_default());
    if let Err(e) = save(backup_dir, &state) {
        log::error!("cannot save {}: {e}", path(backup_dir).display());
    }
}

pub fn path(backup_dir: &Path) -> PathBuf {
    backup_dir.join("state.json")
}

/// Warn about a damaged file once per process, not at every read.
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn warn_once(message: String) {
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!("{message}");
    }
}

/// Largest `state.json` read (it holds four small records).
pub const MAX_STATE_LEN: usize = 1 << 20;

/// Read `state.json`: a small regular file, not followed if it is a
/// symlink, at most [`MAX_STATE_LEN`] bytes. Anything else is "nothing
/// known yet", with a warning.
pub fn load(backup_dir: &Path) -> State {
    let p = path(backup_dir);
    let text = match crate::fsutil::read_regular(&p, MAX_STATE_LEN, crate::fsutil::Follow::No) {
        Ok((_, bytes)) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return State::new(),
        Err(e) => {
            warn_once(format!(
                "cannot read {}: {e}; starting with no history",
                p.display()
            ));
            return State::new();
        }
    };
    let named: BTreeMap<String, Remembered> = serde_json::from_slice(&text).unwrap_or_else(|e| {
        warn_once(format!(
            "{} is damaged ({e}); starting with no history",
            p.display()
        ));
        BTreeMap::new()
    });
    named
        .into_iter()
        .filter_map(|(k, v)| Strategy::parse(&k).map(|s| (s, v)))
        .collect()
}

pub fn save(backup_dir: &Path, state: &State) -> Result<()> {
    let named: BTreeMap<&str, &Remembered> = state.iter().map(|(k, v)| (k.name(), v)).collect();
    let text = serde_json::to_string_pretty(&named).unwrap_or_default();
    write_atomic(&path(backup_dir), text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_bounded_and_never_overflows() {
        let d = std::env::temp_dir().join(format!("rvb-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(path(&d), r#"{"config":{"failures":4294967295}}"#).unwrap();
        let mut st = load(&d);
        let r = st.get_mut(&Strategy::Config).unwrap();
        r.record_run(Err("disk".into()), 1);
        assert_eq!(r.failures, u32::MAX);
        // A FIFO or a link to a device is "nothing known", at once.
        std::fs::remove_file(path(&d)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", path(&d)).unwrap();
        assert!(load(&d).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn old_files_load_and_drills_are_remembered() {
        let d = std::env::temp_dir().join(format!("rvb-state-drill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            path(&d),
            r#"{"database":{"last_success":5,"last_failure":null,"failures":0,"last_error":null,"last_verified":"x"}}"#,
        )
        .unwrap();
        let st = load(&d);
        let r = &st[&Strategy::Database];
        assert_eq!(
            (r.last_success, r.last_drill, r.last_drill_ok),
            (Some(5), None, None)
        );
        update(&d, Strategy::Database, |r| {
            r.record_drill(Err((1.5, "table t has 3 rows".into())), 7)
        });
        update(&d, Strategy::Config, |r| r.record_drill(Ok(0.25), 8));
        let st = load(&d);
        let db = &st[&Strategy::Database];
        assert_eq!(db.last_drill, Some(7));
        assert_eq!(db.last_drill_ok, Some(false));
        assert_eq!(db.last_drill_seconds, Some(1.5));
        assert_eq!(db.last_drill_error.as_deref(), Some("table t has 3 rows"));
        assert_eq!(db.last_verified.as_deref(), Some("x"));
        let c = &st[&Strategy::Config];
        assert_eq!(
            (c.last_drill_ok, c.last_drill_error.as_deref()),
            (Some(true), None)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
