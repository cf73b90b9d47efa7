//! Storage: free space on `backup_dir`'s file system.
//!
//! Critical when less than `free_critical_percent` is free (5) or the next
//! round of backups is not expected to fit; warning below
//! `free_warning_percent` (10) or when fewer than `storage_rounds` (3)
//! more rounds fit. A round is one new archive of every strategy; each is
//! expected as large as that strategy's newest archive plus its growth
//! per archive (the rise from the oldest to the newest of the recent
//! archives, spread over them; never negative), so a steadily growing
//! source is caught before the disk fills. Retention frees space too, but
//! only after a backup, so it is not counted. A file system that does not
//! report its size (fusefat says 0) is unknown, not full.
//!
//! The stick (when export is in use and one is mounted): warning when less
//! than `free_warning_percent` is free or the newest archives of all
//! strategies together would not fit (a set may have to copy them all).

use serde_json::json;

use super::{finding, STORAGE};
use crate::monitor::facts::{Facts, StrategyFacts};
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};
use crate::out::human_bytes;

/// Bytes one more archive of `s` is expected to take `k` rounds from now.
fn expected(s: &StrategyFacts, k: u64) -> u64 {
    let Some(newest) = s.newest() else {
        return 0;
    };
    let first = &s.archives[0];
    let steps = (s.archives.len() as u64).saturating_sub(1).max(1);
    let growth = newest.archive_bytes.saturating_sub(first.archive_bytes) / steps;
    newest
        .archive_bytes
        .saturating_add(growth.saturating_mul(k))
}

/// Bytes the next `rounds` rounds of backups are expected to take.
pub fn needed(f: &Facts, rounds: u64) -> u64 {
    (1..=rounds)
        .flat_map(|k| f.strategies.iter().map(move |s| expected(s, k)))
        .fold(0u64, u64::saturating_add)
}

fn percent(avail: u64, total: u64) -> u64 {
    (u128::from(avail) * 100 / u128::from(total.max(1))) as u64
}

pub fn backup_dir(f: &Facts, t: &Thresholds) -> Finding {
    let Some(sp) = &f.storage else {
        return finding(
            STORAGE,
            "backup_dir",
            Severity::Unknown,
            "the free space of backup_dir's file system is unknown".into(),
            json!({}),
        );
    };
    let pct = percent(sp.avail, sp.total);
    let next = needed(f, 1);
    let rounds = needed(f, u64::from(t.storage_rounds));
    let figures = json!({
        "free_bytes": sp.avail,
        "total_bytes": sp.total,
        "free_percent": pct,
        "next_round_bytes": next,
        "rounds_bytes": rounds,
    });
    let head = format!(
        "{} has {} free ({pct}%)",
        sp.path.display(),
        human_bytes(sp.avail)
    );
    let (sev, why) = if pct < u64::from(t.free_critical_percent) {
        (
            Severity::Critical,
            format!("below {}%", t.free_critical_percent),
        )
    } else if sp.avail < next {
        (
            Severity::Critical,
            format!(
                "the next round of backups needs about {}",
                human_bytes(next)
            ),
        )
    } else if pct < u64::from(t.free_warning_percent) {
        (
            Severity::Warning,
            format!("below {}%", t.free_warning_percent),
        )
    } else if sp.avail < rounds {
        (
            Severity::Warning,
            format!(
                "the next {} rounds of backups need about {} at the current growth",
                t.storage_rounds,
                human_bytes(rounds)
            ),
        )
    } else {
        (Severity::Ok, String::new())
    };
    let reason = match sev {
        Severity::Ok => head,
        _ => format!(
            "{head}: {why}; free space (prune, lower keep_*/retention_days) or grow the disk"
        ),
    };
    finding(STORAGE, "backup_dir", sev, reason, figures)
}

pub fn stick(f: &Facts, t: &Thresholds) -> Option<Finding> {
    let sp = f.stick.as_ref()?;
    let pct = percent(sp.avail, sp.total);
    let set: u64 = f
        .strategies
        .iter()
        .filter_map(|s| s.newest())
        .map(|a| a.archive_bytes)
        .fold(0, u64::saturating_add);
    let sev = if pct < u64::from(t.free_warning_percent) || sp.avail < set {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let head = format!("the stick has {} free ({pct}%)", human_bytes(sp.avail));
    let reason = match sev {
        Severity::Ok => head,
        _ => format!(
            "{head}; a recovery set may need {}: use a larger stick or lower export_keep",
            human_bytes(set)
        ),
    };
    Some(finding(
        STORAGE,
        "stick",
        sev,
        reason,
        json!({"free_bytes": sp.avail, "total_bytes": sp.total, "free_percent": pct, "set_bytes": set}),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::monitor::facts::Space;

    fn disk(f: &mut Facts, total: u64, avail: u64) {
        f.storage = Some(Space {
            path: "/b".into(),
            total,
            avail,
        });
    }

    #[test]
    fn free_percent_and_projection() {
        let t = Thresholds::default();
        let mut f = healthy();
        // Archives of 512 KiB, no growth: a round is 512 KiB.
        assert_eq!(needed(&f, 1), 512 << 10);
        assert_eq!(needed(&f, 3), 3 * (512 << 10));
        let g = 1u64 << 30;
        for (avail, want) in [
            (8 * g, Severity::Ok),
            (g, Severity::Ok), // 10%: not below
            (g - 1, Severity::Warning),
            (g / 2 - 1, Severity::Critical),
        ] {
            disk(&mut f, 10 * g, avail);
            let x = backup_dir(&f, &t);
            assert_eq!(x.severity, want, "{avail}: {}", x.reason);
        }
        // A big disk nearly full in bytes, not in percent: the projection.
        disk(&mut f, 1 << 40, (1 << 40) / 5);
        for a in &mut f.strategies[0].archives {
            a.archive_bytes = 100 << 30;
        }
        assert_eq!(backup_dir(&f, &t).severity, Severity::Warning);
        let x = backup_dir(&f, &t);
        assert!(x.reason.contains("next 3 rounds"), "{}", x.reason);
        disk(&mut f, 1 << 40, 90 << 30);
        assert_eq!(backup_dir(&f, &t).severity, Severity::Critical);
        f.storage = None;
        assert_eq!(backup_dir(&f, &t).severity, Severity::Unknown);
    }

    #[test]
    fn growth_is_projected() {
        let mut f = healthy();
        // 100, 200, …, 600 bytes: 100 more per archive.
        for (i, a) in f.strategies[0].archives.iter_mut().enumerate() {
            a.archive_bytes = (i as u64 + 1) * 100;
        }
        assert_eq!(needed(&f, 1), 700);
        assert_eq!(needed(&f, 2), 700 + 800);
    }

    #[test]
    fn stick_only_when_known() {
        let t = Thresholds::default();
        let mut f = healthy();
        assert!(stick(&f, &t).is_none());
        f.stick = Some(Space {
            path: "/media/s".into(),
            total: 1 << 30,
            avail: 100 << 10,
        });
        assert_eq!(stick(&f, &t).unwrap().severity, Severity::Warning);
        f.stick.as_mut().unwrap().avail = 900 << 20;
        assert_eq!(stick(&f, &t).unwrap().severity, Severity::Ok);
    }
}
