//! Metrics for the fleet: the store, `state.json` and the monitor's rule
//! states in the Prometheus text format (version 0.0.4), for the `METRICS`
//! verb, `rvm-backup metrics` and the node_exporter textfile
//! ([`textfile`]). `docs/operations.md` ("Metrics") lists every metric.
//!
//! [`gather`] folds the store into a few figures per strategy in one pass
//! over the sidecars ([`crate::ops::Session::visit`]: one sidecar in
//! memory at a time), reads `state.json` and `statvfs` of `backup_dir`;
//! [`render`] writes the text. The findings and the outbox depth are
//! parameters: the monitor and the outbox own them.
//!
//! Choices (documented for operators):
//! - a figure that is not known is left out, never written as 0 or NaN: a
//!   strategy that never succeeded has no `last_success` sample, and a
//!   file system that reports 0 total bytes (FUSE, fusefat) has no free or
//!   size sample. Alert on `absent(...)` where that matters;
//! - rule states are one gauge, `rvm_backup_rule_state{rule,subject}`,
//!   valued like `check`'s exit status: 0 ok, 1 warning, 2 critical,
//!   3 unknown; a key given twice keeps its worst state; at most
//!   [`MAX_RULE_SERIES`] series;
//! - free bytes are those available to unprivileged users (`f_bavail`):
//!   what is left before the reserve, the figure `df` shows;
//! - no timestamps on samples (node_exporter refuses them in textfiles).

pub mod expo;
pub mod textfile;

use std::collections::BTreeMap;
use std::path::Path;

use self::expo::{Expo, Num};
use super::{Finding, Severity};
use crate::ops::Session;
use crate::pitr::PitrStatus;
use crate::state::Remembered;
use crate::strategy::Strategy;

/// Most `rvm_backup_rule_state` series written.
pub const MAX_RULE_SERIES: usize = 256;

/// The newest archive of a strategy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Newest {
    pub created: i64,
    pub created_nanos: u32,
    pub duration_ms: u64,
    pub content_bytes: u64,
    pub archive_bytes: u64,
}

/// What the metrics say about one strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct PerStrategy {
    pub strategy: Strategy,
    pub remembered: Remembered,
    pub archives: u64,
    pub stored_bytes: u64,
    pub newest: Option<Newest>,
    /// Creation time of the newest archive that passed verification
    /// (`state.json`'s `last_verified`), when it is still in the store.
    pub last_verified_at: Option<i64>,
}

/// Free and total bytes of a file system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

/// Everything the metrics are made of, apart from findings and outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Configured strategies and those with archives, in canonical order.
    pub strategies: Vec<PerStrategy>,
    /// Sidecars that could not be read.
    pub unreadable: u64,
    /// `None`: unknown (statvfs failed or reported 0 total bytes).
    pub space: Option<Space>,
    /// The daemon's WAL shipper, when point-in-time recovery is on.
    pub pitr: Option<PitrStatus>,
    /// The daemon's offsite syncs, when `[offsite]` is configured.
    pub offsite: Option<crate::offsite::status::OffsiteStatus>,
}

/// Read the figures: `state.json`, one pass over the store, `statvfs`.
pub fn gather(session: &Session) -> Snapshot {
    let cfg = session.config();
    let state = crate::state::load(&cfg.backup_dir);
    let configured = cfg.configured();
    let mut all: Vec<PerStrategy> = Strategy::ALL
        .into_iter()
        .map(|s| PerStrategy {
            strategy: s,
            remembered: state.get(&s).cloned().unwrap_or_default(),
            archives: 0,
            stored_bytes: 0,
            newest: None,
            last_verified_at: None,
        })
        .collect();
    let mut unreadable = 0u64;
    session.visit(None, |found| {
        let Ok(a) = found else {
            unreadable = unreadable.saturating_add(1);
            return;
        };
        let m = &a.meta;
        let Some(p) = all.iter_mut().find(|p| p.strategy == m.strategy) else {
            return;
        };
        p.archives = p.archives.saturating_add(1);
        p.stored_bytes = p.stored_bytes.saturating_add(m.archive_bytes);
        let newer = p
            .newest
            .as_ref()
            .is_none_or(|n| (m.created, m.created_nanos) >= (n.created, n.created_nanos));
        if newer {
            p.newest = Some(Newest {
                created: m.created,
                created_nanos: m.created_nanos,
                duration_ms: m.duration_ms,
                content_bytes: m.content_bytes,
                archive_bytes: m.archive_bytes,
            });
        }
        if p.remembered.last_verified.as_deref() == Some(m.id.as_str()) {
            p.last_verified_at = Some(m.created);
        }
    });
    all.retain(|p| configured.contains(&p.strategy) || p.archives > 0);
    Snapshot {
        strategies: all,
        unreadable,
        space: space_of(&cfg.backup_dir),
        pitr: None,
        offsite: None,
    }
}

