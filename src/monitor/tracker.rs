//! The state machine behind alerts: per finding key (`rule/subject`) the
//! severity believed, since when, and when it was last alerted.
//!
//! Transitions: a finding whose severity differs from the believed one is
//! *pending*; the change is believed once `confirm` evaluations in a row
//! (default 2) agree on the new severity, and only then is an alert made:
//! `Firing` when it leaves ok or moves between warning, critical and
//! unknown (the alert carries the previous severity), `Resolved` when it
//! returns to ok. That is the anti-flapping rule: one odd evaluation
//! changes nothing, and a value hovering on a threshold alerts at most once
//! per `confirm` evaluations. A believed non-ok state is alerted again
//! (`Repeat`) every `repeat`. A key no evaluation yields any more (its
//! strategy was removed from the config) is resolved and forgotten.
//!
//! Invariants: the tracker is pure (the caller passes the time); its
//! state survives a restart in `backup_dir/monitor.json`, written
//! crash-safely; the file is bounded ([`MAX_ENTRIES`], [`MAX_FILE_LEN`]),
//! and a damaged one is a warning and a fresh start (every key ok), never
//! a refusal: the worst it costs is an alert sent again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Alert, AlertKind, Finding, Severity};

/// The tracker's file in `backup_dir`.
pub const FILE: &str = "monitor.json";
/// The most keys kept (a board has a few dozen).
pub const MAX_ENTRIES: usize = 512;
/// The largest file read.
pub const MAX_FILE_LEN: usize = 1 << 20;

/// What is known about one finding key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub rule: String,
    pub subject: String,
    /// The severity believed (confirmed).
    pub severity: Severity,
    /// Since when it has been believed (Unix seconds).
    pub since: i64,
    /// When it was last alerted (`Firing` or `Repeat`); `None` while ok.
    #[serde(default)]
    pub last_alert: Option<i64>,
    /// A different severity seen, not yet believed, and in how many
    /// evaluations in a row.
    #[serde(default)]
    pub pending: Option<Severity>,
    #[serde(default)]
    pub pending_count: u32,
    /// The latest finding's reason and figures, and when it was made.
    pub reason: String,
    #[serde(default)]
    pub figures: serde_json::Map<String, serde_json::Value>,
    pub evaluated: i64,
    /// The severity of the latest evaluation (believed or not).
    pub observed: Severity,
}

impl Entry {
    pub fn key(&self) -> String {
        format!("{}/{}", self.rule, self.subject)
    }

    pub fn firing(&self) -> bool {
        self.severity != Severity::Ok
    }
}

/// One transition, to be made into an [`Alert`].
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: AlertKind,
    pub finding: Finding,
    pub previous: Severity,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracker {
    entries: BTreeMap<String, Entry>,
}

impl Tracker {
    pub fn path(backup_dir: &Path) -> PathBuf {
        backup_dir.join(FILE)
    }

