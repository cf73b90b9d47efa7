//! Size anomaly: the newest archive's content against the median of the
//! earlier ones of the same strategy (up to `size_history`, at least 3).
//! Below `size_shrink_warning_percent` of the median (50: halved) is a
//! warning, below `size_shrink_critical_percent` (10: "shrank by 90%") is
//! critical: a source that suddenly lost most of its data usually means
//! data loss upstream, not a quiet day. Above `size_grow_warning_percent`
//! (400) is a warning (a runaway log, a dump left in a config directory).
//!
//! Database archives are judged twice, by content bytes and by the rows
//! of all tables together (deleted rows do not shrink an SQLite file until
//! it is vacuumed); the worse verdict counts. Medians below
//! `size_min_bytes` (or below [`MIN_ROWS`] rows) are not judged: small
//! trees change by large factors on ordinary days.

use serde_json::json;

use super::{finding, median, SIZE};
use crate::monitor::facts::StrategyFacts;
use crate::monitor::thresholds::Thresholds;
use crate::monitor::{Finding, Severity};
use crate::out::human_bytes;

/// Row medians below this are not judged.
pub const MIN_ROWS: u64 = 100;

/// The fewest earlier archives a median is taken over.
const MIN_HISTORY: usize = 3;

struct Verdict {
    severity: Severity,
    what: String,
}

fn judge(
    newest: u64,
    earlier: &[u64],
    min: u64,
    t: &Thresholds,
    show: &dyn Fn(u64) -> String,
    unit: &str,
) -> Option<Verdict> {
    let m = median(earlier)?;
    if m < min.max(1) {
        return None;
    }
    let percent = u128::from(newest) * 100 / u128::from(m);
    let severity = if percent < u128::from(t.size_shrink_critical_percent) {
        Severity::Critical
    } else if percent < u128::from(t.size_shrink_warning_percent)
        || percent > u128::from(t.size_grow_warning_percent)
    {
        Severity::Warning
    } else {
        Severity::Ok
    };
    let how = if newest < m { "shrank" } else { "grew" };
    Some(Verdict {
        severity,
        what: format!(
            "{unit} {how} to {} ({percent}% of the median {} of the {} archives before)",
            show(newest),
            show(m),
            earlier.len()
        ),
    })
}

pub fn size(s: &StrategyFacts, t: &Thresholds) -> Finding {
    let name = s.strategy.name();
    let Some((newest, before)) = s.archives.split_last() else {
        return finding(SIZE, name, Severity::Ok, "no archive yet".into(), json!({}));
    };
    let before = &before[before.len().saturating_sub(t.size_history)..];
    let sizes: Vec<u64> = before.iter().map(|a| a.content_bytes).collect();
    let mut figures = json!({
        "newest": newest.id,
        "content_bytes": newest.content_bytes,
        "recent_content_bytes": sizes,
        "median_content_bytes": median(&sizes),
    });
    if before.len() < MIN_HISTORY {
        return finding(
            SIZE,
            name,
            Severity::Ok,
            format!(
                "{} earlier archive(s): too few to judge the size",
                before.len()
            ),
            figures,
        );
    }
    let mut verdicts = Vec::new();
    verdicts.extend(judge(
        newest.content_bytes,
        &sizes,
        t.size_min_bytes,
        t,
        &human_bytes,
        "content",
    ));
    let rows: Vec<u64> = before.iter().filter_map(|a| a.rows).collect();
    if let (Some(n), true) = (newest.rows, rows.len() >= MIN_HISTORY) {
        figures["rows"] = json!(n);
        figures["median_rows"] = json!(median(&rows));
        verdicts.extend(judge(
            n,
            &rows,
            MIN_ROWS,
            t,
            &|r: u64| r.to_string(),
            "rows",
        ));
    }
    match verdicts.into_iter().max_by_key(|v| v.severity) {
        None => finding(
            SIZE,
            name,
            Severity::Ok,
            format!("too small to judge (median below {})", human_bytes(t.size_min_bytes)),
            figures,
        ),
        Some(v) if v.severity == Severity::Ok => finding(SIZE, name, Severity::Ok, v.what, figures),
        Some(v) => finding(
            SIZE,
            name,
            v.severity,
            format!(
                "archive {}: {}: check the source for lost or runaway data before retention removes the good archives",
                newest.id, v.what
            ),
            figures,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::strategy::Strategy;

    fn with_sizes(sizes: &[u64]) -> StrategyFacts {
        let mut s = strategy(Strategy::Database, 3600);
        s.archives = sizes
            .iter()
            .enumerate()
            .map(|(i, &b)| archive(NOW + i as i64 * HOUR, b))
            .collect();
        s
    }

    #[test]
    fn shrink_and_growth_against_the_median() {
        let t = Thresholds::default();
        let mib = 1u64 << 20;
        for (newest, want) in [
            (mib, Severity::Ok),
            (mib / 2, Severity::Ok),
            (mib / 2 - 1, Severity::Warning),
            (mib / 10 + 1000, Severity::Warning),
            (mib / 11, Severity::Critical),
            (0, Severity::Critical),
            (4 * mib, Severity::Ok),
            (4 * mib + mib / 50, Severity::Warning),
        ] {
            // One outlier among the earlier ones does not move the median.
            let s = with_sizes(&[mib, mib, 9 * mib, mib, mib, newest]);
            let x = size(&s, &t);
            assert_eq!(x.severity, want, "{newest}: {}", x.reason);
        }
        let x = size(&with_sizes(&[mib, mib, mib, mib / 20]), &t);
        assert!(
            x.reason.contains("shrank") && x.reason.contains("4%"),
            "{}",
            x.reason
        );
    }

    #[test]
    fn small_or_short_histories_are_not_judged() {
        let t = Thresholds::default();
        assert_eq!(
            size(&with_sizes(&[1 << 20, 1 << 20, 0]), &t).severity,
            Severity::Ok
        );
        assert_eq!(
            size(&with_sizes(&[1000, 1000, 1000, 0]), &t).severity,
            Severity::Ok
        );
        assert_eq!(size(&with_sizes(&[]), &t).severity, Severity::Ok);
        // Only the last size_history earlier archives count.
        let t = Thresholds {
            size_history: 3,
            ..Thresholds::default()
        };
        let s = with_sizes(&[
            100 << 20,
            100 << 20,
            100 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
        ]);
        assert_eq!(size(&s, &t).severity, Severity::Ok);
    }

    #[test]
    fn database_rows_collapse_even_when_bytes_do_not() {
        let t = Thresholds::default();
        let mut s = with_sizes(&[1 << 20; 5]);
        for (i, a) in s.archives.iter_mut().enumerate() {
            a.rows = Some(if i == 4 { 500 } else { 10_000 });
        }
        let x = size(&s, &t);
        assert_eq!(x.severity, Severity::Critical, "{}", x.reason);
        assert!(x.reason.contains("rows shrank to 500"), "{}", x.reason);
        assert_eq!(x.figures["median_rows"], 10_000);
    }
}