/// Free (to unprivileged users) and total bytes of the file system that
/// holds `dir`; `None` when unknown (0 total: FUSE file systems say so).
pub fn space_of(dir: &Path) -> Option<Space> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let unit = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    let total = st.f_blocks.saturating_mul(unit);
    (total > 0).then(|| Space {
        free: st.f_bavail.saturating_mul(unit),
        total,
    })
}

/// The metrics text: [`gather`] then [`render`]. `findings`: the
/// monitor's latest findings; `outbox_depth`: alerts waiting to be
/// delivered (`None` when there is no outbox: no sample); `pitr`: the
/// daemon's WAL shipper (`None`: not running here, no samples).
pub fn text(
    session: &Session,
    findings: &[Finding],
    outbox_depth: Option<u64>,
    pitr: Option<PitrStatus>,
) -> String {
    let mut snap = gather(session);
    snap.pitr = pitr;
    render(&snap, findings, outbox_depth)
}

/// The WAL shipper's gauges.
fn render_pitr(e: &mut Expo, p: &PitrStatus) {
    let ms = |v: i64| Num::F(v as f64 / 1000.0);
    e.family(
        "rvm_backup_pitr_last_ship_timestamp_seconds",
        "gauge",
        "Unix time the WAL shipper last shipped or found every commit shipped (commits not shipped yet are younger).",
    );
    if let Some(t) = p.last_ok_unix_ms {
        e.sample(&[], ms(t));
    }
    e.family(
        "rvm_backup_pitr_last_shipped_commit_timestamp_seconds",
        "gauge",
        "Time of the newest WAL batch in the store (restorable up to it).",
    );
    if let Some(t) = p.last_commit_unix_ms {
        e.sample(&[], ms(t));
    }
    e.family(
        "rvm_backup_pitr_segments",
        "gauge",
        "WAL segments written in the current point-in-time generation.",
    );
    e.sample(&[], Num::U(p.segments));
    e.family(
        "rvm_backup_pitr_generations_started_total",
        "counter",
        "Point-in-time generations (fresh snapshots) started since the daemon started.",
    );
    e.sample(&[], Num::U(p.generations_started));
    e.family(
        "rvm_backup_pitr_error",
        "gauge",
        "1 if the WAL shipper's last step failed, else 0.",
    );
    e.sample(&[], Num::U(u64::from(p.last_error.is_some())));
    e.family(
        "rvm_backup_pitr_stick_segments",
        "gauge",
        "WAL segments on the mounted recovery stick.",
    );
    if let Some(n) = p.stick_segments {
        e.sample(&[], Num::U(n));
    }
    e.family(
        "rvm_backup_pitr_stick_error",
        "gauge",
        "1 if the last copy of WAL segments to the recovery stick failed, else 0.",
    );
    e.sample(&[], Num::U(u64::from(p.stick_error.is_some())));
}