    /// Read the saved states; missing is a fresh start, damaged a warning
    /// and a fresh start.
    pub fn load(backup_dir: &Path) -> Tracker {
        let p = Tracker::path(backup_dir);
        let bytes = match crate::fsutil::read_regular(&p, MAX_FILE_LEN, crate::fsutil::Follow::No) {
            Ok((_, b)) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Tracker::default(),
            Err(e) => {
                log::warn!(
                    "cannot read {}: {e}; the monitor starts afresh (alerts may be sent again)",
                    p.display()
                );
                return Tracker::default();
            }
        };
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(d) if d.version == 1 => Tracker {
                entries: d
                    .entries
                    .into_iter()
                    .take(MAX_ENTRIES)
                    .map(|e| (e.key(), e))
                    .collect(),
            },
            Ok(d) => {
                log::warn!(
                    "{} has version {}, not 1; the monitor starts afresh",
                    p.display(),
                    d.version
                );
                Tracker::default()
            }
            Err(e) => {
                log::warn!(
                    "{} is damaged ({e}); the monitor starts afresh (alerts may be sent again)",
                    p.display()
                );
                Tracker::default()
            }
        }
    }

    /// Write the states crash-safely (temporary file, fsync, rename).
    pub fn save(&self, backup_dir: &Path) -> crate::error::Result<()> {
        let d = OnDisk {
            version: 1,
            entries: self.entries.values().cloned().collect(),
        };
        let text = serde_json::to_vec_pretty(&d).unwrap_or_default();
        crate::fsutil::write_atomic(&Tracker::path(backup_dir), &text, 0o644)
    }

    /// Whether both hold the same states (severity, since, last alert,
    /// pending change) for the same keys; reasons and times of evaluation
    /// aside. The daemon saves only when they differ.
    pub fn same_states(&self, other: &Tracker) -> bool {
        let core = |t: &Tracker| {
            t.entries
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        e.severity,
                        e.since,
                        e.last_alert,
                        e.pending,
                        e.pending_count,
                    )
                })
                .collect::<Vec<_>>()
        };
        core(self) == core(other)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Feed one evaluation's findings (every finding of every rule that
    /// applies, ok ones included); returns the transitions to alert on.
    pub fn observe(
        &mut self,
        findings: &[Finding],
        confirm: u32,
        repeat_s: u64,
        now: i64,
    ) -> Vec<Change> {
        let confirm = confirm.max(1);
        let repeat = i64::try_from(repeat_s).unwrap_or(i64::MAX).max(1);
        let mut changes = Vec::new();
        let wanted: std::collections::BTreeSet<String> =
            findings.iter().map(Finding::key).collect();
        // Keys no longer evaluated: resolve what fired, forget them all.
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(e) = self.entries.remove(&k) {
                if e.firing() {
                    changes.push(Change {
                        kind: AlertKind::Resolved,
                        finding: Finding {
                            rule: e.rule,
                            subject: e.subject,
                            severity: Severity::Ok,
                            reason: "no longer checked (the strategy or rule is not configured any more)".into(),
                            figures: Default::default(),
                        },
                        previous: e.severity,
                    });
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in findings {
            let key = f.key();
            if !seen.insert(key.clone()) {
                continue;
            }
            if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ENTRIES {
                log::warn!(
                    "the monitor tracks {MAX_ENTRIES} findings already; {key} is not tracked"
                );
                continue;
            }
            let e = self.entries.entry(key).or_insert_with(|| Entry {
                rule: f.rule.clone(),
                subject: f.subject.clone(),
                severity: Severity::Ok,
                since: now,
                last_alert: None,
                pending: None,
                pending_count: 0,
                reason: String::new(),
                figures: Default::default(),
                evaluated: now,
                observed: Severity::Ok,
            });
            e.reason = f.reason.clone();
            e.figures = f.figures.clone();
            e.evaluated = now;
            e.observed = f.severity;
            if f.severity == e.severity {
                e.pending = None;
                e.pending_count = 0;
            } else {
                if e.pending == Some(f.severity) {
                    e.pending_count = e.pending_count.saturating_add(1);
                } else {
                    e.pending = Some(f.severity);
                    e.pending_count = 1;
                }
                if e.pending_count >= confirm {
                    let previous = e.severity;
                    e.severity = f.severity;
                    e.since = now;
                    e.pending = None;
                    e.pending_count = 0;
                    let kind = if f.severity == Severity::Ok {
                        e.last_alert = None;
                        AlertKind::Resolved
                    } else {
                        e.last_alert = Some(now);
                        AlertKind::Firing
                    };
                    changes.push(Change {
                        kind,
                        finding: f.clone(),
                        previous,
                    });
                    continue;
                }
            }
            if e.firing() && e.last_alert.is_none_or(|t| now.saturating_sub(t) >= repeat) {
                e.last_alert = Some(now);
                let mut repeated = f.clone();
                if f.severity != e.severity {
                    // Still believed as before: say so, with the latest reason.
                    repeated.severity = e.severity;
                }
                changes.push(Change {
                    kind: AlertKind::Repeat,
                    finding: repeated,
                    previous: e.severity,
                });
            }
        }
        changes
    }
}

/// The alerts for `changes`, each with a fresh id.
pub fn alerts(changes: &[Change], host: &str, machine_id: &str, now: i64) -> Vec<Alert> {
    changes
        .iter()
        .filter_map(|c| {
            Alert::new(c.kind, &c.finding, c.previous, host, machine_id, now)
                .map_err(|e| log::error!("cannot make an alert id: {e}"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn f(rule: &str, sev: Severity) -> Finding {
        Finding {
            rule: rule.into(),
            subject: "database".into(),
            severity: sev,
            reason: format!("{rule} is {sev}"),
            figures: Default::default(),
        }
    }

    fn kinds(c: &[Change]) -> Vec<(AlertKind, Severity, Severity)> {
        c.iter()
            .map(|c| (c.kind, c.previous, c.finding.severity))
            .collect()
    }

    #[test]
    fn transitions_need_confirmation_and_resolve() {
        use Severity::*;
        let mut t = Tracker::default();
        let mut now = T0;
        let mut step = |t: &mut Tracker, s: Severity| {
            now += 60;
            t.observe(&[f("failures", s)], 2, 3600, now)
        };
        assert!(step(&mut t, Ok).is_empty());
        assert!(
            step(&mut t, Warning).is_empty(),
            "one sighting is not believed"
        );
        assert_eq!(
            kinds(&step(&mut t, Warning)),
            [(AlertKind::Firing, Ok, Warning)]
        );
        assert!(step(&mut t, Critical).is_empty());
        assert_eq!(
            kinds(&step(&mut t, Critical)),
            [(AlertKind::Firing, Warning, Critical)]
        );
        assert!(t.get("failures/database").unwrap().firing());
        assert!(step(&mut t, Ok).is_empty());
        assert_eq!(
            kinds(&step(&mut t, Ok)),
            [(AlertKind::Resolved, Critical, Ok)]
        );
        assert!(!t.get("failures/database").unwrap().firing());
    }

    #[test]
    fn flapping_on_a_threshold_alerts_nothing() {
        use Severity::*;
        let mut t = Tracker::default();
        for i in 0..100 {
            let s = if i % 2 == 0 { Warning } else { Ok };
            let c = t.observe(&[f("storage", s)], 2, 3600, T0 + i * 60);
            assert!(c.is_empty(), "evaluation {i}: {c:?}");
        }
        // confirm = 1 believes at once.
        let c = t.observe(&[f("storage", Critical)], 1, 3600, T0 + 10_000);
        assert_eq!(kinds(&c), [(AlertKind::Firing, Ok, Critical)]);
    }

    #[test]
    fn firing_repeats_every_interval() {
        use Severity::*;
        let mut t = Tracker::default();
        t.observe(&[f("size", Critical)], 1, 3600, T0);
        let mut repeats = 0;
        for m in 1..=180 {
            let c = t.observe(&[f("size", Critical)], 1, 3600, T0 + m * 60);
            repeats += c.iter().filter(|c| c.kind == AlertKind::Repeat).count();
            assert!(c.iter().all(|c| c.kind == AlertKind::Repeat));
        }
        assert_eq!(repeats, 3, "one an hour over three hours");
        // A pending (unconfirmed) change repeats the believed severity.
        let c = t.observe(&[f("size", Warning)], 2, 60, T0 + 200 * 60);
        assert_eq!(kinds(&c), [(AlertKind::Repeat, Critical, Critical)]);
    }

    #[test]
    fn state_survives_a_restart_and_damage_is_a_fresh_start() {
        use Severity::*;
        let d = std::env::temp_dir().join(format!("rvb-tracker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let mut t = Tracker::default();
        t.observe(&[f("failures", Critical)], 2, 3600, T0 - 60);
        let c = t.observe(
            &[f("failures", Critical), f("backup_age", Warning)],
            2,
            3600,
            T0,
        );
        assert_eq!(kinds(&c), [(AlertKind::Firing, Ok, Critical)]);
        assert_eq!(t.get("backup_age/database").unwrap().pending, Some(Warning));
        t.save(&d).unwrap();
        let mut back = Tracker::load(&d);
        assert_eq!(back, t);
        // No second Firing after the restart; the pending one completes.
        let c = back.observe(
            &[f("failures", Critical), f("backup_age", Warning)],
            2,
            3600,
            T0 + 60,
        );
        assert_eq!(kinds(&c), [(AlertKind::Firing, Ok, Warning)]);
        // failures/database vanished from the evaluation: resolved.
        let c = back.observe(&[f("backup_age", Warning)], 2, 3600, T0 + 120);
        assert_eq!(kinds(&c), [(AlertKind::Resolved, Critical, Ok)]);
        assert!(back.get("failures/database").is_none());

        for junk in [&b"{not json"[..], b"{\"version\":7,\"entries\":[]}", b""] {
            std::fs::write(Tracker::path(&d), junk).unwrap();
            assert_eq!(Tracker::load(&d), Tracker::default());
        }
        std::fs::remove_file(Tracker::path(&d)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", Tracker::path(&d)).unwrap();
        assert_eq!(Tracker::load(&d), Tracker::default());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bounded() {
        let mut t = Tracker::default();
        let many: Vec<Finding> = (0..MAX_ENTRIES + 50)
            .map(|i| Finding {
                subject: format!("s{i}"),
                ..f("x", Severity::Ok)
            })
            .collect();
        t.observe(&many, 1, 60, T0);
        assert_eq!(t.entries().count(), MAX_ENTRIES);
        let a = alerts(
            &t.observe(&[f("x", Severity::Critical)], 1, 60, T0),
            "rvm-1",
            "",
            T0,
        );
        assert_eq!(a.len(), 1);
        assert!(a[0].summary().starts_with("[CRITICAL] rvm-1 database: x:"));
    }
}