/// The offsite syncs' figures.
fn render_offsite(e: &mut Expo, o: &crate::offsite::status::OffsiteStatus) {
    e.family(
        "rvm_backup_offsite_shipped_bytes_total",
        "counter",
        "Bytes shipped to the offsite store since the daemon started.",
    );
    e.sample(&[], Num::U(o.bytes_shipped));
    e.family(
        "rvm_backup_offsite_shipped_objects_total",
        "counter",
        "Objects shipped to the offsite store since the daemon started.",
    );
    e.sample(&[], Num::U(o.objects_shipped));
    if let Some(p) = &o.pending {
        e.family(
            "rvm_backup_offsite_pending_bytes",
            "gauge",
            "Bytes of local archive files and WAL segments not yet confirmed in the offsite store.",
        );
        e.sample(&[], Num::U(p.bytes));
        e.family(
            "rvm_backup_offsite_pending_objects",
            "gauge",
            "Local archive files and WAL segments not yet confirmed in the offsite store.",
        );
        e.sample(&[], Num::U(p.objects));
        e.family(
            "rvm_backup_offsite_oldest_pending_timestamp_seconds",
            "gauge",
            "Unix time the oldest file not yet in the offsite store was written (absent: none pending).",
        );
        if let Some(t) = p.oldest {
            e.sample(&[], Num::I(t));
        }
    }
    e.family(
        "rvm_backup_offsite_last_success_timestamp_seconds",
        "gauge",
        "Unix time the last offsite sync succeeded.",
    );
    if let Some(t) = o.last_success {
        e.sample(&[], Num::I(t));
    }
    e.family(
        "rvm_backup_offsite_consecutive_failures",
        "gauge",
        "Offsite syncs that failed in a row since the last success.",
    );
    e.sample(&[], Num::U(u64::from(o.consecutive_failures)));
    e.family(
        "rvm_backup_offsite_credentials_rejected",
        "gauge",
        "1 if the offsite store rejected the credentials at the last sync, else 0.",
    );
    e.sample(&[], Num::U(u64::from(o.credentials_rejected())));
}

type Figure = fn(&PerStrategy) -> Option<Num>;

/// The per-strategy gauges: name, help, figure.
const PER_STRATEGY: [(&str, &str, Figure); 15] = [
    (
        "rvm_backup_last_success_timestamp_seconds",
        "Unix time of the strategy's last successful (verified) backup.",
        |p| p.remembered.last_success.map(Num::I),
    ),
    (
        "rvm_backup_last_failure_timestamp_seconds",
        "Unix time of the strategy's last failed backup.",
        |p| p.remembered.last_failure.map(Num::I),
    ),
    (
        "rvm_backup_consecutive_failures",
        "Backups of the strategy that failed in a row since its last success.",
        |p| Some(Num::U(u64::from(p.remembered.failures))),
    ),
    (
        "rvm_backup_last_archive_timestamp_seconds",
        "Unix time the newest archive of the strategy was started.",
        |p| p.newest.as_ref().map(|n| Num::I(n.created)),
    ),
    (
        "rvm_backup_last_duration_seconds",
        "How long the backup that made the newest archive took.",
        |p| {
            p.newest
                .as_ref()
                .map(|n| Num::F(n.duration_ms as f64 / 1000.0))
        },
    ),
    (
        "rvm_backup_last_content_bytes",
        "Bytes of file content read from the sources for the newest archive.",
        |p| p.newest.as_ref().map(|n| Num::U(n.content_bytes)),
    ),
    (
        "rvm_backup_last_archive_bytes",
        "Bytes of the newest archive in the store (all parts).",
        |p| p.newest.as_ref().map(|n| Num::U(n.archive_bytes)),
    ),
    (
        "rvm_backup_archives",
        "Archives of the strategy in the store.",
        |p| Some(Num::U(p.archives)),
    ),
    (
        "rvm_backup_stored_bytes",
        "Bytes of all archives of the strategy in the store.",
        |p| Some(Num::U(p.stored_bytes)),
    ),
    (
        "rvm_backup_last_verified_archive_timestamp_seconds",
        "Unix time the newest archive that passed verification was started.",
        |p| p.last_verified_at.map(Num::I),
    ),
    (
        "rvm_backup_last_drill_timestamp_seconds",
        "Unix time of the strategy's last recovery drill.",
        |p| p.remembered.last_drill.map(Num::I),
    ),
    (
        "rvm_backup_last_drill_success",
        "1 if the last recovery drill of the strategy passed, 0 if it failed.",
        |p| p.remembered.last_drill_ok.map(|ok| Num::U(u64::from(ok))),
    ),
    (
        "rvm_backup_last_drill_duration_seconds",
        "How long the last recovery drill's restore and checks took (recovery time).",
        |p| p.remembered.last_drill_seconds.map(Num::F),
    ),
    (
        "rvm_backup_last_export_timestamp_seconds",
        "Unix time of the last export of a recovery set holding the strategy.",
        |p| p.remembered.last_export.map(Num::I),
    ),
    (
        "rvm_backup_last_export_success",
        "1 if the last export wrote a complete, verified recovery set, 0 if it failed.",
        |p| p.remembered.last_export_ok.map(|ok| Num::U(u64::from(ok))),
    ),
];

/// Write the metrics text.
pub fn render(snap: &Snapshot, findings: &[Finding], outbox_depth: Option<u64>) -> String {
    let mut e = Expo::default();
    e.family("rvm_backup_up", "gauge", "1: rvm-backup answered.");
    e.sample(&[], Num::U(1));
    e.family(
        "rvm_backup_build_info",
        "gauge",
        "Always 1; the version of rvm-backup in a label.",
    );
    e.sample(&[("version", env!("CARGO_PKG_VERSION"))], Num::U(1));
    for (name, help, figure) in PER_STRATEGY {
        e.family(name, "gauge", help);
        for p in &snap.strategies {
            if let Some(v) = figure(p) {
                e.sample(&[("strategy", p.strategy.name())], v);
            }
        }
    }
    e.family(
        "rvm_backup_unreadable_sidecars",
        "gauge",
        "Sidecars in the store that could not be read (damage, wrong key, foreign files).",
    );
    e.sample(&[], Num::U(snap.unreadable));
    if let Some(space) = snap.space {
        e.family(
            "rvm_backup_filesystem_free_bytes",
            "gauge",
            "Bytes available to unprivileged users on backup_dir's file system.",
        );
        e.sample(&[], Num::U(space.free));
        e.family(
            "rvm_backup_filesystem_size_bytes",
            "gauge",
            "Size in bytes of backup_dir's file system.",
        );
        e.sample(&[], Num::U(space.total));
    }
    if let Some(p) = &snap.pitr {
        render_pitr(&mut e, p);
    }
    if let Some(o) = &snap.offsite {
        render_offsite(&mut e, o);
    }
    e.family(
        "rvm_backup_rule_state",
        "gauge",
        "State of a monitoring rule for a subject: 0 ok, 1 warning, 2 critical, 3 unknown.",
    );
    for ((rule, subject), sev) in worst_per_key(findings) {
        e.sample(
            &[("rule", rule), ("subject", subject)],
            Num::U(u64::from(sev.exit_code().unsigned_abs())),
        );
    }
    if let Some(depth) = outbox_depth {
        e.family(
            "rvm_backup_alert_outbox_depth",
            "gauge",
            "Alerts written to the outbox and not yet delivered to every sink.",
        );
        e.sample(&[], Num::U(depth));
    }
    e.finish()
}

/// Each finding key once, with its worst severity; at most
/// [`MAX_RULE_SERIES`] keys (the first ones met).
fn worst_per_key(findings: &[Finding]) -> BTreeMap<(&str, &str), Severity> {
    let mut keys: BTreeMap<(&str, &str), Severity> = BTreeMap::new();
    for f in findings {
        let k = (f.rule.as_str(), f.subject.as_str());
        if let Some(s) = keys.get_mut(&k) {
            *s = (*s).max(f.severity);
        } else if keys.len() < MAX_RULE_SERIES {
            keys.insert(k, f.severity);
        }
    }
    keys
}

#[cfg(test)]
mod tests;
